package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

func orders() []Namespace {
	return []Namespace{{
		Name:          "orders",
		SubjectHeader: "X-User-ID",
		Rules: []limit.Rule{
			{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Minute, Burst: 20},
			{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: 1000, Period: time.Hour},
		},
		Overrides: []Override{
			{Subject: "vip-1", Limits: map[string]Patch{"per-minute": {Limit: 1000, Burst: 200}}},
			{Subject: "vip-2", Limits: map[string]Patch{"per-minute": {Limit: 1000, Burst: 200}}},
			{Subject: "abuser", Limits: map[string]Patch{"per-hour": {Limit: 10, Algorithm: limit.SlidingWindowLog}}},
		},
	}}
}

func TestResolve(t *testing.T) {
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s, err := New(orders(), "v1", at)
	if err != nil {
		t.Fatal(err)
	}
	if s.Version() != "v1" || !s.LoadedAt().Equal(at) || strings.Join(s.Names(), ",") != "orders" {
		t.Fatalf("metadata: %q %v %v", s.Version(), s.LoadedAt(), s.Names())
	}
	set, err := s.Resolve("orders", "user-42")
	if err != nil {
		t.Fatal(err)
	}
	if set.Overridden || len(set.Rules) != 2 || set.Rules[0].Burst != 20 || set.Rules[1].Limit != 1000 || set.Namespace.SubjectHeader != "X-User-ID" {
		t.Fatalf("default set: %+v", set)
	}
	vip, _ := s.Resolve("orders", "vip-2")
	if !vip.Overridden || vip.Rules[0].Limit != 1000 || vip.Rules[0].Burst != 200 || vip.Rules[1].Limit != 1000 {
		t.Fatalf("vip set: %+v", vip.Rules)
	}
	ab, _ := s.Resolve("orders", "abuser")
	if ab.Rules[1].Algorithm != limit.SlidingWindowLog || ab.Rules[1].Limit != 10 || ab.Rules[0].Limit != 100 {
		t.Fatalf("abuser set: %+v", ab.Rules)
	}
	if _, err := s.Resolve("payments", "u"); !errors.Is(err, ErrUnknownNamespace) {
		t.Fatalf("unknown namespace: %v", err)
	}
}

func TestBurstFollowsARaisedLimit(t *testing.T) {
	ns := []Namespace{{Name: "a", Rules: []limit.Rule{{Name: "r", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Second}},
		Overrides: []Override{{Subject: "s", Limits: map[string]Patch{"r": {Limit: 50}}}}}}
	s, err := New(ns, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	set, _ := s.Resolve("a", "s")
	if set.Rules[0].Burst != 50 {
		t.Fatalf("burst = %d; a burst that defaulted to the limit must follow the override", set.Rules[0].Burst)
	}
	explicit := []Namespace{{Name: "a", Rules: []limit.Rule{{Name: "r", Algorithm: limit.TokenBucket, Limit: 10, Period: time.Second, Burst: 10}},
		Overrides: []Override{{Subject: "s", Limits: map[string]Patch{"r": {Limit: 50}}}}}}
	s, err = New(explicit, "", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	if set, _ := s.Resolve("a", "s"); set.Rules[0].Burst != 10 {
		t.Fatalf("burst = %d; an explicit burst must stay when an override raises the limit", set.Rules[0].Burst)
	}
}

func TestNewReportsEveryProblemWithItsPlace(t *testing.T) {
	ns := []Namespace{
		{Name: "bad name!", Rules: []limit.Rule{{Name: "r", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second}}},
		{Name: "orders", Rules: []limit.Rule{
			{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: -5, Period: time.Minute},
			{Name: "per-minute", Algorithm: limit.FixedWindow, Limit: 5, Period: time.Minute},
		}, Overrides: []Override{
			{Subject: "u", Limits: map[string]Patch{"nope": {Limit: 1}}},
			{Subject: "", Limits: map[string]Patch{"per-minute": {Limit: 1}}},
			{Subject: "v", Limits: map[string]Patch{}},
		}},
		{Name: "orders", Rules: []limit.Rule{{Name: "r", Algorithm: limit.TokenBucket, Limit: 1, Period: time.Second}}},
		{Name: "empty"},
	}
	_, err := New(ns, "", time.Time{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err = %v", err)
	}
	for _, want := range []string{
		`namespaces[bad name!].name: "bad name!" must be`,
		`namespaces[orders].limits[per-minute].limit: -5 is outside`,
		`namespaces[orders].limits[per-minute].name: duplicate limit name`,
		`namespaces[orders].overrides[u].limits[nope]: unknown limit: the namespace has per-minute, per-minute`,
		`namespaces[orders].overrides[].subject: subject must be 1 to 256 bytes, got 0`,
		`namespaces[orders].overrides[v].limits: 0 limits, want 1 to 8`,
		`namespaces[orders].name: duplicate namespace`,
		`namespaces[empty].limits: a namespace needs limits (per subject) or descriptors`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
	if _, err := New(nil, "", time.Time{}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("no namespaces: %v", err)
	}
}

func TestValidateSubject(t *testing.T) {
	for _, ok := range []string{"u", "user-42", "ü", strings.Repeat("a", MaxSubjectLen), "{tag}:x"} {
		if err := ValidateSubject(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", strings.Repeat("a", MaxSubjectLen+1), "a\nb", "a\x00", "\x7f", "a\xff"} {
		if err := ValidateSubject(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestResolveDoesNotAllocate(t *testing.T) {
	s, _ := New(orders(), "", time.Time{})
	if n := testing.AllocsPerRun(100, func() { s.Resolve("orders", "vip-1") }); n != 0 {
		t.Fatalf("Resolve allocates %v times", n)
	}
}

// A file override that gives a burst to a window algorithm is refused by
// New itself, not only by the configuration checker (which adds the line):
// a programmatic policy cannot lose it silently.
func TestNewRefusesBurstOnAWindow(t *testing.T) {
	nss := orders()
	nss[0].Overrides = []Override{{Subject: "vip", Limits: map[string]Patch{"per-hour": {Burst: 5}}}}
	_, err := New(nss, "v1", time.Time{})
	if err == nil || !strings.Contains(err.Error(), "overrides[vip].limits[per-hour].burst: applies only to token_bucket, gcra and leaky_bucket, not sliding_window_counter") {
		t.Fatalf("burst on a window in a file override: %v", err)
	}
}
