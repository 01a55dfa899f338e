// Package lease decides leased limits locally: a limit shared by every
// instance (an endpoint-wide cap, a tenant's cap across its users) whose
// one counter every check would otherwise touch, one hot key on one Redis
// primary. A Store wraps the shared store: for a request marked Lease it
// takes a slice of the limit's token bucket out of the shared store,
// decides checks from the slice with no store call, takes the next slice
// before this one runs out, and gives back what a slice did not spend when
// its lease ends or the instance stops. Holder is the protocol itself,
// pure, so that a simulation runs the same code across regions.
//
// # Why nothing is over-admitted
//
// A take consumes its units in the shared bucket at once (store.Leaser,
// limit.Rule.Take): every unit an instance spends was already spent in the
// store, so the instances together never spend more than the bucket gives
// out. A unit taken at t may be spent until t + Duration (its lease; the
// instance measures it from before it sent the take, on its own monotonic
// clock, so no clock is compared across machines), so the spending of any
// interval of length T comes from takes within an interval of T +
// Duration. The store therefore keeps the bucket with its burst lowered by
// what the rate brings in one Duration (StoreRule), and the units spent in
// any interval of length T never exceed burst + rate x T: what the limit
// allows without leases. A return gives back what a slice did not spend
// (limit.Rule.Refund: never more than the history without the take would
// hold). The price: a leased limit's burst is lower by one lease of its
// rate, and a single check can cost at most the lowered burst.
//
// # What is lost when an instance dies
//
// The units its slices held: at most MaxHeld, spent in the bucket and never
// returned. The bucket refills at its rate as always, so the loss is an
// under-admission of at most one MaxHeld, once.
//
// # How slices adapt, and how the limit is shared
//
// Each holder estimates its demand (units per second, weighted over about
// a second) and holds what that spends in half a lease (Size), asking for
// more when it holds less than half of that: an idle instance holds one
// unit, a busy one up to MaxHeld, half the bucket's burst. Every take also
// reports the holder's demand (store.Report), and
// the store keeps each holder's last report beside the bucket and answers
// with their sum: the total demand on the limit. When that total
// exceeds the limit's rate and the bucket has nothing to spare, the holder
// is contended: it takes its share of its own demand (Share: the rate over
// the total demand, the same for every holder) once every half lease, and
// denies what that share does not cover until its next take. The shares
// add up to the rate, so the limit is used in full, and each instance's
// part of it follows its part of the demand; store calls are then two per
// lease per instance, whatever the load.
//
// # When the store fails
//
// A holder keeps deciding from its slices; when they run out, the take's
// error (store.ErrUnavailable) reaches the service, whose Guard answers by
// the namespace's on_store_error policy.
package lease

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// DefaultDuration is how long a slice may be spent after its take was sent.
const DefaultDuration = 500 * time.Millisecond

// MaxHolders bounds the keys a Store holds slices of; when it is reached,
// the holders that hold nothing are forgotten.
const MaxHolders = 10_000

// takeTimeout bounds one take or return: the Guard gives up on a check
// much sooner (service.DefaultMaxWait); the take itself may still land and
// be spent by the checks after it.
const takeTimeout = 5 * time.Second

// Options tune a Store. The zero value is usable.
type Options struct {
	// MaxDuration is the longest a slice may be spent after its take was
	// sent; a limit whose burst refills faster gets half that time
	// (Lease). Longer means fewer takes but a lower burst kept in the
	// store (StoreRule). Default DefaultDuration.
	MaxDuration time.Duration
	// Instances returns how many instances share the store (MaxHeld,
	// Quantum); nil or a result below 1 means 1. It must be fast.
	Instances func() int
	// Clock times leases and demand. Default clock.System.
	Clock clock.Clock
	// Logger receives failed returns. Default: discard.
	Logger *slog.Logger
	// ID names this instance in its demand reports (store.Report); unique
	// among the instances sharing the store. Default: a random one.
	ID string
}

// Stats counts what a Store did.
type Stats struct {
	// Takes and Returns count store calls; TakeErrors those of Takes
	// that failed.
	Takes, TakeErrors, Returns int64
	// Taken and Returned count units; Local counts the checks decided
	// from slices with no wait for the store.
	Taken, Returned, Local int64
}

// Store decides leased requests from slices of the shared store's buckets
// and sends every other request to it. It is safe for concurrent use.
type Store struct {
	inner  store.Store
	leaser store.Leaser
	o      Options

	mu      sync.Mutex
	holders map[holderKey]*holder
	rules   map[*limit.Rule]leased // by the user rule's address
	closed  bool
	wg      sync.WaitGroup // takes and returns in flight

	takes, takeErrors, returns, taken, returned, local atomic.Int64
}

type holderKey struct{ key, rule string }

// leased is how a user rule is leased (Lease).
type leased struct {
	rule limit.Rule // the store rule
	d    time.Duration
}

// holder is a Holder behind a mutex, with the take in flight.
type holder struct {
	mu     sync.Mutex
	key    string
	seen   *limit.Rule // the address of the rule last asked with (guarded by Store.mu)
	user   limit.Rule  // as configured, for the verdicts
	h      *Holder
	flight chan struct{} // closed when the take in flight is done
	err    error         // the last take's error, for the checks that waited
}

// New wraps inner, which must be a store.Leaser.
func New(inner store.Store, o Options) (*Store, error) {
	l, ok := inner.(store.Leaser)
	if !ok {
		return nil, fmt.Errorf("lease: %T cannot lease", inner)
	}
	if o.MaxDuration <= 0 {
		o.MaxDuration = DefaultDuration
	}
	if o.Clock == nil {
		o.Clock = clock.System
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.ID == "" {
		o.ID = fmt.Sprintf("%016x", rand.Uint64())
	}
	return &Store{inner: inner, leaser: l, o: o, holders: map[holderKey]*holder{}, rules: map[*limit.Rule]leased{}}, nil
}

// Stats returns the counts so far.
func (s *Store) Stats() Stats {
	return Stats{Takes: s.takes.Load(), TakeErrors: s.takeErrors.Load(), Returns: s.returns.Load(),
		Taken: s.taken.Load(), Returned: s.returned.Load(), Local: s.local.Load()}
}

func (s *Store) instances() int {
	if s.o.Instances == nil {
		return 1
	}
	return max(1, s.o.Instances())
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if !req.Lease {
		return s.inner.Apply(ctx, req)
	}
	if err := req.Validate(); err != nil {
		return limit.Verdict{}, err
	}
	h, err := s.holder(req)
	if err != nil {
		return limit.Verdict{}, err
	}
	return h.check(ctx, s, req.Cost)
}

// ApplyAll implements store.Store: the leased parts are decided from their
// slices first, the others by the shared store in one call; if those deny
// or fail, the units the leased parts spent go back to their slices
// (exactly: they never left this instance). If a leased part denies, the
// parts after it are not asked (their verdicts are left empty).
func (s *Store) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	leased := false
	for i := range reqs {
		leased = leased || reqs[i].Lease
	}
	if !leased {
		return s.inner.ApplyAll(ctx, reqs, out)
	}
	if err := store.ValidateAll(reqs, out); err != nil {
		return false, err
	}
	type spent struct {
		h    *holder
		cost int64
	}
	var spents []spent
	undo := func() {
		for _, sp := range spents {
			sp.h.mu.Lock()
			sp.h.h.Undo(sp.cost)
			sp.h.mu.Unlock()
		}
	}
	var rest []store.Request
	var restIdx []int
	for i, r := range reqs {
		if !r.Lease {
			rest, restIdx = append(rest, r), append(restIdx, i)
			continue
		}
		h, err := s.holder(r)
		if err == nil {
			out[i], err = h.check(ctx, s, r.Cost)
		}
		if err != nil || !out[i].Allowed {
			undo()
			return false, err
		}
		spents = append(spents, spent{h, r.Cost})
	}
	if len(rest) == 0 {
		return true, nil
	}
	rout := make([]limit.Verdict, len(rest))
	ok, err := s.inner.ApplyAll(ctx, rest, rout)
	for j, i := range restIdx {
		out[i] = rout[j]
	}
	if err != nil || !ok {
		undo()
	}
	return ok && err == nil, err
}

// lease returns how a user rule is leased, cached by address (a
// snapshot's rules do not move or change).
func (s *Store) lease(r *limit.Rule) (leased, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l, ok := s.rules[r]; ok {
		return l, nil
	}
	sr, d, err := Lease(*r, s.o.MaxDuration)
	if err != nil {
		return leased{}, fmt.Errorf("%w: %w", store.ErrInvalidRequest, err)
	}
	if len(s.rules) >= MaxHolders {
		clear(s.rules) // many reloads: the rules of old snapshots
	}
	l := leased{sr, d}
	s.rules[r] = l
	return l, nil
}

// holder returns the holder of req's key and rule. The common case, the
// rule of the snapshot the holder last saw, costs one map lookup under
// s.mu.
func (s *Store) holder(req store.Request) (*holder, error) {
	if len(req.Rules) != 1 {
		return nil, fmt.Errorf("%w: a leased limit stands alone in its set (%d rules)", store.ErrInvalidRequest, len(req.Rules))
	}
	user := &req.Rules[0]
	k := holderKey{req.Key, user.Name}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, store.ErrClosed
	}
	if h := s.holders[k]; h != nil && h.seen == user {
		s.mu.Unlock()
		return h, nil
	}
	s.mu.Unlock()
	l, err := s.lease(user)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil, store.ErrClosed
	}
	h := s.holders[k]
	if h == nil {
		if len(s.holders) >= MaxHolders {
			s.forgetIdleLocked()
		}
		h = &holder{key: req.Key, seen: user, user: *user, h: NewHolder(l.rule, l.d)}
		s.holders[k] = h
		s.mu.Unlock()
		return h, nil
	}
	h.seen = user
	s.mu.Unlock()
	h.mu.Lock()
	if h.user != *user {
		h.user = *user
		h.h.SetRule(l.rule, l.d)
	}
	h.mu.Unlock()
	return h, nil
}

// forgetIdleLocked forgets the holders that hold nothing and are not
// taking; the caller holds s.mu.
func (s *Store) forgetIdleLocked() {
	now := s.o.Clock.Now()
	for k, h := range s.holders {
		h.mu.Lock()
		s.giveBack(h, h.h.Expire(now, nil))
		idle := h.h.Avail() == 0 && !h.h.Asking()
		h.mu.Unlock()
		if idle {
			delete(s.holders, k)
		}
	}
}

// check decides a check of cost from h's slices, waiting for a take when
// they do not hold enough.
func (h *holder) check(ctx context.Context, s *Store, cost int64) (limit.Verdict, error) {
	waited := false
	for {
		h.mu.Lock()
		now := s.o.Clock.Now()
		s.giveBack(h, h.h.Expire(now, nil))
		st := h.h.Check(now, cost, s.instances(), true)
		if st.Ask.N > 0 {
			s.take(h, now, st.Ask)
		}
		if st.Decided {
			v := h.verdict(st)
			h.mu.Unlock()
			if !waited {
				s.local.Add(1)
			}
			return v, nil
		}
		if waited && h.err != nil {
			// The take this check waited for failed and the slices are
			// empty: the failure policy answers.
			err := h.err
			h.mu.Unlock()
			return limit.Verdict{}, err
		}
		f := h.flight
		h.mu.Unlock()
		select {
		case <-f:
			waited = true
		case <-ctx.Done():
			return limit.Verdict{}, fmt.Errorf("lease: waiting for a take: %w: %w", store.ErrUnavailable, ctx.Err())
		}
	}
}

// verdict is the verdict of a check the slices decided; a shadow limit's
// denial passes, marked Shadow (limit.Combine).
func (h *holder) verdict(st Step) limit.Verdict {
	d := [1]limit.Decision{{Allowed: st.Allowed, Limit: h.user.Limit, Remaining: h.h.Avail(), RetryAfter: st.RetryAfter, Shadow: !st.Allowed && h.user.Shadow}}
	return limit.Combine(d[:])
}

// take sends the take a for h in the background (the caller holds h.mu);
// its answer lands in h's Holder.
func (s *Store) take(h *holder, sent time.Time, a Ask) {
	f := make(chan struct{})
	h.flight = f
	key, rule := h.key, h.h.rule
	rep := store.Report{Holder: s.o.ID, Demand: a.Demand, For: 2 * h.h.d}
	s.takes.Add(1)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(context.Background(), takeTimeout)
		g, err := s.leaser.Take(ctx, key, rule, a.N, rep)
		cancel()
		h.mu.Lock()
		h.err = err
		if err != nil {
			s.takeErrors.Add(1)
			h.h.Failed()
		} else {
			s.taken.Add(g.Taken)
			h.h.Granted(s.o.Clock.Now(), sent, a, g)
		}
		h.flight = nil
		h.mu.Unlock()
		close(f)
	}()
}

// giveBack sends returns in the background (a return is never needed for
// correctness: only for the units to be spent elsewhere).
func (s *Store) giveBack(h *holder, rets []Return) {
	if len(rets) == 0 {
		return
	}
	key, rule := h.key, h.h.rule
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for _, r := range rets {
			ctx, cancel := context.WithTimeout(context.Background(), takeTimeout)
			err := s.leaser.Return(ctx, key, rule, r.Grant, r.Unused)
			cancel()
			s.returns.Add(1)
			if err != nil {
				s.o.Logger.Warn("lease: cannot return unused units; they come back as the bucket refills", "key", key, "units", r.Unused, "err", err)
				continue
			}
			s.returned.Add(r.Unused)
		}
	}()
}

// Close returns every unused unit, waits for the takes and returns in
// flight, and closes the shared store.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	hs := make([]*holder, 0, len(s.holders))
	for _, h := range s.holders {
		hs = append(hs, h)
	}
	s.mu.Unlock()
	for _, h := range hs {
		h.mu.Lock()
		s.giveBack(h, h.h.Drain(nil))
		h.mu.Unlock()
	}
	s.wg.Wait()
	// A take that landed after its holder drained is returned now.
	for _, h := range hs {
		h.mu.Lock()
		s.giveBack(h, h.h.Drain(nil))
		h.mu.Unlock()
	}
	s.wg.Wait()
	return s.inner.Close()
}

var _ store.Store = (*Store)(nil)
