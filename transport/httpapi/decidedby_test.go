package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
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
	fb := memstore.New(memstore.Options{SweepInterval: -1})
	defer fb.Close()
	svc, err := service.New(pending.New(), snap, service.Options{Guard: &service.Guard{Fallback: fb, Breaker: service.Breaker{Disabled: true}}})
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

// blockingStore holds every call until release is closed, telling entered
// of each: a Redis busy with the checks in front.
type blockingStore struct {
	entered chan struct{}
	release chan struct{}
}

func (b blockingStore) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	b.entered <- struct{}{}
	<-b.release
	return limit.Verdict{Allowed: true, N: len(req.Rules)}, nil
}

func (b blockingStore) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	b.entered <- struct{}{}
	<-b.release
	for i := range reqs {
		out[i] = limit.Verdict{Allowed: true, N: len(reqs[i].Rules)}
	}
	return true, nil
}

func (blockingStore) Close() error { return nil }

// A check the instance sheds for overload (the store queue full) is a 503
// with Retry-After and RateLimit-Decided-By: shed, on /v1/check and
// /v1/gate: never a 200, never a 429 that blames the subject's limit.
func TestShedIs503(t *testing.T) {
	rule := []limit.Rule{{Name: "per-hour", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour}}
	snap, err := policy.New([]policy.Namespace{{Name: "orders", SubjectHeader: "X-User-ID", Rules: rule}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	st := blockingStore{entered: make(chan struct{}, 1), release: make(chan struct{})}
	fb := memstore.New(memstore.Options{SweepInterval: -1})
	defer fb.Close()
	svc, err := service.New(st, snap, service.Options{Guard: &service.Guard{Fallback: fb, MaxWaiting: 1}})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()
	h := New(svc, Options{})
	done := make(chan struct{})
	go func() { // the one check the queue holds
		defer close(done)
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(`{"namespace":"orders","subject":"first"}`)))
	}()
	<-st.entered
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(`{"namespace":"orders","subject":"u"}`)))
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Header().Get("RateLimit-Decided-By") != "shed" ||
		!strings.Contains(w.Body.String(), "overloaded") {
		t.Errorf("shed check: %d %v %s", w.Code, w.Header(), w.Body)
	}
	w = httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/v1/gate?namespace=orders", nil)
	r.Header.Set("X-User-ID", "u")
	h.ServeHTTP(w, r)
	if w.Code != 503 || w.Header().Get("Retry-After") != "1" || w.Header().Get("RateLimit-Decided-By") != "shed" {
		t.Errorf("shed gate check: %d %v", w.Code, w.Header())
	}
	close(st.release)
	<-done
}

// Invalid UTF-8 in a subject is a 400 on the JSON API (raw bytes, or an
// unpaired surrogate escape, which encoding/json would both have turned
// into U+FFFD: different raw subjects sharing one bucket) and on the gate.
func TestInvalidUTF8Subject(t *testing.T) {
	f := newFixture(t)
	for _, body := range []string{
		"{\"namespace\":\"orders\",\"subject\":\"user-\xff\"}",
		`{"namespace":"orders","subject":"user-\ud800"}`,
		`{"namespace":"orders","subject":"user-\udc00\ud800"}`,
	} {
		if w := f.check(body); w.Code != 400 || !strings.Contains(w.Body.String(), "UTF-8") && !strings.Contains(w.Body.String(), "surrogate") {
			t.Errorf("%q: %d %s, want 400", body, w.Code, w.Body)
		}
	}
	if w := f.check(`{"namespace":"orders","subject":"user-\ud83d\ude00"}`); w.Code != 200 {
		t.Errorf("a paired surrogate escape: %d %s", w.Code, w.Body)
	}
	if w := f.do(http.MethodGet, "/v1/gate?namespace=orders", "", "X-User-ID", "user-\xff"); w.Code != 400 || !strings.Contains(w.Body.String(), "UTF-8") {
		t.Errorf("gate: %d %s, want 400", w.Code, w.Body)
	}
}
