package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// auditConfig: one namespace per algorithm the audit holds to 0, and the
// sliding window counter, whose approximation it shows.
const auditConfig = `namespaces:
  - name: bucket
    limits:
      - {name: per-hour, algorithm: token_bucket, limit: 50, period: 1h}
  - name: log
    limits:
      - {name: per-hour, algorithm: sliding_window_log, limit: 50, period: 1h}
  - name: window
    limits:
      - {name: per-hour, algorithm: fixed_window, limit: 50, period: 1h}
  - name: counter
    limits:
      - {name: per-2s, algorithm: sliding_window_counter, limit: 50, period: 2s}
`

// auditTotals sums the audit's counters of namespace ns over addrs.
func auditTotals(t *testing.T, addrs []string, ns string) (checks, over, under float64) {
	t.Helper()
	sum := func(name string) (total float64) {
		scrape(t, addrs, name, "namespace", func(_, lv string, v float64) {
			if lv == ns {
				total += v
			}
		})
		return total
	}
	return sum("ratelimiter_audit_checks_total"), sum("ratelimiter_audit_over_admissions_total"), sum("ratelimiter_audit_under_admissions_total")
}

// awaitAudit waits until the audit has replayed want checks of ns (its
// replay runs every 125ms, 250ms behind) and returns its counts.
func awaitAudit(t *testing.T, addrs []string, ns string, want int) (over, under float64) {
	t.Helper()
	var checks float64
	within(t, 10*time.Second, fmt.Sprintf("the audit replays %d checks of %s", want, ns), func() bool {
		checks, over, under = auditTotals(t, addrs, ns)
		return checks >= float64(want)
	})
	if checks != float64(want) {
		t.Errorf("%s: the audit replayed %v checks, want %d", ns, checks, want)
	}
	return over, under
}

// Under bursts of 3,000 concurrent checks over fresh connections, the
// memory store audits clean: every check of every subject replayed (rate 1),
// 0 over- and 0 under-admissions for the token bucket, the log and the
// fixed window; the sliding window counter's over-admissions are its
// approximation, logged.
func TestAuditUnderBurstsMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server under bursts")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, auditConfig)
	s := startServer(t, bin, "--config", cfg, "--audit-rate", "1")
	addrs := []string{s.addr}
	subjects := []string{"s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12"}
	for _, ns := range []string{"bucket", "log", "window"} {
		sent := 0
		for range 2 {
			res := fireBurst(addrs, ns, subjects, 3000)
			if len(res.errs) > 0 {
				t.Fatalf("%s: %d checks failed, first: %v", ns, len(res.errs), res.errs[0])
			}
			sent += 3000
			for _, sub := range subjects {
				if res.admitted[sub] > 50 {
					t.Errorf("%s: %s admitted %d, limit 50", ns, sub, res.admitted[sub])
				}
			}
		}
		over, under := awaitAudit(t, addrs, ns, sent)
		t.Logf("%s: %d checks audited, %v over-admissions, %v under-admissions", ns, sent, over, under)
		if over != 0 || under != 0 {
			t.Errorf("%s: the audit counts %v over and %v under on an exact store, want 0 and 0", ns, over, under)
		}
	}
	// The counter: a burst late in one window, then one in the middle of
	// the next, where the counter weighs the first window at about half
	// (it assumes the window was uniform) while the last 2 seconds hold
	// the whole first burst: the counter admits what the exact log denies.
	phase := func(from, to int64) func() bool {
		return func() bool { ms := time.Now().UnixMilli() % 2000; return ms >= from && ms < to }
	}
	within(t, 5*time.Second, "late in a counter window", phase(1700, 1800))
	first := fireBurst(addrs, "counter", []string{"c"}, 200)
	within(t, 5*time.Second, "the middle of the next window", phase(900, 1000))
	second := fireBurst(addrs, "counter", []string{"c"}, 200)
	if len(first.errs)+len(second.errs) > 0 {
		t.Fatalf("counter checks failed: %v %v", first.errs, second.errs)
	}
	over, under := awaitAudit(t, addrs, "counter", 400)
	t.Logf("counter: admitted %d late in a window and %d in the middle of the next; the audit counts %v over-admissions (the approximation), %v under",
		first.admitted["c"], second.admitted["c"], over, under)
	if over == 0 {
		t.Errorf("the audit saw no over-admission of the sliding window counter after a late burst")
	}
}

// A Redis restart without persistence forgets every spent budget: the
// store admits it again, and the audit counts exactly that, while it
// counts nothing before the restart. One instance, so that it sees every
// admission (across instances each sees its own).
func TestAuditSeesARestartsLostWrites(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server on Redis")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, auditConfig)
	srv := redistest.Standalone(t)
	// No deny cache: it would keep denying the spent subjects after the
	// restart (exactly: their denials hold until their retry instants).
	s := startServer(t, bin, "--config", cfg, "--store", "redis", "--redis-addrs", srv.Addr(), "--audit-rate", "1", "--deny-cache-size", "0")
	addrs := []string{s.addr}
	subjects := []string{"a", "b", "c"}
	burst := func() int {
		res := fireBurst(addrs, "bucket", subjects, 600)
		if len(res.errs) > 0 {
			t.Fatalf("%d checks failed, first: %v", len(res.errs), res.errs[0])
		}
		n := 0
		for _, sub := range subjects {
			n += res.admitted[sub]
		}
		return n
	}
	if n := burst(); n != 150 {
		t.Fatalf("admitted %d before the restart, want 150 (50 per subject)", n)
	}
	if over, under := awaitAudit(t, addrs, "bucket", 600); over != 0 || under != 0 {
		t.Fatalf("before the restart the audit counts %v over, %v under: want 0", over, under)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Until the instance's connection is back, checks may be answered by
	// the failure policy, whose seeded shares hold (remaining 0 each).
	within(t, 10*time.Second, "the store deciding again", func() bool {
		code, by, err := checkFreshBy(s.addr, "bucket", "probe")
		return err == nil && code == 200 && by == "store"
	})
	again := burst()
	over, under := awaitAudit(t, addrs, "bucket", 600+600+probes(t, addrs))
	t.Logf("after the restart the store admitted %d again; the audit counts %v over-admissions, %v under", again, over, under)
	if again != 150 || over != 150 {
		t.Errorf("after the restart: %d admitted again, %v over-admissions: want 150 and 150 (the budget the restart forgot)", again, over)
	}
}

// probes counts the checks of subject "probe" the audit saw.
func probes(t *testing.T, addrs []string) int {
	t.Helper()
	n := 0.0
	scrape(t, addrs, "ratelimiter_decisions_total", "namespace", func(_, lv string, v float64) {
		if lv == "bucket" {
			n += v
		}
	})
	return int(n) - 1200
}
