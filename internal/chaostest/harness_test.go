package chaostest

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/loadgen"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// maxWait is the longest a check of the chaos tests waits for Redis
// (service.Guard.MaxWait): half the production default (1s), so that the
// faults that hold checks until it (a black hole, latency past it) fit in
// a short test, and still far above what a busy but healthy Redis takes
// here: the toxiproxy in the test process, under the race detector and
// beside the other packages' tests, was seen stalling for 250ms.
const maxWait = 500 * time.Millisecond

// instance is one rate limiter instance: its own Redis client, heartbeat
// and guarded service, as `ratelimiter serve --store redis` wires them.
type instance struct {
	st  *redisstore.Store
	m   *redisstore.Members
	svc *service.Service
}

// startInstances starts n instances sharing the Redis of opts.
func startInstances(t *testing.T, n int, opts redisstore.Options, snap *policy.Snapshot) []*instance {
	t.Helper()
	var out []*instance
	for i := range n {
		st, err := redisstore.New(opts)
		if err != nil {
			t.Fatal(err)
		}
		m := st.StartMembers(redisstore.MembersOptions{ID: fmt.Sprint("instance-", i), Interval: 200 * time.Millisecond, Fallback: n})
		fb := memstore.New(memstore.Options{})
		svc, err := service.New(st, snap, service.Options{Guard: &service.Guard{
			MaxWait: maxWait, Fallback: fb, Instances: m.Count, Shards: redisstore.ShardGroups, ShardOf: st.Shard}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			svc.Close()
			fb.Close()
			m.Close()
			st.Close()
		})
		out = append(out, &instance{st: st, m: m, svc: svc})
	}
	for _, in := range out { // every instance has counted the others
		for start := time.Now(); in.m.Count() != n; time.Sleep(10 * time.Millisecond) {
			if time.Since(start) > 10*time.Second {
				t.Fatalf("%s counts %d instances, want %d", in.m.ID(), in.m.Count(), n)
			}
		}
	}
	return out
}

// chaosRule is the limit under test: a token bucket of 100 per 10s, so an
// outage of a few seconds is a large part of a period, and a subject's
// bucket held in Redis refills noticeably while nobody can consume it.
var chaosRule = limit.Rule{Name: "per-10s", Algorithm: limit.TokenBucket, Limit: 100, Period: 10 * time.Second}

func chaosSnapshot(t *testing.T, fp policy.FailurePolicy) *policy.Snapshot {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{Name: "orders", Rules: []limit.Rule{chaosRule}, OnStoreError: fp}}, "chaos", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// sample is one check made by the load.
type sample struct {
	inst    int
	subject int
	start   time.Time
	took    time.Duration
	allowed bool
	by      service.DecidedBy
	err     error
	// remaining is what the answer left of the limit (the store's view
	// when the store decided).
	remaining int64
	// storeErr is the store failure a failure policy answered for.
	storeErr string
}

// load drives instances with paced checks: workers goroutines, each making
// one check every interval, of subject (i % subjects) through instance
// (i % len(instances)), until stop is called.
type load struct {
	instances []*instance
	subjects  int
	workers   int
	interval  time.Duration

	stopped  atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	samples  []sample
	fallback atomic.Int64 // unix ns of the latest policy (non-store) decision
	n        atomic.Int64
}

func (l *load) start() {
	for w := range l.workers {
		l.wg.Add(1)
		go l.run(w)
	}
}

func (l *load) run(w int) {
	defer l.wg.Done()
	var own []sample
	next := time.Now()
	for k := 0; !l.stopped.Load(); k++ {
		if d := time.Until(next); d > 0 {
			time.Sleep(d)
		}
		next = next.Add(l.interval)
		s := sample{inst: (k + w) % len(l.instances), subject: (k*l.workers + w) % l.subjects, start: time.Now()}
		res, err := l.instances[s.inst].svc.Check(context.Background(),
			service.Request{Namespace: "orders", Subject: fmt.Sprint("subject-", s.subject), Cost: 1})
		s.took = time.Since(s.start)
		s.allowed, s.by, s.err = res.Verdict.Allowed, res.DecidedBy, err
		if res.Verdict.N > 0 {
			s.remaining = res.Verdict.D[0].Remaining
		}
		if res.StoreError != nil {
			s.storeErr = res.StoreError.Error()
		}
		if s.by >= service.DecidedByLocal {
			l.fallback.Store(time.Now().UnixNano())
		}
		l.n.Add(1)
		own = append(own, s)
	}
	l.mu.Lock()
	l.samples = append(l.samples, own...)
	l.mu.Unlock()
}

// stop ends the load and returns every sample, by start time.
func (l *load) stop() []sample {
	l.stopped.Store(true)
	l.wg.Wait()
	slices.SortFunc(l.samples, func(a, b sample) int { return a.start.Compare(b.start) })
	return l.samples
}

// waitRecovered waits until a failure policy has answered since the fault
// and then none has for quiet, and returns the instant of the last such
// answer: the end of the outage as the checks saw it. It fails the test
// after timeout.
func (l *load) waitRecovered(t *testing.T, fault time.Time, quiet, timeout time.Duration) time.Time {
	t.Helper()
	for {
		last := time.Unix(0, l.fallback.Load())
		if last.After(fault) && time.Since(last) >= quiet {
			return last
		}
		if time.Since(fault) > timeout {
			t.Fatalf("decisions did not return to the store within %v of the fault (last policy answer %v after it)", timeout, last.Sub(fault))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// latencies summarises the checks' latencies.
type latencies struct {
	n                   int
	p50, p99, p999, max time.Duration
}

func latencyOf(samples []sample) latencies {
	ds := make([]time.Duration, len(samples))
	for i, s := range samples {
		ds[i] = s.took
	}
	slices.Sort(ds)
	q := func(p float64) time.Duration { return loadgen.Quantile(ds, p) }
	return latencies{n: len(ds), p50: q(0.50), p99: q(0.99), p999: q(0.999), max: q(1)}
}

func (l latencies) String() string {
	return fmt.Sprintf("%d checks: p50 %v, p99 %v, p99.9 %v, max %v", l.n,
		l.p50.Round(time.Microsecond), l.p99.Round(time.Microsecond), l.p999.Round(time.Microsecond), l.max.Round(time.Microsecond))
}

// paths counts the samples by deciding path.
func paths(samples []sample) string {
	var n [service.NumDecidedBy]int
	errs := 0
	for _, s := range samples {
		if s.err != nil {
			errs++
			continue
		}
		n[s.by]++
	}
	var b strings.Builder
	for i, c := range n {
		if c > 0 {
			fmt.Fprintf(&b, "%s %d, ", service.DecidedBy(i), c)
		}
	}
	fmt.Fprintf(&b, "errors %d", errs)
	return b.String()
}

// admission is the over-admission of one subject.
type admission struct {
	subject   int
	admitted  int // admitted by the instances, all paths
	reference int // admitted by an exact limiter for the same requests at the same instants
	local     int // admitted by the local fallback
	lastStore int // admitted by the store just before the fault (lost-write allowance)
	// seeds holds, per instance, the remaining of the last store answer
	// before the subject's first local answer: what the instance's local
	// fallback was seeded from (absent: the instance never asked the store).
	seeds map[int]int64
	// The first and last checks of the subject answered locally: its own
	// outage, as its checks saw it.
	firstLocal, lastLocal time.Time
}

// outage is how long the subject was answered by the local fallback.
func (a admission) outage() time.Duration {
	if a.firstLocal.IsZero() {
		return 0
	}
	return a.lastLocal.Sub(a.firstLocal)
}

func (a admission) over() int { return a.admitted - a.reference }

// overAdmission replays each subject's requests through limit.Apply at
// their start instants (one exact limiter) and compares. fault is when the
// fault began; lagWindow the replication lag allowed for lost writes.
func overAdmission(samples []sample, rule limit.Rule, fault time.Time, lagWindow time.Duration) map[int]*admission {
	r, err := rule.Normalize()
	if err != nil {
		panic(err)
	}
	rules := []limit.Rule{r}
	out := map[int]*admission{}
	states := map[int][]limit.State{}
	for _, s := range samples {
		a := out[s.subject]
		if a == nil {
			a = &admission{subject: s.subject}
			out[s.subject] = a
			states[s.subject] = make([]limit.State, 1)
		}
		if v, _ := limit.Apply(rules, states[s.subject], s.start.UnixNano(), 1); v.Allowed {
			a.reference++
		}
		if s.by == service.DecidedByLocal {
			if a.firstLocal.IsZero() {
				a.firstLocal = s.start
			}
			a.lastLocal = s.start.Add(s.took)
		}
		if s.by == service.DecidedByStore && s.err == nil && a.firstLocal.IsZero() {
			if a.seeds == nil {
				a.seeds = map[int]int64{}
			}
			a.seeds[s.inst] = s.remaining
		}
		if s.err != nil || !s.allowed {
			continue
		}
		a.admitted++
		switch {
		case s.by == service.DecidedByLocal:
			a.local++
		case s.by == service.DecidedByStore && !s.start.After(fault) && s.start.After(fault.Add(-lagWindow)):
			a.lastStore++
		}
	}
	return out
}

// overBound is the bound of docs/DESIGN.md, section 6, for one subject of
// a token bucket (limit L per period P, burst B) over an outage of length D
// with n instances whose local fallbacks were seeded with the remaining r_i
// of each one's last store answer (an instance that never asked: the full
// burst):
//
//	sum_i ceil(r_i/n)            the local fallbacks' buckets when the outage begins
//	+ (n*ceil(L/n) - L) * D/P    the local shares' rounding, refilled during the outage
//	+ min(B, L*D/P)              the store's bucket, refilled while nobody could consume it
//	+ W                          writes the lost primary acknowledged but never replicated
//
// Unseeded, the first term would be n*ceil(B/n): every instance starting
// the subject afresh.
func overBound(rule limit.Rule, n int, seeds map[int]int64, outage time.Duration, lost int) int {
	r, _ := rule.Normalize()
	ceil := func(a, b int64) int64 { return (a + b - 1) / b }
	frac := float64(outage) / float64(r.Period)
	local := int64(0)
	for i := range n {
		rem, ok := seeds[i]
		if !ok {
			rem = r.Burst
		}
		local += ceil(rem, int64(n))
	}
	rounding := float64(int64(n)*ceil(r.Limit, int64(n))-r.Limit) * frac
	refill := math.Min(float64(r.Burst), float64(r.Limit)*frac)
	return int(local) + int(math.Ceil(rounding+refill)) + lost
}

// statCalls reads calls=N out of an INFO commandstats value.
func statCalls(v string) int64 {
	var n int64
	fmt.Sscanf(v, "calls=%d", &n)
	return n
}
