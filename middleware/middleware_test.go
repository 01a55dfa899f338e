package middleware

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

const policyYAML = `
namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - {name: per-10h, algorithm: token_bucket, limit: 5, period: 10h}
  - name: exports
    subject_header: X-Api-Key
    limits:
      - {name: steady, algorithm: leaky_bucket, limit: 10, period: 1s, burst: 3}
  - name: exact
    limits:
      - {name: per-day, algorithm: fixed_window, limit: 50, period: 24h}
  - name: weighted
    cost_header: X-RateLimit-Cost
    limits:
      - {name: per-day, algorithm: token_bucket, limit: 50, period: 24h}
`

func newService(t *testing.T, yaml string) *service.Service {
	t.Helper()
	snap, err := config.Parse([]byte(yaml), "test.yaml")
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

// counting is the protected handler: it counts the requests that reach it.
type counting struct{ n atomic.Int64 }

func (c *counting) ServeHTTP(w http.ResponseWriter, _ *http.Request) {
	c.n.Add(1)
	w.Write([]byte("placed\n"))
}

func wrap(t *testing.T, svc *service.Service, opts Options) (http.Handler, *counting) {
	t.Helper()
	mw, err := New(svc, opts)
	if err != nil {
		t.Fatal(err)
	}
	next := &counting{}
	return mw(next), next
}

func do(h http.Handler, hdr ...string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", "/orders", nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		r.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

// The headline numbers through the middleware: token bucket 5 per
// 10h, checks 1-5 reach the handler with remaining 4..0, the 6th is 429
// with Retry-After 7200 and never reaches it.
func TestAllowedThenDenied(t *testing.T) {
	h, next := wrap(t, newService(t, policyYAML), Options{Namespace: "orders"})
	for i := range 5 {
		w := do(h, "X-User-ID", "user-42")
		if w.Code != 200 || w.Body.String() != "placed\n" {
			t.Fatalf("check %d: %d %q", i+1, w.Code, w.Body)
		}
		if got, want := w.Header().Get("X-RateLimit-Remaining"), strconv.Itoa(4-i); got != want {
			t.Fatalf("check %d: remaining %s, want %s", i+1, got, want)
		}
		if got := w.Header().Get("RateLimit-Policy"); got != `"per-10h";q=5;w=36000` {
			t.Fatalf("RateLimit-Policy %q", got)
		}
	}
	w := do(h, "X-User-ID", "user-42")
	if w.Code != 429 || w.Header().Get("Retry-After") != "7200" {
		t.Fatalf("6th: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	var body struct {
		Error        string `json:"error"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || body.Error != "rate limited" || body.RetryAfterMS != 7_200_000 {
		t.Fatalf("6th body %q (%v)", w.Body, err)
	}
	if n := next.n.Load(); n != 5 {
		t.Fatalf("%d requests reached the handler, want 5", n)
	}
	// Another subject has its own bucket.
	if w := do(h, "X-User-ID", "user-43"); w.Code != 200 {
		t.Fatalf("other subject: %d", w.Code)
	}
}

func TestBadRequestsNeverReachTheHandler(t *testing.T) {
	svc := newService(t, policyYAML)
	h, next := wrap(t, svc, Options{Namespace: "orders"})
	if w := do(h); w.Code != 400 || !strings.Contains(w.Body.String(), "missing header X-User-ID") {
		t.Fatalf("no subject: %d %q", w.Code, w.Body)
	}
	long := strings.Repeat("x", 10_000)
	if w := do(h, "X-User-ID", long); w.Code != 400 || !json.Valid(w.Body.Bytes()) {
		t.Fatalf("oversized subject: %d %q", w.Code, w.Body)
	}
	costly, _ := wrap(t, svc, Options{Namespace: "orders", Cost: func(r *http.Request) (int64, error) {
		return strconv.ParseInt(r.Header.Get("X-Items"), 10, 64)
	}})
	if w := do(costly, "X-User-ID", "u", "X-Items", "lots"); w.Code != 400 || !strings.Contains(w.Body.String(), "invalid syntax") {
		t.Fatalf("bad cost: %d %q", w.Code, w.Body)
	}
	if w := do(costly, "X-User-ID", "u", "X-Items", "-1"); w.Code != 400 {
		t.Fatalf("negative cost: %d %q", w.Code, w.Body)
	}
	// More than the bucket holds can never pass: 429 without Retry-After.
	if w := do(costly, "X-User-ID", "u", "X-Items", "6"); w.Code != 429 || w.Header().Get("Retry-After") != "" ||
		!strings.Contains(w.Body.String(), `"retry_after_ms":-1`) {
		t.Fatalf("cost over capacity: %d %q %q", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if n := next.n.Load(); n != 0 {
		t.Fatalf("%d bad requests reached the handler", n)
	}
}

func TestOptionsAndUnknownNamespace(t *testing.T) {
	svc := newService(t, policyYAML)
	if _, err := New(svc, Options{}); err == nil {
		t.Fatal("no namespace accepted")
	}
	if _, err := New(svc, Options{Namespace: "nope"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown namespace: %v", err)
	}
	// A custom subject (the client address) and custom answers.
	var denied, failed int
	h, _ := wrap(t, svc, Options{
		Namespace: "orders",
		Subject: func(r *http.Request) (string, error) {
			if r.RemoteAddr == "" {
				return "", errors.New("no address")
			}
			return r.RemoteAddr, nil
		},
		OnDenied: func(w http.ResponseWriter, _ *http.Request, res *service.Result) {
			denied++
			w.WriteHeader(503)
		},
		OnError: func(w http.ResponseWriter, _ *http.Request, err error) {
			failed++
			w.WriteHeader(418)
		},
	})
	for range 5 {
		if w := do(h); w.Code != 200 {
			t.Fatalf("by address: %d", w.Code)
		}
	}
	if w := do(h); w.Code != 503 || denied != 1 || w.Header().Get("Retry-After") == "" {
		t.Fatalf("custom denial: %d, %d denials, Retry-After %q", w.Code, denied, w.Header().Get("Retry-After"))
	}
	// A reload that drops the namespace: 500 until it is back.
	h2, _ := wrap(t, svc, Options{Namespace: "orders"})
	snap, err := config.Parse([]byte("namespaces:\n  - name: other\n    limits:\n      - {name: a, algorithm: fixed_window, limit: 1, period: 1m}\n"), "v2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Swap(snap); err != nil {
		t.Fatal(err)
	}
	if w := do(h2, "X-User-ID", "u"); w.Code != 500 || !strings.Contains(w.Body.String(), "orders") {
		t.Fatalf("dropped namespace: %d %q", w.Code, w.Body)
	}
	if w := do(h); w.Code != 418 || failed != 1 {
		t.Fatalf("custom error: %d, %d errors", w.Code, failed)
	}
}

// A reload that changes the subject header applies at the next request.
func TestSubjectHeaderFollowsReloads(t *testing.T) {
	svc := newService(t, policyYAML)
	h, _ := wrap(t, svc, Options{Namespace: "orders"})
	if w := do(h, "X-Tenant", "t1"); w.Code != 400 {
		t.Fatalf("before reload: %d", w.Code)
	}
	snap, err := config.Parse([]byte(strings.Replace(policyYAML, "subject_header: X-User-ID", "subject_header: X-Tenant", 1)), "v2.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.Swap(snap); err != nil {
		t.Fatal(err)
	}
	if w := do(h, "X-Tenant", "t1"); w.Code != 200 {
		t.Fatalf("after reload: %d %q", w.Code, w.Body)
	}
}

// fakeAfter hands out shaping timers the test fires by hand.
type fakeAfter struct {
	mu     sync.Mutex
	delays []time.Duration
	chans  []chan time.Time
	armed  chan struct{}
}

func (f *fakeAfter) after(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	f.delays, f.chans = append(f.delays, d), append(f.chans, c)
	f.armed <- struct{}{}
	return c
}

// A leaky bucket shapes: 10 per second with a queue of 3 admits a burst of
// three with delays 0, 100 and 200 ms, each held that long before the
// handler runs, and denies the fourth. A caller that leaves while held
// never reaches the handler.
func TestLeakyBucketHoldsRequests(t *testing.T) {
	fa := &fakeAfter{armed: make(chan struct{}, 10)}
	h, next := wrap(t, newService(t, policyYAML), Options{Namespace: "exports", After: fa.after})
	if w := do(h, "X-Api-Key", "k"); w.Code != 200 || next.n.Load() != 1 {
		t.Fatalf("first: %d", w.Code)
	}
	held := make(chan *httptest.ResponseRecorder, 1)
	go func() { held <- do(h, "X-Api-Key", "k") }()
	<-fa.armed
	ctx, cancel := context.WithCancel(context.Background())
	r := httptest.NewRequestWithContext(ctx, "POST", "/export", nil)
	r.Header.Set("X-Api-Key", "k")
	left := make(chan struct{})
	leftW := httptest.NewRecorder()
	go func() { h.ServeHTTP(leftW, r); close(left) }()
	<-fa.armed
	fa.mu.Lock()
	delays := append([]time.Duration(nil), fa.delays...)
	fa.mu.Unlock()
	if len(delays) != 2 || delays[0] != 100*time.Millisecond || delays[1] != 200*time.Millisecond {
		t.Fatalf("delays %v, want 100ms then 200ms", delays)
	}
	if n := next.n.Load(); n != 1 {
		t.Fatalf("%d requests reached the handler while others were held", n)
	}
	if w := do(h, "X-Api-Key", "k"); w.Code != 429 || w.Header().Get("Retry-After") != "1" {
		t.Fatalf("fourth with the queue full: %d, Retry-After %q", w.Code, w.Header().Get("Retry-After"))
	}
	cancel()
	<-left
	if leftW.Code != 503 {
		t.Fatalf("the request that left while held: %d, want 503 (never a silent 200)", leftW.Code)
	}
	fa.chans[0] <- time.Now()
	if w := <-held; w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("held request: %d, remaining %q", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
	if n := next.n.Load(); n != 2 {
		t.Fatalf("%d requests reached the handler, want 2 (the one that left did not)", n)
	}
}

// 200 concurrent requests of one subject against a limit of 50: exactly 50
// reach the handler.
func TestConcurrentExact(t *testing.T) {
	h, next := wrap(t, newService(t, policyYAML), Options{Namespace: "exact"})
	var wg sync.WaitGroup
	var codes [600]atomic.Int64
	for range 200 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[do(h, "X-User-ID", "flood").Code].Add(1)
		}()
	}
	wg.Wait()
	if n, ok, denied := next.n.Load(), codes[200].Load(), codes[429].Load(); n != 50 || ok != 50 || denied != 150 {
		t.Fatalf("handler %d, 200s %d, 429s %d; want 50, 50, 150", n, ok, denied)
	}
}

// Without a trusted hop, limit by client address: a header the client
// sets itself does not change its subject.
func TestRemoteAddrSubject(t *testing.T) {
	h, next := wrap(t, newService(t, policyYAML), Options{Namespace: "orders", Subject: RemoteAddr})
	codes := []int{}
	for i := range 6 {
		r := httptest.NewRequest("POST", "/orders", nil)
		r.RemoteAddr = "203.0.113.9:" + strconv.Itoa(40000+i) // a new port per connection
		r.Header.Set("X-User-ID", "fresh-"+strconv.Itoa(i))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		codes = append(codes, w.Code)
	}
	if got := fmt.Sprint(codes); got != "[200 200 200 200 200 429]" || next.n.Load() != 5 {
		t.Fatalf("codes %s, %d reached the handler; want 5 then a 429 for one address", got, next.n.Load())
	}
	r := httptest.NewRequest("POST", "/orders", nil)
	r.RemoteAddr = "garbage"
	if w := httptest.NewRecorder(); func() int { h.ServeHTTP(w, r); return w.Code }() != 400 {
		t.Fatalf("no address: %d", w.Code)
	}
}

// deadlineChecker is the real service whose checks end as a store call
// past its deadline does: with context.DeadlineExceeded.
type deadlineChecker struct{ *service.Service }

func (d deadlineChecker) Check(context.Context, service.Request) (service.Result, error) {
	return service.Result{}, fmt.Errorf("store: %w", context.DeadlineExceeded)
}

// A check that ends with the request's context (a deadline set by an outer
// middleware, say) is answered 503: not passed on, not an empty 200.
func TestEndedContext(t *testing.T) {
	mw, err := New(deadlineChecker{newService(t, policyYAML)}, Options{Namespace: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	next := &counting{}
	w := do(mw(next), "X-User-ID", "u")
	if w.Code != 503 || next.n.Load() != 0 || !json.Valid(w.Body.Bytes()) {
		t.Fatalf("ended context: %d %q, %d reached the handler", w.Code, w.Body, next.n.Load())
	}
}

// overloadedChecker answers every check as a guarded service shedding for
// overload does.
type overloadedChecker struct{ *service.Service }

func (overloadedChecker) Check(context.Context, service.Request) (service.Result, error) {
	return service.Result{DecidedBy: service.DecidedByShed}, fmt.Errorf("check orders: %w", service.ErrOverloaded)
}

// A check shed for overload is a 503 with Retry-After and
// RateLimit-Decided-By: shed; the handler never sees the request.
func TestShed(t *testing.T) {
	mw, err := New(overloadedChecker{newService(t, policyYAML)}, Options{Namespace: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	next := &counting{}
	w := do(mw(next), "X-User-ID", "u")
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Header().Get("RateLimit-Decided-By") != "shed" || next.n.Load() != 0 {
		t.Fatalf("shed: %d %v %q, %d reached the handler", w.Code, w.Header(), w.Body, next.n.Load())
	}
}

// The cost is the trusted cost_header's when the namespace names one, 1
// otherwise whatever the client sends; 0 is never a peek.
func TestCostFromTrustedHeaderOnly(t *testing.T) {
	svc := newService(t, policyYAML)
	orders, err := New(svc, Options{Namespace: "orders"})
	if err != nil {
		t.Fatal(err)
	}
	next := &counting{}
	for i := range 5 {
		if w := do(orders(next), "X-User-ID", "u", "X-RateLimit-Cost", "0"); w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != fmt.Sprint(4-i) {
			t.Fatalf("orders, client-set cost 0, request %d: %d remaining %s; want charged 1", i+1, w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}
	}
	weighted, err := New(svc, Options{Namespace: "weighted"})
	if err != nil {
		t.Fatal(err)
	}
	if w := do(weighted(next), "X-User-ID", "u", "X-RateLimit-Cost", "10"); w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != "40" {
		t.Fatalf("weighted, trusted cost 10: %d remaining %s", w.Code, w.Header().Get("X-RateLimit-Remaining"))
	}
	before := next.n.Load()
	if w := do(weighted(next), "X-User-ID", "u", "X-RateLimit-Cost", "0"); w.Code != 400 || next.n.Load() != before {
		t.Fatalf("weighted, trusted cost 0: %d %q, want 400 and no request through", w.Code, w.Body)
	}
}
