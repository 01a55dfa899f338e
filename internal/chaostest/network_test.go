package chaostest

import (
	"context"
	"strings"
	"testing"
	"time"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// startProxy puts a toxiproxy TCP proxy, on a free loopback port, in front
// of upstream.
func startProxy(t *testing.T, upstream string) *toxiproxy.Proxy {
	t.Helper()
	srv := toxiproxy.NewServer(toxiproxy.NewMetricsContainer(prometheus.NewRegistry()), zerolog.Nop())
	p := toxiproxy.NewProxy(srv, "redis", "127.0.0.1:0", upstream)
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

func addToxic(t *testing.T, p *toxiproxy.Proxy, json string) {
	t.Helper()
	if _, err := p.Toxics.AddToxicJson(strings.NewReader(json)); err != nil {
		t.Fatalf("toxic %s: %v", json, err)
	}
}

// Latency, connection resets and a black hole between the instances and
// Redis, injected by toxiproxy, one after the other, each followed by a
// healthy phase. Every check is answered (never an error). Slow is not
// down: with 50ms of latency, well within the maximum wait, Redis still
// decides every check, late. With latency past the maximum wait, resets
// or a black hole, the local fallback answers: at the latest after the
// maximum wait, and at once once the breaker has opened. Once the fault
// is gone, the store decides again.
func TestNetworkFaults(t *testing.T) {
	redis := redistest.Standalone(t)
	proxy := startProxy(t, redis.Addr())
	ins := startInstances(t, 2, redisstore.Options{Addrs: []string{proxy.Listen}, Timeout: 2 * time.Second},
		chaosSnapshot(t, policy.FailLocal))
	// Many workers, each pacing its own checks: a worker held up to the
	// maximum wait by a fault leaves the rate of the others unchanged, as
	// with the many independent clients of a real deployment.
	l := &load{instances: ins, subjects: 20, workers: 64, interval: 32 * time.Millisecond}
	l.start()
	defer l.stop()

	type phase struct {
		name  string
		toxic string // "" for a healthy phase
		down  bool   // the fault is an outage, for the failure policy
	}
	phases := []phase{
		{"healthy", "", false},
		{"latency 50ms", `{"name":"fault","type":"latency","stream":"downstream","attributes":{"latency":50}}`, false},
		{"healthy after latency", "", false},
		{"latency 1s", `{"name":"fault","type":"latency","stream":"downstream","attributes":{"latency":1000}}`, true},
		{"healthy after long latency", "", false},
		{"connection resets", `{"name":"fault","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`, true},
		{"healthy after resets", "", false},
		{"black hole", `{"name":"fault","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`, true},
		{"healthy after black hole", "", false},
	}
	const phaseLen = 2 * time.Second
	// Each phase is measured from its start to the change that ends it;
	// the wait for the store to decide again after an outage, and the
	// checks in flight at a change, belong to neither.
	starts := make([]time.Time, len(phases))
	ends := make([]time.Time, len(phases))
	for i, ph := range phases {
		if i > 0 {
			ends[i-1] = time.Now()
		}
		if ph.toxic != "" {
			addToxic(t, proxy, ph.toxic)
			// A check sent as the fault begins may wait while the store
			// still answers checks sent before it, and be shed (503,
			// never an admission) rather than answered by the failure
			// policy: the fault's phase starts once such checks are over.
			time.Sleep(maxWait + 50*time.Millisecond)
		} else if i > 0 {
			if err := proxy.Toxics.RemoveToxic(context.Background(), "fault"); err != nil {
				t.Fatal(err)
			}
			if phases[i-1].down {
				l.waitRecovered(t, starts[i-1], 500*time.Millisecond, 20*time.Second)
			}
			// A check in flight as the toxic goes may lose its reply with
			// it: the healthy phase starts once such checks are over.
			time.Sleep(maxWait + 50*time.Millisecond)
		}
		starts[i] = time.Now()
		time.Sleep(phaseLen)
	}
	ends[len(phases)-1] = time.Now()
	samples := l.stop()

	for i, ph := range phases {
		// A phase's checks started after it began and were answered
		// before the change that ends it: one in flight at the change
		// (the next fault reaching it mid-call) belongs to neither.
		var in []sample
		for _, s := range samples {
			if !s.start.Before(starts[i]) && s.start.Add(s.took).Before(ends[i]) {
				in = append(in, s)
			}
		}
		lat := latencyOf(in)
		t.Logf("%-25s %v; %s", ph.name+":", lat, paths(in))
		if len(in) < 100 {
			t.Errorf("%s: only %d checks", ph.name, len(in))
			continue
		}
		var failed []time.Duration // when each failed check started, from the phase's start
		for _, s := range in {
			if s.err != nil {
				if len(failed) == 0 {
					t.Errorf("%s: a check failed: %v", ph.name, s.err)
				}
				failed = append(failed, s.start.Sub(starts[i]))
			}
		}
		if len(failed) > 0 {
			t.Logf("%s: %d checks failed, started %v to %v into the phase", ph.name, len(failed), failed[0], failed[len(failed)-1])
		}
		// The bound is the maximum wait; the slack is the scheduling of a
		// 2-core machine under the load of the checks and the proxies.
		if lat.p99 > maxWait+100*time.Millisecond {
			t.Errorf("%s: p99 %v, over the max wait %v + 100ms", ph.name, lat.p99, maxWait)
		}
		byPolicy := 0
		for _, s := range in {
			if s.by >= service.DecidedByLocal {
				byPolicy++
			}
		}
		switch {
		case !ph.down && byPolicy > 0:
			t.Errorf("%s: %d of %d checks not decided by the store (Redis answers: slow is not down)", ph.name, byPolicy, len(in))
		case ph.down && byPolicy*2 < len(in):
			t.Errorf("%s: only %d of %d checks answered by the failure policy", ph.name, byPolicy, len(in))
		}
	}
}
