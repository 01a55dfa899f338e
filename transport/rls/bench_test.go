package rls

import (
	"context"
	"math/rand/v2"
	"strconv"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
)

// BenchmarkShouldRateLimit is Envoy's call over loopback gRPC, client and
// server in this process on the same cores: one descriptor, 10,000
// subjects, a limit nobody reaches, 64 calls in flight.
//
//	go test -run='^$' -bench=ShouldRateLimit -benchmem ./transport/rls/
func BenchmarkShouldRateLimit(b *testing.B) {
	c := serve(b)
	b.SetParallelism(32) // x GOMAXPROCS goroutines
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		rng := rand.New(rand.NewPCG(rand.Uint64(), 3))
		req := &rlsv3.RateLimitRequest{Domain: "bench", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user_id"}},
		}}}
		for pb.Next() {
			req.Descriptors[0].Entries[0].Value = strconv.Itoa(rng.IntN(10_000))
			if _, err := c.ShouldRateLimit(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
}
