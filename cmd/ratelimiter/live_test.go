package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// End-to-end tests of configuration without downtime: hot reloads under
// load, runtime overrides across instances sharing Redis, and the admin
// API's authentication, all against real `ratelimiter serve` processes.

// inForce is how soon a change must be in force, by the contract.
const inForce = time.Second

const testToken = "e2e-admin-token-0123456789abcdef"

func liveConfig(perHour int) string {
	return fmt.Sprintf(`namespaces:
  - name: orders
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: %d
        period: 1h
`, perHour)
}

// configVersion is GET /v1/config's version.
func configVersion(client *http.Client, addr string) (string, error) {
	resp, err := client.Get("http://" + addr + "/v1/config")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var v struct {
		Version string `json:"version"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return "", err
	}
	return v.Version, nil
}

// metricValue reads one sample of /metrics, e.g.
// `ratelimiter_config_reloads_total{result="error"}`.
func metricValue(client *http.Client, addr, sample string) (float64, error) {
	resp, err := client.Get("http://" + addr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), sample+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no sample %s", sample)
}

// within polls cond until it holds or d has passed, and returns how long it
// took; it fails the test at the deadline.
func within(t *testing.T, d time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		if cond() {
			return time.Since(start)
		}
		if time.Since(start) > d {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hammer runs n goroutines checking random subjects until stop is closed
// and counts the failures: anything but a 200 or 429 with a JSON verdict.
// It records the per-hour limits it saw.
type hammer struct {
	checks, failures atomic.Int64
	mu               sync.Mutex
	firstErr         string
	limits           map[int64]bool
	wg               sync.WaitGroup
}

func startHammer(client *http.Client, addr string, n int, stop <-chan struct{}) *hammer {
	h := &hammer{limits: map[int64]bool{}}
	for g := range n {
		h.wg.Add(1)
		go func() {
			defer h.wg.Done()
			rng := rand.New(rand.NewPCG(uint64(g), 7))
			for {
				select {
				case <-stop:
					return
				default:
				}
				subject := "user-" + strconv.Itoa(rng.IntN(10_000))
				code, lim, err := checkLimit(client, addr, subject, 1)
				h.checks.Add(1)
				if err != nil || (code != 200 && code != 429) {
					h.failures.Add(1)
					h.mu.Lock()
					if h.firstErr == "" {
						h.firstErr = fmt.Sprintf("status %d, %v", code, err)
					}
					h.mu.Unlock()
					continue
				}
				h.mu.Lock()
				h.limits[lim] = true
				h.mu.Unlock()
			}
		}()
	}
	return h
}

// kubeLayout writes a ConfigMap-style volume: config.yaml -> ..data/config.yaml,
// ..data -> ..v<n>; each call is one atomic update, as the kubelet makes it.
func kubeLayout(t *testing.T, dir string, n int, content string) {
	t.Helper()
	v := "..v" + strconv.Itoa(n)
	if err := os.Mkdir(filepath.Join(dir, v), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, v, "config.yaml"), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(v, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if old != "" {
		os.RemoveAll(filepath.Join(dir, old))
	}
	link := filepath.Join(dir, "config.yaml")
	if _, err := os.Lstat(link); err != nil {
		if err := os.Symlink("..data/config.yaml", link); err != nil {
			t.Fatal(err)
		}
	}
}

// renameSwap replaces path the way editors save: a temporary file renamed
// over it.
func renameSwap(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// TestHotReloadUnderLoad rewrites the configuration of a running server 50
// times while 32 goroutines check through it: 25 times by rename-and-replace
// of a plain file, 25 times by Kubernetes-style symlink swaps. Two in five
// rewrites are invalid (a bad value, a YAML syntax error). No check fails,
// every valid version is in force within a second, every invalid one is
// refused (counted, logged once) while the previous one keeps serving.
func TestHotReloadUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary under load")
	}
	bin := buildBinary(t)
	for _, mode := range []string{"rename", "kubernetes"} {
		t.Run(mode, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "config.yaml")
			write := func(n int, content string) {
				if mode == "rename" {
					renameSwap(t, path, content)
				} else {
					kubeLayout(t, dir, n, content)
				}
			}
			write(0, liveConfig(100_000))
			srv := startServer(t, bin, "--config", path, "--reload-debounce", "100ms")
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
			stop := make(chan struct{})
			h := startHammer(client, srv.addr, 32, stop)
			defer func() {
				select {
				case <-stop:
				default:
					close(stop)
				}
				h.wg.Wait()
			}()

			valid := map[int64]bool{100_000: true}
			version, _ := configVersion(client, srv.addr)
			var worst time.Duration
			errorsSeen := 0.0
			for i := 1; i <= 25; i++ {
				switch i % 5 {
				case 3: // invalid value, named in the error
					write(i, strings.Replace(liveConfig(1), "limit: 1\n", fmt.Sprintf("limit: -%d\n", i), 1))
				case 4: // YAML syntax error
					write(i, fmt.Sprintf("namespaces: [ # %d\n", i))
				default:
					lim := 100_000 + i
					content := liveConfig(lim)
					valid[int64(lim)] = true
					write(i, content)
					want := config.Version([]byte(content))
					took := within(t, inForce, fmt.Sprintf("rewrite %d (limit %d) in force", i, lim), func() bool {
						v, err := configVersion(client, srv.addr)
						return err == nil && v == want
					})
					worst = max(worst, took)
					version = want
					continue
				}
				errorsSeen++
				within(t, inForce, fmt.Sprintf("invalid rewrite %d refused", i), func() bool {
					n, err := metricValue(client, srv.addr, `ratelimiter_config_reloads_total{result="error"}`)
					return err == nil && n == errorsSeen
				})
				if v, err := configVersion(client, srv.addr); err != nil || v != version {
					t.Fatalf("after invalid rewrite %d the version is %q (%v), want %q still", i, v, err, version)
				}
			}
			close(stop)
			h.wg.Wait()
			if n := h.failures.Load(); n != 0 {
				t.Fatalf("%d of %d checks failed; first: %s", n, h.checks.Load(), h.firstErr)
			}
			for lim := range h.limits {
				if !valid[lim] {
					t.Errorf("a check saw limit %d, which no valid version had", lim)
				}
			}
			ok, _ := metricValue(client, srv.addr, `ratelimiter_config_reloads_total{result="success"}`)
			if ok != 15 {
				t.Errorf("%v successful reloads counted, want 15", ok)
			}
			srv.mu.Lock()
			failedLogs := 0
			for _, l := range srv.lines {
				if l["msg"] == "reload failed; keeping the running configuration" {
					failedLogs++
				}
			}
			srv.mu.Unlock()
			if failedLogs != 10 {
				t.Errorf("%d reload errors logged, want one per invalid rewrite (10)", failedLogs)
			}
			t.Logf("%s: %d checks, 0 failed; slowest valid change in force after %v", mode, h.checks.Load(), worst)
		})
	}
}

// adminDo sends an admin request with the token (or another Authorization).
func adminDo(t *testing.T, client *http.Client, method, url, body, auth string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// checkLimit runs a check and returns the status and the per-hour limit the
// answer reports.
func checkLimit(client *http.Client, addr, subject string, cost int) (int, int64, error) {
	resp, err := client.Post("http://"+addr+"/v1/check", "application/json",
		strings.NewReader(fmt.Sprintf(`{"namespace":"orders","subject":%q,"cost":%d}`, subject, cost)))
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	var v struct {
		Allowed bool `json:"allowed"`
		Limits  []struct {
			Limit int64 `json:"limit"`
		} `json:"limits"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		return resp.StatusCode, 0, err
	}
	if len(v.Limits) != 1 || v.Allowed != (resp.StatusCode == 200) {
		return resp.StatusCode, 0, fmt.Errorf("unexpected answer %+v", v)
	}
	return resp.StatusCode, v.Limits[0].Limit, nil
}

// peekLimit returns the per-hour limit a subject gets on a server (a check
// of cost 0 consumes nothing), or -1.
func peekLimit(client *http.Client, addr, subject string) int64 {
	code, lim, err := checkLimit(client, addr, subject, 0)
	if err != nil || code != 200 {
		return -1
	}
	return lim
}

func writeToken(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(path, []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func stopServer(t *testing.T, s *server) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM; log:\n%s", s.log())
	}
}

// TestOverridesAcrossInstances: three instances share one Redis. An
// override PUT on one is in force on all three within a second, survives a
// restart of each instance in turn, and a DELETE on another reverts all three.
func TestOverridesAcrossInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	redis := redistest.Standalone(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte(liveConfig(100)), 0o644)
	args := []string{"--config", cfg, "--store", "redis", "--redis-addrs", redis.Addr(), "--admin-token-file", writeToken(t)}
	servers := make([]*server, 3)
	for i := range servers {
		servers[i] = startServer(t, bin, args...)
	}
	client := &http.Client{Timeout: 10 * time.Second}
	bearer := "Bearer " + testToken

	code, body := adminDo(t, client, "PUT", "http://"+servers[0].addr+"/v1/admin/overrides/orders/vip",
		`{"limits":{"per-hour":{"limit":7}}}`, bearer)
	if code != 200 || !strings.Contains(body, `"active":true`) {
		t.Fatalf("PUT: %d %s", code, body)
	}
	var worst time.Duration
	for i, s := range servers {
		took := within(t, inForce, fmt.Sprintf("override on instance %d", i), func() bool { return peekLimit(client, s.addr, "vip") == 7 })
		worst = max(worst, took)
	}
	t.Logf("override in force on all three instances after %v", worst)
	if got := peekLimit(client, servers[1].addr, "someone-else"); got != 100 {
		t.Fatalf("another subject got %d", got)
	}

	// Restart each instance: the override is in force from its first check.
	for i := range servers {
		stopServer(t, servers[i])
		servers[i] = startServer(t, bin, args...)
		if got := peekLimit(client, servers[i].addr, "vip"); got != 7 {
			t.Fatalf("instance %d restarted with limit %d for vip, want 7", i, got)
		}
	}
	// The restarted instances still hear changes.
	code, body = adminDo(t, client, "DELETE", "http://"+servers[2].addr+"/v1/admin/overrides/orders/vip", "", bearer)
	if code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	for i, s := range servers {
		within(t, inForce, fmt.Sprintf("delete on instance %d", i), func() bool { return peekLimit(client, s.addr, "vip") == 100 })
	}
}

// TestAdminAPIAuthentication: the admin API is off without a token; with
// one, requests without it or with a wrong one get 401 and the right one
// works; --admin-listen moves it to its own listener; with the memory
// store and --overrides-file the overrides survive a restart.
func TestAdminAPIAuthentication(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the binary")
	}
	bin := buildBinary(t)
	client := &http.Client{Timeout: 10 * time.Second}
	put := `{"limits":{"per-hour":{"limit":1000}},"ttl":"1h"}`
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	os.WriteFile(cfg, []byte(liveConfig(100)), 0o644)

	off := startServer(t, bin, "--config", cfg)
	if code, body := adminDo(t, client, "PUT", "http://"+off.addr+"/v1/admin/overrides/orders/u", put, "Bearer "+testToken); code != 404 || !strings.Contains(body, "admin token") {
		t.Fatalf("without a token configured: %d %s", code, body)
	}
	stopServer(t, off)

	ovFile := filepath.Join(t.TempDir(), "overrides.json")
	args := []string{"--config", cfg, "--admin-token-file", writeToken(t), "--admin-listen", "127.0.0.1:0", "--overrides-file", ovFile}
	srv := startServer(t, bin, args...)
	admin, _ := srv.waitLog(t, "admin listening", 10*time.Second)["addr"].(string)
	url := "http://" + admin + "/v1/admin/overrides/orders/user-42"
	for _, auth := range []string{"", "Bearer", "Bearer wrong-token", "Basic " + testToken, "Bearer " + testToken + "0"} {
		if code, body := adminDo(t, client, "PUT", url, put, auth); code != 401 {
			t.Fatalf("Authorization %q: %d %s", auth, code, body)
		}
		if code, _ := adminDo(t, client, "GET", "http://"+admin+"/v1/admin/overrides/orders", "", auth); code != 401 {
			t.Fatalf("GET with Authorization %q: %d", auth, code)
		}
	}
	// Not on the API listener.
	if code, _ := adminDo(t, client, "PUT", "http://"+srv.addr+"/v1/admin/overrides/orders/user-42", put, "Bearer "+testToken); code != 404 {
		t.Fatalf("admin route on the API listener: %d", code)
	}
	if code, body := adminDo(t, client, "PUT", url, put, "Bearer "+testToken); code != 200 {
		t.Fatalf("with the token: %d %s", code, body)
	}
	if code, body := adminDo(t, client, "GET", "http://"+admin+"/v1/admin/overrides/orders", "", "Bearer "+testToken); code != 200 || !strings.Contains(body, `"subject":"user-42"`) {
		t.Fatalf("list: %d %s", code, body)
	}
	stopServer(t, srv)
	srv = startServer(t, bin, args...)
	if got := peekLimit(client, srv.addr, "user-42"); got != 1000 {
		t.Fatalf("after a restart user-42 has limit %d, want the override's 1000", got)
	}
}
