package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/pending"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

// backend is one choice of --store with everything serve needs of it: the
// store checks go to, the store of runtime overrides, the service's guard
// (nil for a store in this process, which neither blocks nor fails), the
// background work a store that was unreachable at start needs, and what to
// close, in order, on the way out. Adding a store is adding one constructor
// to newBackend.
type backend struct {
	store     store.Store
	overrides overrides.Store
	guard     *service.Guard
	// connect, when not nil, runs until ctx ends: it connects a store that
	// was unreachable at start and calls connected, before checks go to
	// it, so that the caller loads what was written elsewhere meanwhile.
	connect func(ctx context.Context, connected func(context.Context))
	// closers run in reverse order of their adding, after the service is
	// closed.
	closers []func()
}

// newBackend builds the backend of f.store and registers its metrics.
func newBackend(f serveFlags, reg prometheus.Registerer, log *slog.Logger) (*backend, error) {
	if err := checkStoreFlags(f, log); err != nil {
		return nil, err
	}
	if f.store == "memory" {
		return memoryBackend(f, reg)
	}
	return redisBackend(f, reg, log)
}

// checkStoreFlags validates the store's flags, and reads the files they
// name, without opening the store (serve --dry-run stops after it).
func checkStoreFlags(f serveFlags, log *slog.Logger) error {
	switch f.store {
	case "memory":
		if f.maxKeys < 1 {
			return fmt.Errorf("--max-keys: %d, want at least 1", f.maxKeys)
		}
		return nil
	case "redis":
		if err := f.fault.validate(); err != nil {
			return err
		}
		if f.live.overridesFile != "" {
			return errors.New("--overrides-file applies to the memory store; with --store redis the overrides live in Redis")
		}
		if f.leaseDuration <= 0 || f.leaseDuration > maxLeaseDuration {
			return fmt.Errorf("--lease-duration: %v, want more than 0 and at most %v", f.leaseDuration, maxLeaseDuration)
		}
		if len(redisOptions(f).Addrs) == 0 {
			return errors.New("--redis-addrs: no address")
		}
		if _, err := f.tls.redisConfig(log); err != nil {
			return fmt.Errorf("--redis-tls: %w", err)
		}
		return nil
	}
	return fmt.Errorf("--store: unknown store %q (want memory or redis)", f.store)
}

// close closes what the backend holds, the last added first.
func (b *backend) close() {
	for i := len(b.closers) - 1; i >= 0; i-- {
		b.closers[i]()
	}
	b.closers = nil
}

// memoryBackend is the embedded store of one instance: a bounded memstore,
// overrides in --overrides-file.
func memoryBackend(f serveFlags, reg prometheus.Registerer) (*backend, error) {
	ovs, err := overrides.OpenFile(f.live.overridesFile)
	if err != nil {
		return nil, err
	}
	ms := memstore.New(memstore.Options{Clock: clock.System, MaxKeys: f.maxKeys})
	b := &backend{store: ms, overrides: ovs, closers: []func(){func() { ms.Close() }}}
	if err := metrics.RegisterMemory(reg, "memory", memoryStats(ms)); err != nil {
		b.close()
		return nil, err
	}
	return b, nil
}

// redisBackend is Redis, shared by every instance, behind a guard; its
// overrides live in Redis. When Redis does not answer at start (a deploy
// racing Redis, an outage), the store is a pending.Store instead of a wait
// or an exit: the instance answers by the namespaces' failure policies
// (readiness says degraded) while connect dials in the background; no
// crash loop, and no instance missing from the load balancer because Redis
// was away when it started.
func redisBackend(f serveFlags, reg prometheus.Registerer, log *slog.Logger) (*backend, error) {
	opts := redisOptions(f)
	tlsCfg, err := f.tls.redisConfig(log) // checked by checkStoreFlags
	if err != nil {
		return nil, fmt.Errorf("--redis-tls: %w", err)
	}
	opts.TLS = tlsCfg
	observe, err := metrics.RegisterRedis(reg)
	if err != nil {
		return nil, err
	}
	opts.Observe = observe
	rs, err := redisstore.New(opts)
	switch {
	case errors.Is(err, store.ErrUnavailable):
		log.Warn("redis unreachable; serving by the failure policies, retrying in the background", "err", err)
		rs = nil
	case err != nil:
		return nil, err
	}
	g, err := newGuarding(f, reg, log)
	if err != nil {
		if rs != nil {
			rs.Close()
		}
		return nil, err
	}
	b := &backend{guard: g.guard}
	if rs == nil {
		p, ovp := pending.New(), overrides.NewPending()
		b.store, b.overrides = p, ovp
		b.connect = func(ctx context.Context, connected func(context.Context)) {
			connectLater(ctx, f, opts, p, ovp, g, connected, log)
		}
	} else {
		if b.overrides, err = redisOverrides(f, rs, log); err != nil {
			rs.Close()
			g.stop()
			return nil, err
		}
		b.store = rs
		warnEviction(rs, log)
		g.attach(rs)
	}
	// Leased limits are decided from this instance's slices of their
	// buckets; every other check goes through to Redis as it is.
	ls, err := lease.New(b.store, lease.Options{MaxDuration: f.leaseDuration, Instances: g.instances, Logger: log, ID: leaseHolderID()})
	if err == nil {
		err = metrics.RegisterLease(reg, leaseStats(ls))
	}
	if err != nil {
		b.store.Close()
		g.stop()
		return nil, err
	}
	b.store = ls
	b.closers = []func(){func() { b.store.Close() }, g.stop}
	return b, nil
}

// maxLeaseDuration bounds --lease-duration: a unit held longer than this is
// a unit a dead instance keeps from the others for as long.
const maxLeaseDuration = 10 * time.Second

// leaseHolderID names this instance in its demand reports: host, process
// and a random suffix (a restarted process is a new holder).
func leaseHolderID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%04x", host, os.Getpid(), rand.Uint32()&0xffff)
}

// leaseStats adapts a lease store's counters to its metrics.
func leaseStats(ls *lease.Store) func() metrics.LeaseStats {
	return func() metrics.LeaseStats {
		s := ls.Stats()
		return metrics.LeaseStats{Takes: s.Takes, TakeErrors: s.TakeErrors, Returns: s.Returns, Taken: s.Taken, Returned: s.Returned, Local: s.Local}
	}
}

// redisOptions are the Redis store's options from the flags.
func redisOptions(f serveFlags) redisstore.Options {
	var addrs []string
	for _, a := range strings.Split(f.redisAddrs, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	return redisstore.Options{
		Addrs:      addrs,
		Mode:       redisstore.Mode(f.redisMode),
		MasterName: f.redisMasterName,
		Username:   f.redisUsername,
		Password:   f.redisPassword,
		Timeout:    f.redisTimeout,

		TopologyRefresh: f.fault.topologyRefreshes,
	}
}

// redisOverrides is the Redis override store over rs's client.
func redisOverrides(f serveFlags, rs *redisstore.Store, log *slog.Logger) (*redisstore.Overrides, error) {
	return redisstore.NewOverrides(rs.Client(), redisstore.OverridesOptions{Resync: f.live.resync, Logger: log})
}

// maxConnectBackoff caps the wait between connection attempts while Redis
// is unreachable.
const maxConnectBackoff = 5 * time.Second

// dialRedis connects to Redis, retrying with a backoff capped at
// maxConnectBackoff, until it answers or ctx is done.
func dialRedis(ctx context.Context, opts redisstore.Options, log *slog.Logger) (*redisstore.Store, error) {
	backoff := 100 * time.Millisecond
	for {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		st, err := redisstore.New(opts)
		if err == nil {
			return st, nil
		}
		if !errors.Is(err, store.ErrUnavailable) {
			return nil, err
		}
		backoff = min(2*backoff, maxConnectBackoff)
		log.Warn("redis unreachable; retrying", "in", backoff.String(), "err", err)
	}
}

// connectLater dials Redis until it answers (or ctx ends), then starts the
// heartbeat, hands the override store its Redis one, calls connected (the
// overrides written elsewhere meanwhile are loaded) and hands the store to
// p, from which moment checks are the store's again.
func connectLater(ctx context.Context, f serveFlags, opts redisstore.Options, p *pending.Store, ovp *overrides.Pending, g *guarding,
	connected func(context.Context), log *slog.Logger) {
	rs, err := dialRedis(ctx, opts, log)
	if err != nil {
		if ctx.Err() == nil {
			log.Error("redis refuses this instance; serving by the failure policies until restarted", "err", err)
		}
		return
	}
	if ctx.Err() != nil { // the dial outlived the shutdown
		rs.Close()
		return
	}
	warnEviction(rs, log)
	g.attach(rs)
	if ovs, err := redisOverrides(f, rs, log); err != nil {
		log.Error("runtime overrides: cannot use redis", "err", err)
	} else {
		ovp.Set(ovs)
		connected(ctx)
	}
	if err := p.Set(rs); err != nil {
		return // shutting down: Set closed rs
	}
	log.Info("redis connected; checks are the store's again", "store", rs.String())
}

// warnEviction logs, once per node, a Redis that may evict the limiter's
// keys (each eviction gives a subject back what it had spent).
func warnEviction(rs *redisstore.Store, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	for _, risk := range rs.EvictionRisk(ctx) {
		log.Warn("redis may evict the limiter's keys, giving subjects back what they spent: set maxmemory-policy noeviction", "node", risk)
	}
}

// guarding is the fault handling of a Redis backend: the service's Guard,
// its local fallback store, and the heartbeat that counts the instances,
// which starts once Redis is connected (at start, or later).
type guarding struct {
	guard    *service.Guard
	fallback *memstore.Store
	ff       faultFlags
	log      *slog.Logger
	members  atomic.Pointer[redisstore.Members]

	mu      sync.Mutex // serializes attach and stop
	stopped bool
}

// newGuarding returns the guard of a Redis backend and registers its
// metrics (ratelimiter_instances, ratelimiter_store_connected, the
// fallback's memory-store metrics). Until attach starts the heartbeat, the
// local share assumes --instances.
func newGuarding(f serveFlags, reg prometheus.Registerer, log *slog.Logger) (*guarding, error) {
	ff := f.fault
	g := &guarding{ff: ff, log: log, fallback: memstore.New(memstore.Options{MaxKeys: f.maxKeys})}
	for _, c := range []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ratelimiter_instances",
			Help: "Live instances sharing the store, as last counted by the heartbeat (sizes the local share when the store fails).",
		}, func() float64 { return float64(g.instances()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "ratelimiter_store_connected",
			Help: "1 once this instance has connected to Redis; 0 while it serves by the failure policies because Redis has not been reachable since it started.",
		}, func() float64 {
			if g.members.Load() != nil {
				return 1
			}
			return 0
		}),
	} {
		if err := reg.Register(c); err != nil {
			g.fallback.Close()
			return nil, err
		}
	}
	if err := metrics.RegisterMemory(reg, "fallback", memoryStats(g.fallback)); err != nil {
		g.fallback.Close()
		return nil, err
	}
	g.guard = &service.Guard{
		MaxWait:          ff.maxWait,
		MaxWaiting:       ff.storeQueue,
		Fallback:         g.fallback,
		Instances:        g.instances,
		DenyCacheSize:    ff.denyCacheSize,
		Shards:           redisstore.ShardGroups,
		ShardOf:          redisstore.ShardFunc(redisOptions(f)),
		ClosedRetryAfter: ff.closedRetryAfter,
		Breaker: service.Breaker{
			Disabled:     ff.disableBreaker,
			OpenFor:      ff.breakerOpenFor,
			MinCalls:     uint32(ff.breakerMinCalls),
			FailureRatio: ff.breakerRatio,
		},
	}
	if ff.denyCacheSize == 0 {
		g.guard.DenyCacheSize = -1
	}
	log.Info("store failure handling", "store_max_wait", ff.maxWait.String(), "store_queue", ff.storeQueue, "instances", ff.instances,
		"deny_cache_size", ff.denyCacheSize, "breaker", !ff.disableBreaker)
	return g, nil
}

// instances is the instance count the local share divides by: the
// heartbeat's, or --instances before the heartbeat runs.
func (g *guarding) instances() int {
	if m := g.members.Load(); m != nil {
		return m.Count()
	}
	return g.ff.instances
}

// attach starts the heartbeat on the connected store, unless stop came
// first.
func (g *guarding) attach(rs *redisstore.Store) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.stopped {
		return
	}
	var lastErr time.Time
	m := rs.StartMembers(redisstore.MembersOptions{
		Interval: g.ff.heartbeat,
		Fallback: g.ff.instances,
		OnError: func(err error) { // runs on the heartbeat goroutine only
			if time.Since(lastErr) > time.Minute {
				lastErr = time.Now()
				g.log.Warn("instance heartbeat failed; keeping the last instance count", "err", err)
			}
		},
	})
	g.members.Store(m)
	g.log.Info("instance heartbeat started", "instance_id", m.ID(), "instances", m.Count())
}

// stop leaves the instance set and closes the local fallback.
func (g *guarding) stop() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.stopped = true
	if m := g.members.Load(); m != nil {
		m.Close()
	}
	g.fallback.Close()
}

// memoryStats adapts a memory store's counters to its metrics.
func memoryStats(ms *memstore.Store) func() metrics.MemoryStats {
	return func() metrics.MemoryStats {
		s := ms.Stats()
		return metrics.MemoryStats{Keys: s.Keys, Evictions: s.Evictions, FreshEvictions: s.FreshEvictions, Expired: s.Expired, Unstored: s.Unstored}
	}
}
