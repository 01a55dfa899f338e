package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// Distributed counting, end to end: three `ratelimiter serve` processes share
// one Redis (and, separately, one Redis Cluster); 1,000 concurrent checks of
// one subject spread over the three admit exactly the limit, and a limit set
// with costs charges both of its limits exactly what was admitted.

const distributedConfig = `namespaces:
  - name: orders
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 100
        period: 1h
  - name: checkout
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 100
        period: 1h
      - name: per-day
        algorithm: sliding_window_log
        limit: 130
        period: 24h
`

type checkReply struct {
	Allowed bool `json:"allowed"`
	Limits  []struct {
		Name      string `json:"name"`
		Remaining int64  `json:"remaining"`
	} `json:"limits"`
}

func postCheck(client *http.Client, addr, ns, subject string, cost int64) (int, checkReply, error) {
	body := fmt.Sprintf(`{"namespace":%q,"subject":%q,"cost":%d}`, ns, subject, cost)
	resp, err := client.Post("http://"+addr+"/v1/check", "application/json", strings.NewReader(body))
	if err != nil {
		return 0, checkReply{}, err
	}
	defer resp.Body.Close()
	var r checkReply
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	if err := json.Unmarshal(buf.Bytes(), &r); err != nil {
		return resp.StatusCode, r, fmt.Errorf("decode %q: %w", buf.String(), err)
	}
	return resp.StatusCode, r, nil
}

func runDistributed(t *testing.T, redisArgs ...string) {
	bin := buildBinary(t)
	cfg := writeConfig(t, distributedConfig)
	var addrs []string
	for i := 0; i < 3; i++ {
		// Default flags: a busy but healthy Redis decides every check
		// (exact_test.go floods it harder).
		s := startServer(t, bin, append([]string{"--config", cfg, "--store", "redis"}, redisArgs...)...)
		addrs = append(addrs, s.addr)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 64}}

	fire := func(ns string, cost func(i int) int64) (admitted, allowed int64) {
		var a, n atomic.Int64
		var wg sync.WaitGroup
		work := make(chan int)
		for w := 0; w < 64; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range work {
					c := cost(i)
					code, r, err := postCheck(client, addrs[i%3], ns, "user-hot", c)
					if err != nil || (code != 200 && code != 429) || r.Allowed != (code == 200) {
						t.Errorf("check %d: status %d, %+v, %v", i, code, r, err)
						continue
					}
					if r.Allowed {
						a.Add(c)
						n.Add(1)
					}
				}
			}()
		}
		for i := 0; i < 1000; i++ {
			work <- i
		}
		close(work)
		wg.Wait()
		return a.Load(), n.Load()
	}

	if _, n := fire("orders", func(int) int64 { return 1 }); n != 100 {
		t.Fatalf("%d of 1000 checks through 3 instances allowed, want exactly 100", n)
	}
	admitted, _ := fire("checkout", func(i int) int64 { return int64(1 + i%3) })
	if admitted < 98 || admitted > 100 {
		t.Fatalf("admitted %d units, want the per-hour limit of 100 filled (costs 1..3)", admitted)
	}
	code, r, err := postCheck(client, addrs[0], "checkout", "user-hot", 0)
	if err != nil || len(r.Limits) != 2 {
		t.Fatalf("peek: %d %+v %v", code, r, err)
	}
	if hour, day := 100-r.Limits[0].Remaining, 130-r.Limits[1].Remaining; hour != admitted || day != admitted {
		t.Fatalf("admitted %d units, but per-hour was charged %d and per-day %d: not all-or-nothing", admitted, hour, day)
	}
}

func TestDistributedStandaloneRedis(t *testing.T) {
	srv := redistest.Standalone(t)
	runDistributed(t, "--redis-addrs", srv.Addr())
}

func TestDistributedRedisCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	runDistributed(t, "--redis-mode", "cluster", "--redis-addrs", strings.Join(c.Addrs(), ","))
}

// An instance started while Redis is down does not exit (no crash loop)
// and does not wait with its listener closed: it serves at once by the
// namespace's failure policy (on_store_error: local), reports itself
// degraded but ready, keeps dialing, and once Redis answers its checks are
// the store's again and runtime overrides work.
func TestStartsWhenRedisComesBack(t *testing.T) {
	bin := buildBinary(t)
	srv := redistest.Standalone(t)
	if err := srv.Stop(); err != nil {
		t.Fatal(err)
	}
	s := startServer(t, bin, "--store", "redis", "--redis-addrs", srv.Addr(), "--redis-timeout", "200ms",
		"--admin-token-file", writeToken(t))
	client := &http.Client{Timeout: 10 * time.Second}
	check := func(subject string) (int, string) {
		t.Helper()
		resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json",
			strings.NewReader(fmt.Sprintf(`{"namespace":"orders","subject":%q}`, subject)))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode, resp.Header.Get("RateLimit-Decided-By")
	}
	if code, by := check("user-1"); code != 200 || by != "local" {
		t.Fatalf("with Redis down: %d decided by %q, want 200 by the local failure policy", code, by)
	}
	resp, err := client.Get("http://" + s.addr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(body), "degraded") {
		t.Fatalf("readyz with Redis down: %d %q, want 200 degraded", resp.StatusCode, body)
	}
	// Less said to strangers: the address goes to the log, not the probe.
	if _, port, _ := net.SplitHostPort(srv.Addr()); strings.Contains(string(body), port) || strings.Contains(string(body), "127.0.0.1") {
		t.Fatalf("readyz names the Redis address to anyone: %q", body)
	}
	if !strings.Contains(s.log(), srv.Addr()) {
		t.Fatalf("the Redis address is not in the log:\n%s", s.log())
	}
	put := `{"limits":{"per-minute":{"limit":7,"burst":7}}}`
	if code, body := adminDo(t, client, "PUT", "http://"+s.addr+"/v1/admin/overrides/orders/vip", put, "Bearer "+testToken); code != 503 {
		t.Fatalf("override with Redis down: %d %s, want 503", code, body)
	}
	s.waitLogCount(t, "redis unreachable; retrying", 2, 30*time.Second) // still there, dialing
	select {
	case <-s.done:
		t.Fatalf("serve exited while Redis was down: %v\n%s", s.err, s.log())
	default:
	}

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	// Another instance sets an override as Redis comes back (before or just
	// after this one connects: either way it must apply here).
	rc, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{srv.Addr()}, ForceSingleClient: true, DisableCache: true})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	elsewhere, err := redisstore.NewOverrides(rc, redisstore.OverridesOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := elsewhere.Put(context.Background(), policy.Override{
		Namespace: "orders", Subject: "elsewhere", Limits: map[string]policy.Patch{"per-minute": {Limit: 9, Burst: 9}}}, 100); err != nil {
		t.Fatal(err)
	}
	s.waitLog(t, "redis connected; checks are the store's again", 30*time.Second)
	if code, by := check("user-1"); code != 200 || by != "store" {
		t.Fatalf("after Redis came back: %d decided by %q, want the store", code, by)
	}
	if code, body := adminDo(t, client, "PUT", "http://"+s.addr+"/v1/admin/overrides/orders/vip", put, "Bearer "+testToken); code != 200 {
		t.Fatalf("override after Redis came back: %d %s", code, body)
	}
	perMinute := func(subject string) int64 {
		resp, err := client.Post("http://"+s.addr+"/v1/check", "application/json",
			strings.NewReader(fmt.Sprintf(`{"namespace":"orders","subject":%q,"cost":0}`, subject)))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var v struct {
			Limits []struct {
				Limit int64 `json:"limit"`
			} `json:"limits"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&v); err != nil || len(v.Limits) == 0 {
			t.Fatalf("peek %s: %v", subject, err)
		}
		return v.Limits[0].Limit
	}
	if got := perMinute("vip"); got != 7 {
		t.Fatalf("vip after the override: per-minute %d, want 7", got)
	}
	within(t, 10*time.Second, "the override set elsewhere in force after connecting", func() bool {
		return perMinute("elsewhere") == 9
	})
	stopServer(t, s)
	if s.err != nil {
		t.Fatalf("exit after SIGTERM: %v\n%s", s.err, s.log())
	}
}
