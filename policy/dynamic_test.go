package policy

import (
	"errors"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func baseSnapshot(t *testing.T) *Snapshot {
	t.Helper()
	ns := orders()
	// A third limit whose burst is defaulted, to see it follow the limit.
	ns[0].Rules = append(ns[0].Rules, limit.Rule{Name: "per-second", Algorithm: limit.TokenBucket, Limit: 5, Period: time.Second})
	s, err := New(ns, "v1", t0)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func rulesOf(t *testing.T, s *Snapshot, subject string) []limit.Rule {
	t.Helper()
	set, err := s.Resolve("orders", subject)
	if err != nil {
		t.Fatal(err)
	}
	return set.Rules
}

func TestWithOverridesLayersOnTheFile(t *testing.T) {
	base := baseSnapshot(t)
	ovs := []Override{
		{Namespace: "orders", Subject: "user-42", Limits: map[string]Patch{"per-minute": {Limit: 500}}},
		// vip-1 has a file override {per-minute: limit 1000, burst 200}: the
		// runtime limit wins, the file's burst stays.
		{Namespace: "orders", Subject: "vip-1", Limits: map[string]Patch{"per-minute": {Limit: 5000}, "per-hour": {Limit: 9}}},
		// A defaulted burst follows a raised limit, as in the file.
		{Namespace: "orders", Subject: "fast", Limits: map[string]Patch{"per-second": {Limit: 50}}},
	}
	s, errs := base.WithOverrides(ovs, t0)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if s.Version() != "v1" || !s.LoadedAt().Equal(t0) || s.Base() != base || base.Base() != base {
		t.Fatalf("metadata: %q %v base=%p", s.Version(), s.LoadedAt(), s.Base())
	}
	if r := rulesOf(t, s, "user-42"); r[0].Limit != 500 || r[0].Burst != 20 || r[1].Limit != 1000 {
		t.Errorf("user-42: %+v (an explicit burst stays)", r)
	}
	if r := rulesOf(t, s, "vip-1"); r[0].Limit != 5000 || r[0].Burst != 200 || r[1].Limit != 9 {
		t.Errorf("vip-1: %+v", r)
	}
	if r := rulesOf(t, s, "vip-2"); r[0].Limit != 1000 || r[0].Burst != 200 {
		t.Errorf("vip-2 keeps the file override: %+v", r)
	}
	if r := rulesOf(t, s, "fast"); r[2].Limit != 50 || r[2].Burst != 50 {
		t.Errorf("fast: %+v, want the defaulted burst to follow the limit", r)
	}
	if set, _ := s.Resolve("orders", "someone"); set.Overridden || set.Rules[0].Limit != 100 {
		t.Errorf("others: %+v", set)
	}
	// The base is untouched.
	if r := rulesOf(t, base, "user-42"); r[0].Limit != 100 {
		t.Errorf("base changed: %+v", r)
	}
	if got := s.RuntimeOverrides("orders"); len(got) != 3 || got[0].Subject != "fast" || got[2].Subject != "vip-1" {
		t.Errorf("RuntimeOverrides: %+v", got)
	}
	// A new layer replaces the old one.
	s2, _ := s.WithOverrides(nil, t0)
	if r := rulesOf(t, s2, "vip-1"); r[0].Limit != 1000 || s2.Base() != base || len(s2.RuntimeOverrides("orders")) != 0 {
		t.Errorf("after removing the layer, vip-1: %+v", r)
	}
}

func TestWithOverridesExpiry(t *testing.T) {
	base := baseSnapshot(t)
	p := map[string]Patch{"per-minute": {Limit: 7}}
	s, errs := base.WithOverrides([]Override{
		{Namespace: "orders", Subject: "a", Limits: p, ExpiresAt: t0.Add(time.Minute)},
		{Namespace: "orders", Subject: "b", Limits: p, ExpiresAt: t0.Add(time.Second)},
		{Namespace: "orders", Subject: "gone", Limits: p, ExpiresAt: t0},
		{Namespace: "orders", Subject: "c", Limits: p},
	}, t0)
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	if got := s.RuntimeOverrides("orders"); len(got) != 3 || got[0].Subject != "a" || got[2].Subject != "c" {
		t.Errorf("in force: %+v, want a, b and c (gone expired)", got)
	}
	if set, _ := s.Resolve("orders", "gone"); set.Overridden {
		t.Error("an override expiring at now applies")
	}
	for _, subj := range []string{"a", "b", "c"} {
		if r := rulesOf(t, s, subj); r[0].Limit != 7 {
			t.Errorf("%s: %+v", subj, r)
		}
	}
	if len(base.RuntimeOverrides("orders")) != 0 {
		t.Error("the base has runtime overrides")
	}
}

func TestCheckOverrideRejects(t *testing.T) {
	base := baseSnapshot(t)
	cases := []struct {
		name string
		o    Override
		want error
	}{
		{"unknown namespace", Override{Namespace: "payments", Subject: "s", Limits: map[string]Patch{"x": {Limit: 1}}}, ErrUnknownNamespace},
		{"unknown limit", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-day": {Limit: 1}}}, ErrUnknownLimit},
		{"no limits", Override{Namespace: "orders", Subject: "s"}, ErrInvalid},
		{"empty patch", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {}}}, ErrInvalid},
		{"nine limits", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"a": {Limit: 1}, "b": {Limit: 1}, "c": {Limit: 1},
			"d": {Limit: 1}, "e": {Limit: 1}, "f": {Limit: 1}, "g": {Limit: 1}, "h": {Limit: 1}, "i": {Limit: 1}}}, ErrInvalid},
		{"negative limit", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Limit: -1}}}, ErrInvalid},
		{"negative burst", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Burst: -1}}}, ErrInvalid},
		{"burst on a window", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-hour": {Burst: 5}}}, ErrInvalid},
		{"burst with a switch to a window", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Burst: 5, Algorithm: limit.FixedWindow}}}, ErrInvalid},
		{"bad algorithm", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Algorithm: 99}}}, limit.ErrUnknownAlgorithm},
		{"limit out of bounds", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Limit: limit.MaxLimit + 1}}}, limit.ErrInvalidRule},
		{"period not whole ms", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Period: time.Millisecond + 1}}}, limit.ErrInvalidRule},
		{"bad subject", Override{Namespace: "orders", Subject: "a\nb", Limits: map[string]Patch{"per-minute": {Limit: 1}}}, ErrInvalid},
		{"expired", Override{Namespace: "orders", Subject: "s", Limits: map[string]Patch{"per-minute": {Limit: 1}}, ExpiresAt: t0}, ErrExpired},
	}
	for _, c := range cases {
		_, err := base.CheckOverride(c.o, t0)
		if !errors.Is(err, c.want) || !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
		if c.name == "expired" {
			continue
		}
		// WithOverrides leaves it out and says why.
		s, errs := base.WithOverrides([]Override{c.o}, t0)
		if len(errs) != 1 || !errors.Is(errs[0], c.want) || len(s.RuntimeOverrides(c.o.Namespace)) != 0 {
			t.Errorf("%s: WithOverrides errors %v", c.name, errs)
		}
	}
	// A switch to a window algorithm drops the file's burst of vip-1.
	rules, err := base.CheckOverride(Override{Namespace: "orders", Subject: "vip-1",
		Limits: map[string]Patch{"per-minute": {Algorithm: limit.FixedWindow}}}, t0)
	if err != nil || rules[0].Algorithm != limit.FixedWindow || rules[0].Limit != 1000 || rules[0].Burst != 0 {
		t.Errorf("switch to a window: %+v %v", rules, err)
	}
}

// A file reload that drops a limit leaves the runtime overrides of it out,
// and keeps the others.
func TestWithOverridesAfterReloadDropsWhatNoLongerApplies(t *testing.T) {
	ns := orders()
	ns[0].Rules = ns[0].Rules[:1]
	ns[0].Overrides = nil
	reloaded, err := New(ns, "v2", t0)
	if err != nil {
		t.Fatal(err)
	}
	s, errs := reloaded.WithOverrides([]Override{
		{Namespace: "orders", Subject: "a", Limits: map[string]Patch{"per-hour": {Limit: 5}}},
		{Namespace: "orders", Subject: "b", Limits: map[string]Patch{"per-minute": {Limit: 5}}},
	}, t0)
	if len(errs) != 1 || errs[0].Subject != "a" || !errors.Is(errs[0], ErrUnknownLimit) {
		t.Fatalf("errors: %v", errs)
	}
	if r := rulesOf(t, s, "b"); r[0].Limit != 5 || s.Version() != "v2" {
		t.Fatalf("b: %+v", r)
	}
}
