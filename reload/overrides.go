package reload

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// Status is a runtime override and how it stands in the policy in force.
type Status struct {
	policy.Override
	// Active reports whether the override applies now.
	Active bool
	// Problem says why an inactive override does not apply ("expired", or
	// the validation error against the current file).
	Problem string
	// Rules is the subject's limit set while the override is active.
	// Callers must not modify it.
	Rules []limit.Rule
}

// Put validates o against the file in force (policy.Snapshot.CheckOverride),
// stores it (replacing the subject's previous runtime override) and swaps in
// a policy that applies it. Errors wrap policy.ErrInvalid (and
// policy.ErrUnknownNamespace, policy.ErrUnknownLimit or policy.ErrExpired)
// for a bad override, overrides.ErrTooMany, or the store's error. Put does
// not retain o.Limits.
func (c *Controller) Put(ctx context.Context, o policy.Override) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	s := c.state.Load()
	if _, err := s.base.CheckOverride(o, now); err != nil {
		return Status{}, err
	}
	o.UpdatedAt = now
	o.Limits = maps.Clone(o.Limits)
	if err := c.store.Put(ctx, o, c.max); err != nil {
		return Status{}, err
	}
	m := maps.Clone(s.overrides[o.Namespace])
	if m == nil {
		m = map[string]policy.Override{}
	}
	m[o.Subject] = o
	c.publish(s.base, with(s.overrides, o.Namespace, m), now)
	attrs := []any{"namespace", o.Namespace, "subject", o.Subject, "limits", describe(o.Limits)}
	if !o.ExpiresAt.IsZero() {
		attrs = append(attrs, "expires_at", o.ExpiresAt.UTC().Format(time.RFC3339))
	}
	c.log.Info("runtime override set", attrs...)
	return c.state.Load().status(o, now), nil
}

// Delete removes the runtime override of subject in ns, giving the subject
// back what the file says. It returns an error wrapping overrides.ErrNotFound
// when there is none, policy.ErrUnknownNamespace for a namespace the file
// does not define, or the store's error.
func (c *Controller) Delete(ctx context.Context, ns, subject string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.state.Load()
	if _, known := s.base.Namespace(ns); !known {
		return fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	ok, err := c.store.Delete(ctx, ns, subject)
	if err != nil {
		return err
	}
	if _, had := s.overrides[ns][subject]; had {
		m := maps.Clone(s.overrides[ns])
		delete(m, subject)
		c.publish(s.base, with(s.overrides, ns, m), c.clock.Now())
	}
	if !ok {
		return fmt.Errorf("%w: %s/%s", overrides.ErrNotFound, ns, subject)
	}
	c.log.Info("runtime override deleted", "namespace", ns, "subject", subject)
	return nil
}

// List returns the runtime overrides of namespace ns known to this
// instance, sorted by subject, active or not.
func (c *Controller) List(ns string) ([]Status, error) {
	s := c.state.Load()
	if _, ok := s.base.Namespace(ns); !ok {
		return nil, fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	now := c.clock.Now()
	out := make([]Status, 0, len(s.overrides[ns]))
	for _, o := range s.overrides[ns] {
		out = append(out, s.status(o, now))
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Subject, b.Subject) })
	return out, nil
}

// Get returns the runtime override of subject in ns, or an error wrapping
// overrides.ErrNotFound or policy.ErrUnknownNamespace.
func (c *Controller) Get(ns, subject string) (Status, error) {
	s := c.state.Load()
	if _, ok := s.base.Namespace(ns); !ok {
		return Status{}, fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	o, ok := s.overrides[ns][subject]
	if !ok {
		return Status{}, fmt.Errorf("%w: %s/%s", overrides.ErrNotFound, ns, subject)
	}
	return s.status(o, c.clock.Now()), nil
}

// status is how o stands in s.
func (s *state) status(o policy.Override, now time.Time) Status {
	st := Status{Override: o}
	if e, bad := s.invalid[key(o.Namespace, o.Subject)]; bad {
		st.Problem = e.Err.Error()
		return st
	}
	if o.Expired(now) {
		st.Problem = "expired"
		return st
	}
	set, err := s.current.ResolveTarget(o.Namespace, o.Subject)
	if err != nil || !set.Overridden {
		st.Problem = "not applied yet"
		return st
	}
	st.Active, st.Rules = true, set.Rules
	return st
}

// Resync loads the runtime overrides of every namespace from the store now,
// within the load timeout, and swaps in the result: at Start, and when the
// store becomes reachable after a start without it (serve calls it before
// its checks go to Redis, so overrides written elsewhere meanwhile are in
// force from the first of them). A namespace that cannot be loaded keeps
// what this instance has.
func (c *Controller) Resync(ctx context.Context) {
	lctx, cancel := context.WithTimeout(ctx, c.loadTO)
	defer cancel()
	c.dirty.add(c.namespaces()...)
	c.syncDirty(lctx)
}

// markDirty asks for namespace ns to be loaded from the store again. It is
// the store's change callback and does not block.
func (c *Controller) markDirty(ns string) {
	if _, ok := c.state.Load().base.Namespace(ns); !ok {
		return // not ours (yet): loaded when a file defines it
	}
	c.dirty.add(ns)
	signal(c.wake)
}

// syncDirty loads the dirty namespaces from the store and swaps in the
// result.
func (c *Controller) syncDirty(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	nss := c.dirty.take()
	if len(nss) == 0 {
		return
	}
	s := c.state.Load()
	var ovs map[string]map[string]policy.Override
	for _, ns := range nss {
		if _, ok := s.base.Namespace(ns); !ok {
			continue // dropped by a reload since it was marked
		}
		list, err := c.store.Load(ctx, ns)
		if err != nil {
			c.rec.SyncFailed()
			if !errors.Is(err, overrides.ErrCorrupt) {
				c.log.Warn("runtime overrides: cannot load; keeping what this instance has, will retry", "namespace", ns, "err", err)
				continue
			}
			c.log.Error("runtime overrides: stored values do not decode; skipping them", "namespace", ns, "err", err)
		}
		m := make(map[string]policy.Override, len(list))
		for _, o := range list {
			m[o.Subject] = o
		}
		if ovs == nil {
			ovs = maps.Clone(s.overrides)
		}
		ovs[ns] = m
	}
	if ovs != nil {
		c.publish(s.base, ovs, c.clock.Now())
	}
}

// expire removes the overrides that have expired from the store and
// rebuilds without them. A store failure is logged: the overrides stop
// applying all the same, and they stay known so that the timer tries
// DeleteExpired again, after expireRetry.
func (c *Controller) expire(ctx context.Context) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	s := c.state.Load()
	ovs := maps.Clone(s.overrides)
	c.retryAt = time.Time{}
	for _, ns := range slices.Sorted(maps.Keys(s.overrides)) {
		var expired []string
		for subj, o := range s.overrides[ns] {
			if o.Expired(now) {
				expired = append(expired, subj)
			}
		}
		if len(expired) == 0 {
			continue
		}
		slices.Sort(expired)
		c.log.Info("runtime overrides expired", "namespace", ns, "subjects", expired)
		if err := c.store.DeleteExpired(ctx, ns, expired, now); err != nil {
			c.log.Warn("runtime overrides: cannot remove expired overrides from the store; retrying", "namespace", ns, "err", err)
			c.retryAt = now.Add(expireRetry)
			continue
		}
		m := maps.Clone(s.overrides[ns])
		for _, subj := range expired {
			delete(m, subj)
		}
		ovs[ns] = m
	}
	c.publish(s.base, ovs, now)
}

// expireRetry is how long expire waits before trying a failed removal again.
const expireRetry = time.Second

// with returns ovs with namespace ns's overrides replaced by m; ovs is not
// modified.
func with(ovs map[string]map[string]policy.Override, ns string, m map[string]policy.Override) map[string]map[string]policy.Override {
	out := maps.Clone(ovs)
	if out == nil {
		out = map[string]map[string]policy.Override{}
	}
	out[ns] = m
	return out
}

// dirtySet is the namespaces to load from the store again. It has its own
// lock so that the store's notices never wait behind a writer.
type dirtySet struct {
	mu  sync.Mutex
	set map[string]bool
}

func (d *dirtySet) add(nss ...string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.set == nil {
		d.set = map[string]bool{}
	}
	for _, ns := range nss {
		d.set[ns] = true
	}
}

// take empties the set and returns what it held, sorted.
func (d *dirtySet) take() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	nss := slices.Sorted(maps.Keys(d.set))
	clear(d.set)
	return nss
}

// describe renders patches for logs: "per-minute{limit=1000 burst=200}".
func describe(patches map[string]policy.Patch) string {
	names := slices.Sorted(maps.Keys(patches))
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		p := patches[n]
		var f []string
		if p.Algorithm != 0 {
			f = append(f, "algorithm="+p.Algorithm.String())
		}
		if p.Limit != 0 {
			f = append(f, fmt.Sprintf("limit=%d", p.Limit))
		}
		if p.Period != 0 {
			f = append(f, "period="+p.Period.String())
		}
		if p.Burst != 0 {
			f = append(f, fmt.Sprintf("burst=%d", p.Burst))
		}
		b.WriteString(n + "{" + strings.Join(f, " ") + "}")
	}
	return b.String()
}
