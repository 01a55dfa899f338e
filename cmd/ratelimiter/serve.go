package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/store/pending"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
	"github.com/distributedratelimiter/ratelimiter/topk"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
)

// serveFlags are the settings of `ratelimiter serve`.
type serveFlags struct {
	config          string
	listen          string
	store           string
	maxKeys         int
	logFormat       string
	logLevel        string
	shutdownTimeout time.Duration

	redisAddrs      string
	redisMode       string
	redisMasterName string
	redisUsername   string
	redisPassword   string
	redisTimeout    time.Duration

	live liveFlags // reloads, runtime overrides, admin API (admin.go)

	http httpFlags // timeouts of every HTTP listener (listen.go)

	fault faultFlags // deadlines, failure policy, breaker, deny cache (fault.go)

	proxy proxyFlags // reverse-proxy mode (proxy.go)

	rlsListen string // Envoy's rate limit service (rls.go)

	topK      int           // counters per stripe of the top-K tracker; 0 off
	topWindow time.Duration // its window
}

// serveCmd runs the server until ctx is cancelled (SIGINT/SIGTERM), then shuts
// down gracefully: it stops accepting, lets requests in flight finish within
// --shutdown-timeout, and closes the store.
//
// Once the listener is bound it logs one line with msg "listening" and the
// bound address in the "addr" attribute; with --listen 127.0.0.1:0 that line
// is how a caller learns the chosen port. SIGHUP reloads --config, and so
// does a change of the file (--watch-config): a file that does not validate
// is logged and the running policy is kept. With an admin token the admin API
// (runtime per-subject overrides) is served on --listen, or on --admin-listen,
// which logs "admin listening" with its "addr" (admin.go). With
// --proxy-listen, --proxy-upstream and --proxy-namespace it also runs a
// reverse proxy in front of the protected service, which logs "proxy
// listening" with its "addr" (proxy.go); with --rls-listen it serves Envoy's
// rate limit service over gRPC and logs "rls listening" (rls.go).
func serveCmd(ctx context.Context, args []string, stderr io.Writer) int {
	var f serveFlags
	fs := newFlagSet("serve", "serve [flags]", stderr)
	fs.StringVar(&f.config, "config", "", "YAML configuration `file`; empty runs the embedded example (namespace orders)")
	fs.StringVar(&f.listen, "listen", "127.0.0.1:8080", "`address` to serve HTTP on (port 0 picks a free port)")
	fs.StringVar(&f.store, "store", "memory", "state store: memory (this process only) or redis (shared by every instance)")
	fs.IntVar(&f.maxKeys, "max-keys", 1_000_000, "memory store: most subjects held at once")
	fs.StringVar(&f.redisAddrs, "redis-addrs", "127.0.0.1:6379", "redis store: comma-separated `host:port` list (the server, the sentinels, or cluster seed nodes)")
	fs.StringVar(&f.redisMode, "redis-mode", "standalone", "redis store: standalone, sentinel or cluster")
	fs.StringVar(&f.redisMasterName, "redis-master-name", "", "redis store, sentinel mode: the master set `name`")
	fs.StringVar(&f.redisUsername, "redis-username", "", "redis store: ACL user name")
	fs.StringVar(&f.redisPassword, "redis-password", "", "redis store: password (prefer the environment variable)")
	fs.DurationVar(&f.redisTimeout, "redis-timeout", time.Second, "redis store: bound on each Redis call")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format on stderr: json or text")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long requests in flight may take to finish on shutdown")
	f.live.register(fs)
	f.http.register(fs)
	f.fault.register(fs)
	f.proxy.register(fs)
	fs.IntVar(&f.topK, "top-k", topk.DefaultCapacity, "counters per stripe (8 stripes) of the tracker of the most denied subjects, served at GET /v1/admin/top/{namespace}; 0 turns it off")
	fs.DurationVar(&f.topWindow, "top-window", topk.DefaultWindow, "window of the most-denied tracker: counts cover the last one to two windows")
	fs.StringVar(&f.rlsListen, "rls-listen", "", "`address` to serve Envoy's rate limit service (gRPC, envoy.service.ratelimit.v3) on; off when empty")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "ratelimiter serve: unexpected arguments %q\n", fs.Args())
		return exitErrors
	}
	log, err := newLogger(stderr, f.logFormat, f.logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter serve: %v\n", err)
		return exitErrors
	}
	for _, w := range f.fault.deprecations(fs) {
		log.Warn(w)
	}
	if err := serve(ctx, f, log); err != nil {
		log.Error("serve failed", "err", err)
		return exitFail
	}
	return exitOK
}

func newLogger(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch format {
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format: %q is not json or text", format)
}

func loadPolicy(path string) (*policy.Snapshot, string, error) {
	if path == "" {
		snap, err := config.Parse(config.Example, "example.yaml")
		return snap, "embedded example", err
	}
	snap, err := config.Load(path)
	return snap, path, err
}

// redisOptions are the Redis store's options from the flags (addresses
// checked by newStore).
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

func newStore(f serveFlags) (store.Store, error) {
	switch f.store {
	case "memory":
		if f.maxKeys < 1 {
			return nil, fmt.Errorf("--max-keys: %d, want at least 1", f.maxKeys)
		}
		return memstore.New(memstore.Options{Clock: clock.System, MaxKeys: f.maxKeys}), nil
	case "redis":
		opts := redisOptions(f)
		if len(opts.Addrs) == 0 {
			return nil, errors.New("--redis-addrs: no address")
		}
		return redisstore.New(opts)
	}
	return nil, fmt.Errorf("--store: unknown store %q (want memory or redis)", f.store)
}

// connectStore builds the store. When Redis does not answer (a deploy
// racing Redis, an outage), it returns a pending.Store instead of waiting
// or exiting: the instance starts and answers by the namespaces' failure
// policies (readiness says degraded), while dialRedis keeps trying in the
// background; no crash loop, and no instance missing from the load
// balancer because Redis was away when it started.
func connectStore(f serveFlags, log *slog.Logger) (store.Store, error) {
	st, err := newStore(f)
	if err == nil || !errors.Is(err, store.ErrUnavailable) {
		return st, err
	}
	log.Warn("redis unreachable; serving by the failure policies, retrying in the background", "err", err)
	return pending.New(), nil
}

// dialRedis connects to Redis, retrying with a backoff capped at
// maxConnectBackoff, until it answers or ctx is done.
func dialRedis(ctx context.Context, f serveFlags, log *slog.Logger) (*redisstore.Store, error) {
	backoff := 100 * time.Millisecond
	for {
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		case <-t.C:
		}
		st, err := redisstore.New(redisOptions(f))
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
// heartbeat, connects the runtime overrides and hands the store to p, from
// which moment checks are the store's again. It closes done when it returns.
func connectLater(ctx context.Context, f serveFlags, p *pending.Store, gd *guarding, lv *live, log *slog.Logger, done chan<- struct{}) {
	defer close(done)
	rs, err := dialRedis(ctx, f, log)
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
	gd.attach(rs)
	if lv.ovPending != nil {
		ovs, err := redisOverrides(f, rs, log)
		if err != nil {
			log.Error("runtime overrides: cannot use redis", "err", err)
		} else {
			lv.ovPending.Set(ovs)
			lv.ctrl.Resync(ctx) // overrides written elsewhere meanwhile apply from the first store check
		}
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

// maxTopK bounds --top-k: counters per stripe and namespace.
const maxTopK = 10_000

// maxConnectBackoff caps the wait between connection attempts while
// Redis is unreachable.
const maxConnectBackoff = 5 * time.Second

func serve(ctx context.Context, f serveFlags, log *slog.Logger) error {
	// Catch SIGHUP from the start: its default action ends the process, and
	// a reload sent while the server is still starting must not. One that
	// arrives before the watcher runs is served once the server is up; the
	// controller reads the file again at start anyway.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if err := f.http.validate(); err != nil {
		return err
	}
	if f.topK < 0 || f.topK > maxTopK || f.topWindow <= 0 {
		return fmt.Errorf("--top-k %d, --top-window %v: want a count from 0 to %d and a positive window", f.topK, f.topWindow, maxTopK)
	}
	snap, source, err := loadPolicy(f.config)
	if err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	st, err := connectStore(f, log)
	if err != nil {
		return err
	}
	defer st.Close()
	connected, _ := st.(*redisstore.Store) // nil for memory, and while Redis is unreachable
	if connected != nil {
		warnEviction(connected, log)
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	obs, err := metrics.New(reg)
	if err != nil {
		return err
	}
	if ms, ok := st.(*memstore.Store); ok {
		if err := metrics.RegisterMemory(reg, "memory", memoryStats(ms)); err != nil {
			return err
		}
	}
	gd, err := startGuarding(f, connected, reg, log)
	if err != nil {
		return err
	}
	defer gd.stop() // after svc.Close, before st.Close
	var top *topk.Tracker
	var observer service.Observer = obs
	if f.topK > 0 {
		top = topk.New(topk.Options{Capacity: f.topK, Window: f.topWindow})
		observer = service.Observers(obs, top)
	}
	svc, err := service.New(st, snap, service.Options{Observer: observer, Guard: gd.guard})
	if err != nil {
		return err
	}
	defer svc.Close()
	// Runtime overrides are in force before the listener opens.
	liveCtx, stopLive := context.WithCancel(ctx)
	lv, err := startLive(liveCtx, f, svc, st, top, reg, log)
	if err != nil {
		stopLive()
		return err
	}
	defer func() { stopLive(); lv.ctrl.Wait() }() // before st.Close
	defer lv.close()                              // on an error return; after a graceful shutdown, a no-op
	if p, ok := st.(*pending.Store); ok {
		connCtx, stopConnecting := context.WithCancel(ctx)
		dialed := make(chan struct{})
		go connectLater(connCtx, f, p, gd, lv, log, dialed)
		defer func() { stopConnecting(); <-dialed }() // before gd.stop and st.Close
	}

	px, err := startProxy(f.proxy, f.http, svc, log)
	if err != nil {
		return err
	}
	defer px.close() // on an error return; after a graceful shutdown, a no-op
	rs, err := startRLS(f.rlsListen, svc, log)
	if err != nil {
		return err
	}
	defer rs.close()

	ln, err := net.Listen("tcp", f.listen)
	if err != nil {
		return err
	}
	api, err := browserSafe(httpapi.New(svc, httpapi.Options{Logger: log, Gatherer: reg, Admin: lv.mainAdmin, Auth: lv.auth}), ln, f.http)
	if err != nil {
		ln.Close()
		return err
	}
	srv := newHTTPServer(api, f.http, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer srv.Close() // when another server failed; after a graceful shutdown, a no-op
	log.Info("listening", "addr", ln.Addr().String(), "config", source, "version", snap.Version(),
		"namespaces", strings.Join(snap.Names(), ","), "store", f.store)

wait:
	for {
		select {
		case err := <-served:
			return fmt.Errorf("http server: %w", err)
		case err := <-lv.adminServed():
			return fmt.Errorf("admin server: %w", err)
		case err := <-px.proxyServed():
			return fmt.Errorf("proxy server: %w", err)
		case err := <-rs.rlsServed():
			return fmt.Errorf("rls server: %w", err)
		case <-hup:
			lv.reload()
		case <-ctx.Done():
			break wait
		}
	}

	log.Info("shutting down", "timeout", f.shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	// The API, the proxy and the RLS stop accepting together and drain
	// their requests in flight within the one deadline.
	var apiErr, proxyErr error
	var wg sync.WaitGroup
	wg.Add(3)
	go func() { defer wg.Done(); apiErr = srv.Shutdown(sctx) }()
	go func() { defer wg.Done(); proxyErr = px.shutdown(sctx) }()
	go func() { defer wg.Done(); rs.shutdown(sctx) }()
	wg.Wait()
	if apiErr != nil {
		return fmt.Errorf("graceful shutdown: %w", apiErr)
	}
	if proxyErr != nil {
		return fmt.Errorf("graceful shutdown of the proxy: %w", proxyErr)
	}
	stopLive()
	if err := lv.shutdown(sctx); err != nil {
		return fmt.Errorf("graceful shutdown of the admin API: %w", err)
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("http server: %w", err)
	}
	log.Info("stopped")
	return nil
}
