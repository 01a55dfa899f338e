package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// The reverse-proxy mode in front of a real upstream: allowed requests are
// forwarded with their path and X-Forwarded-For and come back with the
// rate limit headers; the denied one is answered 429 by the proxy and never
// reaches the upstream; a request without the subject header is 400; an
// upstream that is gone is 502; SIGTERM stops it all gracefully.
func TestReverseProxy(t *testing.T) {
	var hits atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("RateLimit", `"upstream-own";r=99;t=1`) // dropped by the proxy: one policy per answer
		io.WriteString(w, "upstream saw "+r.Method+" "+r.URL.Path+" for "+r.Header.Get("X-User-ID")+" via "+r.Header.Get("X-Forwarded-For"))
	}))
	defer up.Close()
	srv := startTight(t, "--proxy-listen", "127.0.0.1:0", "--proxy-upstream", up.URL, "--proxy-namespace", "orders")
	line := srv.waitLog(t, "proxy listening", 20*time.Second)
	addr, _ := line["addr"].(string)
	if addr == "" || line["namespace"] != "orders" {
		t.Fatalf("proxy listening line: %v", line)
	}
	send := func(user string) (*http.Response, string) {
		t.Helper()
		req, err := http.NewRequest("POST", "http://"+addr+"/orders/place", strings.NewReader("{}"))
		if err != nil {
			t.Fatal(err)
		}
		if user != "" {
			req.Header.Set("X-User-ID", user)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp, string(body)
	}
	for i := range 2 {
		resp, body := send("alice")
		if resp.StatusCode != 200 || body != "upstream saw POST /orders/place for alice via 127.0.0.1" {
			t.Fatalf("request %d: %d %q", i+1, resp.StatusCode, body)
		}
		// 2 per hour: a token every 30 minutes.
		if got, want := resp.Header.Values("RateLimit"), []string{`"per-hour";r=1;t=1800`, `"per-hour";r=0;t=3600`}[i]; len(got) != 1 || got[0] != want {
			t.Fatalf("request %d: RateLimit %q, want just %q", i+1, got, want)
		}
	}
	resp, body := send("alice")
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(body, "rate limited") {
		t.Fatalf("third: %d, Retry-After %q, %q", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp, body := send(""); resp.StatusCode != 400 || !strings.Contains(body, "X-User-ID") {
		t.Fatalf("no subject: %d %q", resp.StatusCode, body)
	}
	if n := hits.Load(); n != 2 {
		t.Fatalf("the upstream saw %d requests, want the 2 allowed", n)
	}
	up.Close()
	if resp, _ := send("bob"); resp.StatusCode != 502 {
		t.Fatalf("upstream gone: %d, want 502", resp.StatusCode)
	}
	stopServer(t, srv)
	srv.waitLog(t, "stopped", 10*time.Second)
	if srv.err != nil {
		t.Fatalf("exit after SIGTERM: %v", srv.err)
	}
}

func TestTransportAndTrackerFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--proxy-listen", "127.0.0.1:0"}, "--proxy-listen, --proxy-upstream and --proxy-namespace (or --proxy-route) together"},
		{[]string{"--proxy-listen", "127.0.0.1:0", "--proxy-upstream", "ftp://x", "--proxy-namespace", "orders"}, "is not an http(s) URL"},
		{[]string{"--proxy-listen", "127.0.0.1:0", "--proxy-upstream", "http://127.0.0.1:1", "--proxy-namespace", "nope"}, `unknown namespace`},
		{[]string{"--proxy-listen", "127.0.0.1:0", "--proxy-upstream", "http://127.0.0.1:1", "--proxy-namespace", "orders", "--proxy-subject", "cookie"}, "want header or remote-addr"},
		{[]string{"--top-k", "-1"}, "--top-k -1"},
		{[]string{"--top-window", "0s"}, "want a count from 0 to 10000 and a positive window"},
		{[]string{"--top-k", "1000000000"}, "--top-k 1000000000"},
		{[]string{"--rls-listen", "256.0.0.1:1"}, "--rls-listen"},
	} {
		code, _, stderr := runCmd(t, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "text"}, c.args...)...)
		if code != exitFail || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %s", c.args, code, stderr)
		}
	}
}

// Envoy's rate limit service from the binary: 2 per hour for a descriptor,
// then OVER_LIMIT with retry-after; the gRPC health service says SERVING;
// SIGTERM stops it gracefully.
func TestRateLimitServiceGRPC(t *testing.T) {
	srv := startTight(t, "--rls-listen", "127.0.0.1:0")
	addr, _ := srv.waitLog(t, "rls listening", 20*time.Second)["addr"].(string)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	hc, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.ratelimit.v3.RateLimitService"})
	if err != nil || hc.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("health: %v %v", hc, err)
	}
	c := rlsv3.NewRateLimitServiceClient(conn)
	req := &rlsv3.RateLimitRequest{Domain: "orders", Descriptors: []*ratelimitv3.RateLimitDescriptor{{
		Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: "user_id", Value: "alice"}},
	}}}
	var codes []rlsv3.RateLimitResponse_Code
	var last *rlsv3.RateLimitResponse
	for range 3 {
		if last, err = c.ShouldRateLimit(ctx, req); err != nil {
			t.Fatal(err)
		}
		codes = append(codes, last.GetOverallCode())
	}
	if !slices.Equal(codes, []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT}) {
		t.Fatalf("codes %v, want OK OK OVER_LIMIT", codes)
	}
	retry := ""
	for _, h := range last.GetResponseHeadersToAdd() {
		if h.GetKey() == "retry-after" {
			retry = h.GetValue()
		}
	}
	if n, err := strconv.Atoi(retry); err != nil || n < 1700 || n > 1800 {
		t.Fatalf("retry-after %q, want about 1800 (a token every 30 minutes, real clock)", retry)
	}
	stopServer(t, srv)
	if srv.err != nil {
		t.Fatalf("exit after SIGTERM: %v", srv.err)
	}
}

// The most denied subjects, from the binary: denials through the API are
// counted and listed by GET /v1/admin/top/{namespace}, behind the token.
func TestTopDeniedSubjects(t *testing.T) {
	srv := startTight(t, "--admin-token-file", writeToken(t))
	client := &http.Client{Timeout: 10 * time.Second}
	for subject, n := range map[string]int{"abuser": 5, "other": 3, "quiet": 1} { // 2 per hour each
		for range n {
			if _, _, err := checkLimit(client, srv.addr, subject, 1); err != nil {
				t.Fatal(err)
			}
		}
	}
	code, body := adminDo(t, client, "GET", "http://"+srv.addr+"/v1/admin/top/orders?n=5", "", "Bearer "+testToken)
	var v struct {
		Subjects []struct {
			Subject string `json:"subject"`
			Denied  int    `json:"denied"`
		} `json:"subjects"`
	}
	if err := json.Unmarshal([]byte(body), &v); code != 200 || err != nil {
		t.Fatalf("top: %d %s", code, body)
	}
	if got := fmt.Sprint(v.Subjects); got != "[{abuser 3} {other 1}]" {
		t.Fatalf("top: %s, want abuser 3 and other 1 denials", got)
	}
	if code, _ := adminDo(t, client, "GET", "http://"+srv.addr+"/v1/admin/top/orders", "", ""); code != 401 {
		t.Fatalf("without the token: %d", code)
	}
}

// startTight starts the binary on tightConfig (orders: 2 per hour) with
// args.
func startTight(t *testing.T, args ...string) *server {
	t.Helper()
	bin := buildBinary(t)
	cfg := writeConfig(t, tightConfig)
	return startServer(t, bin, append([]string{"--config", cfg}, args...)...)
}
