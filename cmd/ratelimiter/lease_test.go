package main

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// leaseConfig is a global limit of 1,000 a second (burst 1,000), leased:
// every check names the one subject "all". closed: while Redis restarts,
// checks the slices cannot cover are denied, so that the limit holds
// through the restart too.
const leaseConfig = `namespaces:
  - name: global
    on_store_error: closed
    limits:
      - name: orders
        algorithm: token_bucket
        limit: 1000
        period: 1s
        burst: 1000
        lease: true
`

const (
	leaseRate  = 1000 // the limit, per second
	leaseBurst = 1000
	leaseLoad  = 3000 // the open loop's checks per second
	leaseRun   = 20 * time.Second
	killAt     = 7 * time.Second  // the busiest instance is killed
	restartAt  = 13 * time.Second // Redis (or the key's primary) restarts
)

// leaseShares spreads the load unevenly: 60%, 30% and 10%.
var leaseShares = [3]int{6, 3, 1}

// leaseSample is one check of the open loop.
type leaseSample struct {
	instance int
	at       time.Duration // answered, since the start
	status   int
	by       string
	err      error
}

// Three instances share one Redis (and a 3-primary Cluster) under a global
// leased limit of 1,000/s, with an open loop of 3,000 checks a second
// spread 60/30/10 over them for 20 s, the busiest instance killed at 7 s
// and Redis restarted at 13 s: no second admits more than the limit and
// its burst, at least 97% of the limit is used while Redis answers, the
// instances' shares follow their demand within 2 points, the kill costs
// at most the dead instance's slices, and Redis sees at most one take or
// return per hundred checks (INFO commandstats).
func TestLeasedGlobalLimit(t *testing.T) {
	if testing.Short() {
		t.Skip("runs three servers on Redis for 20s, twice")
	}
	bin := buildBinary(t)
	cfg := writeConfig(t, leaseConfig)
	t.Run("standalone", func(t *testing.T) {
		srv := redistest.Standalone(t)
		runLeased(t, bin, cfg, []*redistest.Server{srv}, srv, "--redis-addrs", srv.Addr())
	})
	t.Run("cluster", func(t *testing.T) {
		c := redistest.Cluster(t, 3, 0)
		primaries, err := c.Primaries()
		if err != nil {
			t.Fatal(err)
		}
		nodes, err := c.ClusterNodes()
		if err != nil {
			t.Fatal(err)
		}
		// The primary that holds the global key restarts.
		slot := redisstore.Slot("rl:{" + policy.Key("global", "all") + "}:orders")
		var owner *redistest.Server
		for _, n := range nodes {
			if inRanges(slot, n.Slots) {
				for _, p := range primaries {
					if p.Addr() == n.Addr {
						owner = p
					}
				}
			}
		}
		if owner == nil {
			t.Fatalf("no primary holds slot %d", slot)
		}
		runLeased(t, bin, cfg, primaries, owner, "--redis-mode", "cluster", "--redis-addrs", strings.Join(c.Addrs(), ","))
	})
}

func runLeased(t *testing.T, bin, cfg string, primaries []*redistest.Server, restart *redistest.Server, redisArgs ...string) {
	var servers []*server
	var addrs []string
	for range 3 {
		s := startServer(t, bin, append([]string{"--config", cfg, "--store", "redis", "--instances", "3"}, redisArgs...)...)
		servers, addrs = append(servers, s), append(addrs, s.addr)
	}
	// The limiter's scripts run by EVALSHA; EVAL is the heartbeat's, and
	// a script's first call on a connection after the restart.
	scripts := func() (evalsha, eval int64) {
		for _, p := range primaries {
			info, err := p.Info("commandstats")
			if err != nil {
				t.Fatal(err)
			}
			evalsha += statCalls(info["cmdstat_evalsha"])
			eval += statCalls(info["cmdstat_eval"])
		}
		return evalsha, eval
	}
	for _, p := range primaries {
		p.MustDo("CONFIG", "RESETSTAT")
	}

	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	defer client.CloseIdleConnections()
	var mu sync.Mutex
	var samples []leaseSample
	var shaBefore, evalBefore int64
	killed, restarted := false, false
	start := time.Now()
	total := int(leaseLoad * leaseRun.Seconds())
	events := func(_ int, due time.Time) {
		if at := due.Sub(start); !killed && at >= killAt {
			killed = true
			syscall.Kill(servers[0].cmd.Process.Pid, syscall.SIGKILL) // a process this test started
			t.Logf("%v: killed instance 0 (60%% of the load) by SIGKILL", time.Since(start).Round(time.Millisecond))
		} else if !restarted && at >= restartAt {
			restarted = true
			shaBefore, evalBefore = scripts() // the restart resets the node's counts
			if err := restart.Restart(); err != nil {
				t.Fatal(err)
			}
			t.Logf("%v: restarted Redis %s", time.Since(start).Round(time.Millisecond), restart.Addr())
		}
	}
	// 4,096 in flight: 3,000/s may wait up to --store-max-wait (1s) while
	// a Cluster primary restarts.
	notSent := pace(start, total, leaseLoad, 4096, events, func(i int, _ time.Time) {
		inst := 0
		switch k := i % 10; {
		case k >= leaseShares[0]+leaseShares[1]:
			inst = 2
		case k >= leaseShares[0]:
			inst = 1
		}
		s := leaseSample{instance: inst}
		s.status, s.by, s.err = leaseCheck(client, addrs[inst])
		s.at = time.Since(start)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	sha, eval := scripts()
	calls, eval := shaBefore+sha, evalBefore+eval

	var perSecond [int(leaseRun/time.Second) + 1]int
	var admitted, answered, failed, toKilled int
	var outageFrom, outageTo time.Duration // the checks the failure policy answered
	var before [3]int                      // admitted per instance before the kill, after the first second
	var demand [3]int
	by := map[string]int{}
	for _, s := range samples {
		if s.err != nil || (s.status != http.StatusOK && s.status != http.StatusTooManyRequests) {
			if s.instance == 0 && s.at >= killAt {
				toKilled++ // the killed instance's share of the load
			} else {
				failed++
				if failed <= 5 {
					t.Logf("check on instance %d at %v: status %d, %v", s.instance, s.at, s.status, s.err)
				}
			}
			continue
		}
		answered++
		by[s.by]++
		if s.by == "closed" {
			if outageFrom == 0 || s.at < outageFrom {
				outageFrom = s.at
			}
			outageTo = max(outageTo, s.at)
		}
		if s.at >= time.Second && s.at < killAt {
			demand[s.instance]++
		}
		if s.status != http.StatusOK {
			continue
		}
		admitted++
		perSecond[min(int(s.at/time.Second), len(perSecond)-1)]++
		if s.at >= time.Second && s.at < killAt {
			before[s.instance]++
		}
	}
	// Used: of what the limit allows while the store answered (a Redis
	// Cluster primary takes writes 2s after it restarts; meanwhile the
	// closed policy denies what the slices cannot cover).
	outage := outageTo - outageFrom
	used := float64(admitted) / (leaseRate * (elapsed - outage).Seconds())
	t.Logf("%d checks sent in %v (%d not sent: the generator's own bound), %d answered, %d failed, %d to the killed instance",
		total-notSent, elapsed.Round(time.Millisecond), notSent, answered, failed, toKilled)
	t.Logf("admitted %d: %.1f%% of the limit over the run, %.1f%% of it while the store answered (failure policy from %v for %v); per second %v; decided by %v",
		admitted, 100*float64(admitted)/(leaseRate*elapsed.Seconds()), 100*used, outageFrom.Round(time.Millisecond), outage.Round(time.Millisecond), perSecond, by)
	t.Logf("Redis EVALSHA (takes and returns) %d for %d checks: %.3f per 100 checks; EVAL (heartbeats, script loads) %d",
		calls, answered, 100*float64(calls)/float64(answered), eval)
	sumBefore, sumDemand := before[0]+before[1]+before[2], demand[0]+demand[1]+demand[2]
	var worst float64
	for i := range before {
		share, want := float64(before[i])/float64(sumBefore), float64(demand[i])/float64(sumDemand)
		worst = max(worst, abs(share-want))
		t.Logf("instance %d, 1s to %v: demand share %.1f%%, admitted share %.1f%% (%d)", i, killAt, 100*want, 100*share, before[i])
	}

	if notSent > total/100 {
		t.Errorf("the generator could not send %d of %d checks: the load was not the one asked for", notSent, total)
	}
	if failed > 0 {
		t.Errorf("%d checks to live instances failed", failed)
	}
	for s, n := range perSecond[:len(perSecond)-1] {
		if n > leaseRate+leaseBurst {
			t.Errorf("second %d admitted %d, more than the limit and its burst (%d)", s, n, leaseRate+leaseBurst)
		}
	}
	if used < 0.97 {
		t.Errorf("used %.1f%% of the limit while the store answered, want at least 97%%", 100*used)
	}
	if worst > 0.02 {
		t.Errorf("an instance's admitted share is %.1f points off its demand share, want at most 2", 100*worst)
	}
	// The kill: the dead instance's slices (at most MaxHeld, 250: half the
	// 500 the store keeps) are lost; its report lapses within 1s, and
	// what the survivors did not ask for meanwhile stays in the bucket.
	// Measured over the 3s from the kill, with 100 units (0.1s of the
	// rate) for the edges of a window timed at the client.
	lost := 3*leaseRate - (perSecond[7] + perSecond[8] + perSecond[9])
	t.Logf("the 3s from the kill admitted %d: %d under the limit", 3*leaseRate-lost, lost)
	if lost > 250+100 {
		t.Errorf("the kill lost %d units of the limit, want at most 350 (MaxHeld and the window's edges)", lost)
	}
	if float64(calls) > float64(answered)/100 {
		t.Errorf("%d takes and returns for %d checks, want at most 1 per 100", calls, answered)
	}
}

// leaseCheck checks the global limit once over the client's pooled
// connections and returns the status and the deciding path.
func leaseCheck(client *http.Client, addr string) (int, string, error) {
	resp, err := client.Post("http://"+addr+"/v1/check", "application/json", strings.NewReader(`{"namespace":"global","subject":"all"}`))
	if err != nil {
		return 0, "", err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("RateLimit-Decided-By"), nil
}

func abs(f float64) float64 {
	if f < 0 {
		return -f
	}
	return f
}
