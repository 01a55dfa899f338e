package main

import (
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/loadgen"
)

// Sustained overload: three instances on one Redis are offered, for 30
// seconds, twice the checks per second they answered in a closed loop just
// before (an open loop: checks are sent on schedule whether or not earlier
// ones were answered, each over a fresh connection). Every admission is
// exact (each subject admitted exactly its limit), no check is decided by a
// failure policy, every answer is a 200, a 429 or a shed 503, and no
// instance crashes; the latency (from each check's scheduled send) and the
// shed count are reported.
//
// The deny cache is off (--deny-cache-size 0), so that every check goes to
// Redis and the store path is what is overloaded, and the store queue is
// small (--store-queue 32), so that the shed rule is exercised.

const overloadConfig = `namespaces:
  - name: overload
    limits:
      - name: per-10h
        algorithm: token_bucket
        limit: 30
        period: 10h
`

// sample is one check of the open loop.
type loadSample struct {
	subject int
	status  int
	err     error
	latency time.Duration // from the scheduled send to the answer
}

// closedLoop runs workers that check back to back for d and returns the
// checks answered per second.
func closedLoop(addrs []string, ns string, workers int, d time.Duration) float64 {
	var n atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(stop); i++ {
				if _, err := checkFresh(addrs[(i+w)%len(addrs)], ns, fmt.Sprint("warm-", w)); err == nil {
					n.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return float64(n.Load()) / d.Seconds()
}

// openLoop sends rate checks a second for d, round robin over addrs and
// subjects, each at its scheduled instant whatever happened to the earlier
// ones, with at most maxInFlight outstanding (pace).
func openLoop(addrs []string, ns string, subjects int, rate float64, d time.Duration, maxInFlight int) (samples []loadSample, notSent int) {
	var mu sync.Mutex
	notSent = pace(time.Now(), int(rate*d.Seconds()), rate, maxInFlight, nil, func(i int, due time.Time) {
		s := loadSample{subject: i % subjects}
		s.status, s.err = checkFresh(addrs[i%len(addrs)], ns, fmt.Sprint("s-", s.subject))
		s.latency = time.Since(due)
		mu.Lock()
		samples = append(samples, s)
		mu.Unlock()
	})
	return samples, notSent
}

// pace is an open loop: it makes call i of total at start + i/rate, from a
// goroutine of its own, whatever happened to the earlier calls, and returns
// when all are done. At most maxInFlight calls are outstanding: a call due
// while that many are out is not made but counted in notSent (the
// generator's own limit, for the test to report). before, when not nil,
// runs in pace's goroutine as call i falls due, before it is made: events
// at set instants of the load (a kill, a restart).
func pace(start time.Time, total int, rate float64, maxInFlight int, before, call func(i int, due time.Time)) (notSent int) {
	var wg sync.WaitGroup
	inFlight := make(chan struct{}, maxInFlight)
	for i := range total {
		due := start.Add(time.Duration(float64(i) / rate * float64(time.Second)))
		if w := time.Until(due); w > 0 {
			time.Sleep(w) // pacing the generator: not a wait for the system under test
		}
		if before != nil {
			before(i, due)
		}
		select {
		case inFlight <- struct{}{}:
		default:
			notSent++
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inFlight }()
			call(i, due)
		}()
	}
	wg.Wait()
	return notSent
}

func TestSustainedOverload(t *testing.T) {
	srv := redistest.Standalone(t)
	bin := buildBinary(t)
	cfg := writeConfig(t, overloadConfig)
	var servers []*server
	var addrs []string
	for range 3 {
		s := startServer(t, bin, "--config", cfg, "--store", "redis", "--redis-addrs", srv.Addr(),
			"--deny-cache-size", "0", "--store-queue", "32")
		servers = append(servers, s)
		addrs = append(addrs, s.addr)
	}
	capacity := closedLoop(addrs, "overload", 64, 3*time.Second)
	rate := 2 * capacity
	const subjects, limit = 200, 30
	const d = 30 * time.Second
	before := decidedBy(t, addrs)
	samples, notSent := openLoop(addrs, "overload", subjects, rate, d, 6000)
	after := decidedBy(t, addrs)

	admitted := make([]int, subjects)
	statuses := map[int]int{}
	var lat []time.Duration
	errs := 0
	for _, s := range samples {
		if s.err != nil {
			if errs++; errs <= 3 {
				t.Logf("transport error: %v", s.err)
			}
			continue
		}
		statuses[s.status]++
		lat = append(lat, s.latency)
		if s.status == 200 {
			admitted[s.subject]++
		}
	}
	slices.Sort(lat)
	t.Logf("closed loop: %.0f checks/s answered by 3 instances; open loop at %.0f/s for %v: %d due, %d sent (%d not sent: %d outstanding already), %d transport errors",
		capacity, rate, d, int(rate*d.Seconds()), len(samples), notSent, 6000, errs)
	t.Logf("answers %v; latency from the scheduled send: p50 %v, p90 %v, p99 %v, max %v", statuses,
		loadgen.Quantile(lat, .5).Round(time.Millisecond), loadgen.Quantile(lat, .9).Round(time.Millisecond), loadgen.Quantile(lat, .99).Round(time.Millisecond), loadgen.Quantile(lat, 1).Round(time.Millisecond))
	t.Logf("decided_by during the overload: %v", diff(after, before))

	for s, a := range admitted {
		if a != limit {
			t.Errorf("subject s-%d: admitted %d, want exactly its limit %d", s, a, limit)
		}
	}
	for code, n := range statuses {
		if code != 200 && code != 429 && code != 503 {
			t.Errorf("%d answers with status %d", n, code)
		}
	}
	d2 := diff(after, before)
	if d2["local"]+d2["open"]+d2["closed"] != 0 {
		t.Errorf("decided by a failure policy during the overload on a healthy Redis: %v", d2)
	}
	if float64(errs) > 0.01*float64(len(samples)) {
		t.Errorf("%d of %d checks failed in transport", errs, len(samples))
	}
	for i, s := range servers {
		select {
		case <-s.done:
			t.Errorf("instance %d exited during the overload: %v\n%s", i, s.err, s.log())
		default:
		}
	}
}
