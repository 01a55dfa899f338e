package rls

import (
	"context"
	"strings"
	"testing"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// FuzzShouldRateLimit sends arbitrary requests: the answer is a response
// with one status per descriptor, or InvalidArgument / NotFound; never a
// panic or another code. The seeds run in every `go test`.
func FuzzShouldRateLimit(f *testing.F) {
	s := New(newService(f))
	f.Add("orders", "user_id\x00alice", uint32(1), uint64(0), false)
	f.Add("orders", "a\x00b\x01c\x00d", uint32(0), uint64(7), false)
	f.Add("api", "k\x00\xff\xfe", uint32(3), uint64(1<<60), false)
	f.Add("", "k\x00v", uint32(1), uint64(0), true)
	f.Add("payments", "\x00", uint32(0), uint64(0), false)
	f.Fuzz(func(t *testing.T, domain, spec string, hits uint32, descHits uint64, negative bool) {
		// spec: descriptors split by \x01, entries by \x02, key and value by \x00.
		var descs []*ratelimitv3.RateLimitDescriptor
		for i, ds := range strings.Split(spec, "\x01") {
			d := &ratelimitv3.RateLimitDescriptor{IsNegativeHits: negative && i == 0}
			for _, es := range strings.Split(ds, "\x02") {
				if k, v, ok := strings.Cut(es, "\x00"); ok {
					d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: k, Value: v})
				}
			}
			if descHits > 0 && i == 0 {
				d.HitsAddend = wrapperspb.UInt64(descHits)
			}
			descs = append(descs, d)
		}
		resp, err := s.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: domain, Descriptors: descs, HitsAddend: hits})
		if err != nil {
			if c := status.Code(err); c != codes.InvalidArgument && c != codes.NotFound {
				t.Fatalf("error %v", err)
			}
			return
		}
		if len(resp.GetStatuses()) != len(descs) {
			t.Fatalf("%d statuses for %d descriptors", len(resp.GetStatuses()), len(descs))
		}
	})
}
