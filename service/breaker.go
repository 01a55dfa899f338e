package service

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/distributedratelimiter/ratelimiter/store"
)

// Breaker tunes the circuit breakers (github.com/sony/gobreaker) that stop
// sending checks to a store that keeps failing. Closed, a breaker counts
// the store calls of the last Window; once at least MinCalls were made and
// the share that failed reaches FailureRatio, it opens: checks go straight
// to the failure policy, without waiting for the store.
//
// An open breaker is probed in the background, never with checks: every
// OpenFor, a probe (a peek of a reserved key of the breaker's failure
// domain, which consumes nothing) goes to the store, and once Probes probes
// in a row have been answered the breaker closes and checks go to the store
// again. A check is never the probe, so a check never waits on a store that
// may be dead, and none is answered locally because a probe happened to be
// in flight when it came: recovery does not wait for traffic, and the
// first burst after a failover finds the breaker already closed.
//
// The ratio (rather than a run of consecutive failures) keeps one dead
// shard of a Redis Cluster from diverting the checks of the healthy ones:
// with a third of the keys failing the breaker stays closed, and only the
// checks of the dead shard wait for their failure. The zero value uses the
// defaults.
type Breaker struct {
	// Disabled turns the breakers off: every check tries the store.
	Disabled bool
	// Window is the rolling window calls are counted over. Default 1s.
	Window time.Duration
	// MinCalls is the fewest calls in Window that may open a breaker.
	// Default 20.
	MinCalls uint32
	// FailureRatio is the share of failed calls that opens a breaker.
	// Default 0.5.
	FailureRatio float64
	// OpenFor is how long a breaker stays open before each background
	// probe. Default 500ms.
	OpenFor time.Duration
	// Probes is how many probes in a row must be answered to close a
	// breaker. Default 1.
	Probes uint32
}

// BreakerState is the state of a circuit breaker.
type BreakerState uint8

// The breaker states.
const (
	// BreakerClosed: checks go to the store.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen: a background probe is in flight; checks still go to
	// the failure policy.
	BreakerHalfOpen
	// BreakerOpen: checks go straight to the failure policy.
	BreakerOpen
)

// String returns "closed", "half-open" or "open".
func (b BreakerState) String() string {
	switch b {
	case BreakerClosed:
		return "closed"
	case BreakerHalfOpen:
		return "half-open"
	case BreakerOpen:
		return "open"
	}
	return fmt.Sprintf("breaker_state(%d)", uint8(b))
}

// BreakerObserver is an optional interface of an Observer: it is told each
// time a circuit breaker changes state. The call is made with the
// breaker's lock held: it must be fast and must not call the Service.
type BreakerObserver interface {
	ObserveBreaker(from, to BreakerState)
}

// breakers are the circuit breakers of a guard, one per failure domain,
// and the prober that closes them.
type breakers struct {
	cbs     []*gobreaker.TwoStepCircuitBreaker[struct{}]
	state   []atomic.Uint32 // BreakerState of cbs[i], as of its last transition
	probes  []string        // store key of each domain's probe
	openFor time.Duration
	wake    chan struct{}
	stop    chan struct{}
	ctx     context.Context // ends at close: probes in flight give up
	cancel  context.CancelFunc
	done    sync.WaitGroup
	closing sync.Once
}

// probeRules is the limit set of the probes: a peek of it consumes nothing
// and writes no state.
var probeRules = readyRules

func newBreakers(b Breaker, shards int, shardOf func(string) int, obs Observer) *breakers {
	if b.Window == 0 {
		b.Window = time.Second
	}
	if b.MinCalls == 0 {
		b.MinCalls = 20
	}
	if b.FailureRatio == 0 {
		b.FailureRatio = 0.5
	}
	if b.OpenFor == 0 {
		b.OpenFor = 500 * time.Millisecond
	}
	if b.Probes == 0 {
		b.Probes = 1
	}
	bs := &breakers{
		state:   make([]atomic.Uint32, shards),
		probes:  probeKeys(shards, shardOf),
		openFor: b.OpenFor,
		wake:    make(chan struct{}, 1),
		stop:    make(chan struct{}),
	}
	bs.ctx, bs.cancel = context.WithCancel(context.Background())
	bo, _ := obs.(BreakerObserver)
	for i := range shards {
		bs.cbs = append(bs.cbs, gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
			Name:         fmt.Sprint("store-", i),
			MaxRequests:  b.Probes,
			Interval:     b.Window,
			BucketPeriod: b.Window / 10,
			Timeout:      b.OpenFor,
			ReadyToTrip: func(c gobreaker.Counts) bool {
				// Finished calls only: abandoned (excluded) and in-flight
				// calls must not dilute the failure ratio.
				done := c.TotalSuccesses + c.TotalFailures
				return done >= b.MinCalls && float64(c.TotalFailures) >= b.FailureRatio*float64(done)
			},
			IsExcluded: func(err error) bool { return err == errExcluded },
			OnStateChange: func(_ string, from, to gobreaker.State) {
				bs.state[i].Store(uint32(breakerState(to)))
				if to == gobreaker.StateOpen {
					select {
					case bs.wake <- struct{}{}:
					default:
					}
				}
				if bo != nil {
					bo.ObserveBreaker(breakerState(from), breakerState(to))
				}
			},
		}))
	}
	return bs
}

// probeKeys finds, for each of n failure domains, a store key of that
// domain that no subject can produce (it starts with a control character,
// as the readiness key does).
func probeKeys(n int, shardOf func(string) int) []string {
	keys := make([]string, n)
	found := 0
	for i := 0; found < n && i < 1<<20; i++ {
		k := "\x00probe:" + strconv.Itoa(i)
		d := 0
		if shardOf != nil {
			d = shardOf(k)
		}
		if d >= 0 && d < n && keys[d] == "" {
			keys[d] = k
			found++
		}
	}
	for d := range keys {
		if keys[d] == "" { // a domain no key maps to: probing it is moot
			keys[d] = readyKey
		}
	}
	return keys
}

func breakerState(s gobreaker.State) BreakerState {
	switch s {
	case gobreaker.StateOpen:
		return BreakerOpen
	case gobreaker.StateHalfOpen:
		return BreakerHalfOpen
	}
	return BreakerClosed
}

// closed reports whether checks of domain i may go to the store.
func (bs *breakers) closed(i int) bool { return bs.state[i].Load() == uint32(BreakerClosed) }

// run probes the open breakers until stop is closed: woken when one opens,
// it sleeps OpenFor, probes every breaker that is not closed (each in its
// own goroutine, so that a dead domain's probe holds up no other's), and
// goes on while any is left open.
func (bs *breakers) run(st store.Store, maxWait time.Duration) {
	defer bs.done.Done()
	for {
		select {
		case <-bs.stop:
			return
		case <-bs.wake:
		}
		for open := true; open; {
			t := time.NewTimer(bs.openFor)
			select {
			case <-bs.stop:
				t.Stop()
				return
			case <-t.C:
			}
			var wg sync.WaitGroup
			open = false
			for i, cb := range bs.cbs {
				if bs.closed(i) {
					continue
				}
				open = true
				wg.Add(1)
				go func() {
					defer wg.Done()
					bs.probe(cb, st, bs.probes[i], maxWait)
				}()
			}
			wg.Wait()
		}
	}
}

// probe sends the probes of one breaker whose OpenFor has passed: as many
// as it takes to close it, while they are answered.
func (bs *breakers) probe(cb *gobreaker.TwoStepCircuitBreaker[struct{}], st store.Store, key string, maxWait time.Duration) {
	for {
		done, err := cb.Allow() // half-open once OpenFor has passed; else refused
		if err != nil {
			return
		}
		ctx, cancel := context.WithTimeout(bs.ctx, maxWait)
		_, err = st.Apply(ctx, store.Request{Key: key, Rules: probeRules, Cost: 0})
		cancel()
		if err != nil && !storeFailed(err) {
			err = nil // not the store's fault (a closed store is no outage)
		}
		if bs.ctx.Err() != nil {
			done(errExcluded)
			return
		}
		done(err)
		if err != nil || cb.State() != gobreaker.StateHalfOpen {
			return
		}
	}
}

// close stops the prober and waits for it; later calls do nothing.
func (bs *breakers) close() {
	bs.closing.Do(func() {
		close(bs.stop)
		bs.cancel()
	})
	bs.done.Wait()
}
