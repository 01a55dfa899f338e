// Package httpapi serves the rate limiter over HTTP: the JSON check API, the
// gate endpoint for reverse proxies, health and readiness probes, the policy
// in use, and Prometheus metrics.
//
// Routes:
//
//	POST /v1/check    {"namespace":"orders","subject":"user-42","cost":1}
//	                  200 allowed, 429 denied; JSON body and rate limit headers
//	POST /v1/checks   [{...},{...}]: up to MaxChecks checks, each subject's in order,
//	                  200 with an array of /v1/check's bodies, each with its "status"
//	ANY  /v1/gate?namespace=orders[&deny_status=403]
//	                  subject from the namespace's subject header, cost from
//	                  X-RateLimit-Cost (default 1); 200 or 429 (or deny_status:
//	                  401 or 403, which nginx's auth_request can map), same
//	                  headers, empty body (nginx auth_request, Caddy forward_auth)
//	GET  /healthz     200 "ok" while the process serves
//	GET  /readyz      200 when the service has a policy and can decide: its store
//	                  answers, or (Redis mode) the failure policies answer for it
//	                  ("degraded: ..."); 503 otherwise
//	GET  /v1/config   the policy in use: file version, load time, runtime override counts;
//	                  behind the admin token when one is set (Options.Auth)
//	     /v1/admin/...  runtime per-subject overrides, behind a bearer token (admin.go);
//	                  only with Options.Admin
//	GET  /metrics     Prometheus exposition of Options.Gatherer
//
// Errors are JSON {"error":"..."} naming the problem: 400 for bad input,
// 404 for an unknown namespace or route, 405 for a wrong method, 413 for a
// body over Options.MaxBodyBytes, 503 when the store fails. A 500 means a bug
// in this program: a panic is recovered, logged with its stack, and answered
// with 500.
//
// Every 200 and 429 of /v1/check and /v1/gate carries RateLimit-Policy and
// RateLimit (draft-ietf-httpapi-ratelimit-headers), X-RateLimit-Limit,
// X-RateLimit-Remaining and X-RateLimit-Reset for the binding limit
// (limit.Verdict.Binding), and a 429 carries Retry-After in whole seconds,
// rounded up, unless the request can never pass (its cost exceeds a limit's
// capacity). They also carry RateLimit-Decided-By, the path that decided:
// "store", "deny-cache" (the subject was known to be denied), or, when the
// store failed or answered nothing within the maximum wait, the namespace's
// failure policy: "local", "open" or "closed" (service.DecidedBy). A check
// the instance shed for overload is a 503 with Retry-After and
// RateLimit-Decided-By: shed. Durations in JSON bodies are milliseconds
// rounded up; -1 means never.
package httpapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/extract"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// DefaultMaxBodyBytes bounds a /v1/check request body unless
// Options.MaxBodyBytes says otherwise.
const DefaultMaxBodyBytes = 64 << 10

// readyTimeout bounds the store probe of /readyz.
const readyTimeout = 2 * time.Second

// Options configure the handler. The zero value is usable.
type Options struct {
	// Logger receives recovered panics and unexpected errors. Default: discard.
	Logger *slog.Logger
	// Gatherer is served on /metrics; nil leaves /metrics unrouted (404).
	Gatherer prometheus.Gatherer
	// MaxBodyBytes bounds the body of /v1/check; larger bodies get 413.
	// Default DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// MaxBatchBodyBytes bounds the body of /v1/checks. Default
	// DefaultMaxBatchBodyBytes.
	MaxBatchBodyBytes int64
	// Admin, when not nil, serves /v1/admin/ (NewAdmin). When nil, those
	// routes answer 404 saying the admin API is not served here.
	Admin http.Handler
	// Auth, when set (an admin token is configured), guards /v1/config:
	// the policy lists per-subject overrides, which are not for anyone
	// who can reach the port.
	Auth *Auth
	// Extract says whom the gate trusts for a client's address, for the
	// request descriptors of a namespace (package extract).
	Extract extract.Options
}

type api struct {
	svc          *service.Service
	log          *slog.Logger
	maxBody      int64
	maxBatchBody int64
	extract      extract.Options
	// readyLogged is when readyz last logged a store error (Unix ns).
	readyLogged atomic.Int64
}

// New returns the handler of every route above, wrapped in panic recovery.
// svc must not be nil: New panics on a nil service, a wiring bug that must
// not reach a listening socket.
func New(svc *service.Service, opts Options) http.Handler {
	if svc == nil {
		panic("httpapi: New called with a nil *service.Service")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if opts.MaxBatchBodyBytes <= 0 {
		opts.MaxBatchBodyBytes = DefaultMaxBatchBodyBytes
	}
	a := &api{svc: svc, log: opts.Logger, maxBody: opts.MaxBodyBytes, maxBatchBody: opts.MaxBatchBodyBytes, extract: opts.Extract}
	mux := http.NewServeMux()
	route := func(method, path string, h http.HandlerFunc, allow string) {
		mux.HandleFunc(method+" "+path, h)
		mux.HandleFunc(path, methodNotAllowed(allow))
	}
	route(http.MethodPost, "/v1/check", a.check, "POST")
	route(http.MethodPost, "/v1/checks", a.checks, "POST")
	mux.HandleFunc("/v1/gate", a.gate)
	route(http.MethodGet, "/healthz", healthz, "GET, HEAD")
	route(http.MethodGet, "/readyz", a.readyz, "GET, HEAD")
	if opts.Auth != nil {
		route(http.MethodGet, "/v1/config", opts.Auth.Wrap(http.HandlerFunc(a.config)).ServeHTTP, "GET, HEAD")
	} else {
		route(http.MethodGet, "/v1/config", a.config, "GET, HEAD")
	}
	if opts.Admin != nil {
		mux.Handle("/v1/admin/", opts.Admin)
	} else {
		mux.HandleFunc("/v1/admin/", adminDisabled("the admin API is not served here: it is off without an admin token, "+
			"and on its own listener when it has one"))
	}
	if opts.Gatherer != nil {
		route(http.MethodGet, "/metrics", promhttp.HandlerFor(opts.Gatherer, promhttp.HandlerOpts{
			ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelError),
		}).ServeHTTP, "GET, HEAD")
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
	return a.recoverer(mux)
}

// recoverer answers 500 to a handler that panicked and logs the panic with
// its stack. http.ErrAbortHandler keeps its meaning (abort the response).
func (a *api) recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			a.log.Error("httpapi: handler panicked", "method", r.Method, "path", r.URL.Path,
				"panic", v, "stack", string(debug.Stack()))
			writeError(w, http.StatusInternalServerError, "internal error")
		}()
		next.ServeHTTP(w, r)
	})
}

func methodNotAllowed(allow string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", allow)
		writeError(w, http.StatusMethodNotAllowed, "method "+r.Method+" not allowed; use "+allow)
	}
}

// bufPool holds response and request body buffers.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

func getBuf() *[]byte { return bufPool.Get().(*[]byte) }

func putBuf(b *[]byte) {
	if cap(*b) > 64<<10 { // do not keep rare giants alive
		return
	}
	*b = (*b)[:0]
	bufPool.Put(b)
}

// check serves POST /v1/check.
func (a *api) check(w http.ResponseWriter, r *http.Request) {
	bp := getBuf()
	defer putBuf(bp)
	body, status, msg := readBody(w, r, (*bp)[:0], a.maxBody)
	*bp = body
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	req, err := decodeCheck(body) // copies the strings out of body
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	// Decided into a pooled Result, not one in this frame: see
	// service.CheckTo.
	res := service.GetResult()
	defer service.PutResult(res)
	if err := a.svc.CheckTo(r.Context(), req, res); err != nil {
		a.writeCheckError(w, err)
		return
	}
	*bp = headers.Set(w.Header(), res, contentTypeJSON, (*bp)[:0])
	*bp = appendCheckBody((*bp)[:0], res)
	w.WriteHeader(verdictStatus(res))
	w.Write(*bp)
}

// readBody reads the whole request body into buf, at most maxBody bytes.
// A non-zero status reports a failure and its message.
func readBody(w http.ResponseWriter, r *http.Request, buf []byte, maxBody int64) ([]byte, int, string) {
	if r.ContentLength > maxBody {
		return buf, http.StatusRequestEntityTooLarge, tooLarge(maxBody)
	}
	if r.Body == nil {
		return buf, 0, ""
	}
	body := http.MaxBytesReader(w, r.Body, maxBody)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := body.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err == nil {
			continue
		}
		var mbe *http.MaxBytesError
		switch {
		case err == io.EOF:
			return buf, 0, ""
		case errors.As(err, &mbe):
			return buf, http.StatusRequestEntityTooLarge, tooLarge(maxBody)
		default:
			return buf, http.StatusBadRequest, "reading request body: " + err.Error()
		}
	}
}

func tooLarge(n int64) string {
	return "request body is larger than " + strconv.FormatInt(n, 10) + " bytes"
}

func verdictStatus(res *service.Result) int {
	if res.Verdict.Allowed {
		return http.StatusOK
	}
	return http.StatusTooManyRequests
}

// writeCheckError answers a failed service.Check: 400 for bad input, 404 for
// an unknown namespace, 503 with Retry-After for a check shed for overload,
// 503 when the store failed, 500 otherwise (a bug, logged).
func (a *api) writeCheckError(w http.ResponseWriter, err error) {
	status, msg := checkErrorStatus(err)
	switch {
	case service.Classify(err) == service.Overloaded:
		headers.SetShed(w.Header())
	case status == http.StatusInternalServerError:
		a.log.Error("httpapi: check failed", "err", err)
	}
	writeError(w, status, msg)
}

// checkErrorStatus is the status and message of a check that failed.
func checkErrorStatus(err error) (int, string) {
	status := headers.ErrorStatus(err)
	switch {
	case service.Classify(err) == service.Overloaded:
		return status, "rate limiter overloaded, retry later: " + err.Error()
	case status == http.StatusServiceUnavailable:
		return status, "rate limit store unavailable: " + err.Error()
	case status == http.StatusInternalServerError:
		return status, "internal error: " + err.Error()
	}
	return status, err.Error()
}

// writeError answers status with {"error":msg}.
func writeError(w http.ResponseWriter, status int, msg string) {
	bp := getBuf()
	defer putBuf(bp)
	*bp = appendError((*bp)[:0], msg)
	h := w.Header()
	h[hdrContentType] = []string{contentTypeJSON}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	w.Write(*bp)
}

// gate serves /v1/gate for any method: reverse proxies forward the original
// request's method. The subject is read from the namespace's subject
// header, the descriptors built as the namespace's request_descriptors say
// (package extract); a request with neither is a 400.
func (a *api) gate(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("namespace")
	if name == "" {
		writeError(w, http.StatusBadRequest, "query parameter namespace is required")
		return
	}
	ns, ok := a.svc.Snapshot().Namespace(name)
	if !ok {
		writeError(w, http.StatusNotFound, "unknown namespace "+strconv.Quote(name))
		return
	}
	if ns.SubjectHeader == "" {
		writeError(w, http.StatusBadRequest, "namespace "+name+" has no subject header configured")
		return
	}
	denyStatus := http.StatusTooManyRequests
	if v := r.URL.Query().Get("deny_status"); v != "" {
		switch v {
		case "401", "403", "429":
			denyStatus, _ = strconv.Atoi(v)
		default:
			writeError(w, http.StatusBadRequest, "query parameter deny_status must be 401, 403 or 429, got "+strconv.Quote(truncate(v, 16)))
			return
		}
	}
	cost, err := headers.RequestCost(r, ns)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	req := service.Request{Namespace: name, Cost: cost}
	if len(ns.Rules) > 0 {
		req.Subject = r.Header.Get(ns.SubjectHeader)
	}
	if len(ns.RequestDescriptors) > 0 {
		if req.Descriptors, err = extract.Descriptors(r, ns, cost, a.extract); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	}
	if req.Subject == "" && len(req.Descriptors) == 0 {
		writeError(w, http.StatusBadRequest, "missing subject header "+ns.SubjectHeader)
		return
	}
	res := service.GetResult() // see check
	defer service.PutResult(res)
	if err := a.svc.CheckTo(r.Context(), req, res); err != nil {
		a.writeCheckError(w, err)
		return
	}
	sb := getBuf()
	defer putBuf(sb)
	*sb = headers.Set(w.Header(), res, "", *sb)
	status := verdictStatus(res)
	if status == http.StatusTooManyRequests {
		status = denyStatus
	}
	w.WriteHeader(status)
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header()[hdrContentType] = []string{contentTypeTextPlain}
	w.Write([]byte("ok\n"))
}

// readyz answers the readiness probe. It says what state the instance is
// in, not why: the store's error names its addresses, which are not for
// anyone who can reach the port; it goes to the log (at most every
// readyLogEvery) and the store metrics instead.
func (a *api) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), readyTimeout)
	defer cancel()
	w.Header()[hdrContentType] = []string{contentTypeTextPlain}
	err := a.svc.Ready(ctx)
	if err != nil {
		if now := time.Now().UnixNano(); now-a.readyLogged.Load() >= int64(readyLogEvery) {
			a.readyLogged.Store(now)
			a.log.Warn("readiness: the store does not answer", "err", err)
		}
	}
	switch {
	case errors.Is(err, service.ErrDegraded):
		// 200: still serving, through the failure policies.
		w.Write([]byte("degraded: the store does not answer; the failure policies decide\n"))
	case err != nil:
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte("not ready: the store cannot decide (closed or failing); see the log\n"))
	default:
		w.Write([]byte("ok\n"))
	}
}

// readyLogEvery bounds how often readyz logs the store's error.
const readyLogEvery = 30 * time.Second
