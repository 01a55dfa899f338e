package middleware

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// Remote is a ratelimiter service reached over the network: a
// *client.Client (HTTP, checks of concurrent calls batched into one
// POST /v1/checks) or a *grpcclient.Client (one shared CheckStream).
type Remote interface {
	Check(ctx context.Context, req client.Request) (client.Result, error)
}

// ErrUnavailable wraps a remote check that got no decision: the service
// unreachable, no answer within the client's timeout, or a 5xx answer
// (the service overloaded or its store down with a fail-closed policy
// answer it could not give). Options.FailOpen decides what such a request
// gets.
var ErrUnavailable = errors.New("middleware: rate limiter unavailable")

// errRemoteBadRequest wraps a 400 from the service: the subject or cost
// this middleware sent was refused.
var errRemoteBadRequest = errors.New("refused by the rate limiter")

var retryAfterOne = []string{"1"}

// NewRemote returns the middleware for the service c reaches: each
// request is checked there against opts.Namespace, and answered exactly as
// New answers it in process (the same headers, statuses and bodies, the
// same shaping delay), with two differences. The subject and the cost are
// read from Options.SubjectHeader and Options.CostHeader, since the
// service's policy is not known here (so a reload that changes a
// namespace's subject_header does not reach this side), and the namespace's
// request_descriptors are not built. And a check that gets no decision
// (ErrUnavailable) is answered 503, or passed on with Options.FailOpen.
//
// The namespace is not checked now: a namespace the service does not have
// is answered 500 and logged, at each request, until it has it.
func NewRemote(c Remote, opts Options) (func(http.Handler) http.Handler, error) {
	if opts.Namespace == "" {
		return nil, errors.New("middleware: Options.Namespace is required")
	}
	if opts.SubjectHeader == "" {
		opts.SubjectHeader = "X-User-ID"
	}
	m := &limiter{remote: c, o: opts}
	m.check = m.checkRemote
	if m.o.Subject == nil {
		m.o.Subject = func(r *http.Request) (string, error) {
			if s := r.Header.Get(opts.SubjectHeader); s != "" {
				return s, nil
			}
			return "", fmt.Errorf("%w: missing header %s", ErrNoSubject, opts.SubjectHeader)
		}
	}
	if m.o.Cost == nil {
		ns := &policy.Namespace{CostHeader: opts.CostHeader}
		m.o.Cost = func(r *http.Request) (int64, error) { return headers.RequestCost(r, ns) }
	}
	return m.finish(), nil
}

// checkRemote decides r with the remote service and turns its answer
// into the Result New's path renders.
func (m *limiter) checkRemote(r *http.Request) (service.Result, error) {
	subject, err := m.o.Subject(r)
	if err != nil {
		return service.Result{}, err
	}
	cost, err := m.o.Cost(r)
	if err != nil {
		if !errors.Is(err, service.ErrInvalidCost) {
			err = fmt.Errorf("%w: %w", service.ErrInvalidCost, err)
		}
		return service.Result{}, err
	}
	if cost < 1 {
		// Never a peek: a gate admits no request it does not charge for.
		return service.Result{}, fmt.Errorf("%w: %d; a request costs at least 1", service.ErrInvalidCost, cost)
	}
	ans, err := m.remote.Check(r.Context(), client.Request{Namespace: m.o.Namespace, Subject: subject, Cost: cost})
	if err != nil {
		return service.Result{}, m.remoteError(r.Context(), err)
	}
	return fromRemote(m.o.Namespace, subject, cost, &ans)
}

// remoteError classifies a remote check's error for OnError and
// FailOpen.
func (m *limiter) remoteError(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("middleware: %w", ctx.Err()) // the request ended: not the service's failure
	}
	var ce *client.Error
	if !errors.As(err, &ce) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err) // unreachable, or the client's timeout
	}
	switch {
	case ce.Status == http.StatusBadRequest:
		return fmt.Errorf("middleware: %w: %w", errRemoteBadRequest, err)
	case ce.Status == http.StatusNotFound:
		return fmt.Errorf("middleware: %w: %q: %w", policy.ErrUnknownNamespace, m.o.Namespace, err)
	case ce.Status >= 500:
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return fmt.Errorf("middleware: %w", err)
}

// fromRemote is a remote answer as the in-process service's Result: the
// verdict and the limits' names and periods, which is all the headers and
// OnDenied read. Set.Namespace is nil.
func fromRemote(namespace, subject string, cost int64, a *client.Result) (service.Result, error) {
	res := service.Result{Namespace: namespace, Subject: subject, Cost: cost}
	if len(a.Limits) > limit.MaxRules {
		return res, fmt.Errorf("%w: an answer of %d limits (at most %d)", ErrUnavailable, len(a.Limits), limit.MaxRules)
	}
	res.DecidedBy, _ = service.ParseDecidedBy(a.DecidedBy) // an unknown one is left out of the headers
	v := &res.Verdict
	v.Allowed, v.Shadow, v.N = a.Allowed, a.ShadowDenied, len(a.Limits)
	v.RetryAfter, v.Delay = fromMillis(a.RetryAfterMs), fromMillis(a.DelayMs)
	rules := make([]limit.Rule, len(a.Limits))
	for i, l := range a.Limits {
		rules[i] = limit.Rule{Name: l.Name, Limit: l.Limit, Period: fromMillis(l.PeriodMs)}
		v.D[i] = limit.Decision{Allowed: l.RetryAfterMs == 0, Limit: l.Limit, Remaining: l.Remaining,
			ResetAfter: fromMillis(l.ResetAfterMs), RetryAfter: fromMillis(l.RetryAfterMs), Shadow: l.Shadow}
	}
	res.Set.Rules = rules
	return res, nil
}

// fromMillis reads a *_ms field: -1 is limit.RetryNever.
func fromMillis(ms int64) time.Duration {
	if ms == -1 {
		return limit.RetryNever
	}
	return time.Duration(ms) * time.Millisecond
}
