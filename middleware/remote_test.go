package middleware

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/client/grpcclient"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/grpcapi"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
	"google.golang.org/grpc"
)

// served is svc behind its real HTTP API and native gRPC API on loopback
// ports, and a client of each; checks counts the HTTP API's requests.
type served struct {
	http   *client.Client
	grpc   *grpcclient.Client
	checks atomic.Int64
	stop   func() // stops the HTTP server
}

func serve(t *testing.T, svc *service.Service, o client.Options) *served {
	t.Helper()
	s := &served{}
	h := httpapi.New(svc, httpapi.Options{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.checks.Add(1)
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(hs.Close)
	s.stop = hs.Close
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	grpcapi.New(svc).Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	if s.http, err = client.New(hs.URL, o); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.http.Close() })
	if s.grpc, err = grpcclient.New(ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.grpc.Close() })
	return s
}

// client is the client of way: "http" or "grpc".
func (s *served) client(way string) Remote {
	if way == "grpc" {
		return s.grpc
	}
	return s.http
}

// remoteWrap is wrap through NewRemote.
func remoteWrap(t *testing.T, c Remote, opts Options) (http.Handler, *counting) {
	t.Helper()
	mw, err := NewRemote(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	next := &counting{}
	return mw(next), next
}

// answer is what a client sees of a response: status, the rate limit
// headers, body.
func answer(w *httptest.ResponseRecorder) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d", w.Code)
	for _, k := range []string{"Ratelimit-Policy", "Ratelimit", "X-Ratelimit-Limit", "X-Ratelimit-Remaining",
		"X-Ratelimit-Reset", "Retry-After", "Ratelimit-Decided-By", "Ratelimit-Shadow", "Content-Type"} {
		if v := w.Header().Values(k); v != nil {
			fmt.Fprintf(&b, " %s=%q", k, v)
		}
	}
	fmt.Fprintf(&b, " %q", w.Body)
	return b.String()
}

// The same requests through the in-process service and through each remote
// client, each against a fresh service of the same policy and clock, get
// the same answers: statuses, every rate limit header, bodies, and the
// same requests reach the handler. Shaping (a leaky bucket's delay) and a
// trusted cost header included.
func TestRemoteAnswersAsInProcess(t *testing.T) {
	type step struct {
		ns  string
		hdr []string
	}
	var steps []step
	for range 6 { // 5 of 5 per 10h, then 429 with Retry-After 7200
		steps = append(steps, step{"orders", []string{"X-User-ID", "user-42"}})
	}
	steps = append(steps, step{"orders", []string{"X-User-ID", "user-43"}}, step{"orders", nil})
	for range 5 { // burst 3 (two of them held for shaping), then denied
		steps = append(steps, step{"exports", []string{"X-Api-Key", "k1"}})
	}
	steps = append(steps,
		step{"weighted", []string{"X-User-ID", "u", "X-RateLimit-Cost", "30"}},
		step{"weighted", []string{"X-User-ID", "u", "X-RateLimit-Cost", "30"}},
		step{"weighted", []string{"X-User-ID", "u", "X-RateLimit-Cost", "0"}},
		step{"weighted", []string{"X-User-ID", "u", "X-RateLimit-Cost", "x"}},
		step{"weighted", []string{"X-User-ID", "u", "X-RateLimit-Cost", "51"}})

	run := func(build func(ns string, o Options) (http.Handler, *counting)) (answers []string, reached map[string]int64) {
		var delays []time.Duration
		handlers := map[string]http.Handler{}
		nexts := map[string]*counting{}
		for _, ns := range []string{"orders", "exports", "weighted"} {
			o := Options{Namespace: ns, After: func(d time.Duration) <-chan time.Time {
				delays = append(delays, d)
				c := make(chan time.Time, 1)
				c <- time.Time{}
				return c
			}}
			switch ns {
			case "exports":
				o.SubjectHeader = "X-Api-Key"
			case "weighted":
				o.CostHeader = "X-RateLimit-Cost"
			}
			handlers[ns], nexts[ns] = build(ns, o)
		}
		for _, s := range steps {
			answers = append(answers, answer(do(handlers[s.ns], s.hdr...)))
		}
		answers = append(answers, fmt.Sprint("delays ", delays))
		reached = map[string]int64{}
		for ns, c := range nexts {
			reached[ns] = c.n.Load()
		}
		return answers, reached
	}
	inProcess := newService(t, policyYAML)
	local, localReached := run(func(ns string, o Options) (http.Handler, *counting) {
		return wrap(t, inProcess, o)
	})
	for _, way := range []string{"http", "grpc"} {
		t.Run(way, func(t *testing.T) {
			srv := serve(t, newService(t, policyYAML), client.Options{})
			c := srv.client(way)
			got, reached := run(func(ns string, o Options) (http.Handler, *counting) { return remoteWrap(t, c, o) })
			for i := range max(len(got), len(local)) {
				if i >= len(got) || i >= len(local) || got[i] != local[i] {
					t.Errorf("step %d:\n remote     %s\n in process %s", i, at(got, i), at(local, i))
				}
			}
			if fmt.Sprint(reached) != fmt.Sprint(localReached) {
				t.Errorf("requests that reached the handler: remote %v, in process %v", reached, localReached)
			}
		})
	}
	// The sequence says what it should: 5 orders of user-42, 1 of user-43;
	// 3 exports (the burst; the 2nd and 3rd held 100 and 200 ms); 1
	// weighted of 30.
	if fmt.Sprint(localReached) != "map[exports:3 orders:6 weighted:1]" || local[len(local)-1] != "delays [100ms 200ms]" {
		t.Errorf("in process, reached %v", localReached)
	}
	for i, want := range map[int]string{5: "429", 7: "400", 11: "429", 12: "429", 14: "429", 15: "400", 16: "400", 17: "429"} {
		if !strings.HasPrefix(local[i], want) {
			t.Errorf("step %d: %s, want %s", i, local[i], want)
		}
	}
}

func at(s []string, i int) string {
	if i < len(s) {
		return s[i]
	}
	return "(none)"
}

// 2,000 concurrent requests of one subject through each remote client: the
// handler sees exactly the 50 the limit admits, every other request is a
// 429, and the HTTP client's checks went in far fewer requests than checks.
func TestRemoteExactUnderConcurrency(t *testing.T) {
	for _, way := range []string{"http", "grpc"} {
		t.Run(way, func(t *testing.T) {
			srv := serve(t, newService(t, policyYAML), client.Options{})
			h, next := remoteWrap(t, srv.client(way), Options{Namespace: "exact"})
			var wg sync.WaitGroup
			var codes [600]atomic.Int64
			for range 2000 {
				wg.Go(func() { codes[do(h, "X-User-ID", "flood").Code].Add(1) })
			}
			wg.Wait()
			if n, ok, denied := next.n.Load(), codes[200].Load(), codes[429].Load(); n != 50 || ok != 50 || denied != 1950 {
				t.Fatalf("handler %d, 200s %d, 429s %d; want 50, 50, 1950", n, ok, denied)
			}
			if way == "http" {
				t.Logf("2,000 checks in %d HTTP requests", srv.checks.Load())
				if srv.checks.Load() > 500 {
					t.Errorf("2,000 concurrent checks took %d HTTP requests: want batches", srv.checks.Load())
				}
			}
		})
	}
}

// A service that is down, or that does not answer within the client's
// timeout, gets no request through by default (503, Retry-After: 1) and
// every request through with FailOpen, without rate limit headers. A
// namespace the service lacks is a 500; bad input a 400, never sent.
func TestRemoteFailures(t *testing.T) {
	srv := serve(t, newService(t, policyYAML), client.Options{})
	h, next := remoteWrap(t, srv.http, Options{Namespace: "nope"})
	if w := do(h, "X-User-ID", "u"); w.Code != 500 || !strings.Contains(w.Body.String(), "nope") || next.n.Load() != 0 {
		t.Errorf("unknown namespace: %s", answer(w))
	}
	h, next = remoteWrap(t, srv.http, Options{Namespace: "orders", CostHeader: "X-Cost"})
	before := srv.checks.Load()
	for _, hdr := range [][]string{nil, {"X-User-ID", "u", "X-Cost", "-1"}, {"X-User-ID", "u", "X-Cost", "0"}} {
		if w := do(h, hdr...); w.Code != 400 || next.n.Load() != 0 {
			t.Errorf("%q: %s", hdr, answer(w))
		}
	}
	if srv.checks.Load() != before {
		t.Errorf("bad input was sent to the service")
	}
	if _, err := NewRemote(srv.http, Options{}); err == nil {
		t.Error("no namespace accepted")
	}

	// A black hole: a listener that accepts and never answers.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var held []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()
	silent, err := client.New("http://"+ln.Addr().String(), client.Options{Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	srv.stop()
	for name, c := range map[string]Remote{"down": srv.http, "silent": silent} {
		closed, nextClosed := remoteWrap(t, c, Options{Namespace: "orders"})
		open, nextOpen := remoteWrap(t, c, Options{Namespace: "orders", FailOpen: true})
		w := do(closed, "X-User-ID", "u")
		if w.Code != 503 || w.Header().Get("Retry-After") != "1" || nextClosed.n.Load() != 0 {
			t.Errorf("%s, fail closed: %s", name, answer(w))
		}
		w = do(open, "X-User-ID", "u")
		if w.Code != 200 || w.Body.String() != "placed\n" || w.Header().Get("X-RateLimit-Remaining") != "" || nextOpen.n.Load() != 1 {
			t.Errorf("%s, fail open: %s", name, answer(w))
		}
	}
	// The request's own end is not the service's failure: never passed
	// on, even with FailOpen.
	open, nextOpen := remoteWrap(t, silent, Options{Namespace: "orders", FailOpen: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r := httptest.NewRequestWithContext(ctx, "POST", "/orders", nil)
	r.Header.Set("X-User-ID", "u")
	w := httptest.NewRecorder()
	open.ServeHTTP(w, r)
	if w.Code != 503 || nextOpen.n.Load() != 0 {
		t.Errorf("ended request, fail open: %s", answer(w))
	}
}

// A remote answer with more limits than a verdict holds is no decision.
func TestFromRemoteTooManyLimits(t *testing.T) {
	a := client.Result{Allowed: true, Limits: slices.Repeat([]client.Limit{{Name: "x", Limit: 1}}, 100)}
	if _, err := fromRemote("ns", "s", 1, &a); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("100 limits: %v", err)
	}
	a.Limits = a.Limits[:2]
	a.DecidedBy = "somebody"
	res, err := fromRemote("ns", "s", 1, &a)
	if err != nil || res.Verdict.N != 2 || res.DecidedBy == service.DecidedByStore {
		t.Fatalf("2 limits, unknown decided_by: %+v %v", res, err)
	}
}
