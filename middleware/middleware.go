// Package middleware rate limits the requests of a Go net/http server: each
// request is checked against one namespace of the policy, for the subject
// read from it, before the wrapped handler runs. It is the in-process
// transport (no network hop: the service and its store run in the Go
// program), and what `ratelimiter serve --proxy-upstream` puts in front of a
// reverse proxy. NewRemote is the same middleware in front of a service
// reached over the network (package client, or client/grpcclient): the
// checks of concurrent requests then share the client's batches.
//
//	svc, err := service.New(memstore.New(memstore.Options{}), snap, service.Options{})
//	...
//	limit, err := middleware.New(svc, middleware.Options{Namespace: "orders"})
//	...
//	http.Handle("POST /orders", limit(placeOrder))
//
// # Model
//
// A request the check allows gets the rate limit headers (see package
// transport/headers) and goes to the handler; when a leaky_bucket limit
// admits it with a delay (shaping), the middleware holds it that long first,
// so requests leave at the limit's steady rate. A request the check denies
// is answered 429 with the headers, Retry-After (unless it can never pass)
// and a JSON body, and never reaches the handler. Store failures are the
// service's business: its Guard answers them with the namespace's
// on_store_error policy, which the middleware renders like any decision.
//
// By default the subject is the value of the namespace's subject_header
// (X-User-ID unless configured), read from the policy in force at each
// request, so a reload that changes it applies at once; a request without
// it is answered 400. That header must come from a trusted hop (an
// authenticating proxy that sets it and drops the client's own): a client
// that sets it itself picks its subject. Without such a hop, limit by
// address with Options.Subject = RemoteAddr. Every request costs 1 by
// default: the cost is not read from the request, whose sender is the one
// being limited. Options change both.
package middleware

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/extract"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// ErrNoSubject is returned by the default subject function when the request
// lacks the namespace's subject header.
var ErrNoSubject = errors.New("middleware: request has no subject")

// RemoteAddr is a Subject function: the client's IP address, as the
// connection reports it (r.RemoteAddr without the port). Use it where no
// trusted hop identifies the caller: a header the client sends itself is
// whatever the client wants, a fresh subject (and a full bucket) per
// request.
func RemoteAddr(r *http.Request) (string, error) {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || host == "" {
		return "", fmt.Errorf("%w: no client address in %q", ErrNoSubject, r.RemoteAddr)
	}
	return host, nil
}

// Options configure the middleware. Namespace is required.
type Options struct {
	// Namespace is the policy namespace every request is checked against.
	Namespace string
	// Subject returns the subject a request is limited as (a user id, an
	// API key, a client address). Default: the value of the namespace's
	// subject_header, or ErrNoSubject when it is absent.
	Subject func(r *http.Request) (string, error)
	// Cost returns what a request costs (0 peeks, charging nothing).
	// Default: headers.RequestCost, 1 unless the namespace names a trusted
	// cost_header, never 0.
	Cost func(r *http.Request) (int64, error)
	// OnError answers a request whose check could not be made: no subject
	// or a bad cost (the error wraps ErrNoSubject, service.ErrInvalidSubject
	// or service.ErrInvalidCost: 400 by default), a namespace the policy does
	// not have (a deployment error: 500, logged), the store closed during
	// shutdown or the request's context ended (503). Default: those statuses with {"error": "..."}.
	OnError func(w http.ResponseWriter, r *http.Request, err error)
	// OnDenied answers a denied request, after the rate limit headers have
	// been set on w. Default: 429 with {"error": "rate limited",
	// "retry_after_ms": N} (N -1 when the request can never pass).
	OnDenied func(w http.ResponseWriter, r *http.Request, res *service.Result)
	// After returns a channel that receives once a shaping delay has
	// passed. Default time.After; tests inject one they fire by hand.
	After func(d time.Duration) <-chan time.Time
	// Logger receives deployment errors (an unknown namespace). Default:
	// discard.
	Logger *slog.Logger
	// Extract says whom to trust for a client's address when the
	// namespace's request_descriptors use it (package extract).
	Extract extract.Options

	// SubjectHeader names the header the default Subject reads, for
	// NewRemote only (in process, the namespace's subject_header does).
	// Default X-User-ID.
	SubjectHeader string
	// CostHeader names a trusted header carrying a request's cost, for
	// NewRemote only (in process, the namespace's cost_header does).
	// Default: none, every request costs 1.
	CostHeader string
	// FailOpen, for NewRemote only, passes a request on, without rate limit
	// headers, when no decision could be had from the service: it is
	// unreachable, answered no decision within the client's timeout, or
	// answered 5xx (ErrUnavailable). Default false: such a request is
	// answered 503 with Retry-After: 1 and never reaches the handler (fail
	// closed). In process, the namespace's on_store_error decides instead.
	FailOpen bool
}

// ClientAddress is a Subject function: the client's address as package
// extract reads it, through the proxies o trusts, an IPv6 client grouped by
// its network.
func ClientAddress(o extract.Options) func(r *http.Request) (string, error) {
	return func(r *http.Request) (string, error) {
		a, err := extract.ClientAddress(r, o)
		if err != nil {
			return "", fmt.Errorf("%w: %w", ErrNoSubject, err)
		}
		return a, nil
	}
}

// New returns the middleware for opts. It checks that the namespace exists
// in the policy now; a later reload that drops it makes requests fail with
// 500 until it is back.
func New(c service.Checker, opts Options) (func(http.Handler) http.Handler, error) {
	if opts.Namespace == "" {
		return nil, errors.New("middleware: Options.Namespace is required")
	}
	if _, ok := c.Snapshot().Namespace(opts.Namespace); !ok {
		return nil, fmt.Errorf("middleware: %w: %q", policy.ErrUnknownNamespace, opts.Namespace)
	}
	m := &limiter{c: c, o: opts}
	m.check = m.checkLocal
	if m.o.Subject == nil {
		m.o.Subject = m.subjectHeader
	}
	if m.o.Cost == nil {
		m.o.Cost = m.costHeader
	}
	return m.finish(), nil
}

// finish sets the defaults both constructors share and returns the
// middleware.
func (m *limiter) finish() func(http.Handler) http.Handler {
	if m.o.OnError == nil {
		m.o.OnError = m.writeError
	}
	if m.o.OnDenied == nil {
		m.o.OnDenied = writeDenied
	}
	if m.o.After == nil {
		m.o.After = time.After
	}
	if m.o.Logger == nil {
		m.o.Logger = slog.New(slog.DiscardHandler)
	}
	return m.wrap
}

type limiter struct {
	c      service.Checker // in process
	remote Remote          // or over the network
	o      Options
	// check decides r: checkLocal or checkRemote.
	check func(r *http.Request) (service.Result, error)
}

func (m *limiter) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, err := m.check(r)
		if err != nil {
			if m.o.FailOpen && errors.Is(err, ErrUnavailable) {
				next.ServeHTTP(w, r)
				return
			}
			m.o.OnError(w, r, err)
			return
		}
		var scratch [256]byte
		headers.Set(w.Header(), &res, "", scratch[:0])
		if !res.Verdict.Allowed {
			m.o.OnDenied(w, r, &res)
			return
		}
		if d := res.Verdict.Delay; d > 0 {
			select {
			case <-m.o.After(d):
			case <-r.Context().Done():
				// The caller left while queued (its unit stays spent), or a
				// deadline ended the wait: never a silent 200.
				writeJSON(w, http.StatusServiceUnavailable, "{\"error\":\"request ended while held for shaping\"}\n")
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}

// checkLocal decides r with the in-process service.
func (m *limiter) checkLocal(r *http.Request) (service.Result, error) {
	req, err := m.request(r)
	if err != nil {
		return service.Result{}, err
	}
	return m.c.Check(r.Context(), req)
}

// request is what r is checked as: its subject and cost, and the
// descriptors the namespace's request_descriptors build from it. A
// namespace that limits descriptors only needs no subject; one with
// request descriptors checks what it has.
func (m *limiter) request(r *http.Request) (service.Request, error) {
	req := service.Request{Namespace: m.o.Namespace}
	ns, ok := m.c.Snapshot().Namespace(m.o.Namespace)
	if !ok {
		return req, fmt.Errorf("middleware: %w: %q", policy.ErrUnknownNamespace, m.o.Namespace)
	}
	cost, err := m.o.Cost(r)
	if err != nil {
		if !errors.Is(err, service.ErrInvalidCost) && !errors.Is(err, policy.ErrUnknownNamespace) {
			err = fmt.Errorf("%w: %w", service.ErrInvalidCost, err)
		}
		return req, err
	}
	req.Cost = cost
	if len(ns.RequestDescriptors) > 0 {
		if req.Descriptors, err = extract.Descriptors(r, ns, cost, m.o.Extract); err != nil {
			return req, fmt.Errorf("%w: %w", ErrNoSubject, err)
		}
	}
	if len(ns.Rules) > 0 {
		subject, err := m.o.Subject(r)
		switch {
		case err == nil:
			req.Subject = subject
		case len(req.Descriptors) == 0:
			return req, err
		}
	}
	if req.Subject == "" && len(req.Descriptors) == 0 {
		return req, fmt.Errorf("%w: no subject and no descriptor", ErrNoSubject)
	}
	return req, nil
}

// subjectHeader is the default Subject: the namespace's subject header in
// the policy in force.
func (m *limiter) subjectHeader(r *http.Request) (string, error) {
	ns, ok := m.c.Snapshot().Namespace(m.o.Namespace)
	if !ok {
		return "", fmt.Errorf("middleware: %w: %q", policy.ErrUnknownNamespace, m.o.Namespace)
	}
	if s := r.Header.Get(ns.SubjectHeader); s != "" {
		return s, nil
	}
	return "", fmt.Errorf("%w: missing header %s", ErrNoSubject, ns.SubjectHeader)
}

// costHeader is the default Cost: headers.RequestCost with the namespace
// in force.
func (m *limiter) costHeader(r *http.Request) (int64, error) {
	ns, ok := m.c.Snapshot().Namespace(m.o.Namespace)
	if !ok {
		return 0, fmt.Errorf("middleware: %w: %q", policy.ErrUnknownNamespace, m.o.Namespace)
	}
	return headers.RequestCost(r, ns)
}

// writeError is the default OnError.
func (m *limiter) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	switch c := service.Classify(err); {
	case c == service.Invalid || errors.Is(err, ErrNoSubject) || errors.Is(err, errRemoteBadRequest):
		status = http.StatusBadRequest
	case c == service.Overloaded:
		headers.SetShed(w.Header())
		status = http.StatusServiceUnavailable
	case errors.Is(err, ErrUnavailable):
		w.Header()[headers.RetryAfter] = retryAfterOne
		status = http.StatusServiceUnavailable
	case c == service.Unavailable, c == service.Canceled, c == service.DeadlineExceeded:
		status = http.StatusServiceUnavailable // never a silent 200 for a request the handler did not see
	default: // an unknown namespace (a deployment error) or a bug
		m.o.Logger.Error("rate limit check failed", "namespace", m.o.Namespace, "path", r.URL.Path, "err", err)
	}
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()}) // escapes whatever the message quotes from the request
	writeJSON(w, status, string(body)+"\n")
}

// writeDenied is the default OnDenied.
func writeDenied(w http.ResponseWriter, _ *http.Request, res *service.Result) {
	ms := headers.CeilMillis(res.Verdict.RetryAfter)
	writeJSON(w, http.StatusTooManyRequests, `{"error":"rate limited","retry_after_ms":`+strconv.FormatInt(ms, 10)+"}\n")
}

func writeJSON(w http.ResponseWriter, status int, body string) {
	h := w.Header()
	h["Content-Type"] = []string{"application/json"}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(status)
	w.Write([]byte(body))
}
