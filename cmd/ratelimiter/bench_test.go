package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
)

// ratelimiter bench drives a running server and reports what it measured,
// the server's CPU time per check included.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	bin := buildBinary(t)
	s := startServer(t, bin)
	for _, mode := range []string{"check", "checks"} {
		out, err := exec.Command(bin, "bench", "--server", "http://"+s.addr, "--mode", mode, "--callers", "8",
			"--duration", "500ms", "--subjects", "100", "--pid", strconv.Itoa(s.cmd.Process.Pid), "--quiet").CombinedOutput()
		if err != nil {
			t.Fatalf("bench --mode %s: %v\n%s", mode, err, out)
		}
		m := regexp.MustCompile(`checks/s (\d+)  allowed (\d+)  denied (\d+)  errors 0\n`).FindSubmatch(out)
		if m == nil || string(m[1]) == "0" || !regexp.MustCompile(`server CPU .*: [0-9.]+ µs per check`).Match(out) {
			t.Errorf("bench --mode %s printed:\n%s", mode, out)
		}
		t.Logf("%s", out)
	}
	if out, err := exec.Command(bin, "bench", "--mode", "smoke").CombinedOutput(); err == nil {
		t.Errorf("an unknown mode ran: %s", out)
	}
}
