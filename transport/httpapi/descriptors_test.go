package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/reload"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/transport/extract"
)

func edgeHandler(t *testing.T) http.Handler {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{
		Name:  "edge",
		Rules: []limit.Rule{{Name: "per-user", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour}},
		Descriptors: []policy.Matcher{
			{Key: "remote_address", Rules: []limit.Rule{{Name: "per-ip", Algorithm: limit.FixedWindow, Limit: 2, Period: time.Hour}}},
			{Key: "remote_address", Value: "10.0.0.1", Unlimited: true},
			{Key: "remote_address", Value: "6.6.6.6", Blocked: true, Unit: time.Minute},
		},
	}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	svc, err := service.New(st, snap, service.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	return New(svc, Options{Logger: slog.New(slog.DiscardHandler)})
}

type checkAnswer struct {
	Allowed bool `json:"allowed"`
	Limits  []struct {
		Name      string `json:"name"`
		Remaining int64  `json:"remaining"`
	} `json:"limits"`
	Descriptors []struct {
		Limited   bool `json:"limited"`
		Unlimited bool `json:"unlimited"`
		Allowed   bool `json:"allowed"`
		Limits    []struct {
			Name      string `json:"name"`
			Remaining int64  `json:"remaining"`
		} `json:"limits"`
	} `json:"descriptors"`
	Error string `json:"error"`
}

func postCheck(t *testing.T, h http.Handler, body string) (int, checkAnswer) {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(body)))
	var a checkAnswer
	if err := json.Unmarshal(w.Body.Bytes(), &a); err != nil {
		t.Fatalf("%s: %v", w.Body, err)
	}
	return w.Code, a
}

// POST /v1/check with descriptors: every descriptor's answer in the body,
// the binding limit in "limits", 429 when one denies and nothing charged.
func TestCheckDescriptorsHTTP(t *testing.T) {
	h := edgeHandler(t)
	body := `{"namespace":"edge","subject":"u","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.7"}]},{"entries":[{"key":"remote_address","value":"10.0.0.1"}]}]}`
	for i := range 2 {
		code, a := postCheck(t, h, body)
		if code != 200 || !a.Allowed || len(a.Descriptors) != 2 || a.Descriptors[0].Limits[0].Remaining != int64(1-i) || !a.Descriptors[1].Unlimited || a.Descriptors[1].Limited {
			t.Fatalf("check %d: %d %+v", i, code, a)
		}
	}
	code, a := postCheck(t, h, body)
	if code != 429 || a.Allowed || a.Limits[0].Name != "per-ip" || a.Descriptors[0].Allowed {
		t.Fatalf("over the IP limit: %d %+v", code, a)
	}
	// Nothing charged: the user has 8 of 10.
	if _, a := postCheck(t, h, `{"namespace":"edge","subject":"u","cost":0}`); a.Limits[0].Remaining != 8 {
		t.Fatalf("user after the denial: %+v", a)
	}
	// A descriptor's own cost, and a request of descriptors alone.
	if code, a := postCheck(t, h, `{"namespace":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.8"}],"cost":2}]}`); code != 200 || a.Descriptors[0].Limits[0].Remaining != 0 {
		t.Fatalf("cost 2: %d %+v", code, a)
	}
}

func TestCheckDescriptorsDecode(t *testing.T) {
	h := edgeHandler(t)
	for body, want := range map[string]string{
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"a","value":"b"}],"Cost":1}]}`:           `"descriptors[].Cost" must be written "cost"`,
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"a","key":"b"}]}]}`:                      `duplicate field "descriptors[].entries[].key"`,
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"","value":"b"}]}]}`:                     "empty key",
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"a","value":"b"}],"cost":-1}]}`:          "cost -1",
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"a"}],"extra":1}]}`:                      `unknown field "extra"`,
		`{"namespace":"edge","descriptors":[]}`:                                                         "subject is required",
		`{"namespace":"edge","subject":"u","descriptors":[{"entries":[{"key":"a"}]}]} {}`:               "after the JSON object",
		"{\"namespace\":\"edge\",\"descriptors\":[{\"entries\":[{\"key\":\"a\",\"value\":\"\xff\"}]}]}": "UTF-8",
	} {
		code, a := postCheck(t, h, body)
		if code != 400 || !strings.Contains(a.Error, want) {
			t.Errorf("%s: %d %q, want 400 with %q", body, code, a.Error, want)
		}
	}
}

// A request no limit applies to is allowed, with no rate limit headers.
func TestCheckDescriptorsNothingLimited(t *testing.T) {
	h := edgeHandler(t)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(
		`{"namespace":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.1"}]},{"entries":[{"key":"other","value":"x"}]}]}`)))
	if w.Code != 200 {
		t.Fatalf("%d %s", w.Code, w.Body)
	}
	for _, k := range []string{"RateLimit", "RateLimit-Policy", "X-RateLimit-Limit", "Retry-After"} {
		if v := w.Header().Get(k); v != "" {
			t.Errorf("%s: %q with no limit", k, v)
		}
	}
	var a checkAnswer
	json.Unmarshal(w.Body.Bytes(), &a)
	if !a.Allowed || len(a.Limits) != 0 || len(a.Descriptors) != 2 {
		t.Fatalf("%s", w.Body)
	}
}

// A blocked descriptor is a 429 with a limit of 0 and its window's wait.
func TestCheckDescriptorsBlocked(t *testing.T) {
	h := edgeHandler(t)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(
		`{"namespace":"edge","subject":"u","descriptors":[{"entries":[{"key":"remote_address","value":"6.6.6.6"}]}]}`)))
	if w.Code != 429 || w.Header().Get("Retry-After") != "60" || w.Header().Get("RateLimit-Decided-By") != "policy" {
		t.Fatalf("%d %v %s", w.Code, w.Header(), w.Body)
	}
	var a checkAnswer
	json.Unmarshal(w.Body.Bytes(), &a)
	if a.Allowed || a.Descriptors[0].Allowed || a.Descriptors[0].Limits[0].Name != "blocked" {
		t.Fatalf("%s", w.Body)
	}
}

// A limit in shadow mode that would deny: the request passes, and the
// body and the RateLimit-Shadow header say what enforcing would have done.
func TestCheckShadowHTTP(t *testing.T) {
	snap, err := policy.New([]policy.Namespace{{Name: "s", Rules: []limit.Rule{
		{Name: "enforced", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Hour},
		{Name: "trial", Algorithm: limit.FixedWindow, Limit: 1, Period: time.Hour, Shadow: true},
	}}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	svc, _ := service.New(st, snap, service.Options{Clock: clk})
	h := New(svc, Options{Logger: slog.New(slog.DiscardHandler)})
	for i := range 2 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodPost, "/v1/check", strings.NewReader(`{"namespace":"s","subject":"u"}`)))
		shadow := i == 1
		if w.Code != 200 || (w.Header().Get("RateLimit-Shadow") == "denied") != shadow || strings.Contains(w.Body.String(), `"shadow_denied":true`) != shadow {
			t.Fatalf("check %d: %d %v %s", i, w.Code, w.Header(), w.Body)
		}
	}
}

// The admin API overrides a descriptor: PUT, GET and DELETE of
// /v1/admin/overrides/{namespace}/descriptor/{key=value,...}; the check of
// that descriptor applies it at once.
func TestAdminDescriptorOverride(t *testing.T) {
	snap, err := policy.New([]policy.Namespace{{Name: "edge", Descriptors: []policy.Matcher{
		{Key: "remote_address", Rules: []limit.Rule{{Name: "per-ip", Algorithm: limit.FixedWindow, Limit: 2, Period: time.Hour}}},
	}}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	svc, _ := service.New(st, snap, service.Options{Clock: clk})
	ctrl, err := reload.New(reload.Options{Target: svc, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := ctrl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ctrl.Wait() })
	admin, err := NewAdmin(ctrl, AdminOptions{Token: adminToken, Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	h := New(svc, Options{Admin: admin, Logger: slog.New(slog.DiscardHandler)})
	do := func(method, target, body string) *httptest.ResponseRecorder {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		r.Header.Set("Authorization", "Bearer "+adminToken)
		h.ServeHTTP(w, r)
		return w
	}
	const path = "/v1/admin/overrides/edge/descriptor/remote_address=10.0.0.7"
	w := do(http.MethodPut, path, `{"limits":{"per-ip":{"limit":5}}}`)
	if w.Code != 200 || !strings.Contains(w.Body.String(), `"descriptor":"remote_address=10.0.0.7"`) || strings.Contains(w.Body.String(), `"subject"`) {
		t.Fatalf("PUT: %d %s", w.Code, w.Body)
	}
	body := `{"namespace":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.7"}]}]}`
	if _, a := postCheck(t, h, body); a.Descriptors[0].Limits[0].Remaining != 4 {
		t.Fatalf("the override is not in force: %+v", a)
	}
	if w := do(http.MethodGet, path, ""); w.Code != 200 || !strings.Contains(w.Body.String(), `"active":true`) {
		t.Fatalf("GET: %d %s", w.Code, w.Body)
	}
	if w := do(http.MethodGet, "/v1/admin/overrides/edge", ""); !strings.Contains(w.Body.String(), `"descriptor":"remote_address=10.0.0.7"`) {
		t.Fatalf("list: %s", w.Body)
	}
	for target, want := range map[string]string{
		"/v1/admin/overrides/edge/descriptor/nothing=here": "matches no limit",
		"/v1/admin/overrides/edge/descriptor/nonsense":     "not key=value",
		"/v1/admin/overrides/edge/someone":                 "limits descriptors only",
	} {
		if w := do(http.MethodPut, target, `{"limits":{"per-ip":{"limit":5}}}`); w.Code != 400 || !strings.Contains(w.Body.String(), want) {
			t.Errorf("PUT %s: %d %s", target, w.Code, w.Body)
		}
	}
	if w := do(http.MethodDelete, path, ""); w.Code != 204 {
		t.Fatalf("DELETE: %d %s", w.Code, w.Body)
	}
	if _, a := postCheck(t, h, body); a.Descriptors[0].Limits[0].Remaining != 0 {
		t.Fatalf("after DELETE: %+v", a)
	}
}

// The gate builds a namespace's request descriptors: here a namespace of
// descriptors only, limited per client network (an IPv6 /64) through the
// trusted proxy's X-Forwarded-For.
func TestGateRequestDescriptors(t *testing.T) {
	snap, err := policy.New([]policy.Namespace{{Name: "edge", SubjectHeader: "X-User-ID",
		Descriptors:        []policy.Matcher{{Key: "net", Rules: []limit.Rule{{Name: "per-net", Algorithm: limit.FixedWindow, Limit: 2, Period: time.Hour}}}},
		RequestDescriptors: []policy.RequestDescriptor{{{Key: "net", From: policy.FromClientAddress}}},
	}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	clk := clocktest.New(epoch)
	st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	t.Cleanup(func() { st.Close() })
	svc, _ := service.New(st, snap, service.Options{Clock: clk})
	trusted, _ := extract.ParseTrusted("10.0.0.0/8")
	h := New(svc, Options{Logger: slog.New(slog.DiscardHandler), Extract: extract.Options{TrustedProxies: trusted}})
	gate := func(xff string) int {
		w := httptest.NewRecorder()
		r := httptest.NewRequest(http.MethodGet, "/v1/gate?namespace=edge", nil)
		r.RemoteAddr = "10.1.1.1:80"
		r.Header.Set("X-Forwarded-For", xff)
		h.ServeHTTP(w, r)
		return w.Code
	}
	// Two addresses of one /64 are one client; another /64 is another.
	for i, c := range []struct {
		xff  string
		want int
	}{{"2001:db8:1:2::1", 200}, {"2001:db8:1:2::ffff", 200}, {"2001:db8:1:2:abcd::9", 429}, {"2001:db8:1:3::1", 200}} {
		if got := gate(c.xff); got != c.want {
			t.Fatalf("request %d from %s: %d, want %d", i, c.xff, got, c.want)
		}
	}
}
