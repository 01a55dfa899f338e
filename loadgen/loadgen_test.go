package loadgen

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/apitest"
)

// Both modes, closed and open loop: every check answered and counted,
// 10 admitted per subject at most, the latencies in order, the CPU time of
// this process (the server here) read from /proc.
func TestRun(t *testing.T) {
	url, grpcAddr, rlsAddr := apitest.New(t, 10).URL, apitest.NewGRPC(t, 10), apitest.NewRLS(t, 10)
	for _, tc := range []struct {
		mode string
		rate float64
	}{{ModeCheck, 0}, {ModeChecks, 0}, {ModeGRPC, 0}, {ModeStream, 0}, {ModeRLS, 0}, {ModeCheck, 400}, {ModeChecks, 400}, {ModeStream, 400}} {
		cfg := Config{URL: url, GRPC: grpcAddr, RLS: rlsAddr, Mode: tc.mode, Namespace: "orders", Subjects: 5, Callers: 8, Duration: 300 * time.Millisecond, Rate: tc.rate, PID: os.Getpid()}
		r, err := Run(context.Background(), cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s rate %v: %d checks, %d allowed, %d denied, %d errors, p50 %v p99 %v, CPU %v", tc.mode, tc.rate, r.Checks, r.Allowed, r.Denied, r.Errors, r.P50, r.P99, r.ServerCPU)
		if r.Checks == 0 || r.Errors != 0 || r.Allowed+r.Denied != r.Checks {
			t.Errorf("%s: %d checks, %d errors (%s)", tc.mode, r.Checks, r.Errors, r.FirstError)
		}
		if r.Allowed > 3*5*10 { // three servers
			t.Errorf("%s: %d admitted, more than the 5 subjects x 10 the server allows over the whole test", tc.mode, r.Allowed)
		}
		if !(r.P50 <= r.P90 && r.P90 <= r.P99 && r.P99 <= r.P999) || r.P50 <= 0 {
			t.Errorf("%s: percentiles out of order: %v %v %v %v", tc.mode, r.P50, r.P90, r.P99, r.P999)
		}
		if tc.rate > 0 && r.Checks+r.NotSent > int64(tc.rate*cfg.Duration.Seconds())+1 {
			t.Errorf("%s open loop: %d checks and %d not sent in %v at %v/s", tc.mode, r.Checks, r.NotSent, cfg.Duration, tc.rate)
		}
		if r.ServerCPU < 0 || !strings.Contains(r.String(), "checks/s") {
			t.Errorf("%s: CPU %v, report %q", tc.mode, r.ServerCPU, r.String())
		}
	}
	if _, err := Run(context.Background(), Config{URL: url, Mode: "smoke", Namespace: "orders", Subjects: 1, Callers: 1, Duration: time.Millisecond}); err == nil {
		t.Error("an unknown mode was accepted")
	}
	for _, c := range []struct {
		ds   []time.Duration
		p    float64
		want time.Duration
	}{{nil, 0.5, 0}, {[]time.Duration{1, 2, 3, 4}, 0.5, 2}, {[]time.Duration{1, 2, 3, 4}, 0.99, 4}, {[]time.Duration{1, 2, 3, 4}, 0, 1},
		{[]time.Duration{1, 2, 3, 4, 5, 6, 7, 8, 9, 10}, 0.9, 9}} {
		if got := Quantile(c.ds, c.p); got != c.want {
			t.Errorf("Quantile(%v, %v) = %v, want %v (nearest rank)", c.ds, c.p, got, c.want)
		}
	}
	if _, err := ProcessCPU(1 << 30); err == nil {
		t.Error("the CPU time of no process was read")
	}
}
