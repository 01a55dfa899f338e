// Package reload changes the policy in force without downtime. A Controller
// owns the policy of a running service: it reloads the configuration file
// when the file changes (config.Watcher) or when asked (SIGHUP), see
// file.go, and layers runtime per-subject overrides (the admin API, kept in
// an overrides.Store) on top of it, see overrides.go.
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
// What a change does to the state of a subject that already consumed is
// the limit package's rule (see "Changing a rule" there): state is kept per
// subject and limit name and the rules travel with every check, so a
// change applies on each subject's next check, with no migration and no
// restart.
//
// # Runtime overrides
//
// Put validates an override exactly as the file's overrides are validated
// (policy.Snapshot.CheckOverride), stores it, and swaps in a snapshot that
// applies it before returning, so the instance that answered the admin call
// enforces it on its next check. Other instances learn of it through the
// store (the Redis store: pub/sub within milliseconds, a revision resync
// within its interval). Runtime overrides survive file reloads; one that no
// longer applies to the new file (its limit was removed) stays stored, is
// reported inactive with the reason, and applies again if a later file fits
// it. An override stops applying at its expiry: the controller rebuilds the
// snapshot then and removes the override from the store.
//
// # Concurrency
//
// What the controller holds (the file's policy, the overrides it knows, the
// policy in force) is one immutable state value. Every change (a reload, a
// load from the store, Put, Delete, an expiry) takes the one writer lock,
// builds the next state, swaps the service's snapshot and publishes the
// state; readers (Snapshot, List, Get) load the published state and never
// wait. A writer may wait for the override store under the lock (bounded by
// the store's timeout), so changes apply one at a time, in order. The
// store's change notices only mark namespaces to load again (a set with its
// own small lock, so that a notice never waits behind a writer) and wake the
// controller's goroutine.
package reload

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/config"
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
	// Envoy is an envoyproxy/ratelimit configuration (a file or a
	// directory) read with Path, with EnvoyOptions (config.Source).
	Envoy        string
	EnvoyOptions config.EnvoyOptions
	// Watch makes Start watch Path and Envoy for changes.
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

// Controller keeps a Target's policy: file reloads and runtime overrides.
// Create it with New and run it with Start; all methods are safe for
// concurrent use.
type Controller struct {
	source   config.Source
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

	state atomic.Pointer[state] // published under mu; read without it

	mu      sync.Mutex // the writer lock: every change, with its store I/O, and the fields below
	lastKey string     // what the last reload read: a version or an error
	retryAt time.Time  // when a failed removal of expired overrides is retried

	dirty   dirtySet      // namespaces to load from the store again
	wake    chan struct{} // dirty namespaces to load
	resched chan struct{} // the next expiry changed
	wg      sync.WaitGroup
}

// state is what the controller holds. It is immutable once published:
// writers build the next one.
type state struct {
	base    *policy.Snapshot // the file's policy
	current *policy.Snapshot // base with the runtime overrides: the policy in force
	// overrides are the runtime overrides known, by namespace and subject,
	// of the namespaces loaded from the store (a key present, even with an
	// empty map, means loaded).
	overrides map[string]map[string]policy.Override
	// invalid says why a known override does not apply, by key(ns, subject).
	invalid    map[string]*policy.OverrideError
	nextExpiry time.Time // the earliest expiry among overrides, or a retry
}

func key(ns, subject string) string { return ns + "\x00" + subject }

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
	source := config.Source{Config: opts.Path, Envoy: opts.Envoy, EnvoyOptions: opts.EnvoyOptions}
	if opts.Watch && source.Empty() {
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
	c := &Controller{
		source: source, watch: opts.Watch, debounce: opts.Debounce, target: opts.Target,
		store: opts.Store, max: opts.MaxPerNamespace, clock: opts.Clock, after: opts.After,
		log: opts.Logger, rec: opts.Recorder, loadTO: opts.LoadTimeout,
		lastKey: base.Version(),
		wake:    make(chan struct{}, 1), resched: make(chan struct{}, 1),
	}
	c.state.Store(&state{base: base, current: snap, overrides: map[string]map[string]policy.Override{}, invalid: map[string]*policy.OverrideError{}})
	return c, nil
}

// Start loads the runtime overrides of every namespace, swaps in the policy
// with them, and starts the background work until ctx is done: the file
// watcher (Options.Watch), the store's change notices, and the expiry
// timer. An override store that cannot be read is logged and retried in
// the background (the service runs with the file's policy meanwhile); a
// file that cannot be watched is an error.
func (c *Controller) Start(ctx context.Context) error {
	var ws []*config.Watcher
	if c.watch {
		wo := config.WatchOptions{Debounce: c.debounce, After: c.after, Logger: c.log}
		if c.source.Config != "" {
			w, err := config.NewWatcher(c.source.Config, wo)
			if err != nil {
				return err
			}
			ws = append(ws, w)
		}
		if c.source.Envoy != "" {
			watch := config.NewWatcher
			if config.IsDir(c.source.Envoy) {
				watch = config.NewDirWatcher
			}
			w, err := watch(c.source.Envoy, wo)
			if err != nil {
				for _, w := range ws {
					w.Close()
				}
				return err
			}
			ws = append(ws, w)
		}
	}
	base := c.state.Load().base
	c.rec.ConfigLoaded(base.Version(), base.LoadedAt())
	c.Resync(ctx)
	if len(ws) > 0 {
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
		c.loop(ctx, ws)
	}()
	return nil
}

// Wait returns once the background work Start began has stopped (after its
// ctx is done).
func (c *Controller) Wait() { c.wg.Wait() }

// loop is the controller's goroutine: file changes, store notices and the
// expiry timer, one at a time.
func (c *Controller) loop(ctx context.Context, ws []*config.Watcher) {
	var changes, envoyChanges <-chan struct{} // the configuration file, the Envoy one
	for i, w := range ws {
		defer w.Close()
		if i == 0 {
			changes = w.C
		} else {
			envoyChanges = w.C
		}
	}
	var expiry <-chan time.Time
	var armedFor time.Time // the expiry the timer is for
	signal(c.resched)
	for {
		select {
		case <-ctx.Done():
			return
		case <-changes:
			c.Reload(false)
		case <-envoyChanges:
			c.Reload(false)
		case <-c.wake:
			c.syncDirty(ctx)
		case <-c.resched:
			next := c.state.Load().nextExpiry
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

func signal(ch chan struct{}) {
	select {
	case ch <- struct{}{}:
	default:
	}
}

// Snapshot returns the policy in force.
func (c *Controller) Snapshot() *policy.Snapshot { return c.state.Load().current }

// namespaces returns the namespaces of the file in force.
func (c *Controller) namespaces() []string { return c.state.Load().base.Names() }

// publish makes base with ovs the policy in force: it layers the
// overrides, swaps the target's snapshot, and publishes the state. The
// caller holds c.mu; ovs is the caller's to give (not modified after).
func (c *Controller) publish(base *policy.Snapshot, ovs map[string]map[string]policy.Override, now time.Time) {
	prev := c.state.Load()
	var list []policy.Override
	for _, ns := range base.Names() {
		for _, o := range ovs[ns] {
			list = append(list, o)
		}
	}
	snap, errs := base.WithOverrides(list, now)
	invalid := make(map[string]*policy.OverrideError, len(errs))
	for _, e := range errs {
		k := key(e.Namespace, e.Subject)
		invalid[k] = e
		if was, ok := prev.invalid[k]; !ok || was.Error() != e.Error() {
			c.log.Warn("runtime override does not apply to the configuration in force", "namespace", e.Namespace,
				"subject", e.Subject, "err", e.Err)
		}
	}
	if _, err := c.target.Swap(snap); err != nil { // only for a nil snapshot: a bug
		c.log.Error("reload: swap failed", "err", err)
		return
	}
	// The earliest expiry, including those already past (stored while this
	// process was down, or whose removal from the store failed): the timer
	// then fires at once and expire removes them. The policy already
	// ignores expired overrides; this keeps them from lingering in the
	// store and counting against the per-namespace maximum.
	var next time.Time
	for _, m := range ovs {
		for _, o := range m {
			if !o.ExpiresAt.IsZero() && (next.IsZero() || o.ExpiresAt.Before(next)) {
				next = o.ExpiresAt
			}
		}
	}
	if !next.IsZero() && next.Before(c.retryAt) {
		next = c.retryAt // a removal failed: retry, not in a tight loop
	}
	c.state.Store(&state{base: base, current: snap, overrides: ovs, invalid: invalid, nextExpiry: next})
	active := map[string]int{}
	for _, ns := range snap.Names() {
		active[ns] = len(snap.RuntimeOverrides(ns))
	}
	c.rec.Overrides(active, len(invalid))
	signal(c.resched)
}
