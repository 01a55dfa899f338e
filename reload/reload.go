// Package reload changes the policy in force without downtime. A Controller
// owns the policy of a running service: it reloads the configuration file
// when the file changes (config.Watcher) or when asked (SIGHUP), and layers
// runtime per-subject overrides (the admin API, kept in an overrides.Store)
// on top of it.
//
// # Order of a change
//
// Every change builds a complete new snapshot and then swaps it in, in the
// order caddy reloads: read and validate the file, layer the runtime
// overrides (policy.Snapshot.WithOverrides), swap the service's pointer
// (service.Service.Swap). Checks in flight finish on the snapshot they
// loaded; checks that start after the swap see the new one. A file that
// does not read or validate changes nothing: the running policy stays, one
// error naming every problem is logged, and the failure is counted.
//
// # What a change does to a subject's state
//
// Limiter state is kept per subject and limit name, and the rules travel
// with every check, so a change applies on the very next check of each
// subject, with no state migration and no restart:
//
//   - token_bucket / leaky_bucket: a changed limit, period or burst takes
//     effect at once. What the subject already consumed (its debt, the
//     bucket's theoretical arrival time ahead of now) carries over, rescaled
//     to the new rate at the subject's next check (limit.Rule.Step): a
//     subject that used 2 of 2 and is raised to 4 has 2 left at once; one
//     that used 5 of 10 per hour and is lowered to 5 per hour is empty and
//     refills one unit per 12 minutes from that check on (time between the
//     change and that check refilled at the old rate). A raised burst is
//     capacity at once: the debt, not a token count, is what is kept.
//   - fixed_window / sliding_window_counter: the counts of the current (and
//     previous) window carry over and are compared with the new limit. A
//     changed period re-aligns the windows to multiples of the new period:
//     the count carries over when the new current window holds the old
//     one's start, and starts from zero otherwise.
//   - sliding_window_log: the log of admitted requests carries over and is
//     compared with the new limit over the new period.
//   - a changed algorithm starts fresh state for that limit (the state
//     records the algorithm that wrote it); a renamed limit is a new limit
//     with fresh state, and the old name's state expires by TTL.
//
// # Runtime overrides
//
// Put validates an override exactly as the file's overrides are validated
// (policy.Snapshot.CheckOverride), stores it, and swaps in a snapshot that
// applies it before returning, so the instance that answered the admin call
// enforces it on its next check. Other instances learn of it through the
// store (RedisStore: pub/sub within milliseconds, a revision resync within
// its interval). Runtime overrides survive file reloads; one that no longer
// applies to the new file (its limit was removed) stays stored, is reported
// inactive with the reason, and applies again if a later file fits it. An
// override stops applying at its expiry: the controller rebuilds the
// snapshot then and removes the override from the store.
package reload

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// Sentinel errors.
var (
	// ErrNoFile is returned by Reload when the controller has no file
	// (the service runs the embedded example).
	ErrNoFile = errors.New("reload: no configuration file")
	// ErrReload wraps every failed reload: the file could not be read or
	// did not validate (the error also wraps config.ErrInvalid then).
	ErrReload = errors.New("reload failed")
)

// Target is the service whose policy the controller keeps:
// *service.Service.
type Target interface {
	Snapshot() *policy.Snapshot
	Swap(*policy.Snapshot) (old *policy.Snapshot, err error)
}

// Recorder is told about reloads and overrides, for metrics
// (metrics.Reload implements it). Calls may come from several goroutines at once.
type Recorder interface {
	// Reloaded counts one reload of the file; ok reports success.
	Reloaded(ok bool)
	// ConfigLoaded reports the version and load time of the file in force.
	ConfigLoaded(version string, loadedAt time.Time)
	// Overrides reports the runtime overrides in force in namespace ns and
	// the number, over all namespaces, that do not apply.
	Overrides(active map[string]int, inactive int)
	// SyncFailed counts a failure to read the override store.
	SyncFailed()
}

type nopRecorder struct{}

func (nopRecorder) Reloaded(bool)                  {}
func (nopRecorder) ConfigLoaded(string, time.Time) {}
func (nopRecorder) Overrides(map[string]int, int)  {}
func (nopRecorder) SyncFailed()                    {}

// Options configure a Controller.
type Options struct {
	// Path is the configuration file; "" when the service runs without
	// one (Reload then returns ErrNoFile and nothing is watched).
	Path string
	// Watch makes Start watch Path for changes.
	Watch bool
	// Debounce is the watcher's settle time. Default config.DefaultDebounce.
	Debounce time.Duration
	// Target is the service to keep. Required; its snapshot at New is the
	// file's policy in force.
	Target Target
	// Store keeps the runtime overrides. Default: in memory only
	// (overrides.OpenFile("")).
	Store overrides.Store
	// MaxPerNamespace bounds the runtime overrides of one namespace.
	// Default overrides.DefaultMaxPerNamespace.
	MaxPerNamespace int
	// Clock tells the time for expiries and load times. Default clock.System.
	Clock clock.Clock
	// After returns a channel that receives once d has passed: the expiry
	// timer, and the watcher's debounce. Default time.After.
	After func(d time.Duration) <-chan time.Time
	// Logger receives reloads, override changes and errors. Default: discard.
	Logger *slog.Logger
	// Recorder receives metrics. Default: none.
	Recorder Recorder
	// LoadTimeout bounds the initial load of the overrides in Start.
	// Default 5s.
	LoadTimeout time.Duration
}

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

// Controller keeps a Target's policy: file reloads and runtime overrides.
// Create it with New and run it with Start; all methods are safe for
// concurrent use.
type Controller struct {
	path     string
	watch    bool
	debounce time.Duration
	target   Target
	store    overrides.Store
	max      int
	clock    clock.Clock
	after    func(time.Duration) <-chan time.Time
	log      *slog.Logger
	rec      Recorder
	loadTO   time.Duration

	reloadMu sync.Mutex // serializes Reload
	lastKey  string     // what the last reload read: a version or an error

	writeMu sync.Mutex // serializes store writes and loads with the view updates they make

	mu      sync.Mutex // guards the fields below and every Swap
	base    *policy.Snapshot
	current *policy.Snapshot
	view    map[string]map[string]policy.Override // namespace -> subject -> override
	loaded  map[string]bool                       // namespaces loaded from the store
	invalid map[string]*policy.OverrideError      // "ns\x00subject" -> why it does not apply
	dirty   map[string]bool                       // namespaces to load again
	retryAt time.Time                             // when a failed removal of expired overrides is retried; guarded by mu

	wake    chan struct{} // dirty namespaces to load
	resched chan struct{} // the next expiry changed
	wg      sync.WaitGroup
}

// New returns a Controller of opts.Target. It does not touch the store or
// the file: Start does.
func New(opts Options) (*Controller, error) {
	if opts.Target == nil {
		return nil, errors.New("reload: nil Target")
	}
	snap := opts.Target.Snapshot()
	if snap == nil {
		return nil, errors.New("reload: the target has no snapshot")
	}
	if opts.Watch && opts.Path == "" {
		return nil, errors.New("reload: Watch without a Path")
	}
	if opts.Store == nil {
		opts.Store, _ = overrides.OpenFile("")
	}
	if opts.MaxPerNamespace <= 0 {
		opts.MaxPerNamespace = overrides.DefaultMaxPerNamespace
	}
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Recorder == nil {
		opts.Recorder = nopRecorder{}
	}
	if opts.LoadTimeout <= 0 {
		opts.LoadTimeout = 5 * time.Second
	}
	base := snap.Base()
	return &Controller{
		path: opts.Path, watch: opts.Watch, debounce: opts.Debounce, target: opts.Target,
		store: opts.Store, max: opts.MaxPerNamespace, clock: opts.Clock, after: opts.After,
		log: opts.Logger, rec: opts.Recorder, loadTO: opts.LoadTimeout,
		lastKey: base.Version(), base: base, current: snap,
		view: map[string]map[string]policy.Override{}, loaded: map[string]bool{},
		invalid: map[string]*policy.OverrideError{}, dirty: map[string]bool{},
		wake: make(chan struct{}, 1), resched: make(chan struct{}, 1),
	}, nil
}

// Start loads the runtime overrides of every namespace, swaps in the policy
// with them, and starts the background work until ctx is done: the file
// watcher (Options.Watch), the store's change notices, and the expiry
// timer. An override store that cannot be read is logged and retried in
// the background (the service runs with the file's policy meanwhile); a
// file that cannot be watched is an error.
func (c *Controller) Start(ctx context.Context) error {
	var w *config.Watcher
	if c.watch {
		var err error
		w, err = config.NewWatcher(c.path, config.WatchOptions{Debounce: c.debounce, After: c.after, Logger: c.log})
		if err != nil {
			return err
		}
	}
	c.rec.ConfigLoaded(c.base.Version(), c.base.LoadedAt())
	c.Resync(ctx)
	if w != nil {
		// The file may have changed between its first read and the watch
		// (a slow start, loading the overrides): read it once more. A no-op when
		// the content is unchanged.
		c.Reload(false)
	}

	c.wg.Add(2)
	go func() {
		defer c.wg.Done()
		c.store.Watch(ctx, c.namespaces, c.markDirty)
	}()
	go func() {
		defer c.wg.Done()
		c.loop(ctx, w)
	}()
	return nil
}

// Wait returns once the background work Start began has stopped (after its
// ctx is done).
func (c *Controller) Wait() { c.wg.Wait() }

func (c *Controller) loop(ctx context.Context, w *config.Watcher) {
	var changes <-chan struct{}
	if w != nil {
		defer w.Close()
		changes = w.C
	}
	var expiry <-chan time.Time
	var armedFor time.Time // the expiry the timer is for
	c.signal(c.resched)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
			c.Reload(false)
		case <-c.wake:
			c.syncDirty(ctx)
		case <-c.resched:
			next := c.nextExpiry()
			if expiry != nil && next.Equal(armedFor) {
				continue // the timer is already for that instant
			}
			expiry, armedFor = nil, next
			if !next.IsZero() {
				expiry = c.after(max(next.Sub(c.clock.Now()), time.Millisecond))
			}
		case <-expiry:
			expiry, armedFor = nil, time.Time{}
			c.expire(ctx)
		}
	}
}

func (c *Controller) signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// namespaces returns the namespaces of the file in force.
func (c *Controller) namespaces() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.base.Names()
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
	c.mu.Lock()
	for _, ns := range c.base.Names() {
		c.dirty[ns] = true
	}
	c.mu.Unlock()
	c.syncDirty(lctx)
}

// markDirty asks for namespace ns to be loaded from the store again. It is
// the store's change callback and does not block.
func (c *Controller) markDirty(ns string) {
	c.mu.Lock()
	if _, ok := c.base.Namespace(ns); !ok {
		c.mu.Unlock()
		return // not ours (yet): loaded when a file defines it
	}
	c.dirty[ns] = true
	c.mu.Unlock()
	c.signal(c.wake)
}

// syncDirty loads the dirty namespaces from the store and swaps in the
// result.
func (c *Controller) syncDirty(ctx context.Context) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	var nss []string
	for ns := range c.dirty {
		nss = append(nss, ns)
	}
	clear(c.dirty)
	c.mu.Unlock()
	if len(nss) == 0 {
		return
	}
	slices.Sort(nss)
	loaded := map[string][]policy.Override{}
	for _, ns := range nss {
		list, err := c.store.Load(ctx, ns)
		if err != nil {
			c.rec.SyncFailed()
			if errors.Is(err, overrides.ErrCorrupt) {
				c.log.Error("runtime overrides: stored values do not decode; skipping them", "namespace", ns, "err", err)
			} else {
				c.log.Warn("runtime overrides: cannot load; keeping what this instance has, will retry", "namespace", ns, "err", err)
				continue
			}
		}
		loaded[ns] = list
	}
	if len(loaded) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ns, list := range loaded {
		m := make(map[string]policy.Override, len(list))
		for _, o := range list {
			m[o.Subject] = o
		}
		c.view[ns] = m
		c.loaded[ns] = true
	}
	c.rebuildLocked(c.clock.Now())
}

// Snapshot returns the policy in force.
func (c *Controller) Snapshot() *policy.Snapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.current
}

// Reload reads the configuration file and, if it validates, makes it the
// policy in force with the runtime overrides on top. Unless force is set, a
// file whose content (or read error) is the same as at the last attempt is
// not reloaded: the watcher reports events, not changes. On failure the
// running policy stays, one error naming every problem is logged and
// counted, and the error (wrapping ErrReload) is returned.
func (c *Controller) Reload(force bool) error {
	if c.path == "" {
		return ErrNoFile
	}
	c.reloadMu.Lock()
	defer c.reloadMu.Unlock()
	now := c.clock.Now()
	data, err := config.ReadFile(c.path)
	key := "error: " + fmt.Sprint(err)
	if err == nil {
		key = config.Version(data)
	}
	if !force && key == c.lastKey {
		return nil
	}
	c.lastKey = key
	var snap *policy.Snapshot
	if err == nil {
		snap, err = config.ParseAt(data, c.path, now)
	}
	if err != nil {
		c.rec.Reloaded(false)
		c.log.Error("reload failed; keeping the running configuration", "config", c.path,
			"version", c.Snapshot().Version(), "err", err)
		return fmt.Errorf("%w: %w", ErrReload, err)
	}
	c.mu.Lock()
	old := c.base
	c.base = snap
	var added []string
	for _, ns := range snap.Names() {
		if !c.loaded[ns] {
			c.dirty[ns] = true
			added = append(added, ns)
		}
	}
	c.rebuildLocked(now)
	c.mu.Unlock()
	if len(added) > 0 {
		c.signal(c.wake)
	}
	c.rec.Reloaded(true)
	c.rec.ConfigLoaded(snap.Version(), snap.LoadedAt())
	c.log.Info("configuration reloaded", "config", c.path, "version", snap.Version(), "previous", old.Version(),
		"namespaces", strings.Join(snap.Names(), ","))
	return nil
}

// rebuildLocked layers the view on the base and swaps the result in.
func (c *Controller) rebuildLocked(now time.Time) {
	var ovs []policy.Override
	for _, ns := range c.base.Names() {
		for _, o := range c.view[ns] {
			ovs = append(ovs, o)
		}
	}
	snap, errs := c.base.WithOverrides(ovs, now)
	invalid := make(map[string]*policy.OverrideError, len(errs))
	for _, e := range errs {
		k := e.Namespace + "\x00" + e.Subject
		invalid[k] = e
		if prev, ok := c.invalid[k]; !ok || prev.Error() != e.Error() {
			c.log.Warn("runtime override does not apply to the configuration in force", "namespace", e.Namespace,
				"subject", e.Subject, "err", e.Err)
		}
	}
	c.invalid = invalid
	if _, err := c.target.Swap(snap); err != nil { // only for a nil snapshot: a bug
		c.log.Error("reload: swap failed", "err", err)
		return
	}
	c.current = snap
	active := map[string]int{}
	for _, ns := range snap.Names() {
		active[ns] = len(snap.RuntimeOverrides(ns))
	}
	c.rec.Overrides(active, len(invalid))
	c.signal(c.resched)
}

// nextExpiry is the earliest expiry among the overrides held, including
// those already past (stored while this process was down, or whose removal
// from the store failed): the timer then fires at once and expire removes
// them. The policy already ignores expired overrides; this keeps them from
// lingering in the store and counting against the per-namespace maximum.
func (c *Controller) nextExpiry() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	var next time.Time
	for _, m := range c.view {
		for _, o := range m {
			if !o.ExpiresAt.IsZero() && (next.IsZero() || o.ExpiresAt.Before(next)) {
				next = o.ExpiresAt
			}
		}
	}
	if !next.IsZero() && next.Before(c.retryAt) {
		next = c.retryAt // a removal failed: retry, not in a tight loop
	}
	return next
}

// expire removes the overrides that have expired from the store and
// rebuilds without them. A store failure is logged: the overrides stop
// applying all the same, and they stay in the view so that the timer tries
// DeleteExpired again.
func (c *Controller) expire(ctx context.Context) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	now := c.clock.Now()
	expired := map[string][]string{}
	c.mu.Lock()
	for ns, m := range c.view {
		for subj, o := range m {
			if o.Expired(now) {
				expired[ns] = append(expired[ns], subj)
			}
		}
	}
	c.mu.Unlock()
	failed := false
	for ns, subjects := range expired {
		slices.Sort(subjects)
		c.log.Info("runtime overrides expired", "namespace", ns, "subjects", subjects)
		if err := c.store.DeleteExpired(ctx, ns, subjects, now); err != nil {
			c.log.Warn("runtime overrides: cannot remove expired overrides from the store; retrying", "namespace", ns, "err", err)
			delete(expired, ns) // keep them in the view: the timer retries
			failed = true
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ns, subjects := range expired {
		for _, subj := range subjects {
			delete(c.view[ns], subj)
		}
	}
	c.retryAt = time.Time{}
	if failed {
		c.retryAt = now.Add(expireRetry)
	}
	c.rebuildLocked(now)
}

// expireRetry is how long expire waits before trying a failed removal again.
const expireRetry = time.Second

// Put validates o against the file in force (policy.Snapshot.CheckOverride),
// stores it (replacing the subject's previous runtime override) and swaps in
// a policy that applies it. Errors wrap policy.ErrInvalid (and
// policy.ErrUnknownNamespace, policy.ErrUnknownLimit or policy.ErrExpired)
// for a bad override, overrides.ErrTooMany, or the store's error. Put does
// not retain o.Limits.
func (c *Controller) Put(ctx context.Context, o policy.Override) (Status, error) {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	now := c.clock.Now()
	c.mu.Lock()
	base := c.base
	c.mu.Unlock()
	if _, err := base.CheckOverride(o, now); err != nil {
		return Status{}, err
	}
	so := o
	so.UpdatedAt = now
	so.Limits = maps.Clone(o.Limits)
	if err := c.store.Put(ctx, so, c.max); err != nil {
		return Status{}, err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.view[o.Namespace]
	if m == nil {
		m = map[string]policy.Override{}
		c.view[o.Namespace] = m
	}
	m[o.Subject] = so
	c.rebuildLocked(now)
	attrs := []any{"namespace", o.Namespace, "subject", o.Subject, "limits", describe(o.Limits)}
	if !o.ExpiresAt.IsZero() {
		attrs = append(attrs, "expires_at", o.ExpiresAt.UTC().Format(time.RFC3339))
	}
	c.log.Info("runtime override set", attrs...)
	return c.statusLocked(so, now), nil
}

// Delete removes the runtime override of subject in ns, giving the subject
// back what the file says. It returns an error wrapping overrides.ErrNotFound
// when there is none, policy.ErrUnknownNamespace for a namespace the file
// does not define, or the store's error.
func (c *Controller) Delete(ctx context.Context, ns, subject string) error {
	c.writeMu.Lock()
	defer c.writeMu.Unlock()
	c.mu.Lock()
	_, known := c.base.Namespace(ns)
	c.mu.Unlock()
	if !known {
		return fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	ok, err := c.store.Delete(ctx, ns, subject)
	if err != nil {
		return err
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	_, had := c.view[ns][subject]
	delete(c.view[ns], subject)
	if had {
		c.rebuildLocked(c.clock.Now())
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.base.Namespace(ns); !ok {
		return nil, fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	now := c.clock.Now()
	out := make([]Status, 0, len(c.view[ns]))
	for _, o := range c.view[ns] {
		out = append(out, c.statusLocked(o, now))
	}
	slices.SortFunc(out, func(a, b Status) int { return strings.Compare(a.Subject, b.Subject) })
	return out, nil
}

// Get returns the runtime override of subject in ns, or an error wrapping
// overrides.ErrNotFound or policy.ErrUnknownNamespace.
func (c *Controller) Get(ns, subject string) (Status, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.base.Namespace(ns); !ok {
		return Status{}, fmt.Errorf("%w %q", policy.ErrUnknownNamespace, ns)
	}
	o, ok := c.view[ns][subject]
	if !ok {
		return Status{}, fmt.Errorf("%w: %s/%s", overrides.ErrNotFound, ns, subject)
	}
	return c.statusLocked(o, c.clock.Now()), nil
}

func (c *Controller) statusLocked(o policy.Override, now time.Time) Status {
	st := Status{Override: o}
	if e, bad := c.invalid[o.Namespace+"\x00"+o.Subject]; bad {
		st.Problem = e.Err.Error()
		return st
	}
	if o.Expired(now) {
		st.Problem = "expired"
		return st
	}
	set, err := c.current.Resolve(o.Namespace, o.Subject)
	if err != nil || !set.Overridden {
		st.Problem = "not applied yet"
		return st
	}
	st.Active, st.Rules = true, set.Rules
	return st
}

// describe renders patches for logs: "per-minute{limit=1000 burst=200}".
func describe(patches map[string]policy.Patch) string {
	names := make([]string, 0, len(patches))
	for n := range patches {
		names = append(names, n)
	}
	slices.Sort(names)
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
