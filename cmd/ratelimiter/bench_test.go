package main

import (
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"
)

// ratelimiter bench drives a running server, over HTTP and the native gRPC
// API (--grpc-listen), and reports what it measured, the server's CPU time
// per check included.
func TestBenchCommand(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	bin := buildBinary(t)
	s := startServer(t, bin, "--grpc-listen", "127.0.0.1:0")
	grpcAddr, _ := s.waitLog(t, "grpc listening", 5*time.Second)["addr"].(string)
	if grpcAddr == "" {
		t.Fatal("no address in the grpc listener's log line")
	}
	for _, mode := range []string{"check", "checks", "grpc", "stream"} {
		out, err := exec.Command(bin, "bench", "--server", "http://"+s.addr, "--grpc", grpcAddr, "--mode", mode, "--callers", "8",
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
