// Package overridestest holds the conformance suite every overrides.Store
// passes with the same expected results (the file store, the Redis one).
package overridestest

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// T0 is the instant the conformance suite's overrides are set at.
var T0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// Override is the suite's override of subject in ns: one limit patched to
// lim (and more), expiring at expires unless that is zero.
func Override(ns, subject string, lim int64, expires time.Time) policy.Override {
	return policy.Override{Namespace: ns, Subject: subject, ExpiresAt: expires,
		Limits:    map[string]policy.Patch{"per-minute": {Limit: lim, Burst: 7, Period: 2 * time.Minute, Algorithm: limit.LeakyBucket}},
		UpdatedAt: T0,
	}
}

// Subjects lists the subjects of overrides, in order.
func Subjects(list []policy.Override) []string {
	var out []string
	for _, o := range list {
		out = append(out, o.Subject)
	}
	return out
}

// Conformance runs the same sequence against any Store, with the same
// expected results.
func Conformance(t *testing.T, s overrides.Store) {
	ctx := context.Background()
	if got, err := s.Load(ctx, "orders"); err != nil || len(got) != 0 {
		t.Fatalf("empty load: %v %v", got, err)
	}
	want := Override("orders", "user-42", 500, T0.Add(time.Hour))
	for _, o := range []policy.Override{want, Override("orders", "a b/c", 1, time.Time{}), Override("payments", "user-42", 2, time.Time{})} {
		if err := s.Put(ctx, o, 3); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.Load(ctx, "orders")
	if err != nil || !reflect.DeepEqual(Subjects(got), []string{"a b/c", "user-42"}) {
		t.Fatalf("load: %v %v", Subjects(got), err)
	}
	if !reflect.DeepEqual(got[1], want) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got[1], want)
	}
	// Replacing does not count against the maximum; a new subject does.
	if err := s.Put(ctx, Override("orders", "user-42", 600, time.Time{}), 2); err != nil {
		t.Fatalf("replace at the maximum: %v", err)
	}
	if err := s.Put(ctx, Override("orders", "third", 1, time.Time{}), 2); !errors.Is(err, overrides.ErrTooMany) {
		t.Fatalf("over the maximum: %v", err)
	}
	if ok, err := s.Delete(ctx, "orders", "a b/c"); !ok || err != nil {
		t.Fatalf("delete: %v %v", ok, err)
	}
	if ok, err := s.Delete(ctx, "orders", "a b/c"); ok || err != nil {
		t.Fatalf("delete again: %v %v", ok, err)
	}
	// Expiry removes only what has expired.
	s.Put(ctx, Override("orders", "short", 1, T0.Add(time.Second)), 10)
	s.Put(ctx, Override("orders", "long", 1, T0.Add(time.Hour)), 10)
	if err := s.DeleteExpired(ctx, "orders", []string{"short", "long", "user-42", "missing"}, T0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Load(ctx, "orders")
	if !reflect.DeepEqual(Subjects(got), []string{"long", "user-42"}) {
		t.Fatalf("after expiry: %v", Subjects(got))
	}
	if got, _ := s.Load(ctx, "payments"); len(got) != 1 {
		t.Fatalf("payments: %v", got)
	}
	if err := s.Put(ctx, Override("", "x", 1, time.Time{}), 10); err == nil {
		t.Fatal("empty namespace accepted")
	}
	// An override of a descriptor: its subject starts with a control
	// character and holds escaped entries.
	d := Override("edge", policy.DescriptorSubject([]policy.Entry{{Key: "route", Value: "POST /orders"}, {Key: "user", Value: "42"}}, nil), 7, time.Time{})
	if err := s.Put(ctx, d, 10); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(ctx, "edge"); err != nil || len(got) != 1 || !reflect.DeepEqual(got[0], d) {
		t.Fatalf("a descriptor's override: %+v %v", got, err)
	}
}
