package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// Tests of the ways around a limit an attack run found (the issue "No way
// around a limit"), each against the real binary.

const evictionConfig = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 5
        period: 1h
      - name: per-hour-window
        algorithm: sliding_window_counter
        limit: 1000
        period: 1h
`

// A flood of twice --max-keys distinct subjects, each spending one unit,
// leaves a subject that was limited limited, with what it spent of its
// hourly window intact: through the JSON API and through the gate. The
// memory store counts the entries it evicted that carried spent budget.
func TestFloodDoesNotFreeLimitedSubject(t *testing.T) {
	bin := buildBinary(t)
	cfg := writeConfig(t, evictionConfig)
	s := startServer(t, bin, "--config", cfg, "--max-keys", "2000")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	viaAPI := func(subject string) (int, string) {
		resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json",
			strings.NewReader(fmt.Sprintf(`{"namespace":"orders","subject":%q}`, subject)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v checkReply // the remaining of every limit
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, fmt.Sprint(v.Limits)
	}
	viaGate := func(subject string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/v1/gate?namespace=orders", nil)
		req.Header.Set("X-User-ID", subject)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The binding limit's remaining (not its reset, which moves).
		r, _, _ := strings.Cut(resp.Header.Get("RateLimit"), ";t=")
		return resp.StatusCode, r
	}
	for _, tc := range []struct {
		name  string
		check func(string) (int, string)
	}{{"api", viaAPI}, {"gate", viaGate}} {
		victim := "victim-" + tc.name
		for i := range 5 {
			if code, _ := tc.check(victim); code != 200 {
				t.Fatalf("%s: check %d of the victim: %d", tc.name, i+1, code)
			}
		}
		code, before := tc.check(victim)
		if code != 429 {
			t.Fatalf("%s: the victim's sixth check: %d, want 429", tc.name, code)
		}
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					tc.check(fmt.Sprintf("flood-%s-%d", tc.name, i))
				}
			}()
		}
		for i := range 4000 {
			work <- i
		}
		close(work)
		wg.Wait()
		if code, after := tc.check(victim); code != 429 || after != before {
			t.Errorf("%s: after 4,000 new subjects (2x --max-keys): %d %q, want 429 as before (%q)", tc.name, code, after, before)
		}
	}
	evicted, err := metricValue(client, s.addr, `ratelimiter_memstore_evictions_total{carried="spent",store="memory"}`)
	if err != nil || evicted < 4000 {
		t.Errorf("memory store evictions that carried spent budget: %v (%v), want the floods' (at least 4,000)", evicted, err)
	}
	if keys, err := metricValue(client, s.addr, `ratelimiter_memstore_keys{store="memory"}`); err != nil || keys > 2000 {
		t.Errorf("memory store keys %v (%v), want at most --max-keys 2000", keys, err)
	}
}

// An instance started on a Redis that may evict keys says so, naming the
// node and the policy to set.
func TestWarnsWhenRedisMayEvict(t *testing.T) {
	bin := buildBinary(t)
	srv := redistest.Standalone(t, redistest.WithArgs("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"))
	s := startServer(t, bin, "--store", "redis", "--redis-addrs", srv.Addr())
	line := s.waitLog(t, "redis may evict the limiter's keys, giving subjects back what they spent: set maxmemory-policy noeviction", 10*time.Second)
	if node, _ := line["node"].(string); !strings.Contains(node, srv.Addr()) || !strings.Contains(node, "allkeys-lru") {
		t.Errorf("warning names %q, want the node and its policy", node)
	}
}

// trickle opens a connection to addr, sends head at once, then the rest a
// byte every 100ms, and reports whether the server closed the connection
// before it was all sent (a read timeout), and after how long.
func trickle(t *testing.T, addr, head, rest string) (closed bool, after time.Duration) {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	if _, err := io.WriteString(conn, head); err != nil {
		return true, time.Since(start)
	}
	gone := make(chan struct{})
	go func() { // the server's answer (a 408 or nothing) and then EOF
		io.Copy(io.Discard, conn)
		close(gone)
	}()
	for i := 0; i < len(rest); i++ {
		select {
		case <-gone:
			return true, time.Since(start)
		case <-time.After(100 * time.Millisecond): // the client's own pace
		}
		if _, err := conn.Write([]byte{rest[i]}); err != nil {
			return true, time.Since(start)
		}
	}
	return false, time.Since(start)
}

// Every listener is hardened alike: the proxy and the admin listener close
// a connection whose headers or body come too slowly (their read timeouts,
// as on the main API; the proxy had none: a body sent at 1 byte/s held an
// upstream connection for as long). And the proxy forwards only what it
// vouches for: the client's X-Real-IP and other address headers are
// replaced by the connection's address, and the subject header the request
// was limited by reaches the upstream even when the client lists it in
// Connection (hop-by-hop) or sends it twice; a client-set cost is ignored.
func TestProxyAndAdminHardened(t *testing.T) {
	var mu sync.Mutex
	var seen []http.Header
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen = append(seen, r.Header.Clone())
		mu.Unlock()
	}))
	defer up.Close()
	srv := startTight(t, "--proxy-listen", "127.0.0.1:0", "--proxy-upstream", up.URL, "--proxy-namespace", "orders",
		"--admin-listen", "127.0.0.1:0", "--admin-token-file", writeToken(t),
		"--read-header-timeout", "500ms", "--read-timeout", "1s", "--write-timeout", "2s")
	proxyAddr, _ := srv.waitLog(t, "proxy listening", 20*time.Second)["addr"].(string)
	adminAddr, _ := srv.waitLog(t, "admin listening", 20*time.Second)["addr"].(string)

	// Forged forwarding headers, the subject listed as hop-by-hop and sent
	// twice, a client-set cost of 0.
	req, _ := http.NewRequest("POST", "http://"+proxyAddr+"/orders", strings.NewReader("{}"))
	req.Header.Set("X-Real-IP", "6.6.6.6")
	req.Header.Set("True-Client-IP", "6.6.6.6")
	req.Header.Set("X-Forwarded-For", "6.6.6.6")
	req.Header.Set("Forwarded", "for=6.6.6.6")
	req.Header.Add("X-User-ID", "alice")
	req.Header.Add("X-User-ID", "mallory")
	req.Header.Set("Connection", "keep-alive, X-User-ID")
	req.Header.Set("X-RateLimit-Cost", "0")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("X-RateLimit-Remaining") != "1" {
		t.Fatalf("proxied request: %d, remaining %q; want 200 charged 1 of 2", resp.StatusCode, resp.Header.Get("X-RateLimit-Remaining"))
	}
	mu.Lock()
	h := seen[0]
	mu.Unlock()
	for k, want := range map[string]string{"X-Real-Ip": "127.0.0.1", "X-Forwarded-For": "127.0.0.1", "True-Client-Ip": "", "Forwarded": "", "X-User-Id": "alice"} {
		if got := strings.Join(h.Values(k), ","); got != want {
			t.Errorf("the upstream saw %s %q, want %q", k, got, want)
		}
	}

	for _, l := range []struct{ name, addr, target string }{{"proxy", proxyAddr, "/orders"}, {"admin", adminAddr, "/v1/admin/overrides/orders"}} {
		head := "POST " + l.target + " HTTP/1.1\r\nHost: " + l.addr + "\r\n"
		if closed, after := trickle(t, l.addr, head, "X-User-ID: slow\r\nX-Padding: "+strings.Repeat("p", 100)+"\r\n\r\n"); !closed {
			t.Errorf("%s: headers sent a byte every 100ms for %v, and the connection is still open", l.name, after)
		} else {
			t.Logf("%s: slow headers closed after %v", l.name, after.Round(10*time.Millisecond))
		}
		head += "X-User-ID: slow-body\r\nAuthorization: Bearer " + testToken + "\r\nContent-Length: 200\r\n\r\n"
		if closed, after := trickle(t, l.addr, head, strings.Repeat("x", 200)); !closed {
			t.Errorf("%s: a body sent a byte every 100ms for %v, and the connection is still open", l.name, after)
		} else {
			t.Logf("%s: slow body closed after %v", l.name, after.Round(10*time.Millisecond))
		}
	}
}

// Browser safety on a loopback listener: a plain client (curl's form content
// type, no Origin) is served; a cross-site browser request and a request
// for a foreign Host (DNS rebinding) are refused; --allowed-hosts and
// --allowed-origins let the named ones through.
func TestBrowserRequestsRefused(t *testing.T) {
	srv := startTight(t, "--allowed-hosts", "limiter.internal", "--allowed-origins", "https://dash.example.com")
	do := func(host string, hdr ...string) int {
		t.Helper()
		req, _ := http.NewRequest("POST", "http://"+srv.addr+"/v1/check", strings.NewReader(`{"namespace":"orders","subject":"b"}`))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded") // curl -d
		if host != "" {
			req.Host = host
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	for _, tc := range []struct {
		name string
		host string
		hdr  []string
		want int
	}{
		{"curl", "", nil, 200},
		{"a page of another site", "", []string{"Origin", "https://evil.example", "Sec-Fetch-Site", "cross-site"}, 403},
		{"an old browser's cross-origin POST", "", []string{"Origin", "https://evil.example"}, 403},
		{"DNS rebinding", "evil.example:" + strings.Split(srv.addr, ":")[1], nil, 403},
		{"an allowed host", "limiter.internal", nil, 200},
		{"an allowed origin", "", []string{"Origin", "https://dash.example.com", "Sec-Fetch-Site", "cross-site"}, 200},
	} {
		if got := do(tc.host, tc.hdr...); got != tc.want && !(tc.want == 200 && got == 429) {
			t.Errorf("%s: %d, want %d", tc.name, got, tc.want)
		}
	}
}
