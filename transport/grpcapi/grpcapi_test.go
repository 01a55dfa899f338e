package grpcapi_test

import (
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/distributedratelimiter/ratelimiter/api/ratelimiterv1"
	"github.com/distributedratelimiter/ratelimiter/internal/apitest"
)

func dial(t *testing.T) pb.RateLimiterClient {
	t.Helper()
	conn, err := grpc.NewClient(apitest.NewGRPC(t, 5), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return pb.NewRateLimiterClient(conn)
}

func TestCheckAndCheckMany(t *testing.T) {
	rl := dial(t)
	ctx := context.Background()
	res, err := rl.Check(ctx, &pb.CheckRequest{Id: 7, Namespace: "orders", Subject: "u", Cost: 4})
	if err != nil || res.Id != 7 || res.Status != 200 || !res.Allowed || res.DecidedBy != "store" || len(res.Limits) != 1 || res.Limits[0].Remaining != 1 || res.Limits[0].Name != "per-hour" {
		t.Fatalf("Check: %v %v", res, err)
	}
	many, err := rl.CheckMany(ctx, &pb.CheckManyRequest{Checks: []*pb.CheckRequest{
		{Id: 1, Namespace: "orders", Subject: "u", Peek: true},
		{Id: 2, Namespace: "orders", Subject: "u"},
		{Id: 3, Namespace: "orders", Subject: "u"},
		{Id: 4, Namespace: "nope", Subject: "u"},
		{Id: 5, Namespace: "orders", Subject: "u", Cost: -2},
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		status  int32
		allowed bool
	}{{200, true}, {200, true}, {429, false}, {404, false}, {400, false}}
	for i, w := range want {
		r := many.Results[i]
		if r.Id != uint64(i+1) || r.Status != w.status || r.Allowed != w.allowed || (w.status >= 400 && w.status != 429 && r.Error == "") {
			t.Errorf("CheckMany result %d: %v, want status %d allowed %v", i, r, w.status, w.allowed)
		}
	}
	if many.Results[2].RetryAfterMs <= 0 {
		t.Errorf("a denial without retry: %v", many.Results[2])
	}
	for _, n := range []int{0, 1001} {
		_, err := rl.CheckMany(ctx, &pb.CheckManyRequest{Checks: make([]*pb.CheckRequest, n)})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("CheckMany of %d: %v, want InvalidArgument", n, err)
		}
	}
}

// 2,000 checks of 40 subjects over one stream, sent at once: every answer
// carries its request's id, each subject admitted exactly 5 times.
func TestCheckStream(t *testing.T) {
	rl := dial(t)
	stream, err := rl.CheckStream(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range 2000 {
			if err := stream.Send(&pb.CheckRequest{Id: uint64(i), Namespace: "orders", Subject: fmt.Sprint("s", i%40)}); err != nil {
				t.Error(err)
				return
			}
		}
		stream.CloseSend()
	})
	seen := map[uint64]bool{}
	admitted := map[string]int{}
	for {
		res, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if seen[res.Id] || res.Id >= 2000 {
			t.Fatalf("answer id %d twice or unknown", res.Id)
		}
		seen[res.Id] = true
		if res.Allowed {
			admitted[fmt.Sprint("s", res.Id%40)]++
		}
	}
	wg.Wait()
	if len(seen) != 2000 {
		t.Errorf("%d answers for 2,000 checks", len(seen))
	}
	for s, n := range admitted {
		if n != 5 {
			t.Errorf("%s admitted %d, want 5", s, n)
		}
	}
	if len(admitted) != 40 {
		t.Errorf("%d subjects admitted, want 40", len(admitted))
	}
}
