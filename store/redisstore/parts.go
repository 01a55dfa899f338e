package redisstore

import (
	"context"
	"crypto/sha1"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"sync"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

//go:embed refund.lua
var refundSource string

var refundSHA = func() string {
	h := sha1.Sum([]byte(refundSource))
	return hex.EncodeToString(h[:])
}()

// ApplyAll implements store.Store.
//
// On a standalone or Sentinel deployment every key is on one primary, and
// the parts go to Redis as one check of one script call: atomic and
// all-or-nothing, like a check of one subject.
//
// On a Cluster one script may touch one hash slot only, and the parts of a
// request (a user, an IP, an endpoint-wide cap) usually hash to different
// slots. Parts of one slot still go together, atomically. Parts in several
// slots are decided by reserve-then-refund: each slot's parts are checked
// and, if admitted, consumed, in parallel; if every slot admitted, the
// request is allowed; if one denied, what the others consumed is refunded
// (refund.lua, limit.Rule.Refund) and the request is denied. The bound,
// under races: nothing is ever admitted that an atomic check would deny
// (a request is admitted only when every part admitted it, and a refund
// never gives back more than was consumed), but between a reservation and
// its refund (one round trip) the reserved units are not available to
// other requests of those keys, which may be denied for them: transient
// over-denial, never over-admission. A refund that fails (the node died
// meanwhile) leaves its units consumed until they expire; the error is
// returned.
func (s *Store) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	if err := store.ValidateAll(reqs, out); err != nil {
		return false, err
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("redisstore: %w: %w", store.ErrUnavailable, err)
	}
	if len(reqs) == 1 {
		v, err := s.Apply(ctx, reqs[0])
		out[0] = v
		return v.Allowed, err
	}
	keys := make([]string, len(reqs))
	for i := range reqs {
		keys[i] = reqs[i].Key
	}
	groups := s.Partition(keys)
	if len(groups) == 1 {
		c := s.newCall(ctx, reqs, out)
		if err := s.await(ctx, c); err != nil {
			return false, err
		}
		return allAllowed(out), nil
	}
	return s.reserve(ctx, reqs, out, groups)
}

// Partition implements store.Partitioner: the store keys grouped by hash
// slot on a Cluster, in order of first appearance; one group elsewhere.
func (s *Store) Partition(keys []string) [][]int {
	if !s.cluster {
		all := make([]int, len(keys))
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	var groups [][]int
	slots := make(map[uint16]int, len(keys))
	for i := range keys {
		sl := s.slot(keys[i])
		g, ok := slots[sl]
		if !ok {
			g = len(groups)
			slots[sl] = g
			groups = append(groups, nil)
		}
		groups[g] = append(groups[g], i)
	}
	return groups
}

func allAllowed(vs []limit.Verdict) bool {
	for i := range vs {
		if !vs[i].Allowed {
			return false
		}
	}
	return true
}

// reserve decides parts in several slots: each slot's call consumes if its
// parts admit; if any denied, the consumed ones are refunded.
func (s *Store) reserve(ctx context.Context, reqs []store.Request, out []limit.Verdict, groups [][]int) (bool, error) {
	calls := make([]*call, len(groups))
	for g, idx := range groups {
		parts := make([]store.Request, len(idx))
		for j, i := range idx {
			parts[j] = reqs[i]
		}
		c := s.newCall(ctx, parts, make([]limit.Verdict, len(idx)))
		c.marks = make([]int64, len(c.keys))
		calls[g] = c
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for g, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[g] = s.await(ctx, c)
		}()
	}
	wg.Wait()
	allowed, failed := true, false
	for g, c := range calls {
		if errs[g] != nil {
			failed = true
			continue
		}
		allowed = allowed && allAllowed(c.out)
		for j, i := range groups[g] {
			out[i] = c.out[j]
		}
	}
	if allowed && !failed {
		return true, nil
	}
	// Denied (or a slot failed): give back what the slots that admitted
	// consumed. A call that failed may or may not have consumed: its
	// caller gave up on the answer, and so does the refund.
	var refunds []*call
	for g, c := range calls {
		if errs[g] == nil && allAllowed(c.out) && consumes(c.parts) {
			refunds = append(refunds, c)
		}
	}
	rerr := s.refund(refunds)
	if failed {
		return false, errors.Join(append(errs, rerr)...)
	}
	for _, c := range refunds {
		for j := range c.parts {
			peek(&c.out[j], c.parts[j].Cost)
		}
	}
	for g, c := range calls {
		for j, i := range groups[g] {
			out[i] = c.out[j]
		}
	}
	return false, rerr
}

func consumes(parts []store.Request) bool {
	for i := range parts {
		if parts[i].Cost > 0 {
			return true
		}
	}
	return false
}

// peek turns the verdict of a consumption that was refunded into the peek
// an atomic check reports for an admitting part of a denied request.
func peek(v *limit.Verdict, cost int64) {
	for i := range v.N {
		if v.D[i].Allowed {
			v.D[i].Remaining += cost
		}
	}
}

// refund gives back what each call consumed, in parallel, and waits.
func (s *Store) refund(calls []*call) error {
	if len(calls) == 0 {
		return nil
	}
	errs := make([]error, len(calls))
	var wg sync.WaitGroup
	for i, c := range calls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
			defer cancel()
			res := s.client.Do(ctx, s.refundCommand(refundSHA, c))
			if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
				res = s.client.Do(ctx, s.refundCommand("", c))
			}
			if err := res.Error(); err != nil {
				errs[i] = fmt.Errorf("redisstore: refund of %q: %w: %w", c.parts[0].Key, store.ErrUnavailable, err)
			}
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// refundCommand builds EVALSHA (or EVAL when sha is "") of refund.lua for
// what call c consumed: every rule that admitted a part with a cost (a
// shadow rule that would have denied consumed nothing).
func (s *Store) refundCommand(sha string, c *call) rueidis.Completed {
	index := make(map[*limit.Rule]int, 4)
	var table []*limit.Rule
	var keys, refs []string
	k := 0
	for i, p := range c.parts {
		for j := range p.Rules {
			r := &p.Rules[j]
			if p.Cost > 0 && c.out[i].D[j].Allowed {
				if index[r] == 0 {
					table = append(table, r)
					index[r] = len(table)
				}
				keys = append(keys, c.keys[k])
				refs = append(refs, strconv.Itoa(index[r]), strconv.FormatInt(p.Cost, 10), strconv.FormatInt(c.marks[k], 10))
			}
			k++
		}
	}
	args := make([]string, 0, 3+argsPerRule*len(table)+len(refs))
	args = append(args, strconv.FormatInt(c.at[0], 10), strconv.FormatInt(c.at[1], 10), strconv.Itoa(len(table)))
	for _, r := range table {
		a := s.args(r)
		args = append(args, a[:]...)
	}
	args = append(args, refs...)
	b := s.client.B()
	if sha == "" {
		return b.Eval().Script(refundSource).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
	}
	return b.Evalsha().Sha1(sha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build()
}

var _ store.Partitioner = (*Store)(nil)

// Take implements store.Leaser: one script call (apply.lua, a check of a
// negative cost), batched with the checks in flight like any check.
func (s *Store) Take(ctx context.Context, key string, rule limit.Rule, n int64, rep store.Report) (store.Grant, error) {
	if s.closed.Load() {
		return store.Grant{}, store.ErrClosed
	}
	if rule.Algorithm != limit.TokenBucket || n < 1 || key == "" {
		return store.Grant{}, fmt.Errorf("%w: take %d of a %v", store.ErrInvalidRequest, n, rule.Algorithm)
	}
	if err := rep.Validate(); err != nil {
		return store.Grant{}, err
	}
	rules := []limit.Rule{rule}
	c := s.newCall(ctx, []store.Request{{Key: key, Rules: rules, Cost: -n}}, make([]limit.Verdict, 1))
	c.marks = make([]int64, 1)
	c.demand, c.rep = s.Key(key, rule.Name)+demandSuffix, rep
	if err := s.await(ctx, c); err != nil {
		return store.Grant{}, err
	}
	d := c.out[0].D[0]
	g := store.Grant{Taken: int64(d.Delay), Demand: float64(d.ResetAfter) / 1000, Mark: c.marks[0], At: c.at}
	d.Delay, d.ResetAfter = 0, 0
	g.Decision = d
	return g, nil
}

// demandSuffix names the hash of a leased limit's standing reports beside
// its bucket (in its hash slot; a rule name has no ':').
const demandSuffix = ":demand"

// Return implements store.Leaser: refund.lua for the unused units.
func (s *Store) Return(ctx context.Context, key string, rule limit.Rule, g store.Grant, unused int64) error {
	if s.closed.Load() {
		return store.ErrClosed
	}
	if unused < 1 || unused > g.Taken {
		return fmt.Errorf("%w: return %d of %d", store.ErrInvalidRequest, unused, g.Taken)
	}
	rules := []limit.Rule{rule}
	c := &call{parts: []store.Request{{Key: key, Rules: rules, Cost: unused}}, keys: []string{s.Key(key, rule.Name)},
		out: []limit.Verdict{{N: 1}}, marks: []int64{g.Mark}, at: g.At}
	c.out[0].D[0].Allowed = true
	return s.refund([]*call{c})
}

var _ store.Leaser = (*Store)(nil)
