package rls

import (
	"context"
	"math"
	"time"

	ratelimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// A domain with a descriptor tree (policy.Matcher, from the configuration
// or --envoy-config) answers as envoyproxy/ratelimit does, with two
// improvements. The request is one check of every descriptor at once, all
// or nothing: a request one descriptor denies charges no descriptor
// (envoyproxy/ratelimit charges every descriptor of every request, denied
// or not). And the limits of a node may be any algorithm, several per node.
//
// Per descriptor, in order:
//
//   - no limit (no match, an allow-list entry, replaced): OK;
//   - unlimited: OK, limit_remaining 4294967295;
//   - limited: OK or OVER_LIMIT, current_limit (the binding limit as
//     requests_per_unit per unit, its name the node's name),
//     limit_remaining, and duration_until_reset: for a fixed window, the
//     whole seconds until the window ends (never 0), as envoyproxy/ratelimit
//     computes it; otherwise until the limit is full again. A limit in
//     shadow mode that would deny reads OK with 0 remaining;
//   - blocked (requests_per_unit: 0): OVER_LIMIT with a limit of 0.
//
// A descriptor's hits_addend is its cost (0: checked, not counted), else
// the request's (0 means 1); a descriptor's own limit replaces the tree's.
// overall_code is OVER_LIMIT when the check is denied (with --shadow-mode,
// OK while the statuses still say OVER_LIMIT).

// maxStatus is Envoy's limit_remaining of an unlimited descriptor.
const maxStatus = math.MaxUint32

// tree decides a request to a domain with a descriptor tree.
func (s *Server) tree(ctx context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	descs := req.GetDescriptors()
	check := service.Request{Namespace: req.GetDomain(), Descriptors: make([]service.Descriptor, len(descs))}
	for i, d := range descs {
		sd, err := serviceDescriptor(d, req.GetHitsAddend())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "descriptor %d: %v", i, err)
		}
		check.Descriptors[i] = sd
	}
	if err := s.c.Validate(check); err != nil {
		return nil, grpcError(0, err)
	}
	res, err := s.c.Check(ctx, check)
	if err != nil {
		return nil, grpcError(0, err)
	}
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, len(descs))}
	if !res.Verdict.Allowed {
		resp.OverallCode = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	now := s.opts.Now()
	for i := range res.Descriptors {
		resp.Statuses[i] = treeStatus(&res.Descriptors[i], now)
	}
	if res.Verdict.N > 0 {
		resp.ResponseHeadersToAdd = responseHeaders(&res)
	}
	return resp, nil
}

// serviceDescriptor converts an Envoy descriptor: its entries, its cost
// and its own limit, if any.
func serviceDescriptor(d *ratelimitv3.RateLimitDescriptor, requestHits uint32) (service.Descriptor, error) {
	if d.GetIsNegativeHits() {
		return service.Descriptor{}, errNegativeHits
	}
	sd := service.Descriptor{Cost: cost(d, requestHits)}
	if sd.Cost < 0 {
		return sd, errHitsTooLarge
	}
	sd.Entries = make([]policy.Entry, len(d.GetEntries()))
	for j, e := range d.GetEntries() {
		sd.Entries[j] = policy.Entry{Key: e.GetKey(), Value: e.GetValue()}
	}
	if l := d.GetLimit(); l != nil {
		unit, ok := envoyUnits[l.GetUnit()]
		if !ok {
			return sd, status.Errorf(codes.InvalidArgument, "its own limit has unit %v (want SECOND to YEAR)", l.GetUnit())
		}
		sd.Limit = &policy.DescriptorLimit{RequestsPerUnit: int64(l.GetRequestsPerUnit()), Unit: unit}
	}
	return sd, nil
}

// envoyUnits are the units of a descriptor's own limit, as
// envoyproxy/ratelimit computes them (a month is 30 days, a year 365).
var envoyUnits = map[typev3.RateLimitUnit]time.Duration{
	typev3.RateLimitUnit_SECOND: time.Second,
	typev3.RateLimitUnit_MINUTE: time.Minute,
	typev3.RateLimitUnit_HOUR:   time.Hour,
	typev3.RateLimitUnit_DAY:    24 * time.Hour,
	typev3.RateLimitUnit_MONTH:  30 * 24 * time.Hour,
	typev3.RateLimitUnit_YEAR:   365 * 24 * time.Hour,
}

// treeStatus is one descriptor's status.
func treeStatus(d *service.DescriptorResult, now time.Time) *rlsv3.RateLimitResponse_DescriptorStatus {
	st := &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	m := &d.Match
	switch {
	case m.Unlimited:
		st.LimitRemaining = maxStatus
		return st
	case !m.Limited:
		return st
	case m.Blocked:
		if d.Verdict.N > 0 {
			st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
		}
		r := limit.Rule{Name: m.Name, Algorithm: limit.FixedWindow, Period: m.Unit}
		st.CurrentLimit = currentLimit(&r, 0)
		st.DurationUntilReset = durationpb.New(windowLeft(m.Unit, now))
		return st
	}
	v := &d.Verdict
	if v.N == 0 { // not looked up: the deny cache answered for another descriptor
		r := &m.Rules[0]
		st.CurrentLimit = currentLimit(r, r.Limit)
		st.CurrentLimit.Name = m.Name
		return st
	}
	if !v.Allowed {
		st.Code = rlsv3.RateLimitResponse_OVER_LIMIT
	}
	bi := v.Binding()
	dec, r := &v.D[bi], &m.Rules[bi]
	st.CurrentLimit = currentLimit(r, dec.Limit)
	st.CurrentLimit.Name = m.Name
	st.LimitRemaining = uint32(min(max(dec.Remaining, 0), maxStatus))
	if r.Algorithm == limit.FixedWindow {
		st.DurationUntilReset = durationpb.New(windowLeft(r.Period, now))
	} else {
		st.DurationUntilReset = durationpb.New(dec.ResetAfter)
	}
	return st
}

// windowLeft is the time until the fixed window of length p holding now
// ends, in whole seconds rounded up (never 0: on a boundary, the whole
// window), as envoyproxy/ratelimit reports it.
func windowLeft(p time.Duration, now time.Time) time.Duration {
	left := time.Duration(int64(p) - now.UnixNano()%int64(p))
	return (left + time.Second - 1).Truncate(time.Second)
}

// unknownDomain is envoyproxy/ratelimit's answer to a domain it does not
// have: OK, every descriptor without a limit.
func unknownDomain(n int) *rlsv3.RateLimitResponse {
	resp := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK, Statuses: make([]*rlsv3.RateLimitResponse_DescriptorStatus, n)}
	for i := range resp.Statuses {
		resp.Statuses[i] = &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK}
	}
	return resp
}
