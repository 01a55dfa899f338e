package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/distributedratelimiter/ratelimiter/reload"
	"github.com/distributedratelimiter/ratelimiter/topk"
)

const adminToken = "s3cret-admin-token-0123456789"

type adminFixture struct {
	*fixture
	ctrl *reload.Controller
}

// newAdminFixture mounts the admin API on the main handler, as serve does
// without --admin-listen.
func newAdminFixture(t *testing.T) *adminFixture {
	t.Helper()
	f := newFixture(t)
	ctrl, err := reload.New(reload.Options{Target: f.svc, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := ctrl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ctrl.Wait() })
	admin, err := NewAdmin(ctrl, AdminOptions{Token: adminToken, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	f.h = New(f.svc, Options{Admin: admin})
	return &adminFixture{fixture: f, ctrl: ctrl}
}

func (f *adminFixture) admin(method, target, body string) *httptest.ResponseRecorder {
	return f.do(method, target, body, "Authorization", "Bearer "+adminToken)
}

func TestNewAdminRejects(t *testing.T) {
	f := newAdminFixture(t)
	if _, err := NewAdmin(f.ctrl, AdminOptions{Token: "short"}); !errors.Is(err, ErrWeakToken) {
		t.Errorf("short token: %v", err)
	}
	if _, err := NewAdmin(nil, AdminOptions{Token: adminToken}); err == nil {
		t.Error("nil Overrides accepted")
	}
}

func TestAdminNeedsTheToken(t *testing.T) {
	f := newAdminFixture(t)
	body := `{"limits":{"per-minute":{"limit":5}}}`
	n := 0
	for _, hdr := range [][]string{
		nil,
		{"Authorization", "Bearer"},
		{"Authorization", "Bearer "},
		{"Authorization", "Basic " + adminToken},
		{"Authorization", adminToken},
		{"Authorization", "Bearer " + adminToken + "x"},
		{"Authorization", "Bearer " + adminToken[:len(adminToken)-1]},
		{"Authorization", "Bearer wrong"},
	} {
		for _, r := range []struct{ method, target string }{
			{"PUT", "/v1/admin/overrides/orders/user-42"},
			{"GET", "/v1/admin/overrides/orders"},
			{"DELETE", "/v1/admin/overrides/orders/user-42"},
			{"GET", "/v1/admin/nothing-here"}, // routes are not revealed
		} {
			// Each from its own address: failures from one are throttled
			// (TestAdminThrottlesFailedAuthentication).
			n++
			w := f.doFrom(fmt.Sprintf("192.0.2.%d:1234", n), r.method, r.target, body, hdr...)
			assertError(t, w, http.StatusUnauthorized, "admin API")
			if w.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%v %s %s: no WWW-Authenticate", hdr, r.method, r.target)
			}
		}
	}
	if got, _ := f.ctrl.List("orders"); len(got) != 0 {
		t.Fatalf("an unauthenticated PUT was stored: %v", got)
	}
	// The scheme is case-insensitive.
	if w := f.do("GET", "/v1/admin/overrides/orders", "", "Authorization", "bearer "+adminToken); w.Code != 200 {
		t.Fatalf("lower-case scheme: %d %s", w.Code, w.Body)
	}
}

func TestAdminOverrideLifecycle(t *testing.T) {
	f := newAdminFixture(t)
	w := f.admin("PUT", "/v1/admin/overrides/orders/user-42", `{"limits":{"per-minute":{"limit":1000,"burst":300,"period":"2m"}},"ttl":"1h"}`)
	if w.Code != 200 {
		t.Fatalf("PUT: %d %s", w.Code, w.Body)
	}
	var v overrideView
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	if v.Active == nil || !*v.Active || v.ExpiresAt == nil || !v.ExpiresAt.Equal(epoch.Add(3600e9)) || *v.Limits["per-minute"].Period != "2m0s" ||
		len(v.Effective) != 2 || v.Effective[0].Limit != 1000 || v.Effective[0].Burst != 300 || v.Effective[0].PeriodMS != 120000 {
		t.Fatalf("PUT answer: %s", w.Body)
	}
	// In force on the next check.
	if c := f.check(`{"namespace":"orders","subject":"user-42"}`); !strings.Contains(c.Body.String(), `"limit":1000,"remaining":299`) {
		t.Fatalf("check after PUT: %s", c.Body)
	}
	// What GET returns reads back as a PUT body.
	w = f.admin("GET", "/v1/admin/overrides/orders/user-42", "")
	if w.Code != 200 {
		t.Fatalf("GET: %d %s", w.Code, w.Body)
	}
	var back struct {
		Limits    json.RawMessage `json:"limits"`
		ExpiresAt string          `json:"expires_at"`
	}
	json.Unmarshal(w.Body.Bytes(), &back)
	again, _ := json.Marshal(back)
	if w := f.admin("PUT", "/v1/admin/overrides/orders/user-42", string(again)); w.Code != 200 {
		t.Fatalf("PUT of what GET returned: %d %s", w.Code, w.Body)
	}
	// Subjects with reserved characters are percent-encoded.
	if w := f.admin("PUT", "/v1/admin/overrides/orders/team%2Fa%20b", `{"limits":{"per-hour":{"limit":5}}}`); w.Code != 200 || !strings.Contains(w.Body.String(), `"subject":"team/a b"`) {
		t.Fatalf("encoded subject: %d %s", w.Code, w.Body)
	}
	w = f.admin("GET", "/v1/admin/overrides/orders", "")
	var list listView
	if err := json.Unmarshal(w.Body.Bytes(), &list); err != nil || w.Code != 200 || len(list.Overrides) != 2 ||
		list.Overrides[0].Subject != "team/a b" || list.Overrides[1].Subject != "user-42" {
		t.Fatalf("list: %d %s", w.Code, w.Body)
	}
	if w := f.do("GET", "/v1/config", ""); !strings.Contains(w.Body.String(), `"runtime_overrides":2`) {
		t.Fatalf("/v1/config: %s", w.Body)
	}
	if w := f.admin("DELETE", "/v1/admin/overrides/orders/user-42", ""); w.Code != http.StatusNoContent || w.Body.Len() != 0 {
		t.Fatalf("DELETE: %d %s", w.Code, w.Body)
	}
	assertError(t, f.admin("DELETE", "/v1/admin/overrides/orders/user-42", ""), 404, "override not found")
	assertError(t, f.admin("GET", "/v1/admin/overrides/orders/user-42", ""), 404, "override not found")
	if c := f.check(`{"namespace":"orders","subject":"user-42"}`); !strings.Contains(c.Body.String(), `"limit":100,`) {
		t.Fatalf("check after DELETE: %s", c.Body)
	}
}

func TestAdminBadInput(t *testing.T) {
	f := newAdminFixture(t)
	const path = "/v1/admin/overrides/orders/user-42"
	for _, c := range []struct {
		body   string
		status int
		want   string
	}{
		{`{`, 400, "request body"},
		{``, 400, "request body"},
		{`[]`, 400, "request body"},
		{`{"limits":{"per-minute":{"limit":5}}} {}`, 400, "more than one JSON value"},
		{`{"limits":{"per-minute":{"limit":5}},"extra":1}`, 400, `unknown field \"extra\"`},
		{`{"limits":{"per-minute":{"limits":5}}}`, 400, `unknown field \"limits\"`},
		{`{}`, 400, "limits: 0 limits, want 1 to 8"},
		{`{"limits":{}}`, 400, "limits: 0 limits, want 1 to 8"},
		{`{"limits":{"per-minute":{}}}`, 400, "limits[per-minute]: want at least one of"},
		{`{"limits":{"per-minute":null}}`, 400, "limits[per-minute]: want at least one of"},
		{`{"limits":{"per-minute":{"limit":0}}}`, 400, "limits[per-minute].limit: 0 is outside [1, 1000000000]"},
		{`{"limits":{"per-minute":{"limit":-5}}}`, 400, "limits[per-minute].limit: -5 is outside"},
		{`{"limits":{"per-minute":{"limit":1.5}}}`, 400, "request body"},
		{`{"limits":{"per-minute":{"limit":"ten"}}}`, 400, "request body"},
		{`{"limits":{"per-minute":{"limit":99999999999999999999}}}`, 400, "request body"},
		{`{"limits":{"per-minute":{"burst":-1}}}`, 400, "limits[per-minute].burst: -1 is outside"},
		{`{"limits":{"per-minute":{"period":"soon"}}}`, 400, `limits[per-minute].period: \"soon\" is not a duration`},
		{`{"limits":{"per-minute":{"period":"0s"}}}`, 400, "limits[per-minute].period: 0s is outside"},
		{`{"limits":{"per-minute":{"period":"1500us"}}}`, 400, "not a whole number of milliseconds"},
		{`{"limits":{"per-minute":{"algorithm":"magic"}}}`, 400, `limits[per-minute].algorithm: unknown algorithm \"magic\"`},
		{`{"limits":{"per-hour":{"burst":5}}}`, 400, "burst: applies only to token_bucket"},
		{`{"limits":{"per-day":{"limit":5}}}`, 400, "limits[per-day]: unknown limit: the namespace has per-minute, per-hour"},
		{`{"limits":{"per-minute":{"limit":5}},"ttl":"1h","expires_at":"2030-01-01T00:00:00Z"}`, 400, "not both"},
		{`{"limits":{"per-minute":{"limit":5}},"ttl":"-1h"}`, 400, "ttl"},
		{`{"limits":{"per-minute":{"limit":5}},"ttl":"forever"}`, 400, "ttl"},
		{`{"limits":{"per-minute":{"limit":5}},"expires_at":"tomorrow"}`, 400, "expires_at"},
		{`{"limits":{"per-minute":{"limit":5}},"expires_at":"2020-01-01T00:00:00Z"}`, 400, "not in the future"},
		{`{"limits":{"a":{"limit":1},"b":{"limit":1},"c":{"limit":1},"d":{"limit":1},"e":{"limit":1},"f":{"limit":1},"g":{"limit":1},"h":{"limit":1},"i":{"limit":1}}}`, 400, "limits: 9 limits, want 1 to 8"},
		{`{"limits":{"per-minute":{"limit":5}}}` + strings.Repeat(" ", DefaultAdminMaxBodyBytes), 413, "larger than"},
		// One strictness with POST /v1/check: no member twice, names as written.
		{`{"limits":{"per-minute":{"limit":5}},"ttl":"1h","ttl":"2h"}`, 400, `duplicate field \"ttl\"`},
		{`{"limits":{"per-minute":{"limit":5,"limit":500}}}`, 400, `duplicate field \"limits.per-minute.limit\"`},
		{`{"limits":{"per-minute":{"limit":5},"per-minute":{"limit":500}}}`, 400, `duplicate field \"limits.per-minute\"`},
		{`{"LIMITS":{"per-minute":{"limit":5}}}`, 400, `field \"LIMITS\" must be written \"limits\"`},
		{`{"limits":{"per-minute":{"Limit":5}}}`, 400, `field \"limits.per-minute.Limit\" must be written \"limit\"`},
		{`{"limits":{"per-minute":{"limit":5}},"TTL":"1h"}`, 400, `field \"TTL\" must be written \"ttl\"`},
	} {
		assertError(t, f.admin("PUT", path, c.body), c.status, c.want)
	}
	assertError(t, f.admin("PUT", "/v1/admin/overrides/payments/u", `{"limits":{"x":{"limit":1}}}`), 404, `unknown namespace \"payments\"`)
	assertError(t, f.admin("PUT", "/v1/admin/overrides/orders/a%0Ab", `{"limits":{"per-minute":{"limit":1}}}`), 400, "control character")
	assertError(t, f.admin("PUT", "/v1/admin/overrides/orders/"+strings.Repeat("x", 300), `{"limits":{"per-minute":{"limit":1}}}`), 400, "subject must be 1 to 256 bytes")
	assertError(t, f.admin("GET", "/v1/admin/overrides/payments", ""), 404, `unknown namespace \"payments\"`)
	assertError(t, f.admin("POST", path, "{}"), 405, "not allowed")
	assertError(t, f.admin("POST", "/v1/admin/overrides/orders", "{}"), 405, "not allowed")
	assertError(t, f.admin("GET", "/v1/admin/elsewhere", ""), 404, "no admin route")
	if got, _ := f.ctrl.List("orders"); len(got) != 0 {
		t.Fatalf("a rejected PUT was stored: %v", got)
	}
}

func TestAdminOffByDefault(t *testing.T) {
	f := newFixture(t)
	assertError(t, f.do("PUT", "/v1/admin/overrides/orders/u", `{}`, "Authorization", "Bearer "+adminToken), 404, "admin API is not served here")
}

func TestAdminTopSubjects(t *testing.T) {
	f := newAdminFixture(t)
	// Off: no tracker.
	if w := f.admin("GET", "/v1/admin/top/orders", ""); w.Code != 404 || !strings.Contains(w.Body.String(), "top-K tracking is off") {
		t.Fatalf("off: %d %s", w.Code, w.Body)
	}
	tr := topk.New(topk.Options{Clock: f.clk})
	for range 3 {
		tr.Add("orders", "abuser")
	}
	tr.Add("orders", "other")
	admin, err := NewAdmin(f.ctrl, AdminOptions{Token: adminToken, Clock: f.clk, Top: tr})
	if err != nil {
		t.Fatal(err)
	}
	f.h = New(f.svc, Options{Admin: admin})
	w := f.admin("GET", "/v1/admin/top/orders?n=1", "")
	var v struct {
		Namespace string       `json:"namespace"`
		Window    string       `json:"window"`
		Subjects  []topk.Entry `json:"subjects"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &v); err != nil || w.Code != 200 {
		t.Fatalf("top: %d %s", w.Code, w.Body)
	}
	if v.Namespace != "orders" || v.Window != "1m0s" || len(v.Subjects) != 1 || v.Subjects[0] != (topk.Entry{Subject: "abuser", Denied: 3}) {
		t.Fatalf("top: %+v", v)
	}
	for target, code := range map[string]int{
		"/v1/admin/top/orders?n=0":    400,
		"/v1/admin/top/orders?n=x":    400,
		"/v1/admin/top/orders?n=1001": 400,
		"/v1/admin/top/payments":      404,
	} {
		if w := f.admin("GET", target, ""); w.Code != code {
			t.Errorf("GET %s: %d, want %d (%s)", target, w.Code, code, w.Body)
		}
	}
	if w := f.do("GET", "/v1/admin/top/orders", ""); w.Code != 401 {
		t.Fatalf("no token: %d", w.Code)
	}
	if w := f.admin("POST", "/v1/admin/top/orders", ""); w.Code != 405 {
		t.Fatalf("POST: %d", w.Code)
	}
}

// Failed authentications are throttled per client address: AuthFailures
// of them are answered 401 and logged in a bounded line; past them every
// request of the address, the right token included, is 429 with
// Retry-After until its budget refills, and is neither logged nor a chance
// to guess; other addresses are not affected. Each is counted by reason.
func TestAdminThrottlesFailedAuthentication(t *testing.T) {
	f := newFixture(t)
	ctrl, err := reload.New(reload.Options{Target: f.svc, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := ctrl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); ctrl.Wait() })
	reg := prometheus.NewRegistry()
	auth, err := NewAuth(adminToken, AuthOptions{Logger: slog.New(slog.NewJSONHandler(f.log, nil)), Registerer: reg, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	admin, err := NewAdmin(ctrl, AdminOptions{Auth: auth, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	f.h = New(f.svc, Options{Admin: admin, Auth: auth})
	huge := "/v1/admin/overrides/orders/" + strings.Repeat("a", 1<<20)
	const attacker = "198.51.100.7:4000"
	for i := range AuthFailures {
		target := "/v1/admin/overrides/orders"
		if i == 0 {
			target = huge
		}
		if w := f.doFrom(attacker, "GET", target, "", "Authorization", "Bearer wrong"); w.Code != 401 {
			t.Fatalf("failure %d: %d %s", i+1, w.Code, w.Body)
		}
	}
	for _, hdr := range [][]string{{"Authorization", "Bearer wrong"}, {"Authorization", "Bearer " + adminToken}} {
		w := f.doFrom(attacker, "GET", "/v1/admin/overrides/orders", "", hdr...)
		if w.Code != 429 || w.Header().Get("Retry-After") != "3" {
			t.Fatalf("after %d failures, %v: %d Retry-After %q, want 429 after 3s (one failure per 3s refills)", AuthFailures, hdr, w.Code, w.Header().Get("Retry-After"))
		}
	}
	if w := f.doFrom("203.0.113.9:5000", "GET", "/v1/admin/overrides/orders", "", "Authorization", "Bearer "+adminToken); w.Code != 200 {
		t.Fatalf("another address with the token: %d", w.Code)
	}
	if w := f.doFrom(attacker, "GET", "/v1/config", ""); w.Code != 429 {
		t.Fatalf("/v1/config from the throttled address: %d", w.Code)
	}
	f.clk.Advance(AuthFailurePeriod / AuthFailures)
	if w := f.doFrom(attacker, "GET", "/v1/admin/overrides/orders", "", "Authorization", "Bearer "+adminToken); w.Code != 200 {
		t.Fatalf("once a failure refilled, with the token: %d %s", w.Code, w.Body)
	}
	lines := strings.Split(strings.TrimSpace(f.log.String()), "\n")
	if len(lines) != AuthFailures {
		t.Errorf("%d log lines, want one per counted failure (%d), none for throttled requests", len(lines), AuthFailures)
	}
	for _, l := range lines {
		if len(l) > 1024 {
			t.Errorf("a failed authentication logged %d bytes, want a bounded line", len(l))
		}
	}
	for reason, want := range map[string]float64{"invalid": AuthFailures, "throttled": 3} {
		if got := testutil.ToFloat64(auth.failures.WithLabelValues(reason)); got != want {
			t.Errorf("failures{reason=%s} = %v, want %v", reason, got, want)
		}
	}
}

// With an admin token set, /v1/config (which lists per-subject overrides)
// needs it; without one it is public, as there is nothing to log in with.
func TestConfigBehindTheToken(t *testing.T) {
	f := newFixture(t)
	if w := f.do("GET", "/v1/config", ""); w.Code != 200 {
		t.Fatalf("no token configured: %d", w.Code)
	}
	auth, err := NewAuth(adminToken, AuthOptions{})
	if err != nil {
		t.Fatal(err)
	}
	f.h = New(f.svc, Options{Auth: auth})
	if w := f.do("GET", "/v1/config", ""); w.Code != 401 || strings.Contains(w.Body.String(), "vip-1") {
		t.Fatalf("token configured, none sent: %d %s", w.Code, w.Body)
	}
	if w := f.do("GET", "/v1/config", "", "Authorization", "Bearer "+adminToken); w.Code != 200 || !strings.Contains(w.Body.String(), "vip-1") {
		t.Fatalf("with the token: %d %s", w.Code, w.Body)
	}
}
