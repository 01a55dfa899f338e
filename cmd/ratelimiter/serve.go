package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributedratelimiter/ratelimiter/audit"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/topk"
	"github.com/distributedratelimiter/ratelimiter/tracing"
	"github.com/distributedratelimiter/ratelimiter/transport/extract"
	"github.com/distributedratelimiter/ratelimiter/transport/grpcapi"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
	"github.com/distributedratelimiter/ratelimiter/transport/rls"
	"github.com/distributedratelimiter/ratelimiter/transport/ui"
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
	leaseDuration   time.Duration

	live liveFlags // reloads, runtime overrides, admin API (admin.go)

	http httpFlags // timeouts of every HTTP listener (listen.go)

	fault faultFlags // deadlines, failure policy, breaker, deny cache (fault.go)

	proxy proxyFlags // reverse-proxy mode (proxy.go)

	tls tlsFlags // TLS of the listeners and of Redis (tls.go)

	rlsListen  string // Envoy's rate limit service (rls.go)
	grpcListen string // the native gRPC API (rls.go)

	envoyConfig    string // envoyproxy/ratelimit's configuration (file or directory)
	envoyAlgorithm string // what enforces its rate limits
	shadow         bool   // admit what the limits deny (--shadow-mode)

	trustedProxies string // whose Forwarded / X-Forwarded-For to believe
	ipv6Prefix     int    // the network an IPv6 client is limited as

	topK      int           // counters per stripe of the top-K tracker; 0 off
	topWindow time.Duration // its window
	auditRate float64       // fraction of subjects audited online; 0 off
	topK2Prom int           // most denied subjects per namespace exported as metric labels; 0 off
	tracing   bool          // OpenTelemetry spans, exported as OTEL_* says
	dryRun    bool          // check everything, serve nothing
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
	fs.DurationVar(&f.leaseDuration, "lease-duration", lease.DefaultDuration, "redis store: longest a slice of a leased limit (lease: true) may be spent after it was taken; the store keeps the limit's burst lowered by what its rate brings in one lease (half the burst at most)")
	fs.StringVar(&f.logFormat, "log-format", "json", "log format on stderr: json or text")
	fs.StringVar(&f.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&f.shutdownTimeout, "shutdown-timeout", 10*time.Second, "how long requests in flight may take to finish on shutdown")
	f.live.register(fs)
	f.http.register(fs)
	f.fault.register(fs)
	f.proxy.register(fs)
	f.tls.register(fs)
	fs.IntVar(&f.topK, "top-k", topk.DefaultCapacity, "counters per stripe (8 stripes) of the tracker of the most denied subjects, served at GET /v1/admin/top/{namespace}; 0 turns it off")
	fs.DurationVar(&f.topWindow, "top-window", topk.DefaultWindow, "window of the most-denied tracker: counts cover the last one to two windows")
	fs.BoolVar(&f.tracing, "tracing", false, "OpenTelemetry spans of every check (HTTP and gRPC server spans, policy, store call, failure policy), exported over OTLP/HTTP as the standard OTEL_* environment variables say (OTEL_EXPORTER_OTLP_ENDPOINT, OTEL_SERVICE_NAME, OTEL_TRACES_SAMPLER, ...); off: no tracing code runs")
	fs.IntVar(&f.topK2Prom, "top-k-metrics", 0, "export the `N` most denied subjects of each namespace as ratelimiter_top_denied{namespace,rank,subject} (for a dashboard); subjects are personal data and every one that passes through the top leaves a series in Prometheus: off (0) by default; at most 100")
	fs.Float64Var(&f.auditRate, "audit-rate", 0, "fraction of subjects (0 to 1, by a hash of namespace and subject) whose checks are replayed against an exact reference of their limits, counting over- and under-admissions (ratelimiter_audit_*); 0 turns the audit off")
	fs.StringVar(&f.grpcListen, "grpc-listen", "", "`address` to serve the native gRPC API on (ratelimiter.v1.RateLimiter: Check, CheckMany, CheckStream; proto/ratelimiter/v1); off when empty")
	fs.StringVar(&f.rlsListen, "rls-listen", "", "`address` to serve Envoy's rate limit service (gRPC, envoy.service.ratelimit.v3) on; off when empty")
	fs.StringVar(&f.envoyConfig, "envoy-config", "", "envoyproxy/ratelimit configuration: a YAML `file`, or a directory of *.yaml/*.yml files, one domain each (a namespace with descriptors); reloaded like --config")
	fs.StringVar(&f.envoyAlgorithm, "envoy-algorithm", "fixed_window", "what enforces --envoy-config's rate limits: fixed_window (envoyproxy/ratelimit's windows) or token_bucket (smooth)")
	fs.StringVar(&f.trustedProxies, "trusted-proxies", "", "comma-separated `CIDRs` (or addresses) of the proxies in front whose Forwarded and X-Forwarded-For headers say the client's address (client_address descriptors, --proxy-subject remote-addr); empty: the TCP peer is the client")
	fs.IntVar(&f.ipv6Prefix, "ipv6-prefix", extract.DefaultIPv6Prefix, "prefix length an IPv6 client address is limited as (a host rotates addresses within its /64)")
	fs.BoolVar(&f.dryRun, "dry-run", false, "check the flags, the files they name and the configuration, then exit (0 when all is well) without connecting to a store or listening: a deployment's arguments checked before it rolls out")
	fs.BoolVar(&f.shadow, "shadow-mode", false, "admit every request the limits deny, reporting the would-be denial (JSON, RateLimit-Shadow header, metrics): try a policy before enforcing it")
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

// loadPolicy reads the policy at start: --config and --envoy-config, or
// the embedded example without either.
func loadPolicy(src config.Source) (*policy.Snapshot, string, error) {
	if src.Empty() {
		snap, err := config.Parse(config.Example, "example.yaml")
		return snap, "embedded example", err
	}
	_, snap, err := src.Read(time.Now())
	return snap, src.String(), err
}

// extract is whom to trust for a client's address.
func (f serveFlags) extract() (extract.Options, error) {
	trusted, err := extract.ParseTrusted(f.trustedProxies)
	if err != nil {
		return extract.Options{}, fmt.Errorf("--trusted-proxies: %w", err)
	}
	if f.ipv6Prefix < 1 || f.ipv6Prefix > 128 {
		return extract.Options{}, fmt.Errorf("--ipv6-prefix: %d, want 1 to 128", f.ipv6Prefix)
	}
	return extract.Options{TrustedProxies: trusted, IPv6Prefix: f.ipv6Prefix}, nil
}

// source is where the policy is read from.
func (f serveFlags) source() config.Source {
	src := config.Source{Config: f.config, Envoy: f.envoyConfig}
	if a, err := limit.ParseAlgorithm(f.envoyAlgorithm); err == nil {
		src.EnvoyOptions.Algorithm = a
	}
	return src
}

// maxTopK bounds --top-k: counters per stripe and namespace.
const maxTopK = 10_000

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
	if err := f.tls.validate(); err != nil {
		return err
	}
	// Read now: a listener never starts without the TLS it was asked for.
	listenTLS, err := f.tls.listener(log)
	if err != nil {
		return fmt.Errorf("--tls-cert-file: %w", err)
	}
	if _, err := f.extract(); err != nil {
		return err
	}
	if a, err := limit.ParseAlgorithm(f.envoyAlgorithm); err != nil || (a != limit.FixedWindow && a != limit.TokenBucket) {
		return fmt.Errorf("--envoy-algorithm: %q, want fixed_window or token_bucket", f.envoyAlgorithm)
	}
	if f.topK < 0 || f.topK > maxTopK || f.topWindow <= 0 {
		return fmt.Errorf("--top-k %d, --top-window %v: want a count from 0 to %d and a positive window", f.topK, f.topWindow, maxTopK)
	}
	if f.topK2Prom < 0 || f.topK2Prom > 100 || (f.topK2Prom > 0 && f.topK == 0) {
		return fmt.Errorf("--top-k-metrics %d: want 0 to 100, and --top-k on", f.topK2Prom)
	}
	if !(f.auditRate >= 0 && f.auditRate <= 1) {
		return fmt.Errorf("--audit-rate %v: want a fraction from 0 to 1", f.auditRate)
	}
	snap, source, err := loadPolicy(f.source())
	if err != nil {
		return fmt.Errorf("load configuration: %w", err)
	}
	if f.dryRun {
		if err := checkStoreFlags(f, log); err != nil {
			return err
		}
		if _, err := checkedAdminToken(f); err != nil {
			return err
		}
		log.Info("dry run: flags and configuration are valid", "config", source, "version", snap.Version(), "namespaces", strings.Join(snap.Names(), ","), "store", f.store)
		return nil
	}

	// What starts is stopped by the defers below in reverse: the
	// listeners, the background connect, the controller, the service, then
	// the store.
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if listenTLS != nil {
		reg.MustRegister(certificateExpiry(listenTLS))
		if na := listenTLS.Certificate().Leaf.NotAfter; time.Until(na) < 7*24*time.Hour {
			log.Warn("the listeners' TLS certificate expires within a week, or has expired", "not_after", na)
		}
	}
	obs, err := metrics.New(reg)
	if err != nil {
		return err
	}
	if err := metrics.RegisterBuildInfo(reg); err != nil {
		return err
	}
	b, err := newBackend(f, reg, log)
	if err != nil {
		return err
	}
	defer b.close()
	var top *topk.Tracker
	observers := []service.Observer{obs}
	if f.topK > 0 {
		top = topk.New(topk.Options{Capacity: f.topK, Window: f.topWindow})
		observers = append(observers, top)
		if f.topK2Prom > 0 {
			if err := metrics.RegisterTop(reg, top, f.topK2Prom); err != nil {
				return err
			}
		}
	}
	if f.auditRate > 0 {
		a, stop, err := startAudit(ctx, f, reg)
		if err != nil {
			return err
		}
		defer stop()
		observers = append(observers, a)
	}
	observer := service.Observers(observers...)
	var tracer trace.Tracer
	if f.tracing {
		version, revision, _ := metrics.Build()
		tp, shutdown, err := tracing.Start(ctx, version+" "+revision)
		if err != nil {
			return err
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if err := shutdown(sctx); err != nil {
				log.Warn("tracing: flushing the last spans failed", "err", err)
			}
		}()
		tracer = tp.Tracer("github.com/distributedratelimiter/ratelimiter")
	}
	svc, err := service.New(b.store, snap, service.Options{Observer: observer, Guard: b.guard, Shadow: f.shadow, Tracer: tracer})
	if err != nil {
		return err
	}
	defer svc.Close()
	// Runtime overrides are in force before any listener opens.
	liveCtx, stopLive := context.WithCancel(ctx)
	lv, err := startLive(liveCtx, f, svc, b.overrides, top, reg, log)
	if err != nil {
		stopLive()
		return err
	}
	defer func() { stopLive(); lv.ctrl.Wait() }()
	if b.connect != nil {
		connCtx, stopConnecting := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); b.connect(connCtx, lv.ctrl.Resync) }()
		defer func() { stopConnecting(); <-done }()
	}

	srvs := &servers{log: log, tls: listenTLS}
	defer srvs.close() // on an error return; after a graceful shutdown, a no-op
	if err := addListeners(srvs, f, svc, lv, top, reg, log,
		"config", source, "version", snap.Version(), "namespaces", strings.Join(snap.Names(), ","), "store", f.store); err != nil {
		return err
	}
	srvs.start()

wait:
	for {
		select {
		case e := <-srvs.failed():
			return fmt.Errorf("%s: %w", describe(e.name), e.err)
		case <-hup:
			lv.reload()
		case <-ctx.Done():
			break wait
		}
	}

	log.Info("shutting down", "timeout", f.shutdownTimeout.String())
	sctx, cancel := context.WithTimeout(context.Background(), f.shutdownTimeout)
	defer cancel()
	// Every listener stops accepting at once and drains its requests in
	// flight within the one deadline.
	if err := srvs.shutdown(sctx); err != nil {
		return err
	}
	log.Info("stopped")
	return nil
}

// startAudit starts the online audit (--audit-rate) and registers its
// metrics; stop ends its replay. Under-admissions are counted on the
// memory store alone, where this process holds every state.
func startAudit(ctx context.Context, f serveFlags, reg prometheus.Registerer) (*audit.Auditor, func(), error) {
	a := audit.New(audit.Options{Rate: f.auditRate, Exclusive: f.store == "memory"})
	if err := metrics.RegisterAudit(reg, a.Stats); err != nil {
		return nil, nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	tick := time.NewTicker(audit.DefaultHorizon / 2)
	done := make(chan struct{})
	go func() { defer close(done); a.Run(ctx, tick.C) }()
	return a, func() { cancel(); tick.Stop(); <-done }, nil
}

// liveUI is the live page (/ui/): its data behind the admin token when
// there is one, the most denied subjects when top-K tracking is on.
func liveUI(reg *prometheus.Registry, top *topk.Tracker, auth *httpapi.Auth) http.Handler {
	o := ui.Options{Gatherer: reg}
	if top != nil {
		o.Top = top
	}
	if auth != nil {
		o.Guard = auth.Wrap
	}
	return ui.Handler(o)
}

// addListeners binds every listener of serve on srvs: the admin API on its
// own address, the reverse proxy, Envoy's RLS, and the API, last, whose
// "listening" line (with apiAttrs) tells a caller that every listener is
// up. The caller closes srvs on an error.
func addListeners(srvs *servers, f serveFlags, svc *service.Service, lv *live, top *topk.Tracker, reg *prometheus.Registry, log *slog.Logger, apiAttrs ...any) error {
	if lv.admin != nil && f.live.adminListen != "" {
		if err := srvs.add("admin", f.live.adminListen, f.http.browserServer(lv.admin, log)); err != nil {
			return fmt.Errorf("--admin-listen: %w", err)
		}
	}
	ex, _ := f.extract() // validated by serve
	if px, attrs, err := newProxy(f.proxy, ex, svc, log); err != nil {
		return err
	} else if px != nil {
		if err := srvs.add("proxy", f.proxy.listen, f.http.server(px, log), attrs...); err != nil {
			return fmt.Errorf("--proxy-listen: %w", err)
		}
	}
	rlsServer := rls.New(svc, rls.Options{UnknownDomainOK: f.envoyConfig != ""})
	if f.grpcListen != "" {
		native := grpcapi.New(svc)
		if err := srvs.add("grpc", f.grpcListen, func(net.Listener) (netServer, error) { return newNative(native, f.tracing), nil }); err != nil {
			return fmt.Errorf("--grpc-listen: %w", err)
		}
	}
	if f.rlsListen != "" {
		if err := srvs.add("rls", f.rlsListen, func(net.Listener) (netServer, error) { return newRLS(rlsServer, f.tracing), nil }); err != nil {
			return fmt.Errorf("--rls-listen: %w", err)
		}
	}
	var mainAdmin http.Handler
	if f.live.adminListen == "" {
		mainAdmin = lv.admin
	}
	// envoyproxy/ratelimit's POST /json beside the API.
	mux := http.NewServeMux()
	mux.Handle("/json", rls.JSONHandler(rlsServer))
	mux.Handle("/", httpapi.New(svc, httpapi.Options{Logger: log, Gatherer: reg, Admin: mainAdmin, Auth: lv.auth, Extract: ex}))
	mux.Handle("/ui/", liveUI(reg, top, lv.auth))
	var api http.Handler = mux
	if f.tracing {
		api = otelhttp.NewHandler(mux, "ratelimiter.http", otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			return r.Method + " " + r.URL.Path // the routes are few and fixed; unknown paths answer 404 in a span of their own
		}))
	}
	if err := srvs.add("", f.listen, f.http.browserServer(api, log), apiAttrs...); err != nil {
		return fmt.Errorf("--listen: %w", err)
	}
	return nil
}
