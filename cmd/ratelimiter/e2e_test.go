package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The end-to-end test builds the real binary, starts `serve` on a free port
// (read from its "listening" log line), talks to it with `check`, reloads it
// with SIGHUP, stops it with SIGTERM, and runs `config validate`.

const tightConfig = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 2
        period: 1h
`

const looserConfig = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 3
        period: 1h
`

const brokenConfig = `namespaces:
  - name: orders
    limits:
      - name: per-hour
        algorithm: leaky_sieve
        limit: 5
        period: 1h
      - name: per-day
        algorithm: fixed_window
        limit: -5
        period: 24h
`

// The binary is built once per test run, into a directory TestMain removes.
var (
	buildOnce sync.Once
	buildDir  string
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

func buildBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary: the quick lane (go test -short) leaves it to the full lane, ./scripts/test.sh")
	}
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("building the binary needs the go command on PATH: %v", err)
	}
	buildOnce.Do(func() {
		if buildDir, buildErr = os.MkdirTemp("", "ratelimiter-e2e-"); buildErr != nil {
			return
		}
		binPath = filepath.Join(buildDir, "ratelimiter")
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, gobin, "build", "-o", binPath, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// result is what a finished command printed and its exit code.
type result struct {
	code           int
	stdout, stderr string
}

func runBin(t *testing.T, bin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.Env = cleanEnv()
	err := cmd.Run()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("%v: %v", args, err)
	}
	return result{code: cmd.ProcessState.ExitCode(), stdout: stdout.String(), stderr: stderr.String()}
}

// cleanEnv is the test's environment without RATELIMITER_* variables, so the
// developer's shell cannot change what the test runs.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, envPrefix) {
			env = append(env, kv)
		}
	}
	return env
}

// writeConfig writes a configuration file for a test and returns its path.
func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// server is a running `ratelimiter serve` and its log.
type server struct {
	cmd  *exec.Cmd
	addr string
	done chan struct{} // closed when the process has exited
	err  error         // Wait's result, valid after done

	mu    sync.Mutex
	lines []map[string]any
	raw   bytes.Buffer
	seen  chan struct{} // signalled on every log line
}

func startServer(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	return startServerEnv(t, bin, nil, args...)
}

// startServerEnv is startServer with env added to the process's
// environment.
func startServerEnv(t *testing.T, bin string, env []string, args ...string) *server {
	t.Helper()
	s := launchServerEnv(t, bin, env, args...)
	line := s.waitLog(t, "listening", 20*time.Second)
	s.addr, _ = line["addr"].(string)
	if s.addr == "" {
		t.Fatalf("listening line without addr: %v", line)
	}
	return s
}

// launchServer starts `serve` and follows its log without waiting for it to
// listen.
func launchServer(t *testing.T, bin string, args ...string) *server {
	t.Helper()
	return launchServerEnv(t, bin, nil, args...)
}

func launchServerEnv(t *testing.T, bin string, env []string, args ...string) *server {
	t.Helper()
	s := &server{done: make(chan struct{}), seen: make(chan struct{}, 1)}
	s.cmd = exec.Command(bin, append([]string{"serve", "--listen", "127.0.0.1:0", "--log-format", "json"}, args...)...)
	s.cmd.Env = append(cleanEnv(), env...)
	stderr, err := s.cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := s.cmd.Process.Pid
	t.Cleanup(func() {
		select {
		case <-s.done:
		default: // still running: stop the process this test started, by its PID
			syscall.Kill(pid, syscall.SIGKILL)
			<-s.done
		}
	})
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var line map[string]any
			json.Unmarshal(sc.Bytes(), &line)
			s.mu.Lock()
			s.raw.Write(sc.Bytes())
			s.raw.WriteByte('\n')
			if line != nil {
				s.lines = append(s.lines, line)
			}
			s.mu.Unlock()
			select {
			case s.seen <- struct{}{}:
			default:
			}
		}
		io.Copy(io.Discard, stderr)
		s.err = s.cmd.Wait()
		close(s.done)
	}()
	return s
}

// waitLog waits for the next-or-earlier log line with msg and returns it.
func (s *server) waitLog(t *testing.T, msg string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		for _, l := range s.lines {
			if l["msg"] == msg {
				s.mu.Unlock()
				return l
			}
		}
		s.mu.Unlock()
		select {
		case <-s.seen:
		case <-s.done:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("server exited (%v) before logging %q; log:\n%s", s.err, msg, s.raw.String())
		case <-deadline:
			s.mu.Lock()
			defer s.mu.Unlock()
			t.Fatalf("no %q log line within %v; log:\n%s", msg, timeout, s.raw.String())
		}
	}
}

func (s *server) log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.raw.String()
}

func TestEndToEnd(t *testing.T) {
	bin := buildBinary(t)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "tight.yaml")
	if err := os.WriteFile(cfg, []byte(tightConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	srv := startServer(t, bin, "--config", cfg)
	url := "http://" + srv.addr

	check := func(subject string) result {
		return runBin(t, bin, "check", "--server", url, "--namespace", "orders", "--subject", subject)
	}
	for i := range 2 {
		r := check("alice")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "allowed: orders/alice") || !strings.Contains(r.stdout, `"allowed":true`) {
			t.Fatalf("check %d: exit %d\nstdout: %s\nstderr: %s", i+1, r.code, r.stdout, r.stderr)
		}
	}
	// The third waits for the next token: 30 minutes after the first check,
	// on the real clock, so less whatever time the checks took.
	r := check("alice")
	m := regexp.MustCompile(`^denied: orders/alice, retry in \S+ \(Retry-After: (\d+)\)`).FindStringSubmatch(r.stdout)
	if r.code != 1 || m == nil || !strings.Contains(r.stdout, `"allowed":false`) {
		t.Fatalf("third check: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if secs, _ := strconv.Atoi(m[1]); secs < 1700 || secs > 1800 {
		t.Fatalf("third check: Retry-After %s, want about 1800", m[1])
	}
	r = runBin(t, bin, "check", "--server", url, "--namespace", "payments", "--subject", "alice")
	if r.code != 2 || !strings.Contains(r.stderr, `404 Not Found: unknown namespace \"payments\"`) && !strings.Contains(r.stderr, `404 Not Found: unknown namespace "payments"`) {
		t.Fatalf("unknown namespace: exit %d\nstderr: %s", r.code, r.stderr)
	}
	r = runBin(t, bin, "check", "--server", url, "--namespace", "orders")
	if r.code != 2 || !strings.Contains(r.stderr, "--subject are required") {
		t.Fatalf("missing subject: exit %d\nstderr: %s", r.code, r.stderr)
	}

	// The other routes answer.
	for path, want := range map[string]int{"/healthz": 200, "/readyz": 200, "/metrics": 200, "/v1/config": 200} {
		resp, err := http.Get(url + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d", path, resp.StatusCode)
		}
	}

	// SIGHUP reloads the file: a broken file is refused and the running
	// policy kept; then a limit of 3 lets alice through once more.
	if err := os.WriteFile(cfg, []byte(brokenConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.waitLog(t, "reload failed; keeping the running configuration", 10*time.Second)
	if r := check("bob"); r.code != 0 {
		t.Fatalf("after a failed reload: exit %d %s", r.code, r.stderr)
	}
	if err := os.WriteFile(cfg, []byte(looserConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := srv.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	srv.waitLog(t, "configuration reloaded", 10*time.Second)
	if r := check("alice"); r.code != 0 {
		t.Fatalf("after reload to 3 per hour: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if r := check("alice"); r.code != 1 {
		t.Fatalf("4th check after reload: exit %d", r.code)
	}

	// SIGTERM: graceful shutdown and exit 0.
	if err := srv.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-srv.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("no exit within 20s of SIGTERM; log:\n%s", srv.log())
	}
	if srv.err != nil {
		t.Fatalf("exit after SIGTERM: %v; log:\n%s", srv.err, srv.log())
	}
	if !strings.Contains(srv.log(), `"msg":"stopped"`) {
		t.Fatalf("no stopped line; log:\n%s", srv.log())
	}

	// config validate.
	good := filepath.Join(dir, "good.yaml")
	broken := filepath.Join(dir, "broken.yaml")
	os.WriteFile(good, []byte(looserConfig), 0o644)
	os.WriteFile(broken, []byte(brokenConfig), 0o644)
	if r := runBin(t, bin, "config", "validate", good); r.code != 0 || r.stdout != "ok: 1 namespaces\n" {
		t.Fatalf("validate good: exit %d\nstdout: %q\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	r = runBin(t, bin, "config", "validate", broken)
	if r.code != 1 || !strings.Contains(r.stderr, "leaky_sieve") || !strings.Contains(r.stderr, "limits[per-day].limit: -5") || !strings.Contains(r.stderr, "2 problem(s)") || !strings.Contains(r.stderr, broken+":") || r.stdout != "" {
		t.Fatalf("validate broken: exit %d\nstdout: %q\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	if r := runBin(t, bin, "config", "validate", filepath.Join(dir, "missing.yaml")); r.code != 2 {
		t.Fatalf("validate missing file: exit %d", r.code)
	}
	if r := runBin(t, bin, "version"); r.code != 0 || !strings.HasPrefix(r.stdout, "ratelimiter ") {
		t.Fatalf("version: %d %q", r.code, r.stdout)
	}
}

// TestServeDefaultsToExample starts serve without --config: the embedded
// example's orders namespace answers.
func TestServeDefaultsToExample(t *testing.T) {
	bin := buildBinary(t)
	srv := startServer(t, bin)
	r := runBin(t, bin, "check", "--server", "http://"+srv.addr, "--namespace", "orders", "--subject", "user-42")
	if r.code != 0 || !strings.Contains(r.stdout, `{"name":"per-minute","limit":100,"remaining":19,`) {
		t.Fatalf("check: exit %d\nstdout: %s\nstderr: %s", r.code, r.stdout, r.stderr)
	}
	srv.cmd.Process.Signal(syscall.SIGINT)
	select {
	case <-srv.done:
	case <-time.After(20 * time.Second):
		t.Fatal("no exit within 20s of SIGINT")
	}
	if srv.err != nil {
		t.Fatalf("exit after SIGINT: %v\n%s", srv.err, srv.log())
	}
}

// waitLogCount waits until at least n log lines carry msg.
func (s *server) waitLogCount(t *testing.T, msg string, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		got := 0
		for _, l := range s.lines {
			if l["msg"] == msg {
				got++
			}
		}
		s.mu.Unlock()
		if got >= n {
			return
		}
		select {
		case <-s.seen:
		case <-s.done:
			t.Fatalf("server exited (%v) after %d %q lines; log:\n%s", s.err, got, msg, s.log())
		case <-deadline:
			t.Fatalf("%d %q lines within %v, want %d; log:\n%s", got, msg, timeout, n, s.log())
		}
	}
}
