package httpapi

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/pending"
)

// With the store down, the failure policies answer with their own status and
// say so in RateLimit-Decided-By, on /v1/check and /v1/gate; a healthy
// store's answers say "store".
func TestDecidedByHeader(t *testing.T) {
	rule := []limit.Rule{{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour}}
	var nss []policy.Namespace
	for _, p := range []policy.FailurePolicy{policy.FailLocal, policy.FailOpen, policy.FailClosed} {
		nss = append(nss, policy.Namespace{Name: p.String(), SubjectHeader: "X-User-ID", Rules: rule, OnStoreError: p})
	}
	snap, err := policy.New(nss, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	// The store: a Redis store not connected yet, i.e. down.
	svc, err := service.New(pending.New(), snap, service.Options{Guard: &service.Guard{Breaker: service.Breaker{Disabled: true}}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	h := New(svc, Options{})
	for _, tc := range []struct {
		ns     string
		status int
		retry  string
	}{{"local", 200, ""}, {"open", 200, ""}, {"closed", 429, "1"}} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(`{"namespace":"`+tc.ns+`","subject":"u"}`)))
		if w.Code != tc.status || w.Header().Get("RateLimit-Decided-By") != tc.ns || w.Header().Get("Retry-After") != tc.retry {
			t.Errorf("%s: %d %v %s", tc.ns, w.Code, w.Header(), w.Body)
		}
		w = httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/gate?namespace="+tc.ns, nil)
		r.Header.Set("X-User-ID", "u")
		h.ServeHTTP(w, r)
		if w.Code != tc.status || w.Header().Get("RateLimit-Decided-By") != tc.ns {
			t.Errorf("gate %s: %d %v", tc.ns, w.Code, w.Header())
		}
	}

	st := memstore.New(memstore.Options{SweepInterval: -1})
	defer st.Close()
	svc, err = service.New(st, snap, service.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	New(svc, Options{}).ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(`{"namespace":"open","subject":"u"}`)))
	if w.Code != 200 || w.Header().Get("RateLimit-Decided-By") != "store" {
		t.Errorf("healthy store: %d %v", w.Code, w.Header())
	}
}
