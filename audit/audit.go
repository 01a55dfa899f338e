// Package audit watches the limiter's accuracy online: for a sample of
// subjects, chosen by a hash of the namespace and subject (the same on every
// instance and at every start), it replays every check the service
// answered against an exact reference of the subject's limits, in process,
// and counts the disagreements.
//
// # The model
//
// The reference is the pure algorithm (limit.Apply) on states of its own,
// stepped at the instant each verdict was decided at (limit.Verdict.At: the
// memory store's clock, Redis's TIME), in the order of those instants
// (checks observed up to Horizon late are sorted in). It mirrors the
// store's admissions: it consumes what the store admitted and the
// reference admits too, and nothing the store denied. Its rules are the
// subject's own, except that a sliding_window_counter is audited against
// the exact sliding_window_log of the same limit (the counter is an
// approximation: the audit shows what it costs).
//
// An over-admission is a check the store admitted that the reference
// denies. The reference has seen at most what the store consumed (only this
// instance's admissions of the subject), so it holds at least as much
// capacity as the truth: when it denies, the store admitted past the limit.
// Over-admissions are sound on every layout: a failover or restart that lost
// writes, an evicted entry, a failure policy (open, local) answering, the
// sliding window counter's approximation. Across instances, only what one
// instance admitted past the limit on its own is seen.
//
// An under-admission is a check the store denied that the reference admits.
// It is sound only where this process holds every state of its subjects
// (Options.Exclusive: the memory store), and for subjects whose reference
// has not been dropped to bound memory.
//
// The hot path costs a hash of the namespace and subject per check (less
// than the check itself; nothing when Rate is 0, the default) and, for a
// sampled subject, an append under a mutex; the replay runs in Run's
// goroutine.
package audit

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// Defaults of Options.
const (
	DefaultHorizon     = 250 * time.Millisecond
	DefaultMaxSubjects = 10_000
	DefaultMaxPending  = 100_000
	// MaxLog bounds the sliding_window_log a sliding_window_counter is
	// audited against: a counter of a larger limit is not audited.
	MaxLog = 10_000
)

// Options configure an Auditor.
type Options struct {
	// Rate is the fraction of subjects audited, from 0 (off) to 1.
	Rate float64
	// Exclusive says that this process holds every state of its subjects
	// (the memory store), so that under-admissions are counted too.
	Exclusive bool
	// Clock times the replay. Default clock.System.
	Clock clock.Clock
	// Horizon is how late a check may be observed after it was decided
	// and still be replayed in order. Default DefaultHorizon.
	Horizon time.Duration
	// MaxSubjects bounds the references held. Default DefaultMaxSubjects.
	MaxSubjects int
	// MaxPending bounds the checks waiting for their replay; past it a
	// check is dropped (and its subject's under-admissions no longer
	// counted). Default DefaultMaxPending.
	MaxPending int
}

// Count is the audit of one limit of a namespace.
type Count struct {
	Namespace, Limit string
	// Algorithm is the limit's (a sliding_window_counter's over-admissions
	// are its approximation, expected).
	Algorithm limit.Algorithm
	// Over and Under count the disagreements with the reference.
	Over, Under int64
}

// Stats are the audit's counts so far.
type Stats struct {
	// Checks counts the replayed checks by namespace.
	Checks map[string]int64
	// Counts holds the disagreements, by namespace and limit.
	Counts []Count
	// Dropped counts the checks not replayed (MaxPending, or observed
	// later than Horizon); Subjects the references held.
	Dropped  int64
	Subjects int
}

// Auditor is a service.Observer that audits a sample of subjects. Create
// it with New and start Run. It is safe for concurrent use.
type Auditor struct {
	o         Options
	threshold uint64 // a subject is sampled when its hash is below

	mu      sync.Mutex
	pending []event

	rmu     sync.Mutex // the replay's state
	refs    map[string]*reference
	checks  map[string]int64
	counts  map[[2]string]*Count
	dropped int64
	evicted bool
	lastCut int64
}

// event is one sampled check, as the service answered it.
type event struct {
	ns, subject string
	rules       []limit.Rule // the snapshot's: immutable
	cost, at    int64
	allowed     bool
	binding     int // the store's denying limit, an index of rules
}

// reference is one subject's exact reference.
type reference struct {
	rules    []limit.Rule // the snapshot's, to notice a change
	ref      []limit.Rule // the reference's (exact) rules
	states   []limit.State
	partial  bool // not every check was seen: under-admissions not counted
	lastSeen int64
}

// New returns an Auditor; it audits nothing until Run runs.
func New(o Options) *Auditor {
	if o.Clock == nil {
		o.Clock = clock.System
	}
	if o.Horizon <= 0 {
		o.Horizon = DefaultHorizon
	}
	if o.MaxSubjects <= 0 {
		o.MaxSubjects = DefaultMaxSubjects
	}
	if o.MaxPending <= 0 {
		o.MaxPending = DefaultMaxPending
	}
	a := &Auditor{o: o, refs: map[string]*reference{}, checks: map[string]int64{}, counts: map[[2]string]*Count{}}
	switch {
	case o.Rate >= 1:
		a.threshold = ^uint64(0)
	case o.Rate > 0:
		a.threshold = uint64(o.Rate * (1 << 63) * 2)
	}
	return a
}

// Sampled reports whether the subject of ns is audited.
func (a *Auditor) Sampled(ns, subject string) bool {
	return a.threshold != 0 && hash(ns, subject) <= a.threshold
}

// hash is FNV-1a of ns, a zero byte and subject: the same on every
// instance, so that all of them audit the same subjects.
func hash(ns, subject string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(ns); i++ {
		h = (h ^ uint64(ns[i])) * 1099511628211
	}
	h *= 1099511628211 // the separator
	for i := 0; i < len(subject); i++ {
		h = (h ^ uint64(subject[i])) * 1099511628211
	}
	return h
}

// ObserveCheck implements service.Observer: a check of a sampled subject
// that the store or a failure policy decided is queued for its replay.
// Peeks, errors, shed checks, requests with descriptors, shadowed ones
// and leased limits are not audited.
func (a *Auditor) ObserveCheck(res service.Result, err error, _ time.Duration) {
	if a.threshold == 0 || err != nil || res.Cost <= 0 || res.Set.Namespace == nil || len(res.Set.Rules) == 0 ||
		res.Descriptors != nil || res.Shadowed || res.DecidedBy == service.DecidedByShed || res.Set.Rules[0].Lease {
		return
	}
	if hash(res.Namespace, res.Subject) > a.threshold {
		return
	}
	e := event{ns: res.Namespace, subject: res.Subject, rules: res.Set.Rules, cost: res.Cost, at: res.Verdict.At, allowed: res.Verdict.Allowed}
	if e.at == 0 {
		e.at = a.o.Clock.Now().UnixNano()
	}
	if i := res.Verdict.Binding(); !e.allowed && i >= 0 && i < len(e.rules) {
		e.binding = i
	}
	a.mu.Lock()
	if len(a.pending) >= a.o.MaxPending {
		a.mu.Unlock()
		a.drop(e)
		return
	}
	a.pending = append(a.pending, e)
	a.mu.Unlock()
}

// ObserveSnapshot implements service.Observer.
func (a *Auditor) ObserveSnapshot(*policy.Snapshot) {}

// drop counts a check not replayed; its subject's under-admissions are no
// longer counted.
func (a *Auditor) drop(e event) {
	a.rmu.Lock()
	defer a.rmu.Unlock()
	a.dropped++
	if r := a.refs[e.ns+"\x00"+e.subject]; r != nil {
		r.partial = true
	}
}

// Run replays the checks decided at least Horizon ago, every Horizon/2,
// until ctx ends; then it replays what is left.
func (a *Auditor) Run(ctx context.Context, tick <-chan time.Time) {
	for {
		select {
		case <-ctx.Done():
			a.Replay(a.o.Clock.Now().UnixNano())
			return
		case <-tick:
			a.Replay(a.o.Clock.Now().Add(-a.o.Horizon).UnixNano())
		}
	}
}

// Replay replays, in the order of their decision instants, the queued
// checks decided up to cut (Unix ns). Checks decided before an earlier cut,
// observed too late to be replayed in order, are dropped.
func (a *Auditor) Replay(cut int64) {
	a.mu.Lock()
	var ready []event
	rest := a.pending[:0]
	for _, e := range a.pending {
		if e.at <= cut {
			ready = append(ready, e)
		} else {
			rest = append(rest, e)
		}
	}
	clear(a.pending[len(rest):])
	a.pending = rest
	a.mu.Unlock()
	// In order of their instants; at one instant (one Redis script call),
	// the admitted ones first: the store's order among them is not known,
	// and this one is the order most favourable to the store.
	slices.SortStableFunc(ready, func(x, y event) int {
		if c := cmp.Compare(x.at, y.at); c != 0 {
			return c
		}
		switch {
		case x.allowed && !y.allowed:
			return -1
		case !x.allowed && y.allowed:
			return 1
		}
		return 0
	})
	a.rmu.Lock()
	defer a.rmu.Unlock()
	for _, e := range ready {
		if e.at < a.lastCut {
			a.dropped++ // observed after its turn
			if r := a.refs[e.ns+"\x00"+e.subject]; r != nil {
				r.partial = true
			}
			continue
		}
		a.replay(e)
	}
	a.lastCut = max(a.lastCut, cut)
	a.forgetExpired(cut)
}

// replay steps e's subject's reference; the caller holds rmu.
func (a *Auditor) replay(e event) {
	key := e.ns + "\x00" + e.subject
	r := a.refs[key]
	if r != nil && !sameRules(r.rules, e.rules) {
		delete(a.refs, key) // the limits changed: start over, as the store's state did not
		r = nil
	}
	if r == nil {
		ref, ok := exact(e.rules)
		if !ok {
			return
		}
		if len(a.refs) >= a.o.MaxSubjects {
			for k := range a.refs { // an arbitrary one
				delete(a.refs, k)
				break
			}
			a.evicted = true
		}
		// Once a reference was dropped for room, a new one may be a
		// subject seen before: its under-admissions cannot be told.
		r = &reference{rules: e.rules, ref: ref, states: make([]limit.State, len(ref)), partial: a.evicted}
		a.refs[key] = r
		for _, rule := range e.rules {
			a.count(e.ns, rule) // its series exist from the first check, at 0
		}
	}
	r.lastSeen = e.at
	a.checks[e.ns]++
	if e.allowed {
		v, _ := limit.Apply(r.ref, r.states, e.at, e.cost)
		if !v.Allowed {
			a.count(e.ns, e.rules[max(0, v.Binding())]).Over++
		}
		return
	}
	if !a.o.Exclusive || r.partial {
		return
	}
	// Denied by the store: would the reference admit it? Asked on a copy,
	// which the reference does not keep: it mirrors the store's admissions.
	probe := make([]limit.State, len(r.states))
	for i, s := range r.states {
		s.Log = slices.Clone(s.Log)
		probe[i] = s
	}
	if v, _ := limit.Apply(r.ref, probe, e.at, e.cost); v.Allowed {
		a.count(e.ns, e.rules[e.binding]).Under++
	}
}

func (a *Auditor) count(ns string, r limit.Rule) *Count {
	k := [2]string{ns, r.Name}
	c := a.counts[k]
	if c == nil {
		c = &Count{Namespace: ns, Limit: r.Name, Algorithm: r.Algorithm}
		a.counts[k] = c
	}
	return c
}

// forgetExpired drops the references whose states are fresh again at cut:
// a fresh reference is the same. The caller holds rmu.
func (a *Auditor) forgetExpired(cut int64) {
	for k, r := range a.refs {
		if r.lastSeen < cut && limit.ExpiresAt(r.ref, r.states) <= cut {
			delete(a.refs, k)
		}
	}
}

// exact returns the reference rules of rules: the same, with a
// sliding_window_counter replaced by the log of its limit; ok is false
// when that log would exceed MaxLog.
func exact(rules []limit.Rule) ([]limit.Rule, bool) {
	ref := slices.Clone(rules)
	for i := range ref {
		if ref[i].Algorithm != limit.SlidingWindowCounter {
			continue
		}
		if ref[i].Limit > MaxLog {
			return nil, false
		}
		r := ref[i]
		r.Algorithm = limit.SlidingWindowLog
		n, err := r.Normalize()
		if err != nil {
			return nil, false
		}
		ref[i] = n
	}
	return ref, true
}

func sameRules(a, b []limit.Rule) bool {
	if len(a) != len(b) {
		return false
	}
	if len(a) > 0 && &a[0] == &b[0] {
		return true
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Stats returns the counts so far.
func (a *Auditor) Stats() Stats {
	a.rmu.Lock()
	defer a.rmu.Unlock()
	s := Stats{Checks: make(map[string]int64, len(a.checks)), Dropped: a.dropped, Subjects: len(a.refs)}
	for k, v := range a.checks {
		s.Checks[k] = v
	}
	for _, c := range a.counts {
		s.Counts = append(s.Counts, *c)
	}
	slices.SortFunc(s.Counts, func(x, y Count) int {
		return cmp.Or(cmp.Compare(x.Namespace, y.Namespace), cmp.Compare(x.Limit, y.Limit))
	})
	return s
}
