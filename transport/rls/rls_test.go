package rls

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

const policyYAML = `
namespaces:
  - name: orders
    limits:
      - {name: per-10h, algorithm: token_bucket, limit: 5, period: 10h}
    overrides:
      - subjects: ["user_id=vip"]
        limits:
          per-10h: {limit: 10}
  - name: api
    limits:
      - {name: per-minute, algorithm: fixed_window, limit: 10, period: 1m}
      - {name: per-day, algorithm: fixed_window, limit: 50, period: 24h}
  - name: odd
    limits:
      - {name: per-1500ms, algorithm: fixed_window, limit: 3, period: 1500ms}
  - name: bench
    limits:
      - {name: per-hour, algorithm: token_bucket, limit: 1000000000, period: 1h}
`

// serve starts the RLS on a loopback port over a memory store with a fixed
// clock and returns a client of it.
func serve(t testing.TB) rlsv3.RateLimitServiceClient {
	t.Helper()
	svc := newService(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	New(svc).Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return rlsv3.NewRateLimitServiceClient(conn)
}

// newService is the service of policyYAML over a memory store with a fixed
// clock.
func newService(t testing.TB) *service.Service {
	t.Helper()
	snap, err := config.Parse([]byte(policyYAML), "rls.yaml")
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{Clock: clocktest.New(storetest.Epoch), SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(st, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func desc(kv ...string) *ratelimitv3.RateLimitDescriptor {
	d := &ratelimitv3.RateLimitDescriptor{}
	for i := 0; i+1 < len(kv); i += 2 {
		d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
	}
	return d
}

func ask(t *testing.T, c rlsv3.RateLimitServiceClient, req *rlsv3.RateLimitRequest) *rlsv3.RateLimitResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := c.ShouldRateLimit(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func header(resp *rlsv3.RateLimitResponse, key string) string {
	for _, h := range resp.GetResponseHeadersToAdd() {
		if h.GetKey() == key {
			return h.GetValue()
		}
	}
	return ""
}

// The headline numbers over Envoy's protocol: 5 per 10h, requests
// 1-5 OK with remaining 4..0, the 6th OVER_LIMIT with Retry-After 7200.
func TestTokenBucketOverRLS(t *testing.T) {
	c := serve(t)
	req := &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user_id", "42")}}
	for i := range 5 {
		resp := ask(t, c, req)
		st := resp.GetStatuses()[0]
		if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || st.GetLimitRemaining() != uint32(4-i) {
			t.Fatalf("request %d: %v", i+1, resp)
		}
		cl := st.GetCurrentLimit()
		if cl.GetRequestsPerUnit() != 5 || cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_HOUR ||
			cl.GetUnitMultiplier().GetValue() != 10 || cl.GetName() != "per-10h" {
			t.Fatalf("current limit %v, want 5 per 10 HOUR named per-10h", cl)
		}
		if got := header(resp, "x-ratelimit-remaining"); got != []string{"4", "3", "2", "1", "0"}[i] {
			t.Fatalf("request %d: x-ratelimit-remaining %q", i+1, got)
		}
	}
	resp := ask(t, c, req)
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || resp.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("6th: %v", resp)
	}
	if got := header(resp, "retry-after"); got != "7200" {
		t.Fatalf("6th: retry-after %q, want 7200", got)
	}
	if got := resp.GetStatuses()[0].GetDurationUntilReset().AsDuration(); got != 10*time.Hour {
		t.Fatalf("6th: duration until reset %v, want 10h (the bucket refills fully then)", got)
	}
}

func TestHitsAddend(t *testing.T) {
	c := serve(t)
	// Request-level hits: 3 of 5.
	resp := ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 3, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user_id", "a")}})
	if r := resp.GetStatuses()[0].GetLimitRemaining(); r != 2 {
		t.Fatalf("after 3 hits: remaining %d", r)
	}
	// A descriptor's own hits win over the request's.
	d := desc("user_id", "a")
	d.HitsAddend = wrapperspb.UInt64(2)
	resp = ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 3, Descriptors: []*ratelimitv3.RateLimitDescriptor{d}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetLimitRemaining() != 0 {
		t.Fatalf("after 2 more: %v", resp)
	}
	// More than the bucket can ever hold: over the limit, no Retry-After.
	resp = ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 6, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user_id", "b")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT || header(resp, "retry-after") != "" || resp.GetStatuses()[0].GetLimitRemaining() != 5 {
		t.Fatalf("6 hits of 5: %v", resp)
	}
}

// A descriptor's subject is what overrides name: user_id=vip gets 10.
func TestOverrideBySubject(t *testing.T) {
	c := serve(t)
	resp := ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 10, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user_id", "vip")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[0].GetCurrentLimit().GetRequestsPerUnit() != 10 {
		t.Fatalf("vip: %v", resp)
	}
}

// Two descriptors: the request is over the limit if either is, and the
// descriptors after the first one over its limit consume nothing.
func TestDescriptorsAreSubjects(t *testing.T) {
	c := serve(t)
	tenant, user := desc("tenant", "acme"), desc("tenant", "acme", "user", "1")
	for range 5 { // acme's user 1 spends all 5 of its own subject
		ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{user}})
	}
	resp := ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{user, tenant}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT ||
		resp.GetStatuses()[0].GetCode() != rlsv3.RateLimitResponse_OVER_LIMIT ||
		resp.GetStatuses()[1].GetCode() != rlsv3.RateLimitResponse_OK || resp.GetStatuses()[1].GetLimitRemaining() != 5 {
		t.Fatalf("user over, tenant after it: %v", resp)
	}
	// The tenant was only peeked: all 5 are still there.
	resp = ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{tenant}})
	if r := resp.GetStatuses()[0].GetLimitRemaining(); r != 4 {
		t.Fatalf("tenant after its first real hit: remaining %d, want 4", r)
	}
	// Entries are escaped: "a,b=c" as one value is not the pair a and b=c.
	ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 5, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "a,b=c")}})
	resp = ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "a", "b", "c")}})
	if resp.GetOverallCode() != rlsv3.RateLimitResponse_OK {
		t.Fatalf("two entries confused with one escaped value: %v", resp)
	}
}

// A namespace of two limits: the status reports the binding one, the
// headers the whole policy; a period no unit divides is UNKNOWN.
func TestLimitSetsAndUnits(t *testing.T) {
	c := serve(t)
	resp := ask(t, c, &rlsv3.RateLimitRequest{Domain: "api", HitsAddend: 9, Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "v")}})
	cl := resp.GetStatuses()[0].GetCurrentLimit()
	if cl.GetName() != "per-minute" || cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_MINUTE || cl.GetUnitMultiplier() != nil || resp.GetStatuses()[0].GetLimitRemaining() != 1 {
		t.Fatalf("binding limit: %v", resp.GetStatuses()[0])
	}
	if got := header(resp, "ratelimit-policy"); got != `"per-minute";q=10;w=60, "per-day";q=50;w=86400` {
		t.Fatalf("ratelimit-policy %q", got)
	}
	resp = ask(t, c, &rlsv3.RateLimitRequest{Domain: "odd", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "v")}})
	if cl := resp.GetStatuses()[0].GetCurrentLimit(); cl.GetUnit() != rlsv3.RateLimitResponse_RateLimit_UNKNOWN || cl.GetName() != "per-1500ms" {
		t.Fatalf("1500ms: %v", cl)
	}
}

func TestErrors(t *testing.T) {
	c := serve(t)
	neg := desc("k", "v")
	neg.IsNegativeHits = true
	for _, tc := range []struct {
		name string
		req  *rlsv3.RateLimitRequest
		code codes.Code
		msg  string
	}{
		{"no domain", &rlsv3.RateLimitRequest{Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "v")}}, codes.InvalidArgument, "domain is required"},
		{"no descriptors", &rlsv3.RateLimitRequest{Domain: "orders"}, codes.InvalidArgument, "at least one descriptor"},
		{"empty descriptor", &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{{}}}, codes.InvalidArgument, "descriptor 0: no entries"},
		{"negative hits", &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{neg}}, codes.InvalidArgument, "not supported"},
		{"unknown domain", &rlsv3.RateLimitRequest{Domain: "payments", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", "v")}}, codes.NotFound, "payments"},
		{"huge subject", &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("k", strings.Repeat("x", 100_000))}}, codes.InvalidArgument, "subject"},
		{"too many descriptors", &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: make([]*ratelimitv3.RateLimitDescriptor, MaxDescriptors+1)}, codes.InvalidArgument, "at most 64"},
	} {
		_, err := c.ShouldRateLimit(context.Background(), tc.req)
		if s, _ := status.FromError(err); s.Code() != tc.code || !strings.Contains(s.Message(), tc.msg) {
			t.Errorf("%s: %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

// 200 concurrent RPCs for one descriptor against 10 per minute: exactly 10
// are OK.
func TestConcurrentExact(t *testing.T) {
	c := serve(t)
	var ok, over atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := c.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "api", Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("ip", "10.0.0.1")}})
			if err != nil {
				t.Error(err)
				return
			}
			if resp.GetOverallCode() == rlsv3.RateLimitResponse_OK {
				ok.Add(1)
			} else {
				over.Add(1)
			}
		}()
	}
	wg.Wait()
	if ok.Load() != 10 || over.Load() != 190 {
		t.Fatalf("%d OK, %d over; want exactly the 10 per minute", ok.Load(), over.Load())
	}
}

// A request refused for a later descriptor has charged none; a descriptor
// whose hits_addend is set to 0 is checked without being charged.
func TestNothingChargedForARefusedRequest(t *testing.T) {
	c := serve(t)
	ok := desc("user_id", "carol")
	huge := desc("k", "b")
	huge.HitsAddend = wrapperspb.UInt64(2_000_000) // over the service's maximum cost
	for _, bad := range []*ratelimitv3.RateLimitDescriptor{{}, desc("k", strings.Repeat("x", 2000)), huge} {
		_, err := c.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{ok, bad}})
		if status.Code(err) != codes.InvalidArgument {
			t.Fatalf("bad second descriptor: %v", err)
		}
	}
	zero := desc("user_id", "carol")
	zero.HitsAddend = wrapperspb.UInt64(0)
	resp := ask(t, c, &rlsv3.RateLimitRequest{Domain: "orders", HitsAddend: 3, Descriptors: []*ratelimitv3.RateLimitDescriptor{zero}})
	if r := resp.GetStatuses()[0].GetLimitRemaining(); resp.GetOverallCode() != rlsv3.RateLimitResponse_OK || r != 5 {
		t.Fatalf("carol after two refused requests and a 0-hit check: %v, want 5 remaining", resp)
	}
}

// shedding answers every check as a guarded service shedding for overload.
type shedding struct{ *service.Service }

func (shedding) Check(context.Context, service.Request) (service.Result, error) {
	return service.Result{DecidedBy: service.DecidedByShed}, fmt.Errorf("check orders: %w", service.ErrOverloaded)
}

// A check shed for overload is UNAVAILABLE: Envoy's failure mode decides,
// and with failure_mode_deny (docs/OPERATIONS.md) it denies.
func TestShedIsUnavailable(t *testing.T) {
	s := New(shedding{newService(t)})
	_, err := s.ShouldRateLimit(context.Background(), &rlsv3.RateLimitRequest{Domain: "orders",
		Descriptors: []*ratelimitv3.RateLimitDescriptor{desc("user_id", "u")}})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || !strings.Contains(st.Message(), "overloaded") {
		t.Fatalf("shed: %v, want Unavailable", err)
	}
}
