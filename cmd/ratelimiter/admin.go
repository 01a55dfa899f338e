package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/metrics"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/reload"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/pending"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
	"github.com/distributedratelimiter/ratelimiter/topk"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
)

// adminTokenEnv holds the admin token when no --admin-token-file is given.
// There is deliberately no --admin-token flag: command lines are visible to
// every user of the machine.
const adminTokenEnv = "RATELIMITER_ADMIN_TOKEN"

// liveFlags are the settings of configuration reloads, runtime overrides
// and the admin API.
type liveFlags struct {
	watch          bool
	debounce       time.Duration
	adminTokenFile string
	adminListen    string
	overridesFile  string
	resync         time.Duration
	maxOverrides   int
}

func (l *liveFlags) register(fs *flag.FlagSet) {
	fs.BoolVar(&l.watch, "watch-config", true, "reload --config when the file changes (SIGHUP always reloads)")
	fs.DurationVar(&l.debounce, "reload-debounce", config.DefaultDebounce, "how long the config file must be quiet before a reload")
	fs.StringVar(&l.adminTokenFile, "admin-token-file", "", "`file` holding the admin API bearer token (or set "+adminTokenEnv+"); without a token the admin API is off")
	fs.StringVar(&l.adminListen, "admin-listen", "", "serve the admin API on this `address` only (default: on --listen when a token is set)")
	fs.StringVar(&l.overridesFile, "overrides-file", "", "memory store: `file` that keeps runtime overrides across restarts (default: memory only)")
	fs.DurationVar(&l.resync, "overrides-resync", redisstore.DefaultOverridesResync, "redis store: how often to compare override revisions, healing a missed notice")
	fs.IntVar(&l.maxOverrides, "max-overrides", overrides.DefaultMaxPerNamespace, "most runtime overrides one namespace may hold")
}

// adminToken returns the admin token from --admin-token-file or the
// environment, "" when neither is set.
func adminToken(file string) (string, error) {
	env, hasEnv := os.LookupEnv(adminTokenEnv)
	if file != "" && hasEnv {
		return "", fmt.Errorf("set --admin-token-file or %s, not both", adminTokenEnv)
	}
	if file == "" {
		return strings.TrimSpace(env), nil
	}
	f, err := os.Open(file)
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, 4097))
	if err != nil {
		return "", fmt.Errorf("--admin-token-file: %w", err)
	}
	if len(data) > 4096 {
		return "", fmt.Errorf("--admin-token-file %s: larger than 4096 bytes", file)
	}
	token := strings.TrimSpace(string(data))
	if token == "" {
		return "", fmt.Errorf("--admin-token-file %s is empty", file)
	}
	return token, nil
}

// live is the running configuration's controller and the admin API.
type live struct {
	ctrl *reload.Controller
	log  *slog.Logger
	// mainAdmin is the admin handler for the API listener; nil when the
	// admin API is off or has its own listener.
	mainAdmin http.Handler
	// auth is the admin token's authentication, which also guards
	// /v1/config; nil without a token.
	auth     *httpapi.Auth
	adminSrv *http.Server
	adminLn  net.Listener
	served   chan error
	// ovPending is the override store while Redis is not connected yet;
	// connectLater hands it the Redis one.
	ovPending *overrides.Pending
}

// redisOverrides is the Redis override store over rs's client.
func redisOverrides(f serveFlags, rs *redisstore.Store, log *slog.Logger) (*redisstore.Overrides, error) {
	return redisstore.NewOverrides(rs.Client(), redisstore.OverridesOptions{Resync: f.live.resync, Logger: log})
}

func newOverrideStore(f serveFlags, st store.Store, log *slog.Logger) (overrides.Store, error) {
	if f.store != "redis" {
		fs, err := overrides.OpenFile(f.live.overridesFile)
		if err != nil {
			return nil, err
		}
		return fs, nil
	}
	if f.live.overridesFile != "" {
		return nil, errors.New("--overrides-file applies to the memory store; with --store redis the overrides live in Redis")
	}
	switch st := st.(type) {
	case *redisstore.Store:
		return redisOverrides(f, st, log)
	case *pending.Store:
		return overrides.NewPending(), nil
	}
	return nil, fmt.Errorf("--store redis with a %T store", st)
}

// startLive builds the controller of svc's policy, loads the runtime
// overrides into it and starts watching, and prepares the admin API. It
// returns before anything listens: the caller opens the API listener with
// mainAdmin and then calls serveAdmin.
func startLive(ctx context.Context, f serveFlags, svc *service.Service, st store.Store, top *topk.Tracker, reg prometheus.Registerer, log *slog.Logger) (*live, error) {
	token, err := adminToken(f.live.adminTokenFile)
	if err != nil {
		return nil, err
	}
	if token == "" && f.live.adminListen != "" {
		return nil, fmt.Errorf("--admin-listen needs an admin token (--admin-token-file or %s)", adminTokenEnv)
	}
	ovs, err := newOverrideStore(f, st, log)
	if err != nil {
		return nil, err
	}
	rec, err := metrics.NewReload(reg)
	if err != nil {
		return nil, err
	}
	ctrl, err := reload.New(reload.Options{
		Path:            f.config,
		Watch:           f.config != "" && f.live.watch,
		Debounce:        f.live.debounce,
		Target:          svc,
		Store:           ovs,
		MaxPerNamespace: f.live.maxOverrides,
		Logger:          log,
		Recorder:        rec,
	})
	if err != nil {
		return nil, err
	}
	// Everything that can fail comes before ctrl.Start, so that a failed
	// start leaves no watcher goroutine or listener behind.
	l := &live{ctrl: ctrl, log: log}
	l.ovPending, _ = ovs.(*overrides.Pending)
	var h http.Handler
	if token != "" {
		if l.auth, err = httpapi.NewAuth(token, httpapi.AuthOptions{Logger: log, Registerer: reg}); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		opts := httpapi.AdminOptions{Auth: l.auth, Logger: log}
		if top != nil {
			opts.Top = top
		}
		if h, err = httpapi.NewAdmin(ctrl, opts); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	if token != "" && f.live.adminListen != "" {
		if l.adminLn, err = net.Listen("tcp", f.live.adminListen); err != nil {
			return nil, fmt.Errorf("--admin-listen: %w", err)
		}
	}
	if err := ctrl.Start(ctx); err != nil {
		if l.adminLn != nil {
			l.adminLn.Close()
		}
		return nil, err
	}
	switch {
	case token == "":
		log.Info("admin API off: no admin token")
		return l, nil
	case f.live.adminListen == "":
		l.mainAdmin = h
	}
	if fs, ok := ovs.(*overrides.FileStore); ok && fs.Path() == "" {
		log.Warn("runtime overrides are kept in memory only; set --overrides-file to keep them across restarts")
	}
	if l.adminLn == nil {
		return l, nil
	}
	safe, err := browserSafe(h, l.adminLn, f.http)
	if err != nil {
		l.adminLn.Close()
		return nil, err
	}
	l.adminSrv = newHTTPServer(safe, f.http, log)
	l.served = make(chan error, 1)
	go func() { l.served <- l.adminSrv.Serve(l.adminLn) }()
	log.Info("admin listening", "addr", l.adminLn.Addr().String())
	return l, nil
}

// reload serves SIGHUP: it always re-reads the file.
func (l *live) reload() {
	if err := l.ctrl.Reload(true); errors.Is(err, reload.ErrNoFile) {
		l.log.Warn("SIGHUP: no --config file to reload; keeping the embedded example")
	}
}

// close stops the admin listener at once (an error return of serve).
func (l *live) close() {
	if l.adminSrv != nil {
		l.adminSrv.Close()
	}
}

// adminServed receives the admin server's exit; nil without one.
func (l *live) adminServed() <-chan error { return l.served }

// shutdown stops the admin listener and waits for the controller, whose
// context the caller has cancelled.
func (l *live) shutdown(ctx context.Context) error {
	var err error
	if l.adminSrv != nil {
		err = l.adminSrv.Shutdown(ctx)
		if serr := <-l.served; !errors.Is(serr, http.ErrServerClosed) && err == nil {
			err = serr
		}
	}
	l.ctrl.Wait()
	return err
}
