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
// healthy phase: every check is answered (never an error) within the
// deadline and a small margin, by the local fallback while the fault lasts
// (the breaker opens, so most checks do not even wait for the deadline),
// and by the store again once it is gone.
func TestNetworkFaults(t *testing.T) {
	redis := redistest.Standalone(t)
	proxy := startProxy(t, redis.Addr())
	ins := startInstances(t, 2, redisstore.Options{Addrs: []string{proxy.Listen}, Timeout: 300 * time.Millisecond},
		chaosSnapshot(t, policy.FailLocal))
	l := &load{instances: ins, subjects: 20, workers: 4, interval: 2 * time.Millisecond}
	l.start()
	defer l.stop()

	type phase struct {
		name  string
		toxic string // "" for a healthy phase
	}
	phases := []phase{
		{"healthy", ""},
		{"latency 50ms", `{"name":"fault","type":"latency","stream":"downstream","attributes":{"latency":50}}`},
		{"healthy after latency", ""},
		{"connection resets", `{"name":"fault","type":"reset_peer","stream":"upstream","attributes":{"timeout":0}}`},
		{"healthy after resets", ""},
		{"black hole", `{"name":"fault","type":"timeout","stream":"upstream","attributes":{"timeout":0}}`},
		{"healthy after black hole", ""},
	}
	const phaseLen = 2 * time.Second
	var marks []time.Time
	for i, ph := range phases {
		if ph.toxic != "" {
			addToxic(t, proxy, ph.toxic)
		} else if i > 0 {
			if err := proxy.Toxics.RemoveToxic(context.Background(), "fault"); err != nil {
				t.Fatal(err)
			}
			// Back to the store before the healthy phase is measured.
			l.waitRecovered(t, marks[i-1], 500*time.Millisecond, 20*time.Second)
		}
		marks = append(marks, time.Now())
		time.Sleep(phaseLen)
	}
	marks = append(marks, time.Now())
	samples := l.stop()

	for i, ph := range phases {
		var in []sample
		for _, s := range samples {
			if !s.start.Before(marks[i]) && s.start.Before(marks[i+1]) {
				in = append(in, s)
			}
		}
		lat := latencyOf(in)
		t.Logf("%-25s %v; %s", ph.name+":", lat, paths(in))
		if len(in) < 100 {
			t.Errorf("%s: only %d checks", ph.name, len(in))
			continue
		}
		for _, s := range in {
			if s.err != nil {
				t.Errorf("%s: a check failed: %v", ph.name, s.err)
				break
			}
		}
		if lat.p99 > deadline+20*time.Millisecond {
			t.Errorf("%s: p99 %v, over the deadline %v + 20ms", ph.name, lat.p99, deadline)
		}
		byPolicy := 0
		for _, s := range in {
			if s.by >= service.DecidedByLocal {
				byPolicy++
			}
		}
		switch {
		case ph.toxic == "" && byPolicy*100 > len(in):
			t.Errorf("%s: %d of %d checks answered by the failure policy", ph.name, byPolicy, len(in))
		case ph.toxic != "" && byPolicy*2 < len(in):
			t.Errorf("%s: only %d of %d checks answered by the failure policy", ph.name, byPolicy, len(in))
		}
	}
}
