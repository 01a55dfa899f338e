package middleware_test

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/middleware"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

func ExampleNew() {
	snap, err := config.Parse([]byte(`
namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - {name: per-hour, algorithm: token_bucket, limit: 2, period: 1h}
`), "orders.yaml")
	if err != nil {
		panic(err)
	}
	// A fixed clock keeps the printed figures exact; a server uses the default.
	st := memstore.New(memstore.Options{Clock: clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))})
	defer st.Close()
	svc, err := service.New(st, snap, service.Options{})
	if err != nil {
		panic(err)
	}
	limited, err := middleware.New(svc, middleware.Options{Namespace: "orders"})
	if err != nil {
		panic(err)
	}
	placeOrder := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "order placed")
	})
	h := limited(placeOrder)

	for range 3 {
		r := httptest.NewRequest("POST", "/orders", nil)
		r.Header.Set("X-User-ID", "user-42")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		fmt.Printf("%d %s Retry-After=%q\n", w.Code, w.Header().Get("RateLimit"), w.Header().Get("Retry-After"))
	}
	// Output:
	// 200 "per-hour";r=1;t=1800 Retry-After=""
	// 200 "per-hour";r=0;t=3600 Retry-After=""
	// 429 "per-hour";r=0;t=3600 Retry-After="1800"
}

// A service of several instances reached over the network: the checks of
// concurrent requests share the client's batches (one POST /v1/checks for
// many), and a service that cannot be reached fails closed (503) unless
// FailOpen says otherwise.
func ExampleNewRemote() {
	rl, err := client.New("http://ratelimiter:8080", client.Options{Timeout: 200 * time.Millisecond})
	if err != nil {
		panic(err)
	}
	defer rl.Close()
	limited, err := middleware.NewRemote(rl, middleware.Options{Namespace: "orders", SubjectHeader: "X-User-ID"})
	if err != nil {
		panic(err)
	}
	http.Handle("POST /orders", limited(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "order placed")
	})))
}
