package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

const routesConfig = `namespaces:
  - name: orders
    limits:
      - {name: per-user, algorithm: token_bucket, limit: 100, period: 1h}
    descriptors:
      - key: remote_address
        limits: [{name: per-ip, algorithm: fixed_window, limit: 2, period: 1h}]
      - key: endpoint
        value: orders
        limits: [{name: cap, algorithm: sliding_window_log, limit: 5, period: 1h}]
    request_descriptors:
      - [{key: remote_address, from: client_address}]
      - [{key: endpoint, from: value, value: orders}]
  - name: search
    limits:
      - {name: per-user, algorithm: fixed_window, limit: 1, period: 1h}
`

// The reverse proxy routes by method and path to namespaces; a namespace's
// request descriptors limit by client address (through the trusted proxy
// in front, X-Forwarded-For) and endpoint-wide, all-or-nothing with the
// user; a path no route names is 404. Without --trusted-proxies a client's
// own X-Forwarded-For is ignored.
func TestProxyRoutesAndRequestDescriptors(t *testing.T) {
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("placed")) }))
	defer upstream.Close()
	cfg := writeConfig(t, routesConfig)
	bin := buildBinary(t)
	start := func(extra ...string) string {
		srv := startServer(t, bin, append([]string{"--config", cfg, "--proxy-listen", "127.0.0.1:0", "--proxy-upstream", upstream.URL,
			"--proxy-route", "POST /orders/=orders", "--proxy-route", "GET /search/=search"}, extra...)...)
		addr, _ := srv.waitLog(t, "proxy listening", 20*time.Second)["addr"].(string)
		return addr
	}
	client := &http.Client{Timeout: 10 * time.Second}
	send := func(addr, method, path, user, xff string) int {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+addr+path, strings.NewReader(""))
		req.Header.Set("X-User-ID", user)
		if xff != "" {
			req.Header.Set("X-Forwarded-For", xff)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}

	addr := start("--trusted-proxies", "127.0.0.1")
	for i, c := range []struct {
		user, xff string
		want      int
	}{
		{"u1", "198.51.100.1", 200},
		{"u2", "198.51.100.1", 200},
		{"u3", "198.51.100.1", 429}, // the IP's 2 per hour, whoever the user
		{"u3", "6.6.6.6, 198.51.100.2", 200},
		{"u4", "198.51.100.3", 200},
		{"u5", "198.51.100.4", 200},
		{"u6", "198.51.100.5", 429}, // the endpoint's 5 (the denials charged nothing)
	} {
		if got := send(addr, "POST", "/orders/1", c.user, c.xff); got != c.want {
			t.Fatalf("order %d (%s via %s): %d, want %d", i, c.user, c.xff, got, c.want)
		}
	}
	if send(addr, "GET", "/search/q", "u1", "") != 200 || send(addr, "GET", "/search/q", "u1", "") != 429 {
		t.Fatal("the search route is not its own namespace")
	}
	if got := send(addr, "GET", "/elsewhere", "u1", ""); got != 404 {
		t.Fatalf("an unrouted path: %d", got)
	}

	// Not trusted: the forged X-Forwarded-For changes nothing, every
	// request is 127.0.0.1's.
	addr = start()
	for i, want := range []int{200, 200, 429} {
		if got := send(addr, "POST", "/orders/1", "u1", "198.51.100.9"+strings.Repeat("0", i)); got != want {
			t.Fatalf("untrusted %d: %d, want %d", i, got, want)
		}
	}
}
