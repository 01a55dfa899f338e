package policy

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

func fw(name string, n int64, per time.Duration) []limit.Rule {
	return []limit.Rule{{Name: name, Algorithm: limit.FixedWindow, Limit: n, Period: per}}
}

func entries(kv ...string) []Entry {
	var out []Entry
	for i := 0; i+1 < len(kv); i += 2 {
		out = append(out, Entry{kv[i], kv[i+1]})
	}
	return out
}

func resolveOne(t *testing.T, s *Snapshot, ns string, kv ...string) Match {
	t.Helper()
	out := make([]Match, 1)
	if err := s.ResolveDescriptors(ns, []Descriptor{{Entries: entries(kv...)}}, out); err != nil {
		t.Fatal(err)
	}
	return out[0]
}

func limitOf(m Match) int64 {
	if !m.Limited || m.Blocked {
		return -1
	}
	return m.Rules[0].Limit
}

func mustNew(t *testing.T, ns ...Namespace) *Snapshot {
	t.Helper()
	s, err := New(ns, "v", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// The walk of envoyproxy/ratelimit: a limit applies only when the
// descriptor is as deep as the node it ends on; a node with a limit and
// children still answers the shorter descriptor; a placeholder answers
// nothing.
func TestDescriptorDepth(t *testing.T) {
	s := mustNew(t, Namespace{Name: "d", Descriptors: []Matcher{
		{Key: "k", Rules: fw("m", 3, time.Minute), Descriptors: []Matcher{{Key: "s", Rules: fw("h", 4, time.Hour)}}},
		{Key: "nolimit", Descriptors: []Matcher{{Key: "s", Rules: fw("h", 5, time.Hour)}}},
		{Key: "leaf", Rules: fw("h", 6, time.Hour)},
	}})
	for _, c := range []struct {
		kv   []string
		want int64
	}{
		{[]string{"k", "1"}, 3},
		{[]string{"k", "1", "s", "2"}, 4},
		{[]string{"k", "1", "s", "2", "t", "3"}, -1},
		{[]string{"k", "1", "zz", "2"}, -1},
		{[]string{"nolimit", "1"}, -1},
		{[]string{"nolimit", "1", "s", "2"}, 5},
		{[]string{"leaf", "1", "more", "2"}, -1},
		{[]string{"leaf", ""}, 6},
		{[]string{"other", "x"}, -1},
	} {
		if got := limitOf(resolveOne(t, s, "d", c.kv...)); got != c.want {
			t.Errorf("%v: limit %d, want %d", c.kv, got, c.want)
		}
	}
}

// Exact value first, then patterns in configuration order, then the key
// alone; an allow-list entry (no limit, no children) does not fall back to
// the key-only limit; a pattern's '*' matches any run, the empty one too.
func TestDescriptorPrecedenceAndPatterns(t *testing.T) {
	s := mustNew(t, Namespace{Name: "d", Descriptors: []Matcher{
		{Key: "file", Value: "test1", Rules: fw("a", 50, time.Minute)},
		{Key: "file", Value: "test*", ShareThreshold: true, Rules: fw("a", 100, time.Minute)},
		{Key: "file", Value: "t*", Rules: fw("a", 7, time.Minute)},
		{Key: "key2", Rules: fw("a", 20, time.Minute)},
		{Key: "key2", Value: "value3"},
		{Key: "path", Value: "/api/*/action", Rules: fw("a", 21, time.Minute)},
		{Key: "route", Value: "/api/*/resource/*/action", Rules: fw("a", 22, time.Minute)},
	}})
	for _, c := range []struct {
		kv   []string
		want int64
	}{
		{[]string{"file", "test1"}, 50},
		{[]string{"file", "test2"}, 100},
		{[]string{"file", "test"}, 100},
		{[]string{"file", "tx"}, 7},
		{[]string{"file", "x"}, -1},
		{[]string{"key2", "value3"}, -1},
		{[]string{"key2", "value4"}, 20},
		{[]string{"path", "/api/123/action"}, 21},
		{[]string{"path", "/api/user-id/action"}, 21},
		{[]string{"path", "/api/123/other"}, -1},
		{[]string{"route", "/api/v1/resource/123/action"}, 22},
		{[]string{"route", "/api/v1/resource/123/other"}, -1},
		{[]string{"file_test", "1"}, -1}, // keys match exactly: no "key_value" confusion
	} {
		if got := limitOf(resolveOne(t, s, "d", c.kv...)); got != c.want {
			t.Errorf("%v: limit %d, want %d", c.kv, got, c.want)
		}
	}
	// A shared pattern keeps one state for every value; a plain pattern one
	// per value.
	a, b := resolveOne(t, s, "d", "file", "test2"), resolveOne(t, s, "d", "file", "test3")
	if a.Key != b.Key || a.Key != Key("d", DescriptorSubject(entries("file", "test*"), nil)) {
		t.Fatalf("shared keys %q %q", a.Key, b.Key)
	}
	if resolveOne(t, s, "d", "path", "/api/1/action").Key == resolveOne(t, s, "d", "path", "/api/2/action").Key {
		t.Fatal("a pattern without share_threshold shared one state")
	}
}

// Replaces works across the descriptors of one request; unlimited and
// blocked nodes answer without a store key.
func TestDescriptorReplacesUnlimitedBlocked(t *testing.T) {
	s := mustNew(t, Namespace{Name: "d", Descriptors: []Matcher{
		{Key: "key_1", Value: "value_1", Descriptors: []Matcher{{Key: "user", Value: "bkthomps", Name: "specific_limit", Rules: fw("a", 5, time.Second)}}},
		{Key: "key_2", Value: "value_2", Descriptors: []Matcher{{Key: "user", Value: "bkthomps", Replaces: []string{"specific_limit"}, Rules: fw("a", 10, time.Second)}}},
		{Key: "ldap", Unlimited: true},
		{Key: "remote_address", Value: "50.0.0.5", Blocked: true, Unit: time.Second},
	}})
	out := make([]Match, 2)
	ds := []Descriptor{{Entries: entries("key_1", "value_1", "user", "bkthomps")}, {Entries: entries("key_2", "value_2", "user", "bkthomps")}}
	if err := s.ResolveDescriptors("d", ds, out); err != nil {
		t.Fatal(err)
	}
	if !out[0].Replaced || out[0].Limited || out[0].Key != "" || limitOf(out[1]) != 10 {
		t.Fatalf("replaced: %+v %+v", out[0], out[1])
	}
	if m := resolveOne(t, s, "d", "key_1", "value_1", "user", "bkthomps"); limitOf(m) != 5 || m.Name != "specific_limit" {
		t.Fatalf("alone: %+v", m)
	}
	if m := resolveOne(t, s, "d", "ldap", "x"); !m.Unlimited || m.Limited || m.Key != "" {
		t.Fatalf("unlimited: %+v", m)
	}
	if m := resolveOne(t, s, "d", "remote_address", "50.0.0.5"); !m.Blocked || !m.Limited || m.Key != "" || m.Unit != time.Second || m.Stat != "d.remote_address_50_0_0_5" {
		t.Fatalf("blocked: %+v", m)
	}
}

// Metric keys as envoyproxy/ratelimit's tests and README examples have them.
func TestDescriptorStatKeys(t *testing.T) {
	s := mustNew(t,
		Namespace{Name: "example8", Descriptors: []Matcher{
			{Key: "key1", DetailedMetric: true, Rules: fw("a", 10, time.Minute)},
			{Key: "key1", Value: "value1", Rules: fw("a", 20, time.Minute)},
		}},
		Namespace{Name: "example10", Descriptors: []Matcher{
			{Key: "route", ValueToMetric: true, Descriptors: []Matcher{{Key: "http_method", ValueToMetric: true,
				Descriptors: []Matcher{{Key: "subject_id", Rules: fw("a", 60, time.Minute)}}}}},
			{Key: "user", ValueToMetric: true, Descriptors: []Matcher{{Key: "action", Value: "read*", ValueToMetric: true,
				Descriptors: []Matcher{{Key: "resource", Rules: fw("a", 100, time.Minute)}}}}},
			{Key: "plain", Descriptors: []Matcher{{Key: "next", Rules: fw("a", 1, time.Minute)}}},
		}},
		Namespace{Name: "example11", Descriptors: []Matcher{
			{Key: "route", Value: "api/*", ShareThreshold: true, ValueToMetric: true, Descriptors: []Matcher{{Key: "method", Rules: fw("a", 60, time.Minute)}}},
			{Key: "wild", Value: "foo*", Rules: fw("a", 1, time.Minute)},
			{Key: "dm", DetailedMetric: true, Rules: fw("a", 1, time.Minute)},
		}},
	)
	for _, c := range []struct {
		ns   string
		kv   []string
		want string
	}{
		{"example8", []string{"key1", "unspecified_value"}, "example8.key1_unspecified_value"},
		{"example8", []string{"key1", "value1"}, "example8.key1_value1"},
		{"example10", []string{"route", "api", "http_method", "GET", "subject_id", "123"}, "example10.route_api.http_method_GET.subject_id"},
		{"example10", []string{"route", "", "http_method", "GET", "subject_id", "1"}, "example10.route.http_method_GET.subject_id"},
		{"example10", []string{"user", "alice", "action", "readfile", "resource", "documents"}, "example10.user_alice.action_readfile.resource"},
		{"example10", []string{"plain", "x", "next", "y"}, "example10.plain.next"},
		{"example11", []string{"route", "api/v1", "method", "GET"}, "example11.route_api/*.method"},
		{"example11", []string{"wild", "foobar"}, "example11.wild_foo*"},
		{"example11", []string{"dm", ""}, "example11.dm_"},
	} {
		if got := resolveOne(t, s, c.ns, c.kv...).Stat; got != c.want {
			t.Errorf("%s %v: stat %q, want %q", c.ns, c.kv, got, c.want)
		}
	}
	out := make([]Match, 1)
	s.ResolveDescriptors("example8", []Descriptor{{Entries: entries("k", "v", "second", ""), Limit: &DescriptorLimit{42, time.Hour}}}, out)
	if out[0].Stat != "example8.k_v.second" || limitOf(out[0]) != 42 || out[0].Rules[0].Algorithm != limit.FixedWindow || out[0].Rules[0].Period != time.Hour {
		t.Fatalf("own limit: %+v", out[0])
	}
}

// Every problem of a tree is reported at its place.
func TestDescriptorTreeErrors(t *testing.T) {
	_, err := New([]Namespace{{Name: "d", Descriptors: []Matcher{
		{Value: "v"},
		{Key: "k", Value: "v", Rules: fw("a", 1, time.Second)},
		{Key: "k", Value: "v", Rules: fw("a", 1, time.Second)},
		{Key: "s", Value: "x", ShareThreshold: true},
		{Key: "u", Unlimited: true, Rules: fw("a", 1, time.Second)},
		{Key: "r", Name: "self", Replaces: []string{"self", ""}, Rules: fw("a", 1, time.Second)},
		{Key: "p", Descriptors: []Matcher{{Key: "q", Rules: fw("a", -1, time.Second)}}},
	}}}, "", time.Time{})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("err %v", err)
	}
	for _, want := range []string{
		"namespaces[d].descriptors[0].key: descriptor has empty key",
		"namespaces[d].descriptors[k=v]: duplicate descriptor k=v",
		`namespaces[d].descriptors[s=x].share_threshold: share_threshold can only be used with wildcard values (containing '*'), but found "x"`,
		"namespaces[d].descriptors[u].unlimited: an unlimited descriptor has no limits",
		"namespaces[d].descriptors[r].replaces: replaces should not contain name of same descriptor",
		"namespaces[d].descriptors[r].replaces: should not have an empty replaces entry",
		"namespaces[d].descriptors[p].descriptors[q].limits[a].limit: -1 is outside",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing %q in:\n%v", want, err)
		}
	}
}

// Overrides can target a descriptor, in the file and at runtime, and patch
// the limit set of the node it resolves to.
func TestDescriptorOverrides(t *testing.T) {
	tree := []Matcher{
		{Key: "remote_address", Rules: fw("per-ip", 20, time.Second)},
		{Key: "files", Value: "files/*", ShareThreshold: true, Rules: fw("shared", 10, time.Hour)},
	}
	ip := DescriptorSubject(entries("remote_address", "10.0.0.7"), nil)
	s := mustNew(t, Namespace{Name: "d", Descriptors: tree, Overrides: []Override{{Subject: ip, Limits: map[string]Patch{"per-ip": {Limit: 5}}}}})
	if m := resolveOne(t, s, "d", "remote_address", "10.0.0.7"); limitOf(m) != 5 || !m.Overridden {
		t.Fatalf("file override: %+v", m)
	}
	if m := resolveOne(t, s, "d", "remote_address", "10.0.0.8"); limitOf(m) != 20 || m.Overridden {
		t.Fatalf("other ip: %+v", m)
	}
	other := DescriptorSubject(entries("remote_address", "10.0.0.8"), nil)
	rt, errs := s.WithOverrides([]Override{{Namespace: "d", Subject: other, Limits: map[string]Patch{"per-ip": {Limit: 7}}}}, time.Time{})
	if len(errs) != 0 {
		t.Fatal(errs)
	}
	if m := resolveOne(t, rt, "d", "remote_address", "10.0.0.8"); limitOf(m) != 7 {
		t.Fatalf("runtime override: %+v", m)
	}
	for subject, want := range map[string]string{
		DescriptorSubject(entries("nothing", "x"), nil):         "matches no limit",
		DescriptorSubject(entries("files", "files/a.pdf"), nil): "override files=files%2F%2A",
		"user-1": "limits descriptors only",
	} {
		if _, err := s.CheckOverride(Override{Namespace: "d", Subject: subject, Limits: map[string]Patch{"per-ip": {Limit: 1}}}, time.Time{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", SubjectName(subject), err, want)
		}
	}
	if _, err := s.Resolve("d", "user"); !errors.Is(err, ErrNoSubjectLimits) {
		t.Fatalf("subject check of a descriptor-only namespace: %v", err)
	}
}

func TestDescriptorSubjectRoundTrip(t *testing.T) {
	e := entries("route", "POST /orders,x=1", "user", "42")
	got, err := ParseDescriptorSubject(DescriptorSubject(e, nil))
	if err != nil || len(got) != 2 || got[0] != e[0] || got[1] != e[1] {
		t.Fatalf("%v %v", got, err)
	}
	for _, bad := range []string{"", "novalue", "k=%zz"} {
		if _, err := ParseDescriptorSubject(bad); !errors.Is(err, ErrInvalidDescriptor) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	if err := ValidateDescriptor(Descriptor{Entries: entries("", "v")}); !errors.Is(err, ErrInvalidDescriptor) {
		t.Fatal(err)
	}
}
