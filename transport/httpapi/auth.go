package httpapi

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// Failed authentications a client address may make: AuthFailures per
// AuthFailurePeriod, in a burst of as many. Past them, every request from
// the address is answered 429 until its budget refills, before its token
// is even looked at, so that a token cannot be guessed at line rate and a
// flood of bad requests cannot flood the logs.
const (
	AuthFailures      = 20
	AuthFailurePeriod = time.Minute
)

// maxLoggedPath bounds the request path a failed authentication logs.
const maxLoggedPath = 128

// Auth is the bearer-token authentication of the admin API and of the other
// routes that need the admin token (/v1/config when a token is set). It
// compares SHA-256 digests in constant time, so neither the token's bytes
// nor its length leak through timing; it throttles failed attempts per
// client address (AuthFailures per AuthFailurePeriod), logs each counted
// failure in one bounded line, and counts every failure in
// ratelimiter_admin_auth_failures_total{reason="missing"|"invalid"|"throttled"}.
// It is safe for concurrent use.
type Auth struct {
	token    [sha256.Size]byte
	log      *slog.Logger
	throttle store.Store
	rules    []limit.Rule
	failures *prometheus.CounterVec
}

// AuthOptions configure an Auth.
type AuthOptions struct {
	// Logger receives one line per counted failed authentication.
	// Default: discard.
	Logger *slog.Logger
	// Registerer, when set, receives ratelimiter_admin_auth_failures_total.
	Registerer prometheus.Registerer
	// Clock times the throttle. Default clock.System.
	Clock clock.Clock
}

// NewAuth returns the authentication by token, which must be at least
// MinAdminTokenLen bytes (ErrWeakToken).
func NewAuth(token string, opts AuthOptions) (*Auth, error) {
	if len(token) < MinAdminTokenLen {
		return nil, ErrWeakToken
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	r, err := limit.Rule{Name: "auth-failures", Algorithm: limit.TokenBucket, Limit: AuthFailures, Period: AuthFailurePeriod}.Normalize()
	if err != nil {
		return nil, err
	}
	a := &Auth{
		token: sha256.Sum256([]byte(token)),
		log:   opts.Logger,
		// No janitor goroutine: entries are dropped as inserts need room.
		throttle: memstore.New(memstore.Options{Clock: opts.Clock, MaxKeys: 100_000, SweepInterval: -1}),
		rules:    []limit.Rule{r},
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratelimiter_admin_auth_failures_total",
			Help: "Requests that needed the admin token and did not carry it, by reason: missing, invalid, or throttled (the client address failed too often).",
		}, []string{"reason"}),
	}
	if opts.Registerer != nil {
		if err := opts.Registerer.Register(a.failures); err != nil {
			return nil, fmt.Errorf("httpapi: register auth metrics: %w", err)
		}
	}
	return a, nil
}

// Wrap answers 401 to a request of next without the token, and 429 to any
// request from an address that failed too often lately.
func (a *Auth) Wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if err != nil {
			host = r.RemoteAddr
		}
		key := "auth:" + host
		if v, err := a.throttle.Apply(context.Background(), store.Request{Key: key, Rules: a.rules, Cost: 0}); err == nil && !v.Allowed {
			a.failures.WithLabelValues("throttled").Inc()
			w.Header().Set(headers.RetryAfter, strconv.FormatInt(max(1, headers.CeilSeconds(v.RetryAfter)), 10))
			writeError(w, http.StatusTooManyRequests, "admin API: too many failed authentications from this address; retry later")
			return
		}
		reason := ""
		scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || token == "" {
			reason = "missing"
		} else if got := sha256.Sum256([]byte(strings.TrimSpace(token))); subtle.ConstantTimeCompare(got[:], a.token[:]) != 1 {
			reason = "invalid"
		}
		if reason == "" {
			next.ServeHTTP(w, r)
			return
		}
		a.throttle.Apply(context.Background(), store.Request{Key: key, Rules: a.rules, Cost: 1})
		a.failures.WithLabelValues(reason).Inc()
		path := r.URL.Path
		if len(path) > maxLoggedPath {
			path = path[:maxLoggedPath] + "...(" + strconv.Itoa(len(r.URL.Path)) + " bytes)"
		}
		a.log.Warn("admin API: authentication failed", "reason", reason, "remote", host, "method", truncate(r.Method, 16), "path", path)
		if reason == "missing" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="ratelimiter-admin"`)
			writeError(w, http.StatusUnauthorized, "admin API: missing bearer token")
			return
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="ratelimiter-admin", error="invalid_token"`)
		writeError(w, http.StatusUnauthorized, "admin API: invalid token")
	})
}

// errNoAuth is NewAdmin's error without a token or an Auth.
var errNoAuth = errors.New("httpapi: NewAdmin needs AdminOptions.Auth or a Token")
