package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

const envoyEdge = `domain: edge
descriptors:
  - key: remote_address
    rate_limit: {unit: hour, requests_per_unit: 2}
  - key: remote_address
    value: 50.0.0.5
    rate_limit: {unit: second, requests_per_unit: 0}
`

// `ratelimiter config validate --envoy`: every problem at its file and
// line, exit 1; a good directory is ok, exit 0; an unreadable path, 2.
func TestConfigValidateEnvoy(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(envoyEdge), 0o644)
	code, stdout, stderr := runCmd(t, "config", "validate", "--envoy", dir)
	if code != exitOK || stdout != "ok: 1 domains\n" {
		t.Fatalf("good directory: %d %q %q", code, stdout, stderr)
	}
	os.WriteFile(filepath.Join(dir, "bad.yml"), []byte("domain: bad\ndescriptors:\n  - key: k\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n  - value: v\n"), 0o644)
	code, _, stderr = runCmd(t, "config", "validate", "--envoy", dir)
	if code != exitFail || !strings.Contains(stderr, "bad.yml:4: invalid rate limit unit 'fortnight'") ||
		!strings.Contains(stderr, "bad.yml:5: descriptor has empty key") || !strings.Contains(stderr, "2 problem(s)") {
		t.Fatalf("bad file: %d %s", code, stderr)
	}
	if code, _, _ := runCmd(t, "config", "validate", "--envoy", filepath.Join(dir, "missing")); code != exitErrors {
		t.Fatalf("missing path: exit %d", code)
	}
}

// `serve --envoy-config DIR`: Envoy's protocol answers as
// envoyproxy/ratelimit would, over gRPC and POST /json on the main
// listener; an unknown domain is OK; a file added to the directory is
// loaded without a restart.
func TestServeEnvoyConfig(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "edge.yaml"), []byte(envoyEdge), 0o644)
	srv := startServer(t, buildBinary(t), "--envoy-config", dir, "--rls-listen", "127.0.0.1:0", "--reload-debounce", "20ms")
	addr, _ := srv.waitLog(t, "rls listening", 20*time.Second)["addr"].(string)
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := rlsv3.NewRateLimitServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ask := func(domain, key, value string) *rlsv3.RateLimitResponse {
		t.Helper()
		resp, err := c.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: domain, Descriptors: []*ratelimitv3.RateLimitDescriptor{{
			Entries: []*ratelimitv3.RateLimitDescriptor_Entry{{Key: key, Value: value}}}}})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	for i, want := range []rlsv3.RateLimitResponse_Code{rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OK, rlsv3.RateLimitResponse_OVER_LIMIT} {
		if got := ask("edge", "remote_address", "10.0.0.7").GetOverallCode(); got != want {
			t.Fatalf("request %d: %v, want %v", i, got, want)
		}
	}
	if got := ask("edge", "remote_address", "50.0.0.5"); got.GetOverallCode() != rlsv3.RateLimitResponse_OVER_LIMIT {
		t.Fatalf("blocked: %v", got)
	}
	if got := ask("nope", "a", "b"); got.GetOverallCode() != rlsv3.RateLimitResponse_OK || got.GetStatuses()[0].GetCurrentLimit() != nil {
		t.Fatalf("unknown domain: %v", got)
	}
	// POST /json on the main listener, the same counters.
	body := `{"domain":"edge","descriptors":[{"entries":[{"key":"remote_address","value":"10.0.0.8"}]}]}`
	for i, want := range []int{200, 200, 429} {
		r, err := http.Post("http://"+srv.addr+"/json", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var out struct {
			OverallCode string `json:"overallCode"`
		}
		json.NewDecoder(r.Body).Decode(&out)
		r.Body.Close()
		if r.StatusCode != want || (want == 429) != (out.OverallCode == "OVER_LIMIT") {
			t.Fatalf("POST /json %d: %d %q", i, r.StatusCode, out.OverallCode)
		}
	}
	if r, _ := http.Post("http://"+srv.addr+"/json", "application/json", bytes.NewReader([]byte(`{"domain":"edge","nope":1}`))); r.StatusCode != 400 {
		t.Fatalf("an unknown field: %d", r.StatusCode)
	}
	// A new domain in a new file, live.
	os.WriteFile(filepath.Join(dir, "api.yml"), []byte("domain: api\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 1}\n"), 0o644)
	srv.waitLog(t, "configuration reloaded", 20*time.Second)
	if got := ask("api", "k", "v"); got.GetStatuses()[0].GetCurrentLimit().GetRequestsPerUnit() != 1 {
		t.Fatalf("after the reload: %v", got)
	}
}
