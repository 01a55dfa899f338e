// Package apitest serves the service's own HTTP and gRPC APIs, and Envoy's
// protocol, over the memory store on a loopback port, for the tests of its
// clients (package client, package loadgen): the real handler, the real
// service, no stand-in.
package apitest

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/transport/grpcapi"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
	"github.com/distributedratelimiter/ratelimiter/transport/rls"
	"google.golang.org/grpc"
)

// Server serves namespace "orders" with a token bucket of perHour checks an
// hour per subject until the test ends, and counts the requests of
// POST /v1/checks.
type Server struct {
	URL string
	// Batches counts the requests of POST /v1/checks.
	Batches atomic.Int64
	srv     *httptest.Server
}

// Close stops serving: a client then finds no server.
func (s *Server) Close() { s.srv.Close() }

// New starts a Server.
func New(t testing.TB, perHour int64) *Server {
	t.Helper()
	svc := Service(t, perHour)
	s := &Server{}
	h := httpapi.New(svc, httpapi.Options{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/checks" {
			s.Batches.Add(1)
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	s.URL, s.srv = srv.URL, srv
	return s
}

// NewGRPC serves Service(t, perHour) over the native gRPC API on a
// loopback port until the test ends, and returns its address.
func NewGRPC(t testing.TB, perHour int64) string {
	t.Helper()
	return serveGRPC(t, grpcapi.New(Service(t, perHour)).Register)
}

// NewRLS serves Service(t, perHour) over Envoy's rate limit service
// protocol on a loopback port until the test ends, and returns its
// address.
func NewRLS(t testing.TB, perHour int64) string {
	t.Helper()
	return serveGRPC(t, rls.New(Service(t, perHour)).Register)
}

// serveGRPC serves what register registers on a loopback port until the
// test ends, and returns its address.
func serveGRPC(t testing.TB, register func(grpc.ServiceRegistrar)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	return ln.Addr().String()
}

// Service is a service of namespace "orders" with a token bucket of
// perHour checks an hour per subject, on the memory store.
func Service(t testing.TB, perHour int64) *service.Service {
	t.Helper()
	r, err := limit.Rule{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: perHour, Period: time.Hour}.Normalize()
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.New([]policy.Namespace{{Name: "orders", Rules: []limit.Rule{r}}}, "v1", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{})
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(st, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

// Checker is a client's Check (package client, client/grpcclient).
type Checker interface {
	Check(context.Context, client.Request) (client.Result, error)
}

// ExactUnderConcurrency sends n concurrent checks of subjects "user-0" to
// "user-<subjects-1>" through c, against a Server of perHour checks an hour
// (New, NewGRPC), and fails t unless every answer is a decision of its own
// subject, 200 when allowed and 429 when denied, and each subject was
// admitted exactly perHour times.
func ExactUnderConcurrency(t testing.TB, c Checker, n, subjects int, perHour int64) {
	t.Helper()
	var mu sync.Mutex
	admitted := map[string]int64{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			subject := fmt.Sprint("user-", i%subjects)
			res, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: subject})
			if err != nil {
				t.Error(err)
				return
			}
			if res.Subject != subject || res.Allowed != (res.Status == http.StatusOK) || (!res.Allowed && res.Status != http.StatusTooManyRequests) || len(res.Limits) != 1 {
				t.Errorf("result %+v", res)
			}
			if res.Allowed {
				mu.Lock()
				admitted[subject]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for s, got := range admitted {
		if got != perHour {
			t.Errorf("%s admitted %d, want %d", s, got, perHour)
		}
	}
	if len(admitted) != subjects {
		t.Errorf("%d subjects admitted, want %d", len(admitted), subjects)
	}
}
