// Package service orchestrates one rate limit check: it resolves a request to
// the limit set of the current policy snapshot, applies it to the store and
// reports the outcome to an Observer.
//
// The service knows nothing of HTTP, gRPC or Prometheus: transports turn
// their requests into a Request and render the Result; metrics and other
// observers plug in through Observer.
//
// With Options.Guard the store is treated as remote (guard.go): a busy store
// is waited for up to a maximum wait, a bounded queue sheds what this
// instance cannot keep up with, circuit breakers probed in the background
// stop calling a store that keeps failing (breaker.go), a check the store
// fails is answered by its namespace's failure policy (open, closed, or
// this instance's share of the limits, seeded from the store's last
// answer), and subjects known to be denied are answered from a deny cache
// (denycache.go).
//
// A Service is safe for concurrent use. The policy lives behind an atomic
// pointer: Swap installs a new snapshot without blocking checks, and a check
// in flight finishes on the snapshot it loaded.
package service

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// DefaultMaxCost is the largest cost a request may carry unless
// Options.MaxCost says otherwise.
const DefaultMaxCost = 1_000_000

// Sentinel errors of Check. Errors returned by Check wrap exactly one of
// ErrInvalidNamespace, ErrInvalidSubject, ErrInvalidCost (bad input),
// policy.ErrUnknownNamespace, or a store error (store.ErrUnavailable,
// store.ErrClosed, store.ErrInvalidRequest), so callers classify them with
// errors.Is.
var (
	// ErrInvalidNamespace is returned for a request without a namespace.
	ErrInvalidNamespace = errors.New("invalid namespace")
	// ErrInvalidSubject is returned for a subject that policy.ValidateSubject
	// rejects (empty, too long, control characters).
	ErrInvalidSubject = errors.New("invalid subject")
	// ErrInvalidCost is returned for a negative cost or one above MaxCost.
	ErrInvalidCost = errors.New("invalid cost")
	// ErrDegraded is returned by Ready when the store does not answer but
	// the failure policies do: the instance serves, in degraded mode.
	ErrDegraded = errors.New("degraded")
	// ErrNilSnapshot is returned by New and Swap for a nil snapshot.
	ErrNilSnapshot = errors.New("service: nil policy snapshot")
)

// Request asks whether Subject may spend Cost units in Namespace now, and
// each of Descriptors its own cost: all-or-nothing, across every limit
// set they resolve to (descriptors.go).
type Request struct {
	Namespace string
	// Subject is checked against the namespace's limits; it may be empty
	// when Descriptors are given.
	Subject string
	// Cost is the number of units to consume, from 0 to Options.MaxCost.
	// 0 is a peek: nothing is consumed and the result tells whether a
	// request of cost 1 would pass.
	Cost int64
	// Descriptors are checked with the subject, each against the limit
	// set the namespace's descriptor tree gives it.
	Descriptors []Descriptor
}

// Result is the outcome of a check.
type Result struct {
	Namespace string
	Subject   string
	// Cost is the request's cost (0 for a peek).
	Cost int64
	// Set is the limit set the request resolved to. Set.Namespace is nil when
	// the namespace is unknown to the snapshot the check used; on an input
	// error it is set whenever the namespace is known, so observers can label
	// by namespace without trusting user input. Set.Rules belongs to the
	// snapshot and must not be modified.
	Set policy.LimitSet
	// Verdict is the store's answer, one decision per rule of Set.Rules.
	// It is the zero Verdict when Check returns an error.
	Verdict limit.Verdict
	// DecidedBy names the path that gave Verdict: the store, the deny cache
	// or a failure policy (see Guard); DecidedByShed, with ErrOverloaded and
	// no Verdict, for a check shed for overload. DecidedByStore without a
	// Guard.
	DecidedBy DecidedBy
	// StoreError is the store failure a failure policy answered for, when
	// DecidedBy is DecidedByLocal, DecidedByOpen or DecidedByClosed (no
	// answer within the maximum wait, Redis down, or the circuit breaker
	// open); nil otherwise.
	StoreError error
	// Descriptors is how each descriptor of the request stood, in order;
	// nil for a request without descriptors. With them, Verdict is the
	// binding part's (the subject's or a descriptor's) with Allowed the
	// request's, and Set.Rules that part's rules (nil when nothing limits
	// the request).
	Descriptors []DescriptorResult
	// Shadowed reports a request the limits denied and shadow mode
	// (Options.Shadow) admitted: Verdict.Allowed is true, Verdict.Shadow
	// too, and the per-rule decisions say what enforcing would have done.
	Shadowed bool
}

// Observer is told about every check and every snapshot the service starts
// using. Implementations must be safe for concurrent use, fast, and must not
// retain res beyond the call; they run on the caller's goroutine.
type Observer interface {
	// ObserveCheck is called exactly once per Check, after the store answered
	// (or the check failed), with the Result Check returns, the error, and the
	// time the check took. res is passed by value so that reporting allocates
	// nothing.
	ObserveCheck(res Result, err error, took time.Duration)
	// ObserveSnapshot is called by New and by every Swap with the snapshot
	// the service uses from then on. Calls are serialized.
	ObserveSnapshot(snap *policy.Snapshot)
}

// Observers returns an Observer that tells each of obs, in order (nil ones
// are skipped): metrics and the top-K tracker, say. It is a BreakerObserver
// too, telling those of obs that are.
func Observers(obs ...Observer) Observer {
	var m multiObserver
	for _, o := range obs {
		if o != nil {
			m = append(m, o)
		}
	}
	return m
}

type multiObserver []Observer

func (m multiObserver) ObserveCheck(res Result, err error, took time.Duration) {
	for _, o := range m {
		o.ObserveCheck(res, err, took)
	}
}

func (m multiObserver) ObserveSnapshot(snap *policy.Snapshot) {
	for _, o := range m {
		o.ObserveSnapshot(snap)
	}
}

func (m multiObserver) ObserveBreaker(from, to BreakerState) {
	for _, o := range m {
		if bo, ok := o.(BreakerObserver); ok {
			bo.ObserveBreaker(from, to)
		}
	}
}

var _ BreakerObserver = multiObserver(nil)

// Options tune a Service. The zero value is usable.
type Options struct {
	// Observer, when not nil, is told about every check and snapshot swap.
	Observer Observer
	// Clock measures check latency for the Observer and, with a Guard,
	// times the deny cache's entries (by monotonic spans, not wall time);
	// the store keeps the time of every decision. Default clock.System.
	Clock clock.Clock
	// MaxCost bounds Request.Cost. Default DefaultMaxCost.
	MaxCost int64
	// Guard, when not nil, treats the store as remote (Redis): store calls
	// get a deadline, a circuit breaker and a failure policy, and denied
	// subjects are answered from a deny cache. Nil suits an in-process
	// store, which neither blocks nor fails: checks call it directly.
	Guard *Guard
	// Shadow admits every request the limits deny (Result.Shadowed), for
	// trying a policy before enforcing it: decisions are made and counted
	// as usual, and a denied request consumes nothing, as always.
	Shadow bool
	// Tracer, when not nil, puts every check in OpenTelemetry spans
	// (trace.go). Nil: no tracing code runs.
	Tracer trace.Tracer
}

// Service runs checks. Create it with New; the zero value is not usable.
type Service struct {
	store   store.Store
	obs     Observer
	clock   clock.Clock
	maxCost int64
	shadow  bool
	tracer  trace.Tracer // nil: no tracing

	snap   atomic.Pointer[policy.Snapshot]
	swapMu sync.Mutex // serializes Swap so the Observer sees swaps in order
	guard  *guard     // nil without Options.Guard
	// epoch is when the service was made. The deny cache keeps time as the
	// span since epoch, which carries the monotonic clock reading: a wall
	// clock stepped back (NTP) cannot stretch a cached denial.
	epoch time.Time
}

// New returns a Service that checks requests against snap using st. It
// rejects a nil store or snapshot and a negative MaxCost. The service does
// not own st: the caller closes it after the last check.
func New(st store.Store, snap *policy.Snapshot, opts Options) (*Service, error) {
	if st == nil {
		return nil, errors.New("service: nil store")
	}
	if snap == nil {
		return nil, ErrNilSnapshot
	}
	if opts.MaxCost < 0 {
		return nil, fmt.Errorf("service: negative MaxCost %d", opts.MaxCost)
	}
	if opts.MaxCost == 0 {
		opts.MaxCost = DefaultMaxCost
	}
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	s := &Service{store: st, obs: opts.Observer, clock: opts.Clock, maxCost: opts.MaxCost, shadow: opts.Shadow, tracer: opts.Tracer}
	if s.tracer != nil {
		s.store = tracedStore{Store: st, tracer: s.tracer}
	}
	s.epoch = s.clock.Now()
	if opts.Guard != nil {
		g, err := newGuard(*opts.Guard, st, opts.Observer)
		if err != nil {
			return nil, err
		}
		s.guard = g
	}
	s.snap.Store(snap)
	if s.obs != nil {
		s.obs.ObserveSnapshot(snap)
	}
	return s, nil
}

// MaxCost returns the largest cost Check accepts.
func (s *Service) MaxCost() int64 { return s.maxCost }

// Snapshot returns the policy snapshot checks currently use. It is never nil.
func (s *Service) Snapshot() *policy.Snapshot { return s.snap.Load() }

// Swap makes snap the policy of every check that starts from now on and
// returns the snapshot it replaces. Checks already in flight finish on the
// snapshot they loaded. Swap rejects a nil snapshot with ErrNilSnapshot and
// keeps the current one.
func (s *Service) Swap(snap *policy.Snapshot) (old *policy.Snapshot, err error) {
	if snap == nil {
		return nil, ErrNilSnapshot
	}
	s.swapMu.Lock()
	defer s.swapMu.Unlock()
	old = s.snap.Swap(snap)
	if s.guard != nil && s.guard.deny != nil {
		s.guard.deny.clear() // denials were decided under the old limits
	}
	if s.obs != nil {
		s.obs.ObserveSnapshot(snap)
	}
	return old, nil
}

// Check applies req to the limit set its namespace and subject resolve to,
// consuming req.Cost from every rule of the set if and only if all of them
// admit it (see store.Store.Apply).
//
// A denial is not an error: it is a Result whose Verdict.Allowed is false.
// Errors wrap one of the sentinels listed with ErrInvalidNamespace; the
// Result still carries the request's namespace and subject (and Set.Namespace
// when the namespace is known). Apart from the store key and whatever the
// store allocates, a successful check allocates nothing (with a Guard, the
// maximum wait's context and the circuit breaker add five small
// allocations).
//
// With a Guard, a store that fails, or answers nothing within the maximum
// wait, does not make Check fail: the namespace's failure policy answers,
// and Result.DecidedBy and Result.StoreError say so. Check then returns an
// error only for bad input, an unknown namespace, a closed store, a ctx
// that ended first, or a check shed for overload (ErrOverloaded, with
// Result.DecidedBy DecidedByShed).
func (s *Service) Check(ctx context.Context, req Request) (res Result, err error) {
	err = s.CheckTo(ctx, req, &res)
	return res, err
}

// CheckTo is Check writing its Result into *res, overwritten whole, for a
// caller that keeps it elsewhere than its stack (see the package-level
// CheckTo).
func (s *Service) CheckTo(ctx context.Context, req Request, res *Result) error {
	*res = Result{}
	if s.tracer != nil {
		return s.checkTraced(ctx, req, res)
	}
	var start time.Time
	if s.obs != nil || s.guard != nil {
		start = s.clock.Now()
	}
	err := s.check(ctx, req, start, res)
	if s.shadow && err == nil && !res.Verdict.Allowed {
		shadow(res)
	}
	if s.obs != nil {
		s.observe(res, err, start)
	}
	return err
}

// observe tells the observers of a check. A function of its own, so that
// the copy of res the observers take lives in its frame, not in Check's:
// Check's frame is on the stack while the store works, and a goroutine
// whose stack must grow for it (a gRPC call's) copies it.
//
//go:noinline
func (s *Service) observe(res *Result, err error, start time.Time) {
	s.obs.ObserveCheck(*res, err, s.clock.Now().Sub(start))
}

// shadow admits a denied result (Options.Shadow).
func shadow(res *Result) {
	res.Shadowed = true
	res.Verdict.Allowed, res.Verdict.Shadow, res.Verdict.RetryAfter = true, true, 0
}

// check decides req into res, which it expects zero: written in place, so
// that no frame on the way to the store holds a second Result.
func (s *Service) check(ctx context.Context, req Request, start time.Time, res *Result) error {
	snap := s.snap.Load()
	res.Namespace, res.Subject, res.Cost = req.Namespace, req.Subject, req.Cost
	if err := s.Validate(req); err != nil {
		if ns, ok := snap.Namespace(req.Namespace); ok {
			res.Set.Namespace = ns
		}
		return err
	}
	if len(req.Descriptors) > 0 {
		if err := s.checkDescriptors(ctx, snap, req, res, start); err != nil {
			return fmt.Errorf("check %s: %w", req.Namespace, err)
		}
		return nil
	}
	set, err := snap.Resolve(req.Namespace, req.Subject)
	if err != nil {
		return err // wraps policy.ErrUnknownNamespace and names it
	}
	res.Set = set
	sreq := store.Request{
		Key:   policy.Key(req.Namespace, req.Subject),
		Rules: set.Rules,
		Cost:  req.Cost,
		Lease: leased(set.Rules),
	}
	if s.guard != nil {
		if err := s.guarded(ctx, snap, res, sreq, start); err != nil {
			return fmt.Errorf("check %s: %w", req.Namespace, err)
		}
		return nil
	}
	if res.Verdict, err = s.store.Apply(ctx, sreq); err != nil {
		res.Verdict = limit.Verdict{}
		return fmt.Errorf("check %s: %w", req.Namespace, err)
	}
	return nil
}

// leased reports whether a limit set is a leased limit (it then stands
// alone in its set: policy.New): the store decides it from this instance's
// slices of its bucket when it leases (lease.Store), as any set otherwise.
func leased(rules []limit.Rule) bool { return len(rules) == 1 && rules[0].Lease }

// Validate reports what Check would refuse req for as bad input (an error
// wrapping ErrInvalidNamespace, ErrInvalidSubject or ErrInvalidCost), or
// nil. It does not look the namespace up.
func (s *Service) Validate(req Request) error {
	if req.Namespace == "" {
		return fmt.Errorf("%w: namespace is required", ErrInvalidNamespace)
	}
	if req.Subject != "" || len(req.Descriptors) == 0 {
		if err := policy.ValidateSubject(req.Subject); err != nil {
			return fmt.Errorf("%w: %w", ErrInvalidSubject, err)
		}
	}
	if len(req.Descriptors) > 0 {
		if err := s.validateDescriptors(req); err != nil {
			return err
		}
	}
	switch {
	case req.Cost < 0:
		return fmt.Errorf("%w: cost %d is negative", ErrInvalidCost, req.Cost)
	case req.Cost > s.maxCost:
		return fmt.Errorf("%w: cost %d is over the maximum %d", ErrInvalidCost, req.Cost, s.maxCost)
	}
	return nil
}

// Ready reports whether the service can answer checks: it has a snapshot and
// the store answers a peek. The peek uses a reserved key no subject can
// produce (it starts with a control character) and consumes nothing.
// The error wraps the store's error (store.ErrClosed after Close).
func (s *Service) Ready(ctx context.Context) error {
	_, err := s.store.Apply(ctx, store.Request{Key: readyKey, Rules: readyRules, Cost: 0})
	switch {
	case err == nil:
		return nil
	case s.guard != nil && !errors.Is(err, store.ErrClosed):
		// The failure policies answer while the store is away: the
		// instance still serves, so it must not leave the load balancer
		// (every instance would, at once, in a Redis outage).
		return fmt.Errorf("%w: store unavailable, failure policies answer: %w", ErrDegraded, err)
	}
	return fmt.Errorf("service: store not ready: %w", err)
}

// readyKey cannot collide with policy.Key(ns, subject): namespace names
// start with a letter or digit.
const readyKey = "\x00ready:probe"

var readyRules = []limit.Rule{{Name: "ready", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second, Burst: 1}}
