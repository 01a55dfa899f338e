package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// In-process tests of the command line: flags, environment and exit codes
// that need no server.

func runCmd(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func TestUsageAndUnknownCommand(t *testing.T) {
	if code, _, stderr := runCmd(t); code != exitErrors || !strings.Contains(stderr, "Usage:") {
		t.Errorf("no args: %d %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "frobnicate"); code != exitErrors || !strings.Contains(stderr, `unknown command "frobnicate"`) {
		t.Errorf("unknown: %d %s", code, stderr)
	}
	if code, stdout, _ := runCmd(t, "help"); code != exitOK || !strings.Contains(stdout, "ratelimiter serve") {
		t.Errorf("help: %d %s", code, stdout)
	}
	if code, _, stderr := runCmd(t, "serve", "-h"); code != exitOK || !strings.Contains(stderr, "--max-keys [RATELIMITER_MAX_KEYS]") {
		t.Errorf("serve -h: %d %s", code, stderr)
	}
	if code, _, stderr := runCmd(t, "config", "lint", "x"); code != exitErrors || !strings.Contains(stderr, "config validate FILE") {
		t.Errorf("config lint: %d %s", code, stderr)
	}
}

func TestEnvironmentSetsFlags(t *testing.T) {
	t.Setenv("RATELIMITER_LOG_FORMAT", "xml")
	code, _, stderr := runCmd(t, "serve")
	if code != exitErrors || !strings.Contains(stderr, `--log-format: "xml" is not json or text`) {
		t.Errorf("env log format: %d %s", code, stderr)
	}
	// The command line wins over the environment; a bad env value is named.
	t.Setenv("RATELIMITER_MAX_KEYS", "lots")
	code, _, stderr = runCmd(t, "serve", "--log-format", "text")
	if code != exitErrors || !strings.Contains(stderr, `RATELIMITER_MAX_KEYS="lots"`) {
		t.Errorf("env max keys: %d %s", code, stderr)
	}
}

func TestServeStartupErrors(t *testing.T) {
	code, _, stderr := runCmd(t, "serve", "--config", "/nonexistent/rl.yaml", "--log-format", "text")
	if code != exitFail || !strings.Contains(stderr, "load configuration") || !strings.Contains(stderr, "no such file") {
		t.Errorf("missing config: %d %s", code, stderr)
	}
	code, _, stderr = runCmd(t, "serve", "--store", "etcd", "--log-format", "text")
	if code != exitFail || !strings.Contains(stderr, `unknown store \"etcd\"`) {
		t.Errorf("unknown store: %d %s", code, stderr)
	}
	code, _, stderr = runCmd(t, "serve", "--listen", "256.0.0.1:99999", "--log-format", "text")
	if code != exitFail || !strings.Contains(stderr, "serve failed") {
		t.Errorf("bad listen address: %d %s", code, stderr)
	}
	// The admin API's errors come before anything starts (no watcher is left
	// running): a token too short, an admin address already taken.
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("too-short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = runCmd(t, "serve", "--admin-token-file", short, "--listen", "127.0.0.1:0", "--log-format", "text")
	if code != exitFail || !strings.Contains(stderr, "admin token") {
		t.Errorf("short admin token: %d %s", code, stderr)
	}
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	code, _, stderr = runCmd(t, "serve", "--admin-token-file", writeToken(t), "--admin-listen", taken.Addr().String(),
		"--listen", "127.0.0.1:0", "--log-format", "text")
	if code != exitFail || !strings.Contains(stderr, "--admin-listen") || !strings.Contains(stderr, "address already in use") {
		t.Errorf("admin address taken: %d %s", code, stderr)
	}
}

func TestSummary(t *testing.T) {
	cr := &checkResponse{Allowed: false, Namespace: "orders", Subject: "u", RetryAfterMS: -1, Reason: "cost exceeds capacity of limit per-minute"}
	if got := summary(cr, ""); !strings.HasPrefix(got, "denied: orders/u, never passes: cost exceeds capacity of limit per-minute") {
		t.Errorf("summary: %s", got)
	}
}

// --store-timeout is the deprecated name of --store-max-wait: it still
// sets it (from the command line or the environment), with a warning, and
// never overrides the new name.
func TestStoreTimeoutDeprecated(t *testing.T) {
	parse := func(args ...string) (faultFlags, []string) {
		t.Helper()
		var f faultFlags
		fs := newFlagSet("serve", "serve", io.Discard)
		f.register(fs)
		if err := parseFlags(fs, args); err != nil {
			t.Fatal(err)
		}
		return f, f.deprecations(fs)
	}
	if f, w := parse(); f.maxWait != time.Second || f.storeQueue != 4096 || len(w) != 0 {
		t.Errorf("defaults: max wait %v, queue %d, warnings %q", f.maxWait, f.storeQueue, w)
	}
	if f, w := parse("--store-timeout", "5s"); f.maxWait != 5*time.Second || len(w) != 1 || !strings.Contains(w[0], "--store-max-wait") {
		t.Errorf("--store-timeout 5s: max wait %v, warnings %q", f.maxWait, w)
	}
	if f, w := parse("--store-max-wait", "2s", "--store-timeout", "5s"); f.maxWait != 2*time.Second || len(w) != 1 {
		t.Errorf("both names: max wait %v, warnings %q; want the new name's 2s", f.maxWait, w)
	}
	t.Setenv("RATELIMITER_STORE_TIMEOUT", "3s")
	if f, w := parse(); f.maxWait != 3*time.Second || len(w) != 1 {
		t.Errorf("RATELIMITER_STORE_TIMEOUT=3s: max wait %v, warnings %q", f.maxWait, w)
	}
	if f, _ := parse("--store-max-wait", "250ms"); f.maxWait != 250*time.Millisecond {
		t.Errorf("the environment's old name overrode the command line's new one: %v", f.maxWait)
	}
}
