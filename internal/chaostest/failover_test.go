package chaostest

import (
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// Nothing of the instances outlives them, whatever Redis went through (the
// redistest spawner, rueidis's delayed close of replaced cluster
// connections and a toxiproxy stub are not ours).
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/distributedratelimiter/ratelimiter/internal/redistest.spawn.func1.1"),
		goleak.IgnoreAnyFunction("github.com/redis/rueidis.(*clusterClient)._refresh.func2"),
		// toxiproxy's own: a link stub left blocked on a send after its
		// proxy stopped, seen once TestNetworkFaults holds replies in a
		// latency toxic longer than the checks wait for them.
		goleak.IgnoreTopFunction("github.com/Shopify/toxiproxy/v2/toxics.(*NoopToxic).Pipe"),
	)
}

// failoverReport checks and reports one failover run: every check answered
// (no error) within the maximum wait and a margin, decisions back on the store
// after the failover, and the over-admission of every subject within the
// bound of docs/DESIGN.md.
func failoverReport(t *testing.T, name string, samples []sample, n int, fault, recovered time.Time) {
	t.Helper()
	outage := recovered.Sub(fault)
	lat := latencyOf(samples)
	t.Logf("%s: outage (kill to the last policy answer) %v", name, outage.Round(time.Millisecond))
	t.Logf("%s: latency over the whole run, max wait %v: %v", name, maxWait, lat)
	var during []sample
	for _, s := range samples {
		if !s.start.Before(fault) && !s.start.After(recovered) {
			during = append(during, s)
		}
	}
	t.Logf("%s: latency during the outage: %v", name, latencyOf(during))
	t.Logf("%s: decided by, whole run: %s", name, paths(samples))
	t.Logf("%s: decided by, during the outage: %s", name, paths(during))
	for _, s := range samples {
		if s.err != nil {
			t.Errorf("%s: a check failed instead of being answered by the policy: %v", name, s.err)
			break
		}
	}
	// Generous margins: the race detector on two cores, with the Redis
	// processes of the test on the same cores.
	if lat.p99 > maxWait+20*time.Millisecond {
		t.Errorf("%s: p99 latency %v, over the max wait %v + 20ms", name, lat.p99, maxWait)
	}
	if lat.max > maxWait+500*time.Millisecond {
		t.Errorf("%s: slowest check %v, over the max wait %v + 500ms", name, lat.max, maxWait)
	}

	// After recovery, the store (or its deny cache) decides again.
	var after []sample
	for _, s := range samples {
		if s.start.After(recovered.Add(100 * time.Millisecond)) {
			after = append(after, s)
		}
	}
	// A busy but healthy store is waited for: not one check after recovery
	// is answered by a policy or shed.
	byPolicy := 0
	for _, s := range after {
		if s.err != nil || (s.by != service.DecidedByStore && s.by != service.DecidedByDenyCache) {
			byPolicy++
		}
	}
	t.Logf("%s: after recovery: %s", name, paths(after))
	if len(after) < 100 || byPolicy > 0 {
		t.Errorf("%s: %d of %d checks after recovery not decided by the store", name, byPolicy, len(after))
	}

	adm := overAdmission(samples, chaosRule, fault, 100*time.Millisecond)
	var subjects []int
	for s := range adm {
		subjects = append(subjects, s)
	}
	slices.Sort(subjects)
	totalOver, totalLocal, affected, worst, worstBound := 0, 0, 0, 0, 0
	for _, s := range subjects {
		a := adm[s]
		bound := overBound(chaosRule, n, a.seeds, a.outage(), a.lastStore)
		if a.local > 10 { // not a stray deadline miss
			affected++
		}
		totalOver += max(0, a.over())
		totalLocal += a.local
		if a.over() > worst {
			worst, worstBound = a.over(), bound
		}
		if a.over() > bound {
			t.Errorf("%s: subject-%d admitted %d, an exact limiter %d: over-admission %d > bound %d (local %d over %v, store before the kill %d)",
				name, s, a.admitted, a.reference, a.over(), bound, a.local, a.outage(), a.lastStore)
		}
	}
	t.Logf("%s: over-admission: %d subjects of %d answered locally; worst subject +%d over an exact limiter, bound for it %d (the %d instances' seeded shares + store refill + rounding + lost writes, over its own outage); total +%d, of which %d admitted by the local fallback",
		name, affected, len(subjects), worst, worstBound, n, totalOver, totalLocal)
	if affected == 0 {
		t.Errorf("%s: no subject was answered by the local fallback: the fault did not bite", name)
	}
}

// errorstat returns an INFO errorstats value ("count=N"), "" when none.
func errorstat(t *testing.T, srv *redistest.Server, name string) string {
	t.Helper()
	info, err := srv.Info("errorstats")
	if err != nil {
		t.Fatal(err)
	}
	return info["errorstat_"+name]
}

func commandCalls(t *testing.T, srv *redistest.Server, cmd string) int64 {
	t.Helper()
	info, err := srv.Info("commandstats")
	if err != nil {
		t.Fatal(err)
	}
	return statCalls(info["cmdstat_"+cmd])
}

// A Redis Cluster of three primaries with a replica each; three instances
// under steady load of 30 hot subjects (each asking 10x its limit); one
// primary is killed by PID. The checks of its slots are answered locally
// (the breaker stays closed: two thirds of the calls still succeed) until
// its replica is promoted; then the store decides again, the promoted
// replica running the script by EVAL after NOSCRIPT.
func TestClusterPrimaryKilledUnderLoad(t *testing.T) {
	// As docs/OPERATIONS.md recommends: with full coverage required (the
	// Redis default) every node answers CLUSTERDOWN from the moment the
	// dead primary is marked failed until its replica takes over, and every
	// subject falls back; without, only the dead primary's slots do.
	c := redistest.Cluster(t, 3, 1, redistest.WithArgs("--cluster-require-full-coverage", "no"))
	ins := startInstances(t, 3, redisstore.Options{Addrs: c.Addrs(), Mode: redisstore.Cluster}, chaosSnapshot(t, policy.FailLocal))
	primaries, err := c.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	l := &load{instances: ins, subjects: 30, workers: 6, interval: 2 * time.Millisecond}
	l.start()
	time.Sleep(2 * time.Second) // every subject exhausted, deny caches warm

	victim := primaries[0]
	pid := victim.PID()
	fault := time.Now()
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	recovered := l.waitRecovered(t, fault, 2*time.Second, 45*time.Second)
	time.Sleep(time.Second)
	samples := l.stop()
	t.Logf("cluster: killed primary %s (pid %d) at +2s; %d checks, %.0f/s", victim.Addr(), pid, len(samples),
		float64(len(samples))/samples[len(samples)-1].start.Sub(samples[0].start).Seconds())
	failoverReport(t, "cluster", samples, len(ins), fault, recovered)

	// The promoted replica had no script cached: NOSCRIPT, then EVAL.
	now, err := c.Primaries()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range now {
		if slices.Contains(primaries, p) {
			continue
		}
		ns, eval := errorstat(t, p, "NOSCRIPT"), commandCalls(t, p, "eval")
		t.Logf("cluster: promoted replica %s: errorstat_NOSCRIPT %q, EVAL calls %d, EVALSHA calls %d", p.Addr(), ns, eval, commandCalls(t, p, "evalsha"))
		if ns == "" || eval == 0 {
			t.Errorf("promoted replica %s: NOSCRIPT %q and %d EVAL calls; want the EVAL fallback used", p.Addr(), ns, eval)
		}
	}
}

// Sentinel: a primary, a replica and three sentinels; the primary is
// killed by PID under load. Every check fails, so the breaker opens and the
// local fallback answers everything until the sentinels promote the
// replica and the client follows; then a graceful failover back (the old
// primary restarted as a replica, SENTINEL FAILOVER: the demoted primary
// stays up, so stale connections meet READONLY) is followed too.
func TestSentinelPrimaryKilledUnderLoad(t *testing.T) {
	set := redistest.Sentinel(t, "rl-master")
	ins := startInstances(t, 3, redisstore.Options{Addrs: set.SentinelAddrs(), Mode: redisstore.Sentinel, MasterName: set.MasterName()},
		chaosSnapshot(t, policy.FailLocal))
	l := &load{instances: ins, subjects: 30, workers: 6, interval: 2 * time.Millisecond}
	l.start()
	time.Sleep(2 * time.Second)

	old := set.Primary()
	pid := old.PID()
	fault := time.Now()
	if err := old.Kill(); err != nil {
		t.Fatal(err)
	}
	newAddr, err := set.WaitFailover(old.Addr(), 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	promoted := time.Since(fault)
	recovered := l.waitRecovered(t, fault, 2*time.Second, 45*time.Second)
	time.Sleep(time.Second)
	samples := l.stop()
	t.Logf("sentinel: killed primary %s (pid %d); sentinels promoted %s after %v; %d checks", old.Addr(), pid, newAddr,
		promoted.Round(time.Millisecond), len(samples))
	failoverReport(t, "sentinel", samples, len(ins), fault, recovered)
	p := set.ServerByAddr(newAddr)
	if p == nil {
		t.Fatalf("the promoted primary %s is not one of the data nodes started", newAddr)
	}
	ns, eval := errorstat(t, p, "NOSCRIPT"), commandCalls(t, p, "eval")
	t.Logf("sentinel: promoted replica: errorstat_NOSCRIPT %q, EVAL calls %d", ns, eval)
	if ns == "" || eval == 0 {
		t.Errorf("promoted replica: NOSCRIPT %q and %d EVAL calls; want the EVAL fallback used", ns, eval)
	}

	// Back the other way, both servers alive: the old primary returns as a
	// replica, then a graceful failover demotes the current primary.
	if err := old.Restart(); err != nil {
		t.Fatal(err)
	}
	if err := old.WaitReplicaUp(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	l = &load{instances: ins, subjects: 30, workers: 6, interval: 2 * time.Millisecond}
	l.start()
	time.Sleep(time.Second)
	fault = time.Now()
	if _, err := set.Sentinels()[0].Do("SENTINEL", "FAILOVER", set.MasterName()); err != nil {
		t.Fatal(err)
	}
	if _, err := set.WaitFailover(newAddr, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	// A graceful switch may go unnoticed by the checks (no failure at all):
	// then there is nothing to recover from.
	time.Sleep(3 * time.Second)
	samples = l.stop()
	readonly, failed := 0, 0
	lastFail := fault
	for _, s := range samples {
		if s.err != nil {
			t.Errorf("graceful failover: a check failed: %v", s.err)
			break
		}
		if s.by >= service.DecidedByLocal {
			failed++
			lastFail = s.start
			if strings.Contains(s.storeErr, "READONLY") {
				readonly++
			}
		}
	}
	t.Logf("sentinel, graceful failover back: %d checks, %d answered by the policy (%d after READONLY) over %v; %s; latency %v",
		len(samples), failed, readonly, lastFail.Sub(fault).Round(time.Millisecond), paths(samples), latencyOf(samples))
	if lastFail.Sub(fault) > 10*time.Second {
		t.Errorf("graceful failover: policy answers went on for %v", lastFail.Sub(fault))
	}
	// The last tenth of the run must be decided by the store again, every
	// check of it: a store error there means the client did not recover (a
	// stale connection to the demoted primary: READONLY).
	tail := samples[len(samples)*9/10:]
	for _, s := range tail {
		if s.err != nil || (s.by != service.DecidedByStore && s.by != service.DecidedByDenyCache) {
			t.Fatalf("graceful failover: the last checks are still decided by %v (%s, %v)", s.by, s.storeErr, s.err)
		}
	}
}
