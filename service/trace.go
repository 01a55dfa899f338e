package service

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Spans of a check, with Options.Tracer (package tracing sets one up):
//
//	ratelimiter.check      the whole check: namespace, cost, allowed, decided_by, the binding limit;
//	                       an error status for an error; an event when a failure policy answered
//	ratelimiter.policy     resolving the namespace and subject to a limit set (timed apart, before the check)
//	ratelimiter.store      the store call (Redis or memory): rules, lease, allowed, error
//	ratelimiter.fallback   the namespace's failure policy answering: policy, the store's error
//
// The subject is not an attribute: it is personal data, and traces leave
// the process. Without a Tracer none of this runs.

// checkTraced is Check within a ratelimiter.check span. (A function of its
// own, so that Check without a Tracer has no defer and no span.)
func (s *Service) checkTraced(ctx context.Context, req Request, res *Result) (err error) {
	ctx, span := s.tracer.Start(ctx, "ratelimiter.check")
	defer span.End()
	// The policy's resolution, timed apart: check resolves the request
	// again (one map lookup), so that the untraced path has no span code.
	_, ps := s.tracer.Start(ctx, "ratelimiter.policy")
	s.snap.Load().Resolve(req.Namespace, req.Subject)
	ps.End()
	start := s.clock.Now()
	err = s.check(ctx, req, start, res)
	if s.shadow && err == nil && !res.Verdict.Allowed {
		shadow(res)
	}
	if s.obs != nil {
		s.observe(res, err, start)
	}
	if !span.IsRecording() {
		return err // not sampled: no attribute is built
	}
	span.SetAttributes(
		attribute.String("ratelimiter.namespace", req.Namespace),
		attribute.Int64("ratelimiter.cost", req.Cost),
		attribute.Bool("ratelimiter.allowed", err == nil && res.Verdict.Allowed),
		attribute.String("ratelimiter.decided_by", res.DecidedBy.String()))
	if i := res.Verdict.Binding(); i >= 0 && i < len(res.Set.Rules) {
		span.SetAttributes(attribute.String("ratelimiter.limit", res.Set.Rules[i].Name))
	}
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	return err
}

// tracedStore puts every store call in a ratelimiter.store span.
type tracedStore struct {
	store.Store
	tracer trace.Tracer
}

func (t tracedStore) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	ctx, span := t.tracer.Start(ctx, "ratelimiter.store")
	defer span.End()
	v, err := t.Store.Apply(ctx, req)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("ratelimiter.rules", len(req.Rules)), attribute.Bool("ratelimiter.lease", req.Lease))
		endStoreSpan(span, v.Allowed, err)
	}
	return v, err
}

func (t tracedStore) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	ctx, span := t.tracer.Start(ctx, "ratelimiter.store")
	defer span.End()
	ok, err := t.Store.ApplyAll(ctx, reqs, out)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int("ratelimiter.parts", len(reqs)))
		endStoreSpan(span, ok, err)
	}
	return ok, err
}

func endStoreSpan(span trace.Span, allowed bool, err error) {
	span.SetAttributes(attribute.Bool("ratelimiter.allowed", err == nil && allowed))
	if err != nil {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
}

// fallbackSpan starts the ratelimiter.fallback span of a failure policy
// answering for cause; it returns nil without a Tracer.
func (s *Service) fallbackSpan(ctx context.Context, res *Result, cause error) trace.Span {
	if s.tracer == nil {
		return nil
	}
	_, span := s.tracer.Start(ctx, "ratelimiter.fallback")
	if span.IsRecording() {
		span.SetAttributes(
			attribute.String("ratelimiter.on_store_error", res.Set.Namespace.OnStoreError.String()),
			attribute.String("ratelimiter.store_error", cause.Error()))
	}
	return span
}
