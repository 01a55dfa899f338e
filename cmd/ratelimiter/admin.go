package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
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
	// admin is the admin API's handler, which serve mounts on --listen or
	// on --admin-listen; nil when the admin API is off (no token).
	admin http.Handler
	// auth is the admin token's authentication, which also guards
	// /v1/config; nil without a token.
	auth *httpapi.Auth
}

// checkedAdminToken is the admin token, checked: long enough, and set
// when --admin-listen asks for the admin API.
func checkedAdminToken(f serveFlags) (string, error) {
	token, err := adminToken(f.live.adminTokenFile)
	if err != nil {
		return "", err
	}
	if token == "" && f.live.adminListen != "" {
		return "", fmt.Errorf("--admin-listen needs an admin token (--admin-token-file or %s)", adminTokenEnv)
	}
	if token != "" && len(token) < httpapi.MinAdminTokenLen {
		return "", fmt.Errorf("admin token: %w", httpapi.ErrWeakToken)
	}
	return token, nil
}

// startLive builds the controller of svc's policy over the override store
// ovs, loads the runtime overrides into it and starts watching until ctx
// ends, and prepares the admin API. It returns before anything listens.
func startLive(ctx context.Context, f serveFlags, svc *service.Service, ovs overrides.Store, top *topk.Tracker, reg prometheus.Registerer, log *slog.Logger) (*live, error) {
	token, err := checkedAdminToken(f)
	if err != nil {
		return nil, err
	}
	rec, err := metrics.NewReload(reg)
	if err != nil {
		return nil, err
	}
	src := f.source()
	ctrl, err := reload.New(reload.Options{
		Path:            f.config,
		Envoy:           src.Envoy,
		EnvoyOptions:    src.EnvoyOptions,
		Watch:           !src.Empty() && f.live.watch,
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
	l := &live{ctrl: ctrl, log: log}
	if token != "" {
		if l.auth, err = httpapi.NewAuth(token, httpapi.AuthOptions{Logger: log, Registerer: reg}); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
		opts := httpapi.AdminOptions{Auth: l.auth, Logger: log}
		if top != nil {
			opts.Top = top
		}
		if l.admin, err = httpapi.NewAdmin(ctrl, opts); err != nil {
			return nil, fmt.Errorf("admin token: %w", err)
		}
	}
	// Everything that can fail comes before ctrl.Start, so that a failed
	// start leaves no watcher goroutine behind.
	if err := ctrl.Start(ctx); err != nil {
		return nil, err
	}
	if token == "" {
		log.Info("admin API off: no admin token")
	} else if fs, ok := ovs.(*overrides.FileStore); ok && fs.Path() == "" {
		log.Warn("runtime overrides are kept in memory only; set --overrides-file to keep them across restarts")
	}
	return l, nil
}

// reload serves SIGHUP: it always re-reads the file.
func (l *live) reload() {
	if err := l.ctrl.Reload(true); errors.Is(err, reload.ErrNoFile) {
		l.log.Warn("SIGHUP: no --config file to reload; keeping the embedded example")
	}
}
