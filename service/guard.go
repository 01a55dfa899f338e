package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Defaults of Guard.
const (
	// DefaultMaxWait bounds a check's wait for the store when Guard.MaxWait
	// is 0. It is sized for bursts, not for an idle Redis: on a 2-core
	// machine running three instances and Redis, 3,000 concurrent checks
	// over fresh connections waited at most 10ms for the store
	// (docs/BENCHMARKS.md), so 1s leaves two orders of magnitude for
	// slower machines, garbage collection and heavier bursts. It is also
	// how long a Redis that stops answering without closing its
	// connections (a network partition) holds checks up before the
	// breakers open.
	DefaultMaxWait = time.Second
	// DefaultMaxWaiting bounds the checks waiting for the store at once
	// when Guard.MaxWaiting is 0. A Redis that decides 20,000 checks a
	// second for this instance (the low end of docs/BENCHMARKS.md) drains
	// it in about 200ms, well within DefaultMaxWait, so a check admitted to
	// the queue is answered by the store; and it is several times the
	// largest burst one instance took in the tests (about 1,000 of 3,000
	// spread over three).
	DefaultMaxWaiting = 4096
	// ShedRetryAfter is the Retry-After transports send with a check shed
	// for overload (ErrOverloaded).
	ShedRetryAfter = time.Second
	// DefaultClosedRetryAfter is the RetryAfter of a denial by the closed
	// failure policy.
	DefaultClosedRetryAfter = time.Second
)

// ErrOverloaded is returned by Check for a check the instance shed: more
// than Guard.MaxWaiting checks were waiting for the store, or its own wait
// reached Guard.MaxWait while the store kept answering other checks. The
// store is healthy and this instance is not keeping up with it; the check
// is neither admitted nor denied by a limit (Result.DecidedBy is
// DecidedByShed), and transports answer "unavailable, retry after
// ShedRetryAfter". A check shed at MaxWait may have been sent, and charged,
// before it was given up on.
var ErrOverloaded = errors.New("overloaded: too many checks waiting for the store")

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
	// DecidedByShed: the store is healthy but the instance is overloaded;
	// the check was shed (ErrOverloaded), neither admitted nor charged to
	// a limit by this answer.
	DecidedByShed
	// DecidedByPolicy: the policy denied without asking the store (a
	// blocked descriptor, Envoy's requests_per_unit: 0).
	DecidedByPolicy

	numDecidedBy = iota
)

// NumDecidedBy is the number of DecidedBy values, for tables indexed by it.
const NumDecidedBy = numDecidedBy

var decidedByNames = [numDecidedBy]string{"store", "deny-cache", "local", "open", "closed", "shed", "policy"}

// ParseDecidedBy returns the DecidedBy whose String is s (a remote
// service's answer), and whether there is one.
func ParseDecidedBy(s string) (DecidedBy, bool) {
	for i, name := range decidedByNames {
		if name == s {
			return DecidedBy(i), true
		}
	}
	return numDecidedBy, false
}

// String returns "store", "deny-cache", "local", "open", "closed", "shed"
// or "policy".
func (d DecidedBy) String() string {
	if int(d) < len(decidedByNames) {
		return decidedByNames[d]
	}
	return fmt.Sprintf("decided_by(%d)", uint8(d))
}

// Guard protects checks from a store that lives elsewhere (Redis) and may be
// slow, partitioned or down, without mistaking the one for the other: a
// store that answers is waited for, because answering a check without it
// while it is merely busy would over-admit exactly during the floods a
// limiter exists for. With a Guard, a check
//
//  1. answers from the deny cache when the subject is known to be denied
//     (see DenyCacheSize);
//  2. goes straight to the namespace's failure policy when the circuit
//     breaker of its failure domain is open (see Breaker);
//  3. is shed with ErrOverloaded when MaxWaiting checks are already
//     waiting for the store;
//  4. otherwise waits for the store's answer, up to MaxWait. An answer,
//     however late, decides. An error of the store (a refused or broken
//     connection, an error reply such as CLUSTERDOWN or READONLY), or
//     MaxWait passing while the store answered nothing at all in its
//     failure domain, is a store failure: the namespace's failure policy
//     (policy.FailurePolicy) answers, from its local share of the limits
//     (seeded from what the store last said about the subject), open, or
//     closed. MaxWait passing while the store kept answering other checks
//     is not: the check is shed with ErrOverloaded.
//
// The zero value is usable: every field has a default.
type Guard struct {
	// MaxWait bounds a check's wait for the store. A check the store has
	// not answered by then is shed if the store answered other checks of
	// its failure domain meanwhile (it is busy, not down), and answered by
	// the failure policy if it answered none. Default DefaultMaxWait.
	MaxWait time.Duration
	// MaxWaiting bounds the checks waiting for the store at once; one more
	// is shed at once with ErrOverloaded. Default DefaultMaxWaiting.
	MaxWaiting int
	// Fallback is the in-process store of the local failure policy
	// (memstore.Store, bounded): required. When it also implements Seeder
	// (memstore.Store does), every answer of the store seeds it with the
	// subject's share of what was left, so that a subject that spent its
	// budget stays limited through an outage. It is the caller's to close,
	// after the Service.
	Fallback store.Store
	// Instances returns how many instances share the store. The local
	// fallback holds 1/Instances() of each limit (rounded up). It is called
	// on every store answer of a namespace with the local policy and must
	// be fast; nil or a result below 1 means 1.
	Instances func() int
	// Breaker tunes the circuit breakers.
	Breaker Breaker
	// Shards and ShardOf split the store into failure domains, each with
	// its own circuit breaker, so that a dead node of a Redis Cluster
	// diverts the checks of its own keys only (redisstore.ShardGroups and
	// Store.Shard). ShardOf returns a key's domain, 0 to Shards-1; it must
	// be fast. Shards 0 or 1, or a nil ShardOf: one domain for the store.
	Shards  int
	ShardOf func(key string) int
	// DenyCacheSize bounds the deny cache's entries; 0 means
	// DefaultDenyCacheSize and a negative value disables the cache.
	DenyCacheSize int
	// ClosedRetryAfter is the RetryAfter of a denial by the closed failure
	// policy. Default DefaultClosedRetryAfter.
	ClosedRetryAfter time.Duration
}

// Seeder is implemented by a local fallback store that can start a key from
// what the shared store last said about it (memstore.Store.Seed): v holds
// one Decision per rule, with Remaining already this instance's share.
type Seeder interface {
	Seed(key string, rules []limit.Rule, v limit.Verdict)
}

// guard is a Service's resolved Guard.
type guard struct {
	maxWait     time.Duration
	maxWaiting  int64
	closedRetry time.Duration
	fallback    store.Store
	seeder      Seeder // fallback's, when it seeds
	instances   func() int
	breakers    *breakers // nil: disabled
	shards      int
	shardOf     func(string) int
	deny        *denyCache

	// waiting counts the checks waiting for the store; answers counts, per
	// failure domain, the store's answers, so that a check that reached
	// MaxWait can tell a busy store from a silent one.
	waiting atomic.Int64
	answers []paddedCounter

	// shares caches scaled limit sets: read by every check the local
	// policy answers (all of them, in an outage) and by every seed, written
	// once per set.
	shares  sync.Map // shareKey -> []limit.Rule
	nShares atomic.Int64
}

// paddedCounter is a counter on a cache line of its own.
type paddedCounter struct {
	n atomic.Uint64
	_ [56]byte
}

// errExcluded reports to a breaker a call that says nothing about the
// store's health: its caller went away first, or it was shed.
var errExcluded = errors.New("service: caller gone")

func newGuard(g Guard, st store.Store, obs Observer) (*guard, error) {
	switch {
	case g.MaxWait < 0:
		return nil, fmt.Errorf("service: negative Guard.MaxWait %v", g.MaxWait)
	case g.MaxWaiting < 0:
		return nil, fmt.Errorf("service: negative Guard.MaxWaiting %d", g.MaxWaiting)
	case g.ClosedRetryAfter < 0:
		return nil, fmt.Errorf("service: negative Guard.ClosedRetryAfter %v", g.ClosedRetryAfter)
	case g.Breaker.FailureRatio < 0 || g.Breaker.FailureRatio > 1:
		return nil, fmt.Errorf("service: Guard.Breaker.FailureRatio %v is outside [0, 1]", g.Breaker.FailureRatio)
	case g.Breaker.Window < 0 || g.Breaker.OpenFor < 0:
		return nil, errors.New("service: negative Guard.Breaker duration")
	case g.Fallback == nil:
		return nil, errors.New("service: Guard.Fallback is required (an in-process store, such as memstore.Store)")
	}
	gd := &guard{
		maxWait:     g.MaxWait,
		maxWaiting:  int64(g.MaxWaiting),
		closedRetry: g.ClosedRetryAfter,
		fallback:    g.Fallback,
		instances:   g.Instances,
		shards:      1,
	}
	if gd.maxWait == 0 {
		gd.maxWait = DefaultMaxWait
	}
	if gd.maxWaiting == 0 {
		gd.maxWaiting = DefaultMaxWaiting
	}
	if gd.closedRetry == 0 {
		gd.closedRetry = DefaultClosedRetryAfter
	}
	gd.seeder, _ = gd.fallback.(Seeder)
	if g.DenyCacheSize >= 0 {
		n := g.DenyCacheSize
		if n == 0 {
			n = DefaultDenyCacheSize
		}
		gd.deny = newDenyCache(n)
	}
	if g.Shards > 1 && g.ShardOf != nil {
		gd.shards, gd.shardOf = g.Shards, g.ShardOf
	}
	gd.answers = make([]paddedCounter, gd.shards)
	if !g.Breaker.Disabled {
		gd.breakers = newBreakers(g.Breaker, gd.shards, gd.shardOf, obs)
		gd.breakers.done.Add(1)
		go gd.breakers.run(st, gd.maxWait)
	}
	return gd, nil
}

// shard returns key's failure domain.
func (g *guard) shard(key string) int {
	if g.shardOf == nil {
		return 0
	}
	if i := g.shardOf(key); i >= 0 && i < g.shards {
		return i
	}
	return 0
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
			v.At = start.UnixNano() // the instant it answers for
			res.Verdict, res.DecidedBy = v, DecidedByDenyCache
			return nil
		}
	}
	shard := g.shard(req.Key)
	if bs := g.breakers; bs != nil && !bs.closed(shard) {
		return s.fallback(ctx, res, req, fmt.Errorf("%w: circuit breaker open", store.ErrUnavailable))
	}
	t, outcome, err := s.admit(shard)
	if outcome == failedReturn {
		cctx, cancel := context.WithTimeout(ctx, g.maxWait)
		res.Verdict, err = s.store.Apply(cctx, req) // in place: no second Verdict on the stack
		cancel()
		if outcome, err = s.settle(ctx, t, err); err == nil {
			if !res.Verdict.Allowed && g.deny != nil {
				g.deny.insert(snap, req, &res.Verdict, now)
			}
			if res.Set.Namespace.OnStoreError == policy.FailLocal {
				g.seed(req, &res.Verdict)
			}
			return nil
		}
		res.Verdict = limit.Verdict{}
	}
	switch outcome {
	case failedShed:
		res.DecidedBy = DecidedByShed
	case failedPolicy:
		return s.fallback(ctx, res, req, err)
	}
	return err
}

// ticket is a store call admitted by the guard (admit), to settle.
type ticket struct {
	shard    int
	done     func(error) // the breaker's, nil without one
	answered uint64      // the failure domain's answer count at admission
}

// admit lets a store call of shard through the guard: its breaker (a
// refusal is the failure policy's turn, failedPolicy, with the cause) and
// the bound on the checks waiting for the store (past it, failedShed with
// ErrOverloaded). failedReturn with a nil error means admitted: make the
// call within maxWait, then settle it.
func (s *Service) admit(shard int) (ticket, int, error) {
	g := s.guard
	t := ticket{shard: shard}
	if bs := g.breakers; bs != nil {
		var err error
		if t.done, err = bs.cbs[shard].Allow(); err != nil {
			// It opened since: do not wait on the store.
			return t, failedPolicy, fmt.Errorf("%w: circuit breaker: %w", store.ErrUnavailable, err)
		}
	}
	if g.waiting.Add(1) > g.maxWaiting {
		g.waiting.Add(-1)
		if t.done != nil {
			t.done(errExcluded)
		}
		return t, failedShed, fmt.Errorf("%w (%d waiting)", ErrOverloaded, g.maxWaiting)
	}
	t.answered = g.answers[shard].n.Load()
	return t, failedReturn, nil
}

// settle ends an admitted store call that returned err: a nil error counts
// an answer of its failure domain; a failure comes to shedding
// (failedShed, ErrOverloaded), the failure policy (failedPolicy, the
// cause) or err returned as it is (afterFailure).
func (s *Service) settle(ctx context.Context, t ticket, err error) (int, error) {
	g := s.guard
	g.waiting.Add(-1)
	if err == nil {
		g.answers[t.shard].n.Add(1)
		if t.done != nil {
			t.done(nil)
		}
		return failedReturn, nil
	}
	switch outcome := s.afterFailure(ctx, err, t.shard, t.answered, t.done); outcome {
	case failedShed:
		return outcome, fmt.Errorf("%w: no answer within %v while the store answered others: %w", ErrOverloaded, g.maxWait, err)
	default:
		return outcome, err
	}
}

// What a failed store call comes to (afterFailure).
const (
	failedReturn = iota // return the error
	failedShed          // shed the check
	failedPolicy        // answer by the failure policy
)

// afterFailure tells the breaker (done, when not nil) about a store call
// that failed with err, and says what the check comes to: answered is the
// failure domain's answer count when the call began.
func (s *Service) afterFailure(ctx context.Context, err error, shard int, answered uint64, done func(error)) int {
	g := s.guard
	report := func(err error) {
		if done != nil {
			done(err)
		}
	}
	failed := storeFailed(err)
	switch {
	case failed && ctx.Err() != nil:
		// The caller left; the store may be fine, and nobody waits for a
		// policy answer.
		report(errExcluded)
		return failedReturn
	case failed && errors.Is(err, context.DeadlineExceeded) && g.answers[shard].n.Load() != answered:
		// MaxWait passed while the store answered others: it is busy, not
		// down, and this instance is not keeping up with it.
		report(errExcluded)
		return failedShed
	case failed:
		report(err)
		return failedPolicy
	}
	report(nil) // not the store's fault: a caller bug or a closed store
	return failedReturn
}

// seed tells the local fallback what the store said of req's subject: each
// rule's remaining, as this instance's share of it. A leased limit's
// verdict tells what this instance holds, not what the store does: it is
// not seeded (in an outage its local share starts full).
func (g *guard) seed(req store.Request, v *limit.Verdict) {
	if g.seeder == nil || v.N != len(req.Rules) || req.Lease {
		return
	}
	n := g.instanceCount()
	share := *v
	for i := range share.N {
		share.D[i].Remaining = ceilDiv(max(share.D[i].Remaining, 0), int64(n))
	}
	g.seeder.Seed(req.Key, g.share(req.Rules, n), share)
}

func (g *guard) instanceCount() int {
	if g.instances == nil {
		return 1
	}
	return max(1, g.instances())
}

// fallback answers req by its namespace's failure policy after the store
// failed with cause.
func (s *Service) fallback(ctx context.Context, res *Result, req store.Request, cause error) error {
	g := s.guard
	res.StoreError = cause
	if span := s.fallbackSpan(ctx, res, cause); span != nil {
		defer span.End()
	}
	switch res.Set.Namespace.OnStoreError {
	case policy.FailOpen:
		res.Verdict, res.DecidedBy = policyVerdict(req.Rules, true, 0), DecidedByOpen
		return nil
	case policy.FailClosed:
		res.Verdict, res.DecidedBy = policyVerdict(req.Rules, false, g.closedRetry), DecidedByClosed
		return nil
	}
	// The fallback is in process: it neither blocks nor needs a deadline.
	rules := g.share(req.Rules, g.instanceCount())
	v, err := g.fallback.Apply(context.Background(), store.Request{Key: req.Key, Rules: rules, Cost: req.Cost})
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
	s.Lease = false // a share is this instance's own
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

// Close stops what the Service runs: the breakers' prober. The stores given
// to New and Guard.Fallback are the caller's to close, after it.
func (s *Service) Close() error {
	if s.guard != nil && s.guard.breakers != nil {
		s.guard.breakers.close()
	}
	return nil
}
