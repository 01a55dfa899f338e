package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sony/gobreaker/v2"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// Defaults of Guard.
const (
	// DefaultStoreTimeout bounds a store call when Guard.Timeout is 0: a
	// few round trips to a Redis in the same zone, under load.
	DefaultStoreTimeout = 5 * time.Millisecond
	// DefaultClosedRetryAfter is the RetryAfter of a denial by the closed
	// failure policy.
	DefaultClosedRetryAfter = time.Second
	// DefaultFallbackMaxKeys bounds the keys of the default local fallback.
	DefaultFallbackMaxKeys = 1_000_000
)

// DecidedBy names the path that answered a check. Transports report it
// (the HTTP API in the RateLimit-Decided-By header) and metrics count it.
type DecidedBy uint8

// The decision paths. The zero value is DecidedByStore.
const (
	// DecidedByStore: the store applied the request (the normal path).
	DecidedByStore DecidedBy = iota
	// DecidedByDenyCache: the subject was known to be denied until a later
	// instant; the instance answered without asking the store.
	DecidedByDenyCache
	// DecidedByLocal: the store failed; the namespace's local failure
	// policy answered from this instance's share of the limits.
	DecidedByLocal
	// DecidedByOpen: the store failed; the open failure policy admitted.
	DecidedByOpen
	// DecidedByClosed: the store failed; the closed failure policy denied.
	DecidedByClosed

	numDecidedBy = iota
)

// NumDecidedBy is the number of DecidedBy values, for tables indexed by it.
const NumDecidedBy = numDecidedBy

var decidedByNames = [numDecidedBy]string{"store", "deny-cache", "local", "open", "closed"}

// String returns "store", "deny-cache", "local", "open" or "closed".
func (d DecidedBy) String() string {
	if int(d) < len(decidedByNames) {
		return decidedByNames[d]
	}
	return fmt.Sprintf("decided_by(%d)", uint8(d))
}

// Guard protects checks from a store that lives elsewhere (Redis) and may be
// slow, partitioned or down. With a Guard, a check
//
//  1. answers from the deny cache when the subject is known to be denied
//     (see DenyCacheSize);
//  2. asks the store only while the circuit breaker lets it, and waits at
//     most Timeout for the answer;
//  3. when the store fails, times out or the breaker is open, answers by
//     the namespace's failure policy (policy.FailurePolicy): its local share
//     of the limits, open, or closed.
//
// The zero value is usable: every field has a default.
type Guard struct {
	// Timeout bounds every store call: a check never waits longer for the
	// store. Default DefaultStoreTimeout.
	Timeout time.Duration
	// Fallback is the in-process store of the local failure policy. Default:
	// a memstore bounded to FallbackMaxKeys keys, which Service.Close
	// closes. A Fallback given here is the caller's to close.
	Fallback store.Store
	// FallbackMaxKeys bounds the default Fallback. Default
	// DefaultFallbackMaxKeys.
	FallbackMaxKeys int
	// Instances returns how many instances share the store. The local
	// fallback holds 1/Instances() of each limit (rounded up). It is called
	// on the failure path only and must be fast; nil or a result below 1
	// means 1.
	Instances func() int
	// Breaker tunes the circuit breaker.
	Breaker Breaker
	// Shards and ShardOf split the store into failure domains, each with
	// its own circuit breaker, so that a dead node of a Redis Cluster
	// diverts the checks of its own keys only (redisstore.ShardGroups and
	// Store.Shard). ShardOf returns a key's domain, 0 to Shards-1; it must
	// be fast. Shards 0 or 1, or a nil ShardOf: one breaker for the store.
	Shards  int
	ShardOf func(key string) int
	// DenyCacheSize bounds the deny cache's entries; 0 means
	// DefaultDenyCacheSize and a negative value disables the cache.
	DenyCacheSize int
	// ClosedRetryAfter is the RetryAfter of a denial by the closed failure
	// policy. Default DefaultClosedRetryAfter.
	ClosedRetryAfter time.Duration
}

// Breaker tunes the circuit breaker (github.com/sony/gobreaker) that stops
// sending checks to a store that keeps failing. Closed, it counts the store
// calls of the last Window; once at least MinCalls were made and the share
// that failed reaches FailureRatio, it opens: checks go straight to the
// failure policy, without waiting for the store. After OpenFor it lets
// Probes calls through (half-open); if they all succeed it closes, and
// decisions go back to the store; if one fails it opens again.
//
// The ratio (rather than a run of consecutive failures) keeps one dead
// shard of a Redis Cluster from diverting the checks of the healthy ones:
// with a third of the keys failing the breaker stays closed, and only the
// checks of the dead shard wait out their Timeout. The zero value uses the
// defaults.
type Breaker struct {
	// Disabled turns the breaker off: every check tries the store.
	Disabled bool
	// Window is the rolling window calls are counted over. Default 1s.
	Window time.Duration
	// MinCalls is the fewest calls in Window that may open the breaker.
	// Default 20.
	MinCalls uint32
	// FailureRatio is the share of failed calls that opens the breaker.
	// Default 0.5.
	FailureRatio float64
	// OpenFor is how long the breaker stays open before probing. Default
	// 500ms.
	OpenFor time.Duration
	// Probes is the number of calls let through half-open. Default 3.
	Probes uint32
}

// BreakerState is the state of the circuit breaker.
type BreakerState uint8

// The breaker states.
const (
	// BreakerClosed: checks go to the store.
	BreakerClosed BreakerState = iota
	// BreakerHalfOpen: a few probe checks go to the store.
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
// time the circuit breaker changes state. The call is made with the
// breaker's lock held: it must be fast and must not call the Service.
type BreakerObserver interface {
	ObserveBreaker(from, to BreakerState)
}

// guard is a Service's resolved Guard.
type guard struct {
	timeout     time.Duration
	closedRetry time.Duration
	fallback    store.Store
	ownFallback bool
	instances   func() int
	breakers    []*gobreaker.TwoStepCircuitBreaker[struct{}] // nil: disabled
	shardOf     func(string) int
	deny        *denyCache

	// shares caches scaled limit sets: read by every check the local
	// policy answers (all of them, in an outage), written once per set.
	shares  sync.Map // shareKey -> []limit.Rule
	nShares atomic.Int64
}

// errExcluded reports to the breaker a call that says nothing about the
// store's health: its caller went away first.
var errExcluded = errors.New("service: caller gone")

func newGuard(g Guard, obs Observer) (*guard, error) {
	switch {
	case g.Timeout < 0:
		return nil, fmt.Errorf("service: negative Guard.Timeout %v", g.Timeout)
	case g.ClosedRetryAfter < 0:
		return nil, fmt.Errorf("service: negative Guard.ClosedRetryAfter %v", g.ClosedRetryAfter)
	case g.Breaker.FailureRatio < 0 || g.Breaker.FailureRatio > 1:
		return nil, fmt.Errorf("service: Guard.Breaker.FailureRatio %v is outside [0, 1]", g.Breaker.FailureRatio)
	case g.Breaker.Window < 0 || g.Breaker.OpenFor < 0:
		return nil, errors.New("service: negative Guard.Breaker duration")
	}
	gd := &guard{
		timeout:     g.Timeout,
		closedRetry: g.ClosedRetryAfter,
		fallback:    g.Fallback,
		instances:   g.Instances,
	}
	if gd.timeout == 0 {
		gd.timeout = DefaultStoreTimeout
	}
	if gd.closedRetry == 0 {
		gd.closedRetry = DefaultClosedRetryAfter
	}
	if gd.fallback == nil {
		n := g.FallbackMaxKeys
		if n <= 0 {
			n = DefaultFallbackMaxKeys
		}
		gd.fallback = memstore.New(memstore.Options{MaxKeys: n})
		gd.ownFallback = true
	}
	if g.DenyCacheSize >= 0 {
		n := g.DenyCacheSize
		if n == 0 {
			n = DefaultDenyCacheSize
		}
		gd.deny = newDenyCache(n)
	}
	if !g.Breaker.Disabled {
		n := 1
		if g.Shards > 1 && g.ShardOf != nil {
			n, gd.shardOf = g.Shards, g.ShardOf
		}
		for i := range n {
			gd.breakers = append(gd.breakers, newBreaker(g.Breaker, obs, i))
		}
	}
	return gd, nil
}

func newBreaker(b Breaker, obs Observer, shard int) *gobreaker.TwoStepCircuitBreaker[struct{}] {
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
		b.Probes = 3
	}
	bo, _ := obs.(BreakerObserver)
	return gobreaker.NewTwoStepCircuitBreaker[struct{}](gobreaker.Settings{
		Name:         fmt.Sprint("store-", shard),
		MaxRequests:  b.Probes,
		Interval:     b.Window,
		BucketPeriod: b.Window / 10,
		Timeout:      b.OpenFor,
		ReadyToTrip: func(c gobreaker.Counts) bool {
			// Finished calls only: abandoned (excluded) and in-flight calls
			// must not dilute the failure ratio.
			done := c.TotalSuccesses + c.TotalFailures
			return done >= b.MinCalls && float64(c.TotalFailures) >= b.FailureRatio*float64(done)
		},
		IsExcluded: func(err error) bool { return err == errExcluded },
		OnStateChange: func(_ string, from, to gobreaker.State) {
			if bo != nil {
				bo.ObserveBreaker(breakerState(from), breakerState(to))
			}
		},
	})
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

// storeFailed reports whether err from a store call is the store's failure,
// which the failure policy answers, rather than a bad request or a closed
// store.
func storeFailed(err error) bool {
	return errors.Is(err, store.ErrUnavailable) || errors.Is(err, context.DeadlineExceeded)
}

// guarded runs one store call under the guard and fills res.Verdict,
// res.DecidedBy and res.StoreError. start is the instant the check began, on
// the service's clock. It returns an error when no verdict could be given.
func (s *Service) guarded(ctx context.Context, snap *policy.Snapshot, res *Result, req store.Request, start time.Time) error {
	g := s.guard
	now := int64(start.Sub(s.epoch)) // monotonic span: see Service.epoch
	if g.deny != nil {
		if v, ok := g.deny.lookup(snap, req, now); ok {
			res.Verdict, res.DecidedBy = v, DecidedByDenyCache
			return nil
		}
	}
	var done func(error)
	if b := g.breaker(req.Key); b != nil {
		var err error
		if done, err = b.Allow(); err != nil {
			// Open, or half-open with its probes taken: do not wait on
			// the store at all.
			return s.fallback(res, req, fmt.Errorf("%w: circuit breaker: %w", store.ErrUnavailable, err))
		}
	}
	cctx, cancel := context.WithTimeout(ctx, g.timeout)
	v, err := s.store.Apply(cctx, req)
	cancel()
	failed := err != nil && storeFailed(err)
	if done != nil {
		switch {
		case failed && ctx.Err() != nil:
			done(errExcluded) // the caller left; the store may be fine
		case failed:
			done(err)
		default:
			done(nil) // answers, and errors that are not the store's fault
		}
	}
	if err == nil {
		if !v.Allowed && g.deny != nil {
			g.deny.insert(snap, req, &v, now)
		}
		res.Verdict = v
		return nil
	}
	if !failed || ctx.Err() != nil {
		// A caller bug, a closed store, or a caller that is gone: nobody
		// waits for a policy answer.
		return err
	}
	return s.fallback(res, req, err)
}

// fallback answers req by its namespace's failure policy after the store
// failed with cause.
func (s *Service) fallback(res *Result, req store.Request, cause error) error {
	g := s.guard
	res.StoreError = cause
	switch res.Set.Namespace.OnStoreError {
	case policy.FailOpen:
		res.Verdict, res.DecidedBy = policyVerdict(req.Rules, true, 0), DecidedByOpen
		return nil
	case policy.FailClosed:
		res.Verdict, res.DecidedBy = policyVerdict(req.Rules, false, g.closedRetry), DecidedByClosed
		return nil
	}
	n := 1
	if g.instances != nil {
		n = max(1, g.instances())
	}
	// The fallback is in process: it neither blocks nor needs a deadline.
	v, err := g.fallback.Apply(context.Background(), store.Request{Key: req.Key, Rules: g.share(req.Rules, n), Cost: req.Cost})
	if err != nil {
		return fmt.Errorf("local fallback after %w: %w", cause, err)
	}
	res.Verdict, res.DecidedBy = v, DecidedByLocal
	return nil
}

// policyVerdict is the verdict of the open (allowed) or closed (denied
// with retry) policy: the store's state is unknown, so every rule reports
// its limit and nothing remaining.
func policyVerdict(rules []limit.Rule, allowed bool, retry time.Duration) limit.Verdict {
	v := limit.Verdict{Allowed: allowed, N: len(rules)}
	if !allowed {
		v.RetryAfter = retry
	}
	for i, r := range rules {
		v.D[i] = limit.Decision{Allowed: allowed, Limit: r.Limit}
		if !allowed {
			v.D[i].RetryAfter = retry
		}
	}
	return v
}

// shareKey identifies a limit set (by its first rule: limit sets are
// slices of a snapshot, never modified) and an instance count.
type shareKey struct {
	first *limit.Rule
	n     int
	count int
}

// maxShares bounds the cache of scaled limit sets; it is cleared when full
// (old snapshots' sets then become garbage).
const maxShares = 4096

// share returns rules scaled to one instance's share out of n (see
// ShareRule), cached.
func (g *guard) share(rules []limit.Rule, n int) []limit.Rule {
	if n <= 1 || len(rules) == 0 {
		return rules
	}
	k := shareKey{&rules[0], n, len(rules)}
	if s, ok := g.shares.Load(k); ok {
		return s.([]limit.Rule)
	}
	if g.nShares.Add(1) > maxShares {
		g.shares.Clear()
		g.nShares.Store(1)
	}
	s := make([]limit.Rule, len(rules))
	for i, r := range rules {
		s[i] = ShareRule(r, n)
	}
	// Concurrent first checks of a set may each store theirs: equal sets,
	// the last one stays.
	g.shares.Store(k, s)
	return s
}

// ShareRule returns one instance's share of r when n instances divide it:
// Limit and Burst divided by n, rounded up (so at least 1, and n shares
// together hold at least the whole), over the same Period. The fleet then
// admits at most Limit + n - 1 units per Period. r must be valid; so is the
// result (should rounding push a burst over its refill bound, the burst is
// lowered to fit).
func ShareRule(r limit.Rule, n int) limit.Rule {
	if n <= 1 {
		return r
	}
	s := r
	s.Limit = ceilDiv(r.Limit, int64(n))
	if r.Burst > 0 {
		s.Burst = ceilDiv(r.Burst, int64(n))
	}
	out, err := s.Normalize()
	for err != nil && s.Burst > 1 {
		s.Burst--
		out, err = s.Normalize()
	}
	if err != nil {
		return r
	}
	return out
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// Close releases what the Service owns: the default local fallback store.
// The store given to New is the caller's to close. Check after Close may
// still be answered by the store, but no longer by the local fallback.
func (s *Service) Close() error {
	if s.guard != nil && s.guard.ownFallback {
		return s.guard.fallback.Close()
	}
	return nil
}

// breaker returns the circuit breaker of key's shard, nil when disabled.
func (g *guard) breaker(key string) *gobreaker.TwoStepCircuitBreaker[struct{}] {
	switch {
	case g.breakers == nil:
		return nil
	case g.shardOf == nil:
		return g.breakers[0]
	}
	i := g.shardOf(key)
	if i < 0 || i >= len(g.breakers) {
		i = 0
	}
	return g.breakers[i]
}

// BreakerState returns the state of the circuit breaker, or with several
// shards the most severe state among theirs (open, then half-open);
// BreakerClosed when the service has no Guard or the breaker is disabled.
func (s *Service) BreakerState() BreakerState {
	st := BreakerClosed
	if s.guard != nil {
		for _, b := range s.guard.breakers {
			st = max(st, breakerState(b.State()))
		}
	}
	return st
}

// OpenBreakers returns how many shards' circuit breakers are not closed.
func (s *Service) OpenBreakers() int {
	n := 0
	if s.guard != nil {
		for _, b := range s.guard.breakers {
			if b.State() != gobreaker.StateClosed {
				n++
			}
		}
	}
	return n
}

// DenyCacheLen returns the number of entries in the deny cache.
func (s *Service) DenyCacheLen() int {
	if s.guard == nil || s.guard.deny == nil {
		return 0
	}
	return s.guard.deny.len()
}
