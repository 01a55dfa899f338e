package main

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// proxyConfig is the namespace the deploy/ configs name: 5 per 10 hours
// per X-User-ID.
const proxyConfig = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-10h
        algorithm: token_bucket
        limit: 5
        period: 10h
`

// freePort returns a loopback port free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startProcess runs a proxy in the foreground and stops it, by its PID,
// when the test ends.
func startProcess(t *testing.T, name string, args ...string) {
	t.Helper()
	bin, err := exec.LookPath(name)
	if err != nil {
		if _, serr := os.Stat("/usr/sbin/" + name); serr == nil {
			bin = "/usr/sbin/" + name // nginx, for a user without sbin on PATH
		} else {
			t.Fatalf("%s is not installed: run scripts/install-tools.sh (Debian package %s)", name, name)
		}
	}
	cmd := exec.Command(bin, args...)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		syscall.Kill(cmd.Process.Pid, syscall.SIGTERM) // a process this test started
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			syscall.Kill(cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, out.String())
		}
	})
}

// nginx and Caddy in front of a backend with the configs of deploy/, for
// real: requests pass with the RateLimit headers until the limit, then the
// client sees 429 with Retry-After (not a 500, not a 403), the backend never
// sees a denied request, the subject comes from X-User-ID (another user is
// not limited), the client's own cost header changes nothing, and with the
// limiter down each fails closed as its config says.
func TestNginxAndCaddyInFront(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server, nginx and Caddy")
	}
	bin := buildBinary(t)
	for _, proxy := range []string{"nginx", "caddy"} {
		t.Run(proxy, func(t *testing.T) {
			limiter := startServer(t, bin, "--config", writeConfig(t, proxyConfig))
			var mu sync.Mutex
			seen := map[string]int{}
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen[r.Header.Get("X-User-ID")]++
				mu.Unlock()
				fmt.Fprintln(w, "order placed")
			}))
			defer backend.Close()
			listen := freePort(t)
			dir := t.TempDir()
			// The deploy/ file, with this test's addresses.
			repl := strings.NewReplacer("127.0.0.1:8080", limiter.addr, "127.0.0.1:9000", strings.TrimPrefix(backend.URL, "http://"),
				"listen 8000;", "listen 127.0.0.1:"+strconv.Itoa(listen)+";", "http://:8001", "http://127.0.0.1:"+strconv.Itoa(listen))
			switch proxy {
			case "nginx":
				raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "nginx", "ratelimiter.conf"))
				if err != nil {
					t.Fatal(err)
				}
				site := filepath.Join(dir, "ratelimiter.conf")
				os.WriteFile(site, []byte(repl.Replace(string(raw))), 0o644)
				conf := filepath.Join(dir, "nginx.conf")
				os.WriteFile(conf, []byte(fmt.Sprintf("pid %s/nginx.pid;\nerror_log %s/error.log info;\nevents {}\nhttp {\n  access_log off;\n  include %s;\n}\n", dir, dir, site)), 0o644)
				startProcess(t, "nginx", "-p", dir, "-c", conf, "-g", "daemon off; master_process off;")
			case "caddy":
				raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "caddy", "Caddyfile"))
				if err != nil {
					t.Fatal(err)
				}
				conf := filepath.Join(dir, "Caddyfile")
				os.WriteFile(conf, []byte("{\n\tadmin off\n}\n"+repl.Replace(string(raw))), 0o644)
				startProcess(t, "caddy", "run", "--config", conf, "--adapter", "caddyfile")
			}
			url := "http://127.0.0.1:" + strconv.Itoa(listen) + "/orders"
			client := &http.Client{Timeout: 5 * time.Second}
			get := func(user string, hdr ...string) *http.Response {
				t.Helper()
				req, _ := http.NewRequest(http.MethodGet, url, nil)
				req.Header.Set("X-User-ID", user)
				for i := 0; i+1 < len(hdr); i += 2 {
					req.Header.Set(hdr[i], hdr[i+1])
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp
			}
			within(t, 10*time.Second, proxy+" listening", func() bool {
				c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(listen))
				if err == nil {
					c.Close()
				}
				return err == nil
			})
			for i := range 5 {
				// A client-set cost of 0 would be a free pass if the gate took it.
				resp := get("alice", "X-RateLimit-Cost", "0")
				if resp.StatusCode != http.StatusOK {
					t.Fatalf("request %d: %d %v", i+1, resp.StatusCode, resp.Header)
				}
				// nginx passes the gate's RateLimit headers on; Caddy's
				// forward_auth has them only on a denial.
				if proxy == "nginx" && !strings.HasPrefix(resp.Header.Get("RateLimit"), fmt.Sprintf(`"per-10h";r=%d;`, 4-i)) {
					t.Errorf("request %d: RateLimit %q, want r=%d", i+1, resp.Header.Get("RateLimit"), 4-i)
				}
			}
			denied := get("alice")
			if denied.StatusCode != http.StatusTooManyRequests || denied.Header.Get("Retry-After") != "7200" || !strings.Contains(denied.Header.Get("RateLimit"), "r=0") {
				t.Errorf("the 6th request: %d %v, want 429 with Retry-After 7200 and RateLimit r=0", denied.StatusCode, denied.Header)
			}
			if resp := get("bob"); resp.StatusCode != http.StatusOK {
				t.Errorf("another user: %d", resp.StatusCode)
			}
			mu.Lock()
			if seen["alice"] != 5 || seen["bob"] != 1 {
				t.Errorf("the backend saw %v, want alice 5 and bob 1", seen)
			}
			mu.Unlock()
			// The limiter down: closed, as each config says.
			stopServer(t, limiter)
			want := map[string]int{"nginx": http.StatusServiceUnavailable, "caddy": http.StatusBadGateway}[proxy]
			if resp := get("carol"); resp.StatusCode != want {
				t.Errorf("limiter down: %d, want %d", resp.StatusCode, want)
			}
			mu.Lock()
			if seen["carol"] != 0 {
				t.Errorf("with the limiter down, the backend saw carol %d times", seen["carol"])
			}
			mu.Unlock()
		})
	}
}

// The README's copy-paste configurations are the files the test above
// runs, byte for byte.
func TestReadmeCarriesTheTestedConfigs(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for lang, file := range map[string]string{"nginx": "deploy/nginx/ratelimiter.conf", "caddy": "deploy/caddy/Caddyfile"} {
		raw, err := os.ReadFile(filepath.Join("..", "..", file))
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(string(readme), "```"+lang+"\n"+string(raw)+"```\n") {
			t.Errorf("README.md has no ```%s block identical to %s", lang, file)
		}
	}
}
