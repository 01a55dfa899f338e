package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// Tests of the ways around a limit an attack run found (the issue "No way
// around a limit"), each against the real binary.

const evictionConfig = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 5
        period: 1h
      - name: per-hour-window
        algorithm: sliding_window_counter
        limit: 1000
        period: 1h
`

// A flood of twice --max-keys distinct subjects, each spending one unit,
// leaves a subject that was limited limited, with what it spent of its
// hourly window intact: through the JSON API and through the gate. The
// memory store counts the entries it evicted that carried spent budget.
func TestFloodDoesNotFreeLimitedSubject(t *testing.T) {
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(cfg, []byte(evictionConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, "--config", cfg, "--max-keys", "2000")
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	viaAPI := func(subject string) (int, string) {
		resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json",
			strings.NewReader(fmt.Sprintf(`{"namespace":"orders","subject":%q}`, subject)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v checkReply // the remaining of every limit
		json.NewDecoder(resp.Body).Decode(&v)
		return resp.StatusCode, fmt.Sprint(v.Limits)
	}
	viaGate := func(subject string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, "http://"+s.addr+"/v1/gate?namespace=orders", nil)
		req.Header.Set("X-User-ID", subject)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		// The binding limit's remaining (not its reset, which moves).
		r, _, _ := strings.Cut(resp.Header.Get("RateLimit"), ";t=")
		return resp.StatusCode, r
	}
	for _, tc := range []struct {
		name  string
		check func(string) (int, string)
	}{{"api", viaAPI}, {"gate", viaGate}} {
		victim := "victim-" + tc.name
		for i := range 5 {
			if code, _ := tc.check(victim); code != 200 {
				t.Fatalf("%s: check %d of the victim: %d", tc.name, i+1, code)
			}
		}
		code, before := tc.check(victim)
		if code != 429 {
			t.Fatalf("%s: the victim's sixth check: %d, want 429", tc.name, code)
		}
		var wg sync.WaitGroup
		work := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					tc.check(fmt.Sprintf("flood-%s-%d", tc.name, i))
				}
			}()
		}
		for i := range 4000 {
			work <- i
		}
		close(work)
		wg.Wait()
		if code, after := tc.check(victim); code != 429 || after != before {
			t.Errorf("%s: after 4,000 new subjects (2x --max-keys): %d %q, want 429 as before (%q)", tc.name, code, after, before)
		}
	}
	evicted, err := metricValue(client, s.addr, `ratelimiter_memstore_evictions_total{carried="spent",store="memory"}`)
	if err != nil || evicted < 4000 {
		t.Errorf("memory store evictions that carried spent budget: %v (%v), want the floods' (at least 4,000)", evicted, err)
	}
	if keys, err := metricValue(client, s.addr, `ratelimiter_memstore_keys{store="memory"}`); err != nil || keys > 2000 {
		t.Errorf("memory store keys %v (%v), want at most --max-keys 2000", keys, err)
	}
}

// An instance started on a Redis that may evict keys says so, naming the
// node and the policy to set.
func TestWarnsWhenRedisMayEvict(t *testing.T) {
	bin := buildBinary(t)
	srv := redistest.Standalone(t, redistest.WithArgs("--maxmemory", "100mb", "--maxmemory-policy", "allkeys-lru"))
	s := startServer(t, bin, "--store", "redis", "--redis-addrs", srv.Addr())
	line := s.waitLog(t, "redis may evict the limiter's keys, giving subjects back what they spent: set maxmemory-policy noeviction", 10*time.Second)
	if node, _ := line["node"].(string); !strings.Contains(node, srv.Addr()) || !strings.Contains(node, "allkeys-lru") {
		t.Errorf("warning names %q, want the node and its policy", node)
	}
}
