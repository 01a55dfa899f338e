package reload

import (
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// What a change does to a subject's state, as the package comment states it:
// each case consumes under one file, reloads another (or puts a runtime
// override), and counts what the same subject is admitted next, on a fake
// clock that does not move unless the case says so.

func oneLimit(alg, lim, period, burst string) string {
	s := `namespaces:
  - name: orders
    limits:
      - name: r
        algorithm: ` + alg + `
        limit: ` + lim + `
        period: ` + period + "\n"
	if burst != "" {
		s += "        burst: " + burst + "\n"
	}
	return s
}

func TestChangeSemantics(t *testing.T) {
	cases := []struct {
		name         string
		before       string
		used         int // checks admitted before the change (all must pass)
		after        string
		wait         time.Duration // clock moved after the change, before the next check
		wantAdmitted int
		// After those checks (which rescale a bucket to the new rate), the
		// clock moves by later and wantLater more are admitted.
		later     time.Duration
		wantLater int
	}{
		// token bucket: the debt carries over, rescaled to the new rate.
		{"raise a limit: in force on the next check", oneLimit("token_bucket", "2", "1h", ""), 2,
			oneLimit("token_bucket", "4", "1h", ""), 0, 2, 0, 0},
		{"lower a limit: the subject waits for its debt at the new rate", oneLimit("token_bucket", "10", "1h", ""), 5,
			oneLimit("token_bucket", "5", "1h", ""), 0, 0, 0, 0},
		{"lowered: refills at the new rate once rescaled", oneLimit("token_bucket", "10", "1h", ""), 5,
			oneLimit("token_bucket", "5", "1h", ""), 0, 0, 12 * time.Minute, 1},
		{"lowered: time before the next check refilled at the old rate", oneLimit("token_bucket", "10", "1h", ""), 5,
			oneLimit("token_bucket", "5", "1h", ""), 12 * time.Minute, 2, 0, 0},
		{"raise a burst: the extra capacity is there at once", oneLimit("token_bucket", "10", "1h", "2"), 2,
			oneLimit("token_bucket", "10", "1h", "5"), 0, 3, 0, 0},
		{"shorter period: the debt rescales to the faster rate", oneLimit("token_bucket", "2", "1h", ""), 2,
			oneLimit("token_bucket", "2", "30m", ""), 0, 0, 15 * time.Minute, 1},
		// windows: the counts carry over against the new limit.
		{"fixed window raised", oneLimit("fixed_window", "2", "1h", ""), 2,
			oneLimit("fixed_window", "3", "1h", ""), 0, 1, 0, 0},
		{"fixed window lowered", oneLimit("fixed_window", "5", "1h", ""), 3,
			oneLimit("fixed_window", "2", "1h", ""), 0, 0, 0, 0},
		{"fixed window longer period holding the old window: counts carry", oneLimit("fixed_window", "3", "1h", ""), 3,
			oneLimit("fixed_window", "3", "2h", ""), 0, 0, 0, 0},
		{"sliding log raised", oneLimit("sliding_window_log", "2", "1h", ""), 2,
			oneLimit("sliding_window_log", "3", "1h", ""), 0, 1, 0, 0},
		{"sliding counter raised", oneLimit("sliding_window_counter", "2", "1h", ""), 2,
			oneLimit("sliding_window_counter", "4", "1h", ""), 0, 2, 0, 0},
		// a new algorithm or a new name: fresh state.
		{"algorithm changed: fresh state", oneLimit("fixed_window", "2", "1h", ""), 2,
			oneLimit("sliding_window_log", "2", "1h", ""), 0, 2, 0, 0},
		{"token bucket to fixed window: fresh state", oneLimit("token_bucket", "2", "1h", ""), 2,
			oneLimit("fixed_window", "2", "1h", ""), 0, 2, 0, 0},
		{"renamed limit: fresh state", oneLimit("token_bucket", "2", "1h", ""), 2,
			`namespaces:
  - name: orders
    limits:
      - name: r2
        algorithm: token_bucket
        limit: 2
        period: 1h
`, 0, 2, 0, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, c.before, envOpts{})
			for i := range c.used {
				if !e.allowed("u") {
					t.Fatalf("setup: check %d denied before the change", i+1)
				}
			}
			e.write(c.after)
			if err := e.ctrl.Reload(false); err != nil {
				t.Fatal(err)
			}
			e.clk.Advance(c.wait)
			if n := e.admits("u"); n != c.wantAdmitted {
				t.Fatalf("admitted %d after the change, want %d", n, c.wantAdmitted)
			}
			e.clk.Advance(c.later)
			if n := e.admits("u"); n != c.wantLater {
				t.Fatalf("admitted %d %v later, want %d", n, c.later, c.wantLater)
			}
		})
	}
}

// A runtime override changes a subject's limits with the same semantics as
// a reload: the next check sees them, and state carries over.
func TestOverrideSemantics(t *testing.T) {
	e := newEnv(t, oneLimit("token_bucket", "2", "1h", ""), envOpts{})
	if n := e.admits("u"); n != 2 {
		t.Fatal(n)
	}
	put(t, e.ctrl, "u", map[string]policy.Patch{"r": {Limit: 5}}, time.Time{})
	if n := e.admits("u"); n != 3 {
		t.Fatalf("raised by an override: %d more, want 3", n)
	}
	put(t, e.ctrl, "u", map[string]policy.Patch{"r": {Algorithm: limit.SlidingWindowLog}}, time.Time{})
	if n := e.admits("u"); n != 2 {
		t.Fatalf("algorithm changed by an override: %d, want a fresh 2", n)
	}
}
