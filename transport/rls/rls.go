// Package rls serves Envoy's rate limit service protocol (gRPC,
// envoy.service.ratelimit.v3.RateLimitService), so that Envoy, Istio and
// other proxies that speak it can use the rate limiter as their global rate
// limit service.
//
// # Mapping
//
// A RateLimitRequest's domain is a namespace of the policy. A namespace
// with a descriptor tree (policy.Matcher: its descriptors, or a domain of
// envoyproxy/ratelimit's configuration) answers as envoyproxy/ratelimit
// does, every descriptor in one all-or-nothing check: see tree.go. A
// namespace without one takes each descriptor as one subject: the descriptor's entries,
// in order, as "key=value" pairs joined by "," with each key and value
// query-escaped, so different descriptors never share a subject:
//
//	domain: orders, descriptor [{remote_address, 10.0.0.7}]  -> subject "remote_address=10.0.0.7"
//	domain: orders, descriptor [{tenant, acme}, {user, 42}]  -> subject "tenant=acme,user=42"
//
// The limits are the namespace's (overrides included), not the
// descriptor's: Envoy's per-descriptor limit overrides are ignored. A
// descriptor's hits_addend, when set, is the cost (0 checks without
// charging); else the request's, whose 0 means unset: 1, as in Envoy.
//
// Descriptors are checked in order, each atomically across its namespace's
// limit set. The request is OVER_LIMIT if any descriptor is; the
// descriptors after the first one over its limit are only peeked (they
// report their remaining and consume nothing), so a request Envoy rejects
// does not spend more budget than it already had to. Descriptors are
// subjects, not a limit set: the ones before a denied descriptor have
// consumed.
//
// Each status carries the binding limit of its descriptor as current_limit
// (requests_per_unit per unit_multiplier units: 5 per 10h is 5 per 10
// HOUR), limit_remaining and duration_until_reset. The response adds the
// decisive descriptor's RateLimit-Policy, RateLimit, X-RateLimit-* and, when
// over the limit, Retry-After headers (package transport/headers) to the
// response Envoy sends.
//
// Errors are gRPC statuses, which Envoy answers with its failure mode
// (failure_mode_deny): InvalidArgument for a request without a domain or
// descriptors, an empty descriptor, negative hits, or a subject or cost the
// service refuses (every descriptor is validated before any is charged); NotFound for a domain the policy does not have; Unavailable
// when the store is closed or the instance shed the check for overload
// (with failure_mode_deny, Envoy then denies: nothing is admitted that the
// limiter did not decide). Store failures are the service's business:
// its Guard answers them with the namespace's on_store_error policy, as
// for every transport.
package rls

import (
	"context"
	"errors"
	"math"
	"net/http"
	"net/url"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// MaxDescriptors bounds the descriptors of one request.
const MaxDescriptors = 64

// Server implements rlsv3.RateLimitServiceServer on a Checker.
type Server struct {
	rlsv3.UnimplementedRateLimitServiceServer
	c    service.Checker
	opts Options
}

// Options tune a Server. The zero value is usable.
type Options struct {
	// UnknownDomainOK answers a domain the policy does not have OK, every
	// descriptor without a limit, as envoyproxy/ratelimit does (serve sets
	// it with --envoy-config). Without it such a request is NotFound: a
	// misspelt domain is an error, not an open door.
	UnknownDomainOK bool
	// Now tells the time of fixed windows' duration_until_reset. Default
	// time.Now.
	Now func() time.Time
}

// New returns a Server deciding with c.
func New(c service.Checker, opts ...Options) *Server {
	s := &Server{c: c}
	if len(opts) > 0 {
		s.opts = opts[0]
	}
	if s.opts.Now == nil {
		s.opts.Now = time.Now
	}
	return s
}

// Register registers s on a gRPC server.
func (s *Server) Register(g grpc.ServiceRegistrar) { rlsv3.RegisterRateLimitServiceServer(g, s) }

// ShouldRateLimit implements the RateLimitService.
func (s *Server) ShouldRateLimit(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	if req.GetDomain() == "" {
		return nil, status.Error(codes.InvalidArgument, "domain is required (it names the namespace)")
	}
	descs := req.GetDescriptors()
	if len(descs) == 0 {
		return nil, status.Error(codes.InvalidArgument, "at least one descriptor is required")
	}
	if len(descs) > MaxDescriptors {
		return nil, status.Errorf(codes.InvalidArgument, "%d descriptors, at most %d", len(descs), MaxDescriptors)
	}
	snap := s.c.Snapshot()
	if _, known := snap.Namespace(req.GetDomain()); !known && s.opts.UnknownDomainOK {
		return unknownDomain(len(descs)), nil
	}
	if snap.HasDescriptors(req.GetDomain()) {
		return s.tree(ctx, req)
	}
	// Every descriptor is validated before any is checked: a request
	// refused for its third descriptor must not have charged the first.
	checks := make([]service.Request, len(descs))
	for i, d := range descs {
		subject, cost, err := describe(d, req.GetHitsAddend())
		if err == nil {
			checks[i] = service.Request{Namespace: req.GetDomain(), Subject: subject, Cost: cost}
			err = s.c.Validate(checks[i])
		}
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "descriptor %d: %v", i, err)
		}
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs))}
	// Decided into two pooled Results, not ones in this frame (see
	// service.CheckTo): the current check's, and the decisive one so far,
	// whose headers go in the response.
	res, best := service.GetResult(), service.GetResult()
	defer service.PutResult(res)
	defer service.PutResult(best)
	var decisive *service.Result // best, once there is one
	for i, check := range checks {
		if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
			check.Cost = 0 // already denied: report, do not consume
		}
		if err := service.CheckTo(s.c, ctx, check, res); err != nil {
			return nil, grpcError(i, err)
		}
		st := descriptorStatus(res)
		resp.Statuses[i] = st
		over := st.Code == rlsv3.RateLimitResponse_OVER_LIMIT && resp.OverallCode == rlsv3.RateLimitResponse_OK
		if over || resp.OverallCode == rlsv3.RateLimitResponse_OK && (decisive == nil || tighter(res, decisive)) {
			if over {
				resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
			}
			res, best = best, res // the next check decides into the old best
			decisive = best
		}
	}
	resp.ResponseHeadersToAdd = responseHeaders(decisive)
	return resp, nil
}

// describe returns a descriptor's subject and cost.
func describe(d *ratelimitv3.RateLimitDescriptor, requestHits uint32) (string, int64, error) {
	entries := d.GetEntries()
	if len(entries) == 0 {
		return "", 0, errors.New("no entries")
	}
	if d.GetIsNegativeHits() {
		return "", 0, errNegativeHits
	}
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(url.QueryEscape(e.GetKey()))
		b.WriteByte('=')
		b.WriteString(url.QueryEscape(e.GetValue()))
	}
	c := cost(d, requestHits)
	if c < 0 {
		return "", 0, errHitsTooLarge
	}
	return b.String(), c, nil
}

var (
	errNegativeHits = errors.New("negative hits (refunds) are not supported")
	errHitsTooLarge = errors.New("hits_addend too large")
)

// cost is a descriptor's cost: its hits_addend, when set (0 included: a
// check that charges nothing), else the request's, where 0 means unset: 1.
// It is -1 for a hits_addend past int64.
func cost(d *ratelimitv3.RateLimitDescriptor, requestHits uint32) int64 {
	if h := d.GetHitsAddend(); h != nil {
		if h.GetValue() > math.MaxInt64 {
			return -1
		}
		return int64(h.GetValue())
	}
	if requestHits == 0 {
		return 1
	}
	return int64(requestHits)
}

// descriptorStatus renders a check's result as a descriptor status: its
// binding limit, remaining and reset.
func descriptorStatus(res *service.Result) *rlsv3.RateLimitResponse_DescriptorStatus {
	st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	v := &res.Verdict
	if !v.Allowed {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	if v.N == 0 {
		return st
	}
	bi := v.Binding()
	d, r := &v.D[bi], &res.Set.Rules[bi]
	st.CurrentLimit = currentLimit(r, d.Limit)
	st.LimitRemaining = uint32(min(max(d.Remaining, 0), 1<<32-1))
	st.DurationUntilReset = durationpb.New(d.ResetAfter)
	return st
}

// units are Envoy's rate limit units, longest first.
var units = []struct {
	d time.Duration
	u rlsv3.RateLimitResponse_RateLimit_Unit
}{
	{24 * time.Hour, rlsv3.RateLimitResponse_RateLimit_DAY},
	{time.Hour, rlsv3.RateLimitResponse_RateLimit_HOUR},
	{time.Minute, rlsv3.RateLimitResponse_RateLimit_MINUTE},
	{time.Second, rlsv3.RateLimitResponse_RateLimit_SECOND},
}

// currentLimit expresses a rule as Envoy's limit: lim per multiplier units
// of the longest unit that divides the period (a period of 1500ms, which no
// unit divides, is UNKNOWN with the rule's name).
func currentLimit(r *limit.Rule, lim int64) *rlsv3.RateLimitResponse_RateLimit {
	cl := &rlsv3.RateLimitResponse_RateLimit{Name: r.Name, RequestsPerUnit: uint32(min(lim, 1<<32-1))}
	switch r.Period { // Envoy's week and month (30 days), exactly
	case 7 * 24 * time.Hour:
		cl.Unit = rlsv3.RateLimitResponse_RateLimit_WEEK
		return cl
	case 30 * 24 * time.Hour:
		cl.Unit = rlsv3.RateLimitResponse_RateLimit_MONTH
		return cl
	case 365 * 24 * time.Hour:
		cl.Unit = rlsv3.RateLimitResponse_RateLimit_YEAR
		return cl
	}
	for _, u := range units {
		if r.Period%u.d == 0 {
			cl.Unit = u.u
			if n := r.Period / u.d; n > 1 {
				cl.UnitMultiplier = wrapperspb.UInt32(uint32(n))
			}
			break
		}
	}
	return cl
}

// tighter reports whether a leaves less of its binding limit than b.
func tighter(a, b *service.Result) bool {
	if a.Verdict.N == 0 || b.Verdict.N == 0 {
		return b.Verdict.N == 0 && a.Verdict.N > 0
	}
	da, db := &a.Verdict.D[a.Verdict.Binding()], &b.Verdict.D[b.Verdict.Binding()]
	// remaining/limit, compared without division
	return da.Remaining*db.Limit < db.Remaining*da.Limit
}

// responseHeaders renders res as the headers Envoy adds to its response.
func responseHeaders(res *service.Result) []*corev3.HeaderValue {
	if res == nil {
		return nil
	}
	h := make(http.Header, len(responseHeaderNames))
	var scratch [256]byte
	headers.Set(h, res, "", scratch[:0])
	out := make([]*corev3.HeaderValue, 0, len(responseHeaderNames))
	for _, n := range responseHeaderNames {
		if v := h[n.canonical]; len(v) > 0 {
			out = append(out, &corev3.HeaderValue{Key: n.lower, Value: v[0]})
		}
	}
	return out
}

// responseHeaderNames are the headers Envoy is asked to add, in the
// lowercase HTTP/2 wants.
var responseHeaderNames = func() (names []struct{ canonical, lower string }) {
	for _, k := range []string{headers.Policy, headers.RateLimit, headers.XLimit, headers.XRemaining, headers.XReset, headers.RetryAfter} {
		names = append(names, struct{ canonical, lower string }{k, strings.ToLower(k)})
	}
	return names
}()

// grpcError maps a check's error to a gRPC status.
func grpcError(i int, err error) error {
	code := codes.Internal
	switch service.Classify(err) {
	case service.Invalid:
		code = codes.InvalidArgument
	case service.UnknownNamespace:
		code = codes.NotFound
	case service.Unavailable, service.Overloaded:
		code = codes.Unavailable
	case service.Canceled:
		code = codes.Canceled
	case service.DeadlineExceeded:
		code = codes.DeadlineExceeded
	}
	return status.Errorf(code, "descriptor %d: %v", i, err)
}
