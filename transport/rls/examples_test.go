package rls

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
	"github.com/distributedratelimiter/ratelimiter/store/storetest"
)

// The examples of envoyproxy/ratelimit's README (1 to 11), each a
// configuration as its README writes it and the answers it states, asked
// over gRPC with go-control-plane's client and over POST /json, on the
// memory store and on a real Redis. Where this limiter answers otherwise
// on purpose (a denied request charges nothing), the expectation says so.

// want is one descriptor status expected: code, limit_remaining (-1: not
// checked), and current_limit's requests_per_unit and unit ("" for none).
type want struct {
	code      rlsv3.RateLimitResponse_Code
	remaining int64
	rpu       uint32
	unit      string
}

var (
	ok   = rlsv3.RateLimitResponse_OK
	over = rlsv3.RateLimitResponse_OVER_LIMIT
)

// noLimit is the status of a descriptor nothing limits.
var noLimit = want{code: ok}

type step struct {
	times int        // how many times the request is sent (1 when 0)
	desc  [][]string // descriptors: key, value, key, value...
	want  []want     // statuses of the last one
}

type example struct {
	name    string
	files   map[string]string
	domain  string
	steps   []step
	metrics []string // key labels of ratelimiter_descriptor_hits_total that must exist
}

var examples = []example{
	{name: "1 flat config", domain: "mongo_cps", files: map[string]string{"1.yaml": `domain: mongo_cps
descriptors:
  - key: database
    value: users
    rate_limit:
      unit: second
      requests_per_unit: 500
  - key: database
    value: default
    rate_limit:
      unit: second
      requests_per_unit: 500
`}, steps: []step{
		{times: 500, desc: [][]string{{"database", "users"}}, want: []want{{ok, 0, 500, "SECOND"}}},
		{desc: [][]string{{"database", "users"}}, want: []want{{over, 0, 500, "SECOND"}}},
		{desc: [][]string{{"database", "default"}}, want: []want{{ok, 499, 500, "SECOND"}}},
	}},
	{name: "2 nested and several descriptors", domain: "messaging", files: map[string]string{"2.yaml": `domain: messaging
descriptors:
  - key: message_type
    value: marketing
    descriptors:
      - key: to_number
        rate_limit:
          unit: day
          requests_per_unit: 5
  - key: to_number
    rate_limit:
      unit: day
      requests_per_unit: 100
`}, steps: []step{
		{times: 5, desc: [][]string{{"message_type", "marketing", "to_number", "2061111111"}, {"to_number", "2061111111"}},
			want: []want{{ok, 0, 5, "DAY"}, {ok, 95, 100, "DAY"}}},
		// The sixth is over the marketing limit; the per-number limit keeps
		// its 95 (envoyproxy/ratelimit would have charged it: 94).
		{desc: [][]string{{"message_type", "marketing", "to_number", "2061111111"}, {"to_number", "2061111111"}},
			want: []want{{over, 0, 5, "DAY"}, {ok, 95, 100, "DAY"}}},
		{desc: [][]string{{"to_number", "2061111111"}}, want: []want{{ok, 94, 100, "DAY"}}},
		{desc: [][]string{{"message_type", "marketing", "to_number", "2062222222"}}, want: []want{{ok, 4, 5, "DAY"}}},
		{desc: [][]string{{"message_type", "marketing"}}, want: []want{noLimit}}, // a placeholder
	}},
	{name: "3 matching order and a blacklist", domain: "edge_proxy_per_ip", files: map[string]string{"3.yaml": `domain: edge_proxy_per_ip
descriptors:
  - key: remote_address
    rate_limit:
      unit: second
      requests_per_unit: 10
  - key: remote_address
    value: 50.0.0.5
    rate_limit:
      unit: second
      requests_per_unit: 0
`}, steps: []step{
		{times: 10, desc: [][]string{{"remote_address", "50.0.0.1"}}, want: []want{{ok, 0, 10, "SECOND"}}},
		{desc: [][]string{{"remote_address", "50.0.0.1"}}, want: []want{{over, 0, 10, "SECOND"}}},
		{desc: [][]string{{"remote_address", "50.0.0.5"}}, want: []want{{over, 0, 0, "SECOND"}}},
	}, metrics: []string{"remote_address", "remote_address_50_0_0_5"}},
	{name: "4 depth must match, too deep", domain: "example4", files: map[string]string{"4.yaml": `domain: example4
descriptors:
  - key: key
    value: value
    rate_limit:
      requests_per_unit: 300
      unit: second
`}, steps: []step{
		{desc: [][]string{{"key", "value", "subkey", "subvalue"}}, want: []want{noLimit}},
		{desc: [][]string{{"key", "value"}}, want: []want{{ok, 299, 300, "SECOND"}}},
	}},
	{name: "4 depth must match, nested", domain: "example4", files: map[string]string{"4.yaml": `domain: example4
descriptors:
  - key: key
    value: value
    descriptors:
      - key: subkey
        rate_limit:
          requests_per_unit: 300
          unit: second
`}, steps: []step{
		{desc: [][]string{{"key", "value", "subkey", "subvalue"}}, want: []want{{ok, 299, 300, "SECOND"}}},
	}},
	{name: "5 unlimited", domain: "internal", files: map[string]string{"5.yaml": `domain: internal
descriptors:
  - key: ldap
    rate_limit:
      unlimited: true
  - key: azure
    rate_limit:
      unit: minute
      requests_per_unit: 100
`}, steps: []step{
		{times: 3, desc: [][]string{{"ldap", "x"}}, want: []want{{ok, 4294967295, 0, ""}}},
		{desc: [][]string{{"azure", "x"}}, want: []want{{ok, 99, 100, "MINUTE"}}},
	}},
	{name: "6 shadow mode", domain: "example6", files: map[string]string{"6.yaml": `domain: example6
descriptors:
  - key: service
    descriptors:
      - key: user
        value: user-a
        rate_limit:
          requests_per_unit: 10
          unit: second
        shadow_mode: true
      - key: user
        value: user-b
        rate_limit:
          requests_per_unit: 20
          unit: second
`}, steps: []step{
		{times: 12, desc: [][]string{{"service", "auth-service", "user", "user-a"}}, want: []want{{ok, 0, 10, "SECOND"}}},
		{times: 20, desc: [][]string{{"service", "auth-service", "user", "user-b"}}, want: []want{{ok, 0, 20, "SECOND"}}},
		{desc: [][]string{{"service", "auth-service", "user", "user-b"}}, want: []want{{over, 0, 20, "SECOND"}}},
	}},
	{name: "7 replaces", domain: "example7", files: map[string]string{"7.yaml": `domain: example7
descriptors:
  - key: key_1
    value: value_1
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          name: specific_limit
          requests_per_unit: 5
          unit: second
  - key: key_2
    value: value_2
    descriptors:
      - key: user
        value: bkthomps
        rate_limit:
          replaces:
            - name: specific_limit
          requests_per_unit: 10
          unit: second
`}, steps: []step{
		{times: 10, desc: [][]string{{"key_1", "value_1", "user", "bkthomps"}, {"key_2", "value_2", "user", "bkthomps"}},
			want: []want{noLimit, {ok, 0, 10, "SECOND"}}},
		{desc: [][]string{{"key_1", "value_1", "user", "bkthomps"}, {"key_2", "value_2", "user", "bkthomps"}},
			want: []want{noLimit, {over, 0, 10, "SECOND"}}},
		// The replaced limit was not charged.
		{desc: [][]string{{"key_1", "value_1", "user", "bkthomps"}}, want: []want{{ok, 4, 5, "SECOND"}}},
	}},
	{name: "8 detailed_metric", domain: "example8", files: map[string]string{"8.yaml": `domain: example8
descriptors:
  - key: key1
    detailed_metric: true
    rate_limit:
      unit: minute
      requests_per_unit: 10
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 20
`}, steps: []step{
		{desc: [][]string{{"key1", "unspecified_value"}}, want: []want{{ok, 9, 10, "MINUTE"}}},
		{desc: [][]string{{"key1", "unspecified_value2"}}, want: []want{{ok, 9, 10, "MINUTE"}}},
		{desc: [][]string{{"key1", "value1"}}, want: []want{{ok, 19, 20, "MINUTE"}}},
	}, metrics: []string{"key1_unspecified_value", "key1_unspecified_value2", "key1_value1"}},
	{name: "9 wildcards", domain: "example9", files: map[string]string{"9.yaml": `domain: example9
descriptors:
  - key: key1
    value: value*
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: path
    value: /api/*/action
    rate_limit:
      unit: minute
      requests_per_unit: 20
  - key: route
    value: /api/*/resource/*/action
    rate_limit:
      unit: minute
      requests_per_unit: 20
`}, steps: []step{
		{desc: [][]string{{"key1", "valueXYZ"}}, want: []want{{ok, 19, 20, "MINUTE"}}},
		{desc: [][]string{{"key1", "value1"}}, want: []want{{ok, 19, 20, "MINUTE"}}}, // its own counter
		{desc: [][]string{{"path", "/api/123/action"}}, want: []want{{ok, 19, 20, "MINUTE"}}},
		{desc: [][]string{{"path", "/api/user-id/action"}}, want: []want{{ok, 19, 20, "MINUTE"}}},
		{desc: [][]string{{"path", "/api/123/other"}}, want: []want{noLimit}},
		{desc: [][]string{{"route", "/api/v1/resource/123/action"}}, want: []want{{ok, 19, 20, "MINUTE"}}},
	}, metrics: []string{"key1_value*", "path_/api/*/action"}},
	{name: "10 value_to_metric", domain: "example10", files: map[string]string{"10.yaml": `domain: example10
descriptors:
  - key: route
    value_to_metric: true
    descriptors:
      - key: http_method
        value_to_metric: true
        descriptors:
          - key: subject_id
            rate_limit:
              unit: minute
              requests_per_unit: 60
`, "10b.yaml": `domain: example10_wildcard
descriptors:
  - key: user
    value_to_metric: true
    descriptors:
      - key: action
        value: read*
        value_to_metric: true
        descriptors:
          - key: resource
            rate_limit:
              unit: minute
              requests_per_unit: 100
`}, steps: []step{
		{desc: [][]string{{"route", "api", "http_method", "GET", "subject_id", "123"}}, want: []want{{ok, 59, 60, "MINUTE"}}},
		{desc: [][]string{{"route", "web", "http_method", "POST", "subject_id", "456"}}, want: []want{{ok, 59, 60, "MINUTE"}}},
	}, metrics: []string{"route_api.http_method_GET.subject_id", "route_web.http_method_POST.subject_id"}},
	{name: "11 share_threshold", domain: "example11", files: map[string]string{"11.yaml": `domain: example11
descriptors:
  - key: files
    value: files/*
    share_threshold: true
    rate_limit:
      unit: hour
      requests_per_unit: 10
  - key: files_no_share
    value: files_no_share/*
    share_threshold: false
    rate_limit:
      unit: hour
      requests_per_unit: 10
`}, steps: []step{
		{times: 5, desc: [][]string{{"files", "files/a.pdf"}}, want: []want{{ok, 5, 10, "HOUR"}}},
		{times: 5, desc: [][]string{{"files", "files/b.csv"}}, want: []want{{ok, 0, 10, "HOUR"}}},
		{desc: [][]string{{"files", "files/c.txt"}}, want: []want{{over, 0, 10, "HOUR"}}},
		{times: 10, desc: [][]string{{"files_no_share", "files_no_share/a.pdf"}}, want: []want{{ok, 0, 10, "HOUR"}}},
		{desc: [][]string{{"files_no_share", "files_no_share/b.csv"}}, want: []want{{ok, 9, 10, "HOUR"}}},
	}, metrics: []string{"files_files/*", "files_no_share_files_no_share/*"}},
	// Not a README example: the longest unit, a year of 365 days.
	{name: "year", domain: "yearly", files: map[string]string{"y.yaml": `domain: yearly
descriptors:
  - key: plan
    value: free
    rate_limit: {unit: year, requests_per_unit: 2}
`}, steps: []step{
		{times: 2, desc: [][]string{{"plan", "free"}}, want: []want{{ok, 0, 2, "YEAR"}}},
		{desc: [][]string{{"plan", "free"}}, want: []want{{over, 0, 2, "YEAR"}}},
	}},
}

// envoyEnv is one example's service, on one store, behind gRPC and /json.
type envoyEnv struct {
	client rlsv3.RateLimitServiceClient
	json   string // the URL of POST /json
	reg    *prometheus.Registry
}

func newEnvoyEnv(t *testing.T, files map[string]string, st store.Store, clk *clocktest.Fake) *envoyEnv {
	t.Helper()
	var names []string
	var contents [][]byte
	for n, c := range files {
		names = append(names, n)
		contents = append(contents, []byte(c))
	}
	nss, err := config.ParseEnvoy(names, contents, config.EnvoyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := policy.New(nss, "v1", storetest.Epoch)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	obs, err := metrics.New(reg)
	if err != nil {
		t.Fatal(err)
	}
	svc, err := service.New(st, snap, service.Options{Clock: clk, Observer: obs})
	if err != nil {
		t.Fatal(err)
	}
	srv := New(svc, Options{UnknownDomainOK: true, Now: clk.Now})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer()
	srv.Register(g)
	go g.Serve(ln)
	t.Cleanup(g.Stop)
	conn, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	hs := httptest.NewServer(JSONHandler(srv))
	t.Cleanup(hs.Close)
	return &envoyEnv{client: rlsv3.NewRateLimitServiceClient(conn), json: hs.URL + "/json", reg: reg}
}

func request(domain string, descs [][]string) *rlsv3.RateLimitRequest {
	req := &rlsv3.RateLimitRequest{Domain: domain}
	for _, kv := range descs {
		d := &ratelimitv3.RateLimitDescriptor{}
		for i := 0; i+1 < len(kv); i += 2 {
			d.Entries = append(d.Entries, &ratelimitv3.RateLimitDescriptor_Entry{Key: kv[i], Value: kv[i+1]})
		}
		req.Descriptors = append(req.Descriptors, d)
	}
	return req
}

// ask sends req over gRPC, or over POST /json.
func (e *envoyEnv) ask(t *testing.T, req *rlsv3.RateLimitRequest, overJSON bool) *rlsv3.RateLimitResponse {
	t.Helper()
	if !overJSON {
		resp, err := e.client.ShouldRateLimit(context.Background(), req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	body, err := protojson.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	r, err := http.Post(e.json, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	data, _ := io.ReadAll(r.Body)
	var resp rlsv3.RateLimitResponse
	if err := protojson.Unmarshal(data, &resp); err != nil {
		t.Fatalf("POST /json: %d %s: %v", r.StatusCode, data, err)
	}
	if wantStatus := map[rlsv3.RateLimitResponse_Code]int{ok: 200, over: 429}[resp.GetOverallCode()]; r.StatusCode != wantStatus {
		t.Fatalf("POST /json: status %d for %v", r.StatusCode, resp.GetOverallCode())
	}
	return &resp
}

func checkStatuses(t *testing.T, resp *rlsv3.RateLimitResponse, ws []want) {
	t.Helper()
	if len(resp.GetStatuses()) != len(ws) {
		t.Fatalf("%d statuses, want %d: %v", len(resp.GetStatuses()), len(ws), resp)
	}
	wantOverall := ok
	for i, w := range ws {
		st := resp.GetStatuses()[i]
		if w.code == over {
			wantOverall = over
		}
		if st.GetCode() != w.code || (w.remaining >= 0 && int64(st.GetLimitRemaining()) != w.remaining) {
			t.Fatalf("status %d: %v, want %v remaining %d", i, st, w.code, w.remaining)
		}
		cl := st.GetCurrentLimit()
		switch {
		case w.unit == "" && cl != nil:
			t.Fatalf("status %d: a current limit %v, want none", i, cl)
		case w.unit != "" && (cl == nil || cl.GetRequestsPerUnit() != w.rpu || cl.GetUnit().String() != w.unit):
			t.Fatalf("status %d: current limit %v, want %d per %s", i, cl, w.rpu, w.unit)
		case w.unit != "" && (st.GetDurationUntilReset().AsDuration() <= 0 || st.GetDurationUntilReset().AsDuration()%time.Second != 0):
			t.Fatalf("status %d: duration_until_reset %v, want whole seconds", i, st.GetDurationUntilReset().AsDuration())
		}
	}
	if resp.GetOverallCode() != wantOverall {
		t.Fatalf("overall %v, want %v", resp.GetOverallCode(), wantOverall)
	}
}

func runExamples(t *testing.T, newStore func(t *testing.T, clk *clocktest.Fake) store.Store) {
	for _, ex := range examples {
		for _, overJSON := range []bool{false, true} {
			name := ex.name + "/grpc"
			if overJSON {
				name = ex.name + "/json"
			}
			t.Run(name, func(t *testing.T) {
				clk := clocktest.New(storetest.Epoch)
				e := newEnvoyEnv(t, ex.files, newStore(t, clk), clk)
				for i, s := range ex.steps {
					var resp *rlsv3.RateLimitResponse
					for range max(s.times, 1) {
						resp = e.ask(t, request(ex.domain, s.desc), overJSON)
					}
					t.Logf("step %d: %v", i, resp.GetOverallCode())
					checkStatuses(t, resp, s.want)
				}
				for _, key := range ex.metrics {
					if n := testutil.CollectAndCount(e.reg, "ratelimiter_descriptor_hits_total"); n == 0 {
						t.Fatal("no descriptor metrics")
					}
					found := false
					mfs, _ := e.reg.Gather()
					for _, mf := range mfs {
						if mf.GetName() != "ratelimiter_descriptor_hits_total" {
							continue
						}
						for _, m := range mf.GetMetric() {
							for _, l := range m.GetLabel() {
								found = found || (l.GetName() == "key" && l.GetValue() == key)
							}
						}
					}
					if !found {
						t.Errorf("no metric key %q", key)
					}
				}
				// An unknown domain is OK, every descriptor without a limit.
				checkStatuses(t, e.ask(t, request("nope", [][]string{{"a", "b"}}), overJSON), []want{noLimit})
			})
		}
	}
}

func TestEnvoyExamplesMemory(t *testing.T) {
	runExamples(t, func(t *testing.T, clk *clocktest.Fake) store.Store {
		st := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
		t.Cleanup(func() { st.Close() })
		return st
	})
}

func TestEnvoyExamplesRedis(t *testing.T) {
	srv := redistest.Standalone(t)
	runExamples(t, func(t *testing.T, clk *clocktest.Fake) store.Store {
		st, err := redisstore.New(redisstore.Options{Addrs: []string{srv.Addr()}, Clock: clk, Prefix: "rl:" + strings.ReplaceAll(t.Name(), "/", ":") + ":"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	})
}
