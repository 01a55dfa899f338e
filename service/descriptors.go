package service

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Descriptor is one descriptor of a Request (see policy.Descriptor) and
// what the request spends on it.
type Descriptor struct {
	policy.Descriptor
	// Cost is charged to the descriptor's limits, from 0 (a peek) to
	// Options.MaxCost.
	Cost int64
}

// DescriptorResult is how one descriptor of a request stood.
type DescriptorResult struct {
	// Match is what the descriptor resolved to: its limit set and store
	// key, or why nothing was checked (no limit, unlimited, replaced).
	Match policy.Match
	// Cost is the descriptor's cost.
	Cost int64
	// Verdict is the descriptor's own verdict; for a denied request, a
	// descriptor whose limits admitted it reports a peek. It is the zero
	// Verdict (N == 0) when nothing was checked, and when the request was
	// answered before this descriptor was looked up: by the deny cache, or
	// by a blocked descriptor.
	Verdict limit.Verdict
}

// MaxDescriptors bounds the descriptors of one request (its subject, if
// any, counted with them).
const MaxDescriptors = store.MaxParts

// validateDescriptors reports what Check would refuse req's descriptors for.
func (s *Service) validateDescriptors(req Request) error {
	n := len(req.Descriptors)
	if req.Subject != "" {
		n++
	}
	if n > MaxDescriptors {
		return fmt.Errorf("%w: %d descriptors and subjects, at most %d", policy.ErrInvalidDescriptor, n, MaxDescriptors)
	}
	for i, d := range req.Descriptors {
		if err := policy.ValidateDescriptor(d.Descriptor); err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
		if d.Cost < 0 || d.Cost > s.maxCost {
			return fmt.Errorf("%w: descriptor %d: cost %d is outside [0, %d]", ErrInvalidCost, i, d.Cost, s.maxCost)
		}
	}
	return nil
}

// checkDescriptors decides a request with descriptors: its subject's limit
// set (if it names one) and every descriptor's, all-or-nothing, in one
// store call (store.ApplyAll). res.Verdict is the binding one: when
// denied, the denying part's with the longest wait; when allowed, the part
// with the fewest units left; res.Set.Rules are that part's rules.
func (s *Service) checkDescriptors(ctx context.Context, snap *policy.Snapshot, req Request, res *Result, start time.Time) error {
	ns, ok := snap.Namespace(req.Namespace)
	if !ok {
		return fmt.Errorf("%w %q", policy.ErrUnknownNamespace, req.Namespace)
	}
	res.Set.Namespace = ns
	pds := make([]policy.Descriptor, len(req.Descriptors))
	for i := range req.Descriptors {
		pds[i] = req.Descriptors[i].Descriptor
	}
	matches := make([]policy.Match, len(pds))
	if err := snap.ResolveDescriptors(req.Namespace, pds, matches); err != nil {
		return err
	}
	res.Descriptors = make([]DescriptorResult, len(pds))
	var reqs []store.Request
	var owners [][]int // the descriptors of each part; nil for the subject's
	if req.Subject != "" {
		set, err := snap.Resolve(req.Namespace, req.Subject)
		if err != nil {
			return err
		}
		res.Set = set
		reqs = append(reqs, store.Request{Key: policy.Key(req.Namespace, req.Subject), Rules: set.Rules, Cost: req.Cost, Lease: leased(set.Rules)})
		owners = append(owners, nil)
	}
	blocked := -1
	for i, m := range matches {
		dr := &res.Descriptors[i]
		dr.Match, dr.Cost = m, req.Descriptors[i].Cost
		switch {
		case m.Blocked:
			if blocked < 0 {
				blocked = i
			}
		case m.Limited:
			// The same descriptor twice is one part, charged both costs.
			if j := slices.IndexFunc(reqs, func(r store.Request) bool { return r.Key == m.Key }); j >= 0 {
				reqs[j].Cost += dr.Cost
				owners[j] = append(owners[j], i)
				continue
			}
			reqs = append(reqs, store.Request{Key: m.Key, Rules: m.Rules, Cost: dr.Cost, Lease: leased(m.Rules)})
			owners = append(owners, []int{i})
		}
	}
	switch {
	case blocked >= 0:
		// Denied by the policy itself: nothing is asked of the store.
		m := &matches[blocked]
		v := blockedVerdict(m.Unit, s.clock.Now())
		res.Descriptors[blocked].Verdict = v
		name := m.Name
		if name == "" {
			name = "blocked"
		}
		// A limit of 0 per unit: it describes the denial, it is never stepped.
		res.Verdict, res.DecidedBy = v, DecidedByPolicy
		res.Set.Rules = []limit.Rule{{Name: name, Algorithm: limit.FixedWindow, Period: m.Unit}}
		return nil
	case len(reqs) == 0:
		res.Verdict, res.Set.Rules = limit.Verdict{Allowed: true}, nil // nothing limits the request
		return nil
	}
	out := make([]limit.Verdict, len(reqs))
	if len(reqs) == 1 {
		if s.guard != nil {
			if err := s.guarded(ctx, snap, res, reqs[0], start); err != nil {
				return err
			}
			out[0] = res.Verdict
		} else {
			v, err := s.store.Apply(ctx, reqs[0])
			if err != nil {
				return err
			}
			out[0] = v
		}
	} else if s.guard != nil {
		if err := s.guardedAll(ctx, snap, res, reqs, out, start); err != nil {
			return err
		}
	} else if _, err := s.store.ApplyAll(ctx, reqs, out); err != nil {
		return err
	}
	for j, own := range owners {
		for _, i := range own {
			res.Descriptors[i].Verdict = out[j]
		}
	}
	b := binding(out)
	res.Verdict, res.Set.Rules = out[b], reqs[b].Rules
	res.Verdict.Allowed = allAdmit(out)
	for j := range out {
		res.Verdict.Shadow = res.Verdict.Shadow || out[j].Shadow
		if res.Verdict.Allowed {
			res.Verdict.Delay = max(res.Verdict.Delay, out[j].Delay)
		}
	}
	if res.Verdict.Allowed {
		res.Verdict.RetryAfter = 0
	}
	return nil
}

// allAdmit reports whether every evaluated part admitted.
func allAdmit(out []limit.Verdict) bool {
	for i := range out {
		if out[i].N > 0 && !out[i].Allowed {
			return false
		}
	}
	return true
}

// binding is the part that best explains a request of several parts: when
// denied, the denying part with the longest wait; when allowed, the part
// whose binding rule has the fewest units left.
func binding(out []limit.Verdict) int {
	allowed := allAdmit(out)
	best := -1
	for i := range out {
		v := &out[i]
		if v.N == 0 {
			continue
		}
		if best < 0 {
			best = i
			continue
		}
		b := &out[best]
		if allowed {
			if v.D[v.Binding()].Remaining < b.D[b.Binding()].Remaining {
				best = i
			}
			continue
		}
		switch {
		case v.Allowed:
		case b.Allowed:
			best = i
		case b.RetryAfter == limit.RetryNever:
		case v.RetryAfter == limit.RetryNever || v.RetryAfter > b.RetryAfter:
			best = i
		}
	}
	return max(best, 0)
}

// blockedVerdict is the denial of a blocked descriptor (Envoy's
// requests_per_unit: 0): no unit passes; the window of unit ends at the
// next multiple of unit since the Unix epoch.
func blockedVerdict(unit time.Duration, now time.Time) limit.Verdict {
	rest := time.Duration(int64(unit) - now.UnixNano()%int64(unit))
	v := limit.Verdict{N: 1, RetryAfter: rest}
	v.D[0] = limit.Decision{RetryAfter: rest, ResetAfter: rest}
	return v
}

// guardedAll is guarded for a request of several parts: one ApplyAll under
// the guard. The deny cache answers when it knows one part denied (the
// other parts are then not looked up); a failure domain whose breaker is
// open sends the whole request to the failure policy; every answer of the
// store seeds each part's local share.
func (s *Service) guardedAll(ctx context.Context, snap *policy.Snapshot, res *Result, reqs []store.Request, out []limit.Verdict, start time.Time) error {
	g := s.guard
	now := int64(start.Sub(s.epoch))
	if g.deny != nil {
		for j := range reqs {
			if v, ok := g.deny.lookup(snap, reqs[j], now); ok {
				out[j], res.DecidedBy = v, DecidedByDenyCache
				return nil
			}
		}
	}
	if bs := g.breakers; bs != nil {
		for j := range reqs {
			if sh := g.shard(reqs[j].Key); !bs.closed(sh) {
				return s.fallbackAll(ctx, res, reqs, out, fmt.Errorf("%w: circuit breaker open", store.ErrUnavailable))
			}
		}
	}
	t, outcome, err := s.admit(g.shard(reqs[0].Key))
	if outcome == failedReturn {
		cctx, cancel := context.WithTimeout(ctx, g.maxWait)
		_, err = s.store.ApplyAll(cctx, reqs, out)
		cancel()
		if outcome, err = s.settle(ctx, t, err); err == nil {
			for j := range reqs {
				if !out[j].Allowed && g.deny != nil {
					g.deny.insert(snap, reqs[j], &out[j], now)
				}
				if res.Set.Namespace.OnStoreError == policy.FailLocal {
					g.seed(reqs[j], &out[j])
				}
			}
			return nil
		}
	}
	switch outcome {
	case failedShed:
		res.DecidedBy = DecidedByShed
	case failedPolicy:
		return s.fallbackAll(ctx, res, reqs, out, err)
	}
	return err
}

// fallbackAll answers a request of several parts by its namespace's
// failure policy after the store failed with cause.
func (s *Service) fallbackAll(ctx context.Context, res *Result, reqs []store.Request, out []limit.Verdict, cause error) error {
	g := s.guard
	res.StoreError = cause
	if span := s.fallbackSpan(ctx, res, cause); span != nil {
		defer span.End()
	}
	switch res.Set.Namespace.OnStoreError {
	case policy.FailOpen:
		for j := range reqs {
			out[j] = policyVerdict(reqs[j].Rules, true, 0)
		}
		res.DecidedBy = DecidedByOpen
		return nil
	case policy.FailClosed:
		for j := range reqs {
			out[j] = policyVerdict(reqs[j].Rules, false, g.closedRetry)
		}
		res.DecidedBy = DecidedByClosed
		return nil
	}
	n := g.instanceCount()
	local := make([]store.Request, len(reqs))
	for j, r := range reqs {
		local[j] = store.Request{Key: r.Key, Rules: g.share(r.Rules, n), Cost: r.Cost}
	}
	if _, err := g.fallback.ApplyAll(context.Background(), local, out); err != nil {
		return fmt.Errorf("local fallback after %w: %w", cause, err)
	}
	res.DecidedBy = DecidedByLocal
	return nil
}
