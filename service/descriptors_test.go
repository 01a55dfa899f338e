package service_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// descriptorSnapshot is a namespace with limits per user (the subject) and
// a tree: 3 per IP, 100 endpoint-wide, an unlimited IP and a blocked one.
func descriptorSnapshot(t testing.TB, failure policy.FailurePolicy) *policy.Snapshot {
	t.Helper()
	snap, err := policy.New([]policy.Namespace{{
		Name:         "orders",
		Rules:        []limit.Rule{tokenBucket("per-user", 5, time.Hour)},
		OnStoreError: failure,
		Descriptors: []policy.Matcher{
			{Key: "remote_address", Rules: []limit.Rule{{Name: "per-ip", Algorithm: limit.FixedWindow, Limit: 3, Period: time.Hour}}},
			{Key: "remote_address", Value: "10.0.0.1", Unlimited: true},
			{Key: "remote_address", Value: "6.6.6.6", Blocked: true, Unit: time.Minute},
			{Key: "endpoint", Value: "orders", Rules: []limit.Rule{{Name: "global", Algorithm: limit.SlidingWindowLog, Limit: 100, Period: time.Hour}}},
		},
	}}, "v1", epoch)
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

func descs(ips ...string) []service.Descriptor {
	out := []service.Descriptor{{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "endpoint", Value: "orders"}}}, Cost: 1}}
	for _, ip := range ips {
		out = append(out, service.Descriptor{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "remote_address", Value: ip}}}, Cost: 1})
	}
	return out
}

// A user, an IP and the endpoint-wide cap in one check: admitted only if
// all admit, and then charged to all; the IP's denial charges neither the
// user nor the endpoint. The result's verdict is the binding part's.
func TestCheckDescriptorsAllOrNothing(t *testing.T) {
	clk := clocktest.New(epoch)
	svc, err := service.New(newMemstore(t, clk), descriptorSnapshot(t, policy.FailLocal), service.Options{Clock: clk})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for i := range 3 {
		res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "u1", Cost: 1, Descriptors: descs("10.0.0.7")})
		if err != nil || !res.Verdict.Allowed {
			t.Fatalf("check %d: %+v %v", i, res, err)
		}
		if len(res.Descriptors) != 2 || res.Descriptors[1].Verdict.D[0].Remaining != int64(2-i) {
			t.Fatalf("check %d: descriptors %+v", i, res.Descriptors)
		}
		if i == 2 && (res.Set.Rules[0].Name != "per-ip" || res.Verdict.D[0].Remaining != 0) {
			t.Fatalf("binding part after 3: %+v %+v", res.Set.Rules, res.Verdict)
		}
	}
	res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "u1", Cost: 1, Descriptors: descs("10.0.0.7")})
	if err != nil || res.Verdict.Allowed || res.Set.Rules[0].Name != "per-ip" || res.Verdict.RetryAfter != time.Hour {
		t.Fatalf("over the IP limit: %+v %v", res, err)
	}
	// Nothing was charged for the denial: the user has 2 left, the endpoint 97.
	peek := func(req service.Request) service.Result {
		r, err := svc.Check(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := peek(service.Request{Namespace: "orders", Subject: "u1", Cost: 0}); r.Verdict.D[0].Remaining != 2 {
		t.Fatalf("user charged for a denied check: %+v", r.Verdict)
	}
	endpointPeek := descs()
	endpointPeek[0].Cost = 0
	if r := peek(service.Request{Namespace: "orders", Descriptors: endpointPeek}); r.Verdict.D[0].Remaining != 97 || r.Descriptors[0].Verdict.D[0].Remaining != 97 {
		t.Fatalf("endpoint charged for a denied check: %+v", r)
	}
	// The same descriptor twice is one part, charged twice.
	r := peek(service.Request{Namespace: "orders", Descriptors: descs("10.0.0.8", "10.0.0.8")})
	if !r.Verdict.Allowed || r.Descriptors[1].Verdict.D[0].Remaining != 1 || r.Descriptors[2].Verdict != r.Descriptors[1].Verdict {
		t.Fatalf("a descriptor twice: %+v", r.Descriptors)
	}
	// Unlimited and unmatched descriptors check nothing.
	r = peek(service.Request{Namespace: "orders", Descriptors: []service.Descriptor{
		{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "remote_address", Value: "10.0.0.1"}}}, Cost: 1},
		{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Key: "nothing", Value: "here"}}}, Cost: 1},
	}})
	if !r.Verdict.Allowed || r.Verdict.N != 0 || !r.Descriptors[0].Match.Unlimited || r.Descriptors[1].Match.Limited {
		t.Fatalf("unlimited and unmatched: %+v", r)
	}
	// A blocked descriptor denies without the store.
	r = peek(service.Request{Namespace: "orders", Subject: "u2", Cost: 1, Descriptors: descs("6.6.6.6")})
	if r.Verdict.Allowed || r.DecidedBy != service.DecidedByPolicy || r.Verdict.RetryAfter != time.Minute {
		t.Fatalf("blocked: %+v", r)
	}
	if r := peek(service.Request{Namespace: "orders", Subject: "u2", Cost: 0}); r.Verdict.D[0].Remaining != 5 {
		t.Fatalf("a blocked check charged the user: %+v", r.Verdict)
	}
}

// Bad descriptors are refused as bad input, before anything is charged.
func TestCheckDescriptorsInvalid(t *testing.T) {
	clk := clocktest.New(epoch)
	svc, _ := service.New(newMemstore(t, clk), descriptorSnapshot(t, policy.FailLocal), service.Options{Clock: clk})
	many := make([]service.Descriptor, service.MaxDescriptors)
	for i := range many {
		many[i] = descs()[0]
	}
	for name, req := range map[string]service.Request{
		"too many":      {Namespace: "orders", Subject: "u", Descriptors: many},
		"negative cost": {Namespace: "orders", Descriptors: []service.Descriptor{{Descriptor: descs()[0].Descriptor, Cost: -1}}},
		"empty key":     {Namespace: "orders", Descriptors: []service.Descriptor{{Descriptor: policy.Descriptor{Entries: []policy.Entry{{Value: "x"}}}}}},
	} {
		if _, err := svc.Check(context.Background(), req); service.Classify(err) != service.Invalid {
			t.Errorf("%s: %v, want Invalid", name, err)
		}
	}
	if _, err := svc.Check(context.Background(), service.Request{Namespace: "nope", Descriptors: descs()}); !errors.Is(err, policy.ErrUnknownNamespace) {
		t.Errorf("unknown namespace: %v", err)
	}
}

// Shadow mode admits what the limits deny, and says so; a denial still
// charges nothing.
func TestShadowMode(t *testing.T) {
	clk := clocktest.New(epoch)
	svc, _ := service.New(newMemstore(t, clk), descriptorSnapshot(t, policy.FailLocal), service.Options{Clock: clk, Shadow: true})
	ctx := context.Background()
	for i := range 7 {
		res, err := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "u", Cost: 1})
		if err != nil || !res.Verdict.Allowed || res.Shadowed != (i >= 5) || res.Verdict.Shadow != (i >= 5) {
			t.Fatalf("check %d: %+v %v", i, res, err)
		}
	}
	if res, _ := svc.Check(ctx, service.Request{Namespace: "orders", Subject: "u", Cost: 0}); res.Verdict.D[0].Remaining != 0 || res.Verdict.D[0].Allowed {
		t.Fatalf("after the shadowed denials: %+v", res.Verdict)
	}
}

// With a Guard, a request of several parts goes to the store in one call;
// a failing store hands it to the failure policy (the local share, open,
// closed) as a whole, and a part known denied answers from the deny cache.
func TestGuardedDescriptors(t *testing.T) {
	f := &flaky{st: newMemstore(t, clocktest.New(epoch))}
	svc := newGuarded(t, f, descriptorSnapshot(t, policy.FailLocal), nil, service.Guard{Breaker: service.Breaker{Disabled: true},
		Instances: func() int { return 2 }})
	ctx := context.Background()
	req := service.Request{Namespace: "orders", Subject: "u", Cost: 1, Descriptors: descs("10.0.0.9")}
	for i := range 3 {
		if res, err := svc.Check(ctx, req); err != nil || !res.Verdict.Allowed || res.DecidedBy != service.DecidedByStore {
			t.Fatalf("check %d: %+v %v", i, res, err)
		}
	}
	calls := f.calls.Load()
	res, err := svc.Check(ctx, req)
	if err != nil || res.Verdict.Allowed || f.calls.Load() != calls+1 {
		t.Fatalf("the IP's denial: %+v %v (%d store calls)", res, err, f.calls.Load()-calls)
	}
	res, err = svc.Check(ctx, req)
	if err != nil || res.Verdict.Allowed || res.DecidedBy != service.DecidedByDenyCache || f.calls.Load() != calls+1 {
		t.Fatalf("known denied: %+v %v", res, err)
	}
	// The store fails: the local share of each part answers (3 per IP over
	// 2 instances: 2, less the seeded use).
	f.mode.Store(modeFail)
	res, err = svc.Check(ctx, service.Request{Namespace: "orders", Subject: "w", Cost: 1, Descriptors: descs("10.0.0.10")})
	if err != nil || !res.Verdict.Allowed || res.DecidedBy != service.DecidedByLocal || !errors.Is(res.StoreError, store.ErrUnavailable) {
		t.Fatalf("local fallback: %+v %v", res, err)
	}
	if d := res.Descriptors[1].Verdict.D[0]; d.Limit != 2 || d.Remaining != 1 {
		t.Fatalf("the IP's local share: %+v", d)
	}
}
