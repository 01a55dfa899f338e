package httpapi

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// epoch is aligned to the hour, so window algorithms start on a boundary.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// ordersPolicy is the running example: 100 per minute with bursts of 20 AND
// 1000 per hour, vip-1 gets 1000 per minute (burst 200); plus "tiny" (5 per
// 10h) and "fifty" (50 per day, whose trusted cost_header is
// X-RateLimit-Cost).
func ordersPolicy(t testing.TB, version string) *policy.Snapshot {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{
		Name:          "orders",
		SubjectHeader: "X-User-ID",
		Rules: []limit.Rule{
			{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Minute, Burst: 20},
			{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: 1000, Period: time.Hour},
		},
		Overrides: []policy.Override{{
			Subject: "vip-1",
			Limits:  map[string]policy.Patch{"per-minute": {Limit: 1000, Burst: 200}},
		}},
	}, {
		Name:          "tiny",
		SubjectHeader: "X-User-ID",
		Rules:         []limit.Rule{{Name: "per-10h", Algorithm: limit.TokenBucket, Limit: 5, Period: 10 * time.Hour}},
	}, {
		Name:          "fifty",
		SubjectHeader: "X-Api-Key",
		CostHeader:    "X-RateLimit-Cost",
		Rules:         []limit.Rule{{Name: "per-day", Algorithm: limit.TokenBucket, Limit: 50, Period: 24 * time.Hour}},
	}}, version, epoch)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

type fixture struct {
	h   http.Handler
	svc *service.Service
	st  *memstore.Store
	clk *clocktest.Fake
	reg *prometheus.Registry
	log *bytes.Buffer
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	f := &fixture{clk: clocktest.New(epoch), reg: prometheus.NewRegistry(), log: &bytes.Buffer{}}
	obs, err := metrics.New(f.reg)
	if err != nil {
		t.Fatal(err)
	}
	f.st = memstore.New(memstore.Options{Clock: f.clk, SweepInterval: -1})
	t.Cleanup(func() { f.st.Close() })
	f.svc, err = service.New(f.st, ordersPolicy(t, "v1"), service.Options{Observer: obs, Clock: f.clk})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: f.log}, nil))
	f.h = New(f.svc, Options{Logger: logger, Gatherer: f.reg})
	return f
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (f *fixture) do(method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	return f.doFrom("", method, target, body, hdr...)
}

// doFrom is do from the client address remote ("" keeps httptest's).
func (f *fixture) doFrom(remote, method, target, body string, hdr ...string) *httptest.ResponseRecorder {
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, target, r)
	if remote != "" {
		req.RemoteAddr = remote
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	w := httptest.NewRecorder()
	f.h.ServeHTTP(w, req)
	return w
}

func (f *fixture) check(body string) *httptest.ResponseRecorder {
	return f.do(http.MethodPost, "/v1/check", body)
}

// wantHeaders asserts exact values of the named headers; "" means absent.
func wantHeaders(t *testing.T, h http.Header, want map[string]string) {
	t.Helper()
	for k, v := range want {
		got, ok := h[http.CanonicalHeaderKey(k)]
		switch {
		case v == "" && ok:
			t.Errorf("header %s = %q, want it absent", k, got)
		case v != "" && (len(got) != 1 || got[0] != v):
			t.Errorf("header %s = %q, want %q", k, got, v)
		}
	}
}

func TestCheckAllowedExact(t *testing.T) {
	f := newFixture(t)
	w := f.check(`{"namespace":"orders","subject":"user-42","cost":1}`)
	if w.Code != http.StatusOK {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := `{"allowed":true,"namespace":"orders","subject":"user-42","retry_after_ms":0,"delay_ms":0,"decided_by":"store","limits":[` +
		`{"name":"per-minute","limit":100,"remaining":19,"reset_after_ms":600,"retry_after_ms":0,"period_ms":60000},` +
		`{"name":"per-hour","limit":1000,"remaining":999,"reset_after_ms":7200000,"retry_after_ms":0,"period_ms":3600000}]}` + "\n"
	if got := w.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	wantHeaders(t, w.Header(), map[string]string{
		"Content-Type":          "application/json",
		"RateLimit-Policy":      `"per-minute";q=100;w=60, "per-hour";q=1000;w=3600`,
		"RateLimit":             `"per-minute";r=19;t=1`,
		"X-RateLimit-Limit":     "100",
		"X-RateLimit-Remaining": "19",
		"X-RateLimit-Reset":     "1",
		"Retry-After":           "",
	})
}

func TestCheckDeniedExact(t *testing.T) {
	f := newFixture(t)
	if w := f.check(`{"namespace":"orders","subject":"user-42","cost":20}`); w.Code != http.StatusOK {
		t.Fatalf("burst of 20: %d %s", w.Code, w.Body)
	}
	f.clk.Advance(time.Nanosecond) // 1ns into the 600ms refill of one token
	w := f.check(`{"namespace":"orders","subject":"user-42"}`)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := `{"allowed":false,"namespace":"orders","subject":"user-42","retry_after_ms":600,"delay_ms":0,"decided_by":"store","limits":[` +
		`{"name":"per-minute","limit":100,"remaining":0,"reset_after_ms":12000,"retry_after_ms":600,"period_ms":60000},` +
		`{"name":"per-hour","limit":1000,"remaining":980,"reset_after_ms":7200000,"retry_after_ms":0,"period_ms":3600000}]}` + "\n"
	if got := w.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	wantHeaders(t, w.Header(), map[string]string{
		"Content-Type":          "application/json",
		"RateLimit-Policy":      `"per-minute";q=100;w=60, "per-hour";q=1000;w=3600`,
		"RateLimit":             `"per-minute";r=0;t=12`,
		"X-RateLimit-Limit":     "100",
		"X-RateLimit-Remaining": "0",
		"X-RateLimit-Reset":     "12",
		"Retry-After":           "1",
	})
	// The override: vip-1 has 1000 per minute with bursts of 200.
	w = f.check(`{"namespace":"orders","subject":"vip-1","cost":200}`)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `{"name":"per-minute","limit":1000,"remaining":0,`) {
		t.Fatalf("vip: %d %s", w.Code, w.Body)
	}
	wantHeaders(t, w.Header(), map[string]string{"RateLimit-Policy": `"per-minute";q=1000;w=60, "per-hour";q=1000;w=3600`})
}

func TestTokenBucketFivePerTenHours(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		w := f.check(`{"namespace":"tiny","subject":"user-1"}`)
		if w.Code != http.StatusOK {
			t.Fatalf("check %d: %d %s", i+1, w.Code, w.Body)
		}
		wantHeaders(t, w.Header(), map[string]string{"X-RateLimit-Remaining": string(rune('4' - i)), "X-RateLimit-Limit": "5"})
	}
	w := f.check(`{"namespace":"tiny","subject":"user-1"}`)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("6th: %d %s", w.Code, w.Body)
	}
	wantHeaders(t, w.Header(), map[string]string{
		"Retry-After":           "7200",
		"X-RateLimit-Remaining": "0",
		"X-RateLimit-Reset":     "36000",
		"RateLimit":             `"per-10h";r=0;t=36000`,
		"RateLimit-Policy":      `"per-10h";q=5;w=36000`,
	})
	if !strings.Contains(w.Body.String(), `"retry_after_ms":7200000,`) {
		t.Fatalf("body %s", w.Body)
	}
	// A peek (cost 0) consumes nothing: after 2h exactly one token is back.
	f.clk.Advance(2 * time.Hour)
	if w := f.check(`{"namespace":"tiny","subject":"user-1","cost":0}`); w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("peek: %d %v", w.Code, w.Header())
	}
	if w := f.check(`{"namespace":"tiny","subject":"user-1","cost":1}`); w.Code != http.StatusOK {
		t.Fatalf("after 2h: %d", w.Code)
	}
	if w := f.check(`{"namespace":"tiny","subject":"user-1","cost":1}`); w.Code != http.StatusTooManyRequests {
		t.Fatalf("after 2h, second: %d", w.Code)
	}
}

func TestCostOverCapacity(t *testing.T) {
	f := newFixture(t)
	w := f.check(`{"namespace":"orders","subject":"user-42","cost":21}`)
	if w.Code != http.StatusTooManyRequests {
		t.Fatalf("status %d: %s", w.Code, w.Body)
	}
	want := `{"allowed":false,"namespace":"orders","subject":"user-42","retry_after_ms":-1,"delay_ms":0,"decided_by":"store",` +
		`"reason":"cost exceeds capacity of limit per-minute","limits":[` +
		`{"name":"per-minute","limit":100,"remaining":20,"reset_after_ms":0,"retry_after_ms":-1,"period_ms":60000},` +
		`{"name":"per-hour","limit":1000,"remaining":1000,"reset_after_ms":0,"retry_after_ms":0,"period_ms":3600000}]}` + "\n"
	if got := w.Body.String(); got != want {
		t.Fatalf("body\n got %s\nwant %s", got, want)
	}
	wantHeaders(t, w.Header(), map[string]string{
		"Retry-After":           "",
		"RateLimit":             `"per-minute";r=20;t=0`,
		"X-RateLimit-Remaining": "20",
	})
}

// TestConcurrentBurstExact sends 200 concurrent checks for one subject over
// real connections; the limit is 50 per day, so exactly 50 pass.
func TestConcurrentBurstExact(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	client := srv.Client()
	var ok, denied atomic.Int64
	var wg sync.WaitGroup
	for range 200 {
		wg.Go(func() {
			resp, err := client.Post(srv.URL+"/v1/check", "application/json",
				strings.NewReader(`{"namespace":"fifty","subject":"hot-user"}`))
			if err != nil {
				t.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				ok.Add(1)
			case http.StatusTooManyRequests:
				denied.Add(1)
			default:
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if ok.Load() != 50 || denied.Load() != 150 {
		t.Fatalf("allowed %d, denied %d; want exactly 50 and 150", ok.Load(), denied.Load())
	}
}

func TestBadInput(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("x", 257)
	tests := []struct {
		name, body string
		status     int
		want       string
	}{
		{"empty body", ``, 400, "empty, want a JSON object"},
		{"malformed", `{"namespace":`, 400, "malformed JSON"},
		{"not JSON", `namespace=orders`, 400, "malformed JSON at offset 0: want a JSON object"},
		{"not an object", `[1,2]`, 400, "want a JSON object, got array"},
		{"unknown field", `{"namespace":"orders","subject":"u","colour":"red"}`, 400, `unknown field \"colour\"`},
		{"trailing data", `{"namespace":"orders","subject":"u"} {"x":1}`, 400, "unexpected data after the JSON object"},
		{"trailing garbage", `{"namespace":"orders","subject":"u"}x`, 400, "unexpected data after the JSON object"},
		{"missing namespace", `{"subject":"u"}`, 400, "namespace is required"},
		{"namespace not a string", `{"namespace":7,"subject":"u"}`, 400, "namespace must be a string, got number"},
		{"missing subject", `{"namespace":"orders"}`, 400, "invalid subject: subject must be 1 to 256 bytes, got 0"},
		{"empty subject", `{"namespace":"orders","subject":""}`, 400, "invalid subject"},
		{"subject too long", `{"namespace":"orders","subject":"` + long + `"}`, 400, "got 257"},
		{"control character", `{"namespace":"orders","subject":"a\u0007b"}`, 400, "control character"},
		{"subject not a string", `{"namespace":"orders","subject":["a"]}`, 400, "subject must be a string, got array"},
		{"negative cost", `{"namespace":"orders","subject":"u","cost":-1}`, 400, "invalid cost: cost -1 is negative"},
		{"fractional cost", `{"namespace":"orders","subject":"u","cost":1.5}`, 400, "cost: must be an integer, got \\\"1.5\\\""},
		{"exponent cost", `{"namespace":"orders","subject":"u","cost":1e3}`, 400, "cost: must be an integer"},
		{"string cost", `{"namespace":"orders","subject":"u","cost":"5"}`, 400, "cost: must be an integer"},
		{"huge cost", `{"namespace":"orders","subject":"u","cost":99999999999999999999}`, 400, "cost: \\\"99999999999999999999\\\" is out of range"},
		{"cost over maximum", `{"namespace":"orders","subject":"u","cost":1000001}`, 400, "cost 1000001 is over the maximum 1000000"},
		{"unknown namespace", `{"namespace":"payments","subject":"u"}`, 404, `unknown namespace \"payments\"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := f.check(tc.body)
			assertError(t, w, tc.status, tc.want)
		})
	}
	t.Run("wrong method", func(t *testing.T) {
		w := f.do(http.MethodGet, "/v1/check", "")
		assertError(t, w, 405, "method GET not allowed; use POST")
		wantHeaders(t, w.Header(), map[string]string{"Allow": "POST"})
	})
	t.Run("unknown route", func(t *testing.T) {
		assertError(t, f.do(http.MethodGet, "/v2/check", ""), 404, "no route for GET /v2/check")
	})
	t.Run("body over 64KiB", func(t *testing.T) {
		body := `{"namespace":"orders","subject":"` + strings.Repeat("a", 64<<10) + `"}`
		assertError(t, f.check(body), 413, "request body is larger than 65536 bytes")
		// Without a Content-Length the limit is found while reading.
		req := httptest.NewRequest(http.MethodPost, "/v1/check", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1
		w := httptest.NewRecorder()
		f.h.ServeHTTP(w, req)
		assertError(t, w, 413, "request body is larger than 65536 bytes")
	})
	// No bad input was a 500, and nothing was logged as a bug.
	if strings.Contains(f.log.String(), "level=ERROR") {
		t.Errorf("bad input logged errors:\n%s", f.log)
	}
}

func assertError(t *testing.T, w *httptest.ResponseRecorder, status int, want string) {
	t.Helper()
	if w.Code != status {
		t.Errorf("status %d, want %d: %s", w.Code, status, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var e struct {
		Error string `json:"error"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Error == "" {
		t.Errorf("body %q is not {\"error\":...}: %v", w.Body, err)
	}
	if !strings.Contains(w.Body.String(), want) {
		t.Errorf("body %s does not contain %s", w.Body, want)
	}
}

// TestHugeBodyThenCheck streams 10 MB over a real connection: the server
// answers 413 without reading it all, and then answers the next check.
func TestHugeBodyThenCheck(t *testing.T) {
	f := newFixture(t)
	srv := httptest.NewServer(f.h)
	defer srv.Close()
	huge := bytes.Repeat([]byte("a"), 10<<20)
	for _, chunked := range []bool{false, true} {
		var body io.Reader = bytes.NewReader(huge)
		if chunked {
			body = io.MultiReader(body) // hides the length: chunked encoding
		}
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/check", body)
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatalf("chunked=%v: %v", chunked, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(b), "larger than 65536 bytes") {
			t.Fatalf("chunked=%v: %d %s", chunked, resp.StatusCode, b)
		}
	}
	resp, err := srv.Client().Post(srv.URL+"/v1/check", "application/json", strings.NewReader(`{"namespace":"tiny","subject":"after"}`))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"remaining":4,`) {
		t.Fatalf("next check: %d %s", resp.StatusCode, b)
	}
}

func TestStoreFailureIs503(t *testing.T) {
	f := newFixture(t)
	if w := f.do(http.MethodGet, "/readyz", ""); w.Code != http.StatusOK || w.Body.String() != "ok\n" {
		t.Fatalf("readyz: %d %s", w.Code, w.Body)
	}
	f.st.Close()
	assertError(t, f.check(`{"namespace":"orders","subject":"u"}`), 503, "rate limit store unavailable: check orders: store: closed")
	if w := f.do(http.MethodGet, "/readyz", ""); w.Code != http.StatusServiceUnavailable || !strings.Contains(w.Body.String(), "closed") {
		t.Fatalf("readyz after close: %d %s", w.Code, w.Body)
	}
	if w := f.do(http.MethodGet, "/healthz", ""); w.Code != http.StatusOK || w.Body.String() != "ok\n" {
		t.Fatalf("healthz: %d %s", w.Code, w.Body)
	}
}

func TestGate(t *testing.T) {
	f := newFixture(t)
	for i, method := range []string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodHead} {
		w := f.do(method, "/v1/gate?namespace=tiny", "", "X-User-ID", "gate-user")
		if w.Code != http.StatusOK || w.Body.Len() != 0 {
			t.Fatalf("%s: %d %q", method, w.Code, w.Body)
		}
		wantHeaders(t, w.Header(), map[string]string{
			"X-RateLimit-Remaining": string(rune('4' - i)),
			"RateLimit-Policy":      `"per-10h";q=5;w=36000`,
			"Retry-After":           "",
		})
	}
	w := f.do(http.MethodGet, "/v1/gate?namespace=tiny", "", "X-User-ID", "gate-user")
	if w.Code != http.StatusTooManyRequests || w.Body.Len() != 0 {
		t.Fatalf("6th: %d %q", w.Code, w.Body)
	}
	wantHeaders(t, w.Header(), map[string]string{"Retry-After": "7200", "X-RateLimit-Remaining": "0"})
	// deny_status: the status of a denial, for proxies (nginx's
	// auth_request) that turn a 429 into a 500; the headers are the same.
	for _, st := range []int{401, 403, 429} {
		w = f.do(http.MethodGet, "/v1/gate?namespace=tiny&deny_status="+strconv.Itoa(st), "", "X-User-ID", "gate-user")
		if w.Code != st || w.Header().Get("Retry-After") != "7200" {
			t.Errorf("deny_status=%d: %d %v", st, w.Code, w.Header())
		}
	}
	if w = f.do(http.MethodGet, "/v1/gate?namespace=tiny&deny_status=403", "", "X-User-ID", "other"); w.Code != http.StatusOK {
		t.Errorf("an admitted request with deny_status: %d", w.Code)
	}

	// Cost from the namespace's trusted cost header; the subject header is
	// per namespace.
	w = f.do(http.MethodGet, "/v1/gate?namespace=fifty", "", "X-Api-Key", "k1", "X-RateLimit-Cost", "50")
	if w.Code != http.StatusOK || w.Header().Get("X-RateLimit-Remaining") != "0" {
		t.Fatalf("cost 50: %d %v", w.Code, w.Header())
	}
	w = f.do(http.MethodGet, "/v1/gate?namespace=fifty", "", "X-Api-Key", "k2", "X-RateLimit-Cost", "51")
	if w.Code != http.StatusTooManyRequests || w.Header().Get("Retry-After") != "" {
		t.Fatalf("cost over capacity: %d %v", w.Code, w.Header())
	}

	bad := []struct {
		target string
		hdr    []string
		status int
		want   string
	}{
		{"/v1/gate?namespace=tiny", nil, 400, "missing subject header X-User-ID"},
		{"/v1/gate?namespace=fifty", []string{"X-User-ID", "u"}, 400, "missing subject header X-Api-Key"},
		{"/v1/gate", []string{"X-User-ID", "u"}, 400, "query parameter namespace is required"},
		{"/v1/gate?namespace=nope", []string{"X-User-ID", "u"}, 404, `unknown namespace \"nope\"`},
		{"/v1/gate?namespace=fifty", []string{"X-Api-Key", "u", "X-RateLimit-Cost", "abc"}, 400, "X-RateLimit-Cost: must be an integer"},
		{"/v1/gate?namespace=fifty", []string{"X-Api-Key", "u", "X-RateLimit-Cost", "-3"}, 400, "-3; a gated request costs at least 1"},
		{"/v1/gate?namespace=fifty", []string{"X-Api-Key", "u", "X-RateLimit-Cost", "0"}, 400, "0; a gated request costs at least 1"},
		{"/v1/gate?namespace=tiny", []string{"X-User-ID", strings.Repeat("u", 300)}, 400, "invalid subject"},
		{"/v1/gate?namespace=tiny&deny_status=200", []string{"X-User-ID", "u"}, 400, "deny_status must be 401, 403 or 429"},
	}
	for _, b := range bad {
		assertError(t, f.do(http.MethodGet, b.target, "", b.hdr...), b.status, b.want)
	}
}

// A client cannot choose its cost at the gate: without a trusted
// cost_header every request costs 1 whatever it sends (a cost of 0 was a
// free pass: 200 of 200 admitted while the budget never moved), and with
// one a cost of 0 is refused.
func TestGateCostIsNotTheClients(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		w := f.do(http.MethodGet, "/v1/gate?namespace=tiny", "", "X-User-ID", "free-rider", "X-RateLimit-Cost", "0")
		if w.Code != 200 || w.Header().Get("X-RateLimit-Remaining") != strconv.Itoa(4-i) {
			t.Fatalf("request %d with X-RateLimit-Cost: 0: %d, remaining %s; want charged 1", i+1, w.Code, w.Header().Get("X-RateLimit-Remaining"))
		}
	}
	if w := f.do(http.MethodGet, "/v1/gate?namespace=tiny", "", "X-User-ID", "free-rider", "X-RateLimit-Cost", "0"); w.Code != 429 {
		t.Fatalf("sixth request: %d, want 429", w.Code)
	}
	if w := f.do(http.MethodGet, "/v1/gate?namespace=tiny", "", "X-User-ID", "big-spender", "X-RateLimit-Cost", "5"); w.Header().Get("X-RateLimit-Remaining") != "4" {
		t.Fatalf("a client-set cost of 5 without a trusted cost header: remaining %s, want 4 (charged 1)", w.Header().Get("X-RateLimit-Remaining"))
	}
}

func TestMetricsAndConfigRoutes(t *testing.T) {
	f := newFixture(t)
	f.check(`{"namespace":"tiny","subject":"u"}`)
	f.check(`{"namespace":"nope","subject":"u"}`)
	w := f.do(http.MethodGet, "/metrics", "")
	if w.Code != http.StatusOK {
		t.Fatalf("metrics: %d", w.Code)
	}
	for _, line := range []string{
		`ratelimiter_decisions_total{limit="per-10h",namespace="tiny",outcome="allowed"} 1`,
		`ratelimiter_check_errors_total{kind="unknown_namespace",namespace="_unknown"} 1`,
		`ratelimiter_config_info{version="v1"} 1`,
	} {
		if !strings.Contains(w.Body.String(), line) {
			t.Errorf("metrics lack %s", line)
		}
	}

	w = f.do(http.MethodGet, "/v1/config", "")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("config: %d %v", w.Code, w.Header())
	}
	var cv struct {
		Version    string    `json:"version"`
		LoadedAt   time.Time `json:"loaded_at"`
		Namespaces []struct {
			Name          string `json:"name"`
			SubjectHeader string `json:"subject_header"`
			Limits        []struct {
				Name      string `json:"name"`
				Algorithm string `json:"algorithm"`
				Limit     int64  `json:"limit"`
				PeriodMS  int64  `json:"period_ms"`
				Burst     int64  `json:"burst"`
			} `json:"limits"`
			Overrides []struct {
				Subject string `json:"subject"`
				Limits  map[string]struct {
					Limit int64 `json:"limit"`
					Burst int64 `json:"burst"`
				} `json:"limits"`
			} `json:"overrides"`
		} `json:"namespaces"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &cv); err != nil {
		t.Fatal(err)
	}
	if cv.Version != "v1" || !cv.LoadedAt.Equal(epoch) || len(cv.Namespaces) != 3 {
		t.Fatalf("config view %+v", cv)
	}
	o := cv.Namespaces[1] // sorted: fifty, orders, tiny
	if o.Name != "orders" || o.SubjectHeader != "X-User-ID" || len(o.Limits) != 2 ||
		o.Limits[0].Name != "per-minute" || o.Limits[0].Algorithm != "token_bucket" || o.Limits[0].Limit != 100 ||
		o.Limits[0].PeriodMS != 60000 || o.Limits[0].Burst != 20 || o.Limits[1].Algorithm != "sliding_window_counter" ||
		len(o.Overrides) != 1 || o.Overrides[0].Subject != "vip-1" || o.Overrides[0].Limits["per-minute"].Limit != 1000 ||
		o.Overrides[0].Limits["per-minute"].Burst != 200 {
		t.Fatalf("orders view %+v", o)
	}
	// Swapping the policy shows at once.
	if _, err := f.svc.Swap(ordersPolicy(t, "v2")); err != nil {
		t.Fatal(err)
	}
	if w := f.do(http.MethodGet, "/v1/config", ""); !strings.Contains(w.Body.String(), `"version":"v2"`) {
		t.Fatalf("after swap: %s", w.Body)
	}
	if w := f.do(http.MethodPost, "/v1/config", "{}"); w.Code != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/config: %d", w.Code)
	}
}

func TestRecoverer(t *testing.T) {
	var logs bytes.Buffer
	a := &api{log: slog.New(slog.NewTextHandler(&logs, nil))}
	h := a.recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {
		var m map[string]int
		m["boom"]++ // a real bug: assignment to a nil map
	}))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/x", nil))
	assertError(t, w, 500, "internal error")
	if !strings.Contains(logs.String(), "handler panicked") || !strings.Contains(logs.String(), "nil map") {
		t.Fatalf("log: %s", logs.String())
	}
	defer func() {
		if v := recover(); v != http.ErrAbortHandler {
			t.Fatalf("ErrAbortHandler must propagate, got %v", v)
		}
	}()
	a.recoverer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })).
		ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/x", nil))
}

func TestAppendString(t *testing.T) {
	for _, s := range []string{"", "plain", `q"uo\te`, "tab\tnl\ncr\r\x00\x1f", "<a>&b", "é€😀", "\u2028\u2029", "bad\xffutf8\xc3", "\x7f"} {
		var back string
		out := appendString(nil, s)
		if err := json.Unmarshal(out, &back); err != nil {
			t.Errorf("%q -> %s: %v", s, out, err)
			continue
		}
		want, _ := json.Marshal(s)
		if string(out) != string(want) {
			t.Errorf("%q: got %s, encoding/json gives %s", s, out, want)
		}
	}
}

// FuzzCheckDecode feeds arbitrary bodies to POST /v1/check: the answer is
// always one of the expected statuses with a JSON body, never a panic or 500.
// It also holds the hand-written decoder to encoding/json: both accept the
// same bodies, with the same values (see oracleDecode).
func FuzzCheckDecode(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	fx := newFixture(f)
	allowed := map[int]bool{200: true, 400: true, 404: true, 413: true, 429: true}
	f.Fuzz(func(t *testing.T, body string) {
		w := fx.check(body)
		if !allowed[w.Code] {
			t.Fatalf("status %d for %q: %s", w.Code, body, w.Body)
		}
		if !json.Valid(w.Body.Bytes()) {
			t.Fatalf("invalid JSON answer for %q: %s", body, w.Body)
		}
		if strings.Contains(body, "descriptors") {
			return // decodeDescriptors: encoding/json itself (TestCheckDescriptorsDecode)
		}
		got, gotErr := decodeCheck([]byte(body))
		want, wantOK := oracleDecode([]byte(body))
		switch {
		case wantOK && gotErr != nil:
			t.Fatalf("%q: decodeCheck rejects (%v), encoding/json accepts %+v", body, gotErr, want)
		case !wantOK && gotErr == nil:
			t.Fatalf("%q: decodeCheck accepts %+v, encoding/json rejects", body, got)
		case wantOK && !reflect.DeepEqual(got, want):
			t.Fatalf("%q: decodeCheck %+v, encoding/json %+v", body, got, want)
		}
	})
}

var fuzzSeeds = []string{
	`{"namespace":"orders","subject":"user-42","cost":1}`,
	`{"namespace":"orders","subject":"user-42"}`,
	` { "namespace" : "tiny" , "subject" : "u" , "cost" : 0 } ` + "\n",
	`{"namespace":"orders","subject":"u","cost":21}`,
	`{"namespace":"nope","subject":"u"}`,
	`{"namespace":"orders","subject":"a\u0000"}`,
	`{"namespace":"orders","subject":"\ud83d\ude00 \ud800x \udc00 \u00e9\/\b\f\n\r\t"}`,
	"{\"namespace\":\"orders\",\"subject\":\"bad\xff\xc3utf8 \u2028\"}",
	`{"namespace":"orders","subject":"u","cost":1.5}`,
	`{"namespace":"orders","subject":"u","cost":-0}`,
	`{"namespace":"orders","subject":"u","cost":1e2}`,
	`{"namespace":"orders","subject":"u","cost":-9223372036854775808}`,
	`{"namespace":"orders","subject":"u","cost":9223372036854775808}`,
	`{"namespace":"orders","subject":"u","cost":null,"x":1}`,
	`{"namespace":"orders","subject":"u","subject":"v"}`,
	`{"Namespace":"orders","subject":"u"}`,
	`{"namespace":"orders","subject":"u"}{}`,
	`{"namespace":null,"subject":"u"}`,
	`{"namespace":"orders","subject":true}`,
	`{"namespace":"orders","subject":"u",}`,
	`{}`, `[]`, `null`, `""`, `{`, ``, "\xff", `{"namespace":"orders","subject":"u","cost":01}`,
}

// oracleDecode decodes a check body with encoding/json under decodeCheck's
// rules (case-sensitive members, no duplicates, integer cost, null is
// absent) and reports whether it is accepted.
func oracleDecode(body []byte) (service.Request, bool) {
	req := service.Request{Cost: 1}
	// Where encoding/json replaces invalid UTF-8 and unpaired surrogates
	// with U+FFFD, the check decoder refuses them (two raw subjects must not
	// share a bucket).
	if !json.Valid(body) || !utf8.Valid(body) || unpairedSurrogate(body) {
		return req, false
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return req, false
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return req, false
		}
		key, _ := tok.(string)
		if seen[key] {
			return req, false
		}
		seen[key] = true
		var v any
		if err := dec.Decode(&v); err != nil {
			return req, false
		}
		switch key {
		case "namespace", "subject":
			s, isStr := v.(string)
			if v != nil && !isStr {
				return req, false
			}
			if key == "namespace" {
				req.Namespace = s
			} else {
				req.Subject = s
			}
		case "cost":
			if v == nil {
				continue
			}
			n, isNum := v.(json.Number)
			if !isNum {
				return req, false
			}
			c, err := strconv.ParseInt(string(n), 10, 64)
			if err != nil {
				return req, false
			}
			req.Cost = c
		default:
			return req, false
		}
	}
	return req, req.Namespace != ""
}

// discardWriter is a minimal ResponseWriter for benchmarks.
type discardWriter struct {
	h      http.Header
	status int
}

func (d *discardWriter) Header() http.Header         { return d.h }
func (d *discardWriter) Write(p []byte) (int, error) { return len(p), nil }
func (d *discardWriter) WriteHeader(s int)           { d.status = s }

// BenchmarkCheckHandler measures one allowed POST /v1/check through the
// whole handler (decode, service, memstore, metrics, headers, body), without
// the network.
func BenchmarkCheckHandler(b *testing.B) {
	st := memstore.New(memstore.Options{})
	defer st.Close()
	obs, err := metrics.New(prometheus.NewRegistry())
	if err != nil {
		b.Fatal(err)
	}
	snap, err := policy.New([]policy.Namespace{{
		Name: "orders", SubjectHeader: "X-User-ID",
		Rules: []limit.Rule{
			{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 1e8, Period: time.Minute, Burst: 1e6},
			{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: 1e9, Period: time.Hour},
		},
	}}, "bench", epoch)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := service.New(st, snap, service.Options{Observer: obs})
	if err != nil {
		b.Fatal(err)
	}
	h := New(svc, Options{})
	body := []byte(`{"namespace":"orders","subject":"user-42","cost":1}`)
	rd := bytes.NewReader(body)
	req := httptest.NewRequest(http.MethodPost, "/v1/check", nil)
	req.ContentLength = int64(len(body))
	w := &discardWriter{h: make(http.Header, 8)}
	b.ReportAllocs()
	for b.Loop() {
		rd.Reset(body)
		req.Body = io.NopCloser(rd)
		clear(w.h)
		h.ServeHTTP(w, req)
		if w.status != http.StatusOK {
			b.Fatalf("status %d", w.status)
		}
	}
}

// unpairedSurrogate reports whether a JSON text escapes a UTF-16 surrogate
// (\ud800-\udfff) that is not a high one directly followed by an escaped
// low one.
func unpairedSurrogate(b []byte) bool {
	hex := func(i int) (rune, bool) {
		if i+6 > len(b) || b[i] != '\\' || b[i+1] != 'u' {
			return 0, false
		}
		n, err := strconv.ParseUint(string(b[i+2:i+6]), 16, 32)
		return rune(n), err == nil
	}
	in := false
	for i := 0; i < len(b); i++ {
		switch {
		case !in:
			in = b[i] == '"'
		case b[i] == '"':
			in = false
		case b[i] == '\\':
			r, ok := hex(i)
			if !ok {
				i++ // a one-character escape
				continue
			}
			switch {
			case r >= 0xd800 && r < 0xdc00:
				lo, ok := hex(i + 6)
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return true
				}
				i += 11
			case r >= 0xdc00 && r <= 0xdfff:
				return true
			default:
				i += 5
			}
		}
	}
	return false
}
