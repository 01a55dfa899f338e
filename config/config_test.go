package config

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

var t0 = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

// valid is the example's policy without comments, so that the line numbers
// in the expected messages do not move when the example's comments do.
const valid = `namespaces:
  - name: orders
    subject_header: X-User-ID
    limits:
      - name: per-minute
        algorithm: token_bucket
        limit: 100
        period: 1m
        burst: 20
      - name: per-hour
        algorithm: sliding_window_counter
        limit: 1000
        period: 1h
    overrides:
      - subjects: ["vip-1", "vip-2"]
        limits:
          per-minute: {limit: 1000, burst: 200}
`

// edit returns valid with old replaced by new, once.
func edit(t testing.TB, old, new string) string {
	t.Helper()
	if strings.Count(valid, old) != 1 {
		t.Fatalf("%q is not in the valid config exactly once", old)
	}
	return strings.Replace(valid, old, new, 1)
}

const one = "namespaces:\n  - name: x\n    limits:\n      - {name: a, algorithm: gcra, limit: 5, period: 1m}\n"

// limits returns n valid limits named a1, a2, ... in YAML.
func limits(n int) string {
	var b strings.Builder
	for i := 1; i <= n; i++ {
		fmt.Fprintf(&b, "      - {name: a%d, algorithm: gcra, limit: 5, period: 1m}\n", i)
	}
	return b.String()
}

type badCase struct {
	name string
	data string
	want []string
}

func badCases(t testing.TB) []badCase {
	return []badCase{
		// Broken files.
		{"empty file", "", []string{
			"orders.yaml: namespaces: at least one namespace is required"}},
		{"only comments", "# nothing\n", []string{
			"orders.yaml: namespaces: at least one namespace is required"}},
		{"empty namespaces", "namespaces: []\n", []string{
			"orders.yaml:1: namespaces: at least one namespace is required"}},
		{"list at top level", "- name: orders\n- name: users\n", []string{
			"orders.yaml:1: want a mapping with a namespaces list, got a list"}},
		{"scalar at top level", "orders\n", []string{
			"orders.yaml:1: want a mapping with a namespaces list, got orders"}},
		{"tab indentation", "namespaces:\n\t- name: orders\n", []string{
			"orders.yaml:2: found character that cannot start any token (YAML does not allow tabs for indentation; use spaces)"}},
		{"over 4 MiB", valid + strings.Repeat("#", MaxSize), []string{
			"orders.yaml: file is larger than 4194304 bytes (4 MiB)"}},
		{"binary garbage", "\x00\x01\x02\xff\xfenamespaces", []string{
			"orders.yaml: control characters are not allowed"}},
		{"invalid UTF-8", "namespaces: \xff\xfe\n", []string{
			"orders.yaml: invalid leading UTF-8 octet"}},
		{"unclosed flow list", "namespaces: [\n", []string{
			"orders.yaml:1: did not find expected node content"}},
		{"two documents", valid + "---\nnamespaces: []\n", []string{
			"orders.yaml:18: a second YAML document: the configuration is one document"}},
		{"alias", "x: &n []\nnamespaces: *n\n", []string{
			"orders.yaml:1: x: unknown field (want namespaces)",
			"orders.yaml:2: namespaces: aliases (*n) are not supported; write the value out"}},
		{"explicit tag", edit(t, "limit: 100\n", "limit: !!str 100\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: tags (!!str) are not supported"}},

		// Keys.
		{"duplicate key", edit(t, "limit: 100\n", "limit: 100\n        limit: 200\n"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].limit: duplicate key (first on line 7)"}},
		{"unknown field", edit(t, "burst: 20\n", "brust: 20\n"), []string{
			"orders.yaml:9: namespaces[orders].limits[per-minute].brust: unknown field (want name, algorithm, limit, period, burst, shadow_mode, lease)"}},
		{"unknown top-level field", "namespace:\n  - name: orders\n", []string{
			"orders.yaml:1: namespace: unknown field (want namespaces)",
			"orders.yaml:1: namespaces: at least one namespace is required"}},
		{"missing fields", "namespaces:\n  - name: x\n    limits:\n      - name: a\n", []string{
			"orders.yaml:4: namespaces[x].limits[a].algorithm: required",
			"orders.yaml:4: namespaces[x].limits[a].limit: required",
			"orders.yaml:4: namespaces[x].limits[a].period: required"}},
		{"empty value is absent", edit(t, "period: 1m", "period:"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: required"}},

		// Numbers.
		{"negative limit", edit(t, "limit: 100\n", "limit: -5\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: -5 is outside [1, 1000000000]"}},
		{"zero limit", edit(t, "limit: 100\n", "limit: 0\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 0 is outside [1, 1000000000]"}},
		{"limit over int64", edit(t, "limit: 100\n", "limit: 99999999999999999999\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 99999999999999999999 is outside [1, 1000000000]"}},
		{"limit just over int64", edit(t, "limit: 100\n", "limit: 9223372036854775808\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 9223372036854775808 is outside [1, 1000000000]"}},
		{"limit under int64", edit(t, "limit: 100\n", "limit: -99999999999999999999\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: -99999999999999999999 is outside [1, 1000000000]"}},
		{"limit over MaxLimit", edit(t, "limit: 100\n", "limit: 1_000_000_001\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 1000000001 is outside [1, 1000000000]"}},
		{"fractional limit", edit(t, "limit: 100\n", "limit: 1.5\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 1.5 is not an integer"}},
		{"string limit", edit(t, "limit: 100\n", `limit: "ten"
`), []string{
			`orders.yaml:7: namespaces[orders].limits[per-minute].limit: "ten" is not an integer`}},
		{"quoted number", edit(t, "limit: 100\n", `limit: "100"
`), []string{
			`orders.yaml:7: namespaces[orders].limits[per-minute].limit: "100" is not an integer`}},
		{"octal-looking limit", edit(t, "limit: 100\n", "limit: 0100\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 0100 is not a decimal integer"}},
		{"hex limit", edit(t, "limit: 100\n", "limit: 0x64\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: 0x64 is not a decimal integer"}},
		{"list as limit", edit(t, "limit: 100\n", "limit: [100]\n"), []string{
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: want an integer, got a list"}},
		{"zero burst", edit(t, "burst: 20\n", "burst: 0\n"), []string{
			"orders.yaml:9: namespaces[orders].limits[per-minute].burst: 0 is outside [1, 1000000000]"}},
		{"negative burst", edit(t, "burst: 20\n", "burst: -3\n"), []string{
			"orders.yaml:9: namespaces[orders].limits[per-minute].burst: -3 is outside [1, 1000000000]"}},
		{"burst on a window algorithm", edit(t, "period: 1h", "period: 1h\n        burst: 5"), []string{
			"orders.yaml:14: namespaces[orders].limits[per-hour].burst: applies only to token_bucket, gcra and leaky_bucket, not sliding_window_counter"}},
		{"burst that takes over 31 days to refill", edit(t, "burst: 20\n", "burst: 5000000\n"), []string{
			"orders.yaml:9: namespaces[orders].limits[per-minute].burst: 5000000 takes longer than 744h0m0s to refill at 100 per 1m0s"}},

		// Durations.
		{"negative period", edit(t, "period: 1m", "period: -1m"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: -1m0s is outside [1ms, 744h0m0s]"}},
		{"zero period", edit(t, "period: 1m", "period: 0"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: 0s is outside [1ms, 744h0m0s]"}},
		{"period without unit", edit(t, "period: 1m", "period: 60"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: \"60\" is not a duration such as 500ms, 30s, 1m or 1h"}},
		{"period in days", edit(t, "period: 1m", "period: 1d"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: \"1d\" is not a duration such as 500ms, 30s, 1m or 1h"}},
		{"period over int64", edit(t, "period: 1m", "period: 9999999999h"), []string{
			"orders.yaml:8: namespaces[orders].limits[per-minute].period: \"9999999999h\" is not a duration such as 500ms, 30s, 1m or 1h"}},
		{"period over a month", edit(t, "period: 1h", "period: 745h"), []string{
			"orders.yaml:13: namespaces[orders].limits[per-hour].period: 745h0m0s is outside [1ms, 744h0m0s]"}},

		// Names.
		{"unknown algorithm", edit(t, "algorithm: token_bucket", "algorithm: tokenbucket"), []string{
			`orders.yaml:6: namespaces[orders].limits[per-minute].algorithm: unknown algorithm "tokenbucket" (want one of [token_bucket gcra leaky_bucket sliding_window_log sliding_window_counter fixed_window])`}},
		{"duplicate limit name", edit(t, "name: per-hour", "name: per-minute"), []string{
			"orders.yaml:10: namespaces[orders].limits[per-minute].name: duplicate limit name (first on line 5)"}},
		{"duplicate namespace name", valid + "  - name: orders\n    limits:\n      - {name: a, algorithm: gcra, limit: 0, period: 1m}\n", []string{
			"orders.yaml:18: namespaces[orders].name: duplicate namespace name (first on line 2)",
			"orders.yaml:20: namespaces[orders].limits[a].limit: 0 is outside [1, 1000000000]"}},
		{"bad namespace name", edit(t, "name: orders", "name: my orders"), []string{
			`orders.yaml:2: namespaces[my orders].name: "my orders" must be 1-64 letters, digits, '_', '.' or '-'`}},
		{"namespace name not a string", edit(t, "name: orders", "name: {a: b}"), []string{
			"orders.yaml:2: namespaces[0].name: want a string, got a mapping"}},
		{"missing limit name", edit(t, "- name: per-hour\n", "- algorithm: fixed_window\n"), []string{
			"orders.yaml:10: namespaces[orders].limits[1].name: required",
			"orders.yaml:11: namespaces[orders].limits[1].algorithm: duplicate key (first on line 10)"}},
		{"bad subject header", edit(t, "X-User-ID", "X User"), []string{
			`orders.yaml:3: namespaces[orders].subject_header: "X User" is not an HTTP header name`}},
		{"nine limits", "namespaces:\n  - name: x\n    limits:\n" + limits(9), []string{
			"orders.yaml:3: namespaces[x].limits: 9 limits, at most 8"}},
		{"no limits", "namespaces:\n  - name: x\n", []string{
			"orders.yaml:2: namespaces[x].limits: a namespace needs limits (per subject) or descriptors"}},
		{"limits not a list", "namespaces:\n  - name: x\n    limits: {name: a}\n", []string{
			"orders.yaml:3: namespaces[x].limits: want a list, got a mapping"}},
		{"limit not a mapping", one + "      - 5\n", []string{
			"orders.yaml:5: namespaces[x].limits[1]: want a mapping (name, algorithm, limit, period, burst, shadow_mode, lease), got 5"}},

		// Overrides.
		{"override of an unknown limit", edit(t, "per-minute: {", "per-minit: {"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minit]: unknown limit: the namespace has per-minute, per-hour"}},
		{"negative override limit", edit(t, "{limit: 1000,", "{limit: -1000,"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].limit: -1000 is outside [1, 1000000000]"}},
		{"zero override burst", edit(t, "burst: 200}", "burst: 0}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].burst: 0 is outside [1, 1000000000]"}},
		{"negative override period", edit(t, "burst: 200}", "period: -1s}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].period: -1s is outside [1ms, 744h0m0s]"}},
		{"override burst over MaxLimit", edit(t, "burst: 200}", "burst: 2000000000}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].burst: 2000000000 is outside [1, 1000000000]"}},
		{"override burst on a window algorithm", edit(t, "burst: 200}", "algorithm: fixed_window, burst: 5}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].burst: applies only to token_bucket, gcra and leaky_bucket, not fixed_window"}},
		{"override making a limit too fast", edit(t, "{limit: 1000, burst: 200}", "{period: 1ms, limit: 1000000000}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute].limit: 1000000000 per 1ms is more than one per nanosecond"}},
		{"empty patch", edit(t, "{limit: 1000, burst: 200}", "{}"), []string{
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-minute]: want at least one of limit, period, burst, algorithm"}},
		{"override without limits", edit(t, "        limits:\n          per-minute: {limit: 1000, burst: 200}\n", ""), []string{
			"orders.yaml:15: namespaces[orders].overrides[0].limits: at least one limit is required"}},
		{"override without subjects", edit(t, `subjects: ["vip-1", "vip-2"]`, "subjects: []"), []string{
			"orders.yaml:15: namespaces[orders].overrides[0].subjects: at least one subject is required"}},
		{"subject given twice", edit(t, `"vip-2"`, `"vip-1"`), []string{
			`orders.yaml:15: namespaces[orders].overrides[0].subjects[1]: "vip-1" is overridden twice`}},
		{"subject not a string", edit(t, `"vip-2"`, `[vip-2]`), []string{
			"orders.yaml:15: namespaces[orders].overrides[0].subjects[1]: want a string, got a list"}},
		{"override of an invalid limit", edit(t, "limit: 100\n", "limit: -5\n"), []string{
			// Reported once, at the limit, not again at the override.
			"orders.yaml:7: namespaces[orders].limits[per-minute].limit: -5 is outside [1, 1000000000]"}},

		// Every problem of a file at once, sorted by line.
		{"several problems", `namespaces:
  - name: orders
    limits:
      - name: per-minute
        algorithm: token_buckt
        limit: 100
        period: 1m
      - name: per-hour
        algorithm: fixed_window
        limit: -1
        period: 1h
        burst: 3
    overrides:
      - subjects: [vip]
        limits:
          per-day: {limit: 5}
          per-hour: {limit: 0}
  - name: users
    limits:
      - {name: a, algorithm: gcra, limit: 5, period: 1x}
`, []string{
			`orders.yaml:5: namespaces[orders].limits[per-minute].algorithm: unknown algorithm "token_buckt" (want one of [token_bucket gcra leaky_bucket sliding_window_log sliding_window_counter fixed_window])`,
			"orders.yaml:10: namespaces[orders].limits[per-hour].limit: -1 is outside [1, 1000000000]",
			"orders.yaml:12: namespaces[orders].limits[per-hour].burst: applies only to token_bucket, gcra and leaky_bucket, not fixed_window",
			"orders.yaml:16: namespaces[orders].overrides[0].limits[per-day]: unknown limit: the namespace has per-minute, per-hour",
			"orders.yaml:17: namespaces[orders].overrides[0].limits[per-hour].limit: 0 is outside [1, 1000000000]",
			"orders.yaml:20: namespaces[users].limits[a].period: \"1x\" is not a duration such as 500ms, 30s, 1m or 1h",
		}},
	}
}

func TestValidateBad(t *testing.T) {
	for _, tc := range badCases(t) {
		t.Run(tc.name, func(t *testing.T) {
			errs := Validate([]byte(tc.data), "orders.yaml")
			var got []string
			for _, err := range errs {
				got = append(got, err.Error())
				if !errors.Is(err, ErrInvalid) {
					t.Errorf("%v does not wrap ErrInvalid", err)
				}
				var e *Error
				if !errors.As(err, &e) {
					t.Errorf("%v is a %T, want *Error", err, err)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("Validate:\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
			snap, err := ParseAt([]byte(tc.data), "orders.yaml", t0)
			if snap != nil || err == nil {
				t.Fatalf("ParseAt = %v, %v; want an error", snap, err)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseAt error %v does not wrap ErrInvalid", err)
			}
			if err.Error() != strings.Join(tc.want, "\n") {
				t.Errorf("ParseAt error:\n%v\nwant the lines of Validate", err)
			}
		})
	}
}

func TestErrorFields(t *testing.T) {
	errs := Validate([]byte(edit(t, "limit: 100\n", "limit: -5\n")), "orders.yaml")
	if len(errs) != 1 {
		t.Fatalf("Validate = %v, want one error", errs)
	}
	var e *Error
	if !errors.As(errs[0], &e) {
		t.Fatalf("%T is not *Error", errs[0])
	}
	want := Error{Source: "orders.yaml", Line: 7, Path: "namespaces[orders].limits[per-minute].limit", Msg: "-5 is outside [1, 1000000000]"}
	if *e != want {
		t.Errorf("got %#v\nwant %#v", *e, want)
	}
	for _, tc := range []struct {
		e    Error
		want string
	}{
		{Error{Source: "a.yaml", Line: 3, Path: "namespaces", Msg: "m"}, "a.yaml:3: namespaces: m"},
		{Error{Source: "a.yaml", Path: "namespaces", Msg: "m"}, "a.yaml: namespaces: m"},
		{Error{Source: "a.yaml", Line: 3, Msg: "m"}, "a.yaml:3: m"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("Error() = %q, want %q", got, tc.want)
		}
	}
}

func TestExample(t *testing.T) {
	snap, err := ParseAt(Example, "example.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	if got := snap.Names(); !slices.Equal(got, []string{"orders"}) {
		t.Errorf("Names = %v", got)
	}
	if !snap.LoadedAt().Equal(t0) {
		t.Errorf("LoadedAt = %v, want %v", snap.LoadedAt(), t0)
	}
	perMinute := limit.Rule{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 100, Period: time.Minute, Burst: 20}
	perHour := limit.Rule{Name: "per-hour", Algorithm: limit.SlidingWindowCounter, Limit: 1000, Period: time.Hour}
	vipMinute := limit.Rule{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 1000, Period: time.Minute, Burst: 200}
	for _, tc := range []struct {
		subject    string
		overridden bool
		rules      []limit.Rule
	}{
		{"alice", false, []limit.Rule{perMinute, perHour}},
		{"vip-1", true, []limit.Rule{vipMinute, perHour}},
		{"vip-2", true, []limit.Rule{vipMinute, perHour}},
		{"vip-3", false, []limit.Rule{perMinute, perHour}},
	} {
		ls, err := snap.Resolve("orders", tc.subject)
		if err != nil {
			t.Fatalf("Resolve(orders, %s): %v", tc.subject, err)
		}
		if ls.Overridden != tc.overridden || !sameRules(ls.Rules, tc.rules) {
			t.Errorf("Resolve(orders, %s) = %v %+v, want %v %+v", tc.subject, ls.Overridden, ls.Rules, tc.overridden, tc.rules)
		}
		if ls.Namespace.SubjectHeader != "X-User-ID" {
			t.Errorf("SubjectHeader = %q", ls.Namespace.SubjectHeader)
		}
	}
	if _, err := snap.Resolve("users", "alice"); !errors.Is(err, policy.ErrUnknownNamespace) {
		t.Errorf("Resolve(users) error = %v, want ErrUnknownNamespace", err)
	}

	// The test's copy says the same as the example.
	snap2, err := ParseAt([]byte(valid), "valid.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, subject := range []string{"alice", "vip-1"} {
		a, _ := snap.Resolve("orders", subject)
		b, _ := snap2.Resolve("orders", subject)
		if !sameRules(a.Rules, b.Rules) {
			t.Errorf("example and test copy differ for %s: %+v, %+v", subject, a.Rules, b.Rules)
		}
	}
}

// sameRules compares the exported fields of rules.
func sameRules(a, b []limit.Rule) bool {
	return slices.EqualFunc(a, b, func(x, y limit.Rule) bool {
		return x.Name == y.Name && x.Algorithm == y.Algorithm && x.Limit == y.Limit && x.Period == y.Period && x.Burst == y.Burst
	})
}

// The embedded example and the one shipped in deploy/ are one file.
func TestExampleInSync(t *testing.T) {
	deployed, err := os.ReadFile("../deploy/example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(deployed, Example) {
		t.Error("deploy/example.yaml differs from config/example.yaml; edit config/example.yaml and copy it: cp config/example.yaml deploy/example.yaml")
	}
}

func TestDefaults(t *testing.T) {
	data := edit(t, "    subject_header: X-User-ID\n", "")
	data = strings.Replace(data, "        burst: 20\n", "", 1)
	snap, err := ParseAt([]byte(data), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	ls, err := snap.Resolve("orders", "alice")
	if err != nil {
		t.Fatal(err)
	}
	if ls.Namespace.SubjectHeader != DefaultSubjectHeader {
		t.Errorf("SubjectHeader = %q, want %q", ls.Namespace.SubjectHeader, DefaultSubjectHeader)
	}
	if ls.Rules[0].Burst != 100 {
		t.Errorf("burst = %d, want the limit, 100", ls.Rules[0].Burst)
	}

	// Other spellings that mean the same.
	for _, data := range []string{
		edit(t, "algorithm: token_bucket", "algorithm: gcra"),
		edit(t, "limit: 1000\n", "limit: 1_000\n"),
		edit(t, "burst: 20\n", "burst:  20 # comment\n"),
		edit(t, `["vip-1", "vip-2"]`, "\n          - vip-1\n          - vip-2"),
	} {
		if _, err := ParseAt([]byte(data), "orders.yaml", t0); err != nil {
			t.Errorf("%v\nin\n%s", err, data)
		}
	}

	// Subjects are the text written, numbers included.
	snap, err = ParseAt([]byte(edit(t, `["vip-1", "vip-2"]`, "[12345, 0x1F]")), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"12345", "0x1F"} {
		if ls, _ := snap.Resolve("orders", s); !ls.Overridden {
			t.Errorf("subject %s is not overridden", s)
		}
	}
}

func TestVersion(t *testing.T) {
	a, err := ParseAt(Example, "a.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	b, err := ParseAt(bytes.Clone(Example), "b.yaml", t0.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(Example)
	if want := hex.EncodeToString(sum[:])[:12]; a.Version() != want {
		t.Errorf("Version = %q, want %q", a.Version(), want)
	}
	if a.Version() != b.Version() {
		t.Errorf("same bytes, versions %q and %q", a.Version(), b.Version())
	}
	c, err := ParseAt(append(bytes.Clone(Example), '\n'), "a.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	if c.Version() == a.Version() {
		t.Errorf("different bytes, same version %q", c.Version())
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()

	missing := filepath.Join(dir, "missing.yaml")
	_, err := LoadAt(missing, t0)
	if err == nil || !strings.Contains(err.Error(), missing) || !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrInvalid) {
		t.Errorf("LoadAt(missing) error = %v, want one naming the path and wrapping fs.ErrNotExist", err)
	}
	if _, err := Load(missing); err == nil {
		t.Error("Load(missing) succeeded")
	}

	good := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(good, Example, 0o644); err != nil {
		t.Fatal(err)
	}
	snap, err := LoadAt(good, t0)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ParseAt(Example, "x", t0)
	if snap.Version() != want.Version() {
		t.Errorf("Version = %q, want %q", snap.Version(), want.Version())
	}

	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte(edit(t, "limit: 100\n", "limit: -5\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAt(bad, t0)
	if want := bad + ":7: namespaces[orders].limits[per-minute].limit: -5 is outside [1, 1000000000]"; err == nil || err.Error() != want {
		t.Errorf("LoadAt(bad) error = %v, want %s", err, want)
	}

	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, bytes.Repeat([]byte("#"), MaxSize+1), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = LoadAt(big, t0)
	if want := big + ": file is larger than 4194304 bytes (4 MiB)"; err == nil || err.Error() != want || !errors.Is(err, ErrInvalid) {
		t.Errorf("LoadAt(big) error = %v, want %s", err, want)
	}
	if _, err := LoadAt(dir, t0); err == nil || !strings.Contains(err.Error(), dir) || errors.Is(err, ErrInvalid) {
		t.Errorf("LoadAt(a directory) error = %v, want one naming it", err)
	}
	if _, err := os.Stat("/dev/zero"); err == nil {
		// An endless file is refused after MaxSize+1 bytes.
		if _, err := LoadAt("/dev/zero", t0); !errors.Is(err, ErrInvalid) {
			t.Errorf("LoadAt(/dev/zero) error = %v, want ErrInvalid", err)
		}
	}
	exact := filepath.Join(dir, "exact.yaml")
	if err := os.WriteFile(exact, append(bytes.Clone(Example), bytes.Repeat([]byte("#"), MaxSize-len(Example))...), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadAt(exact, t0); err != nil {
		t.Errorf("LoadAt of a file of exactly MaxSize bytes: %v", err)
	}
}

func TestValidateGood(t *testing.T) {
	if errs := Validate(Example, "example.yaml"); errs != nil {
		t.Errorf("Validate(Example) = %v", errs)
	}
	if errs := Validate([]byte(one), "one.yaml"); errs != nil {
		t.Errorf("Validate(one) = %v", errs)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(Example)
	f.Add([]byte(valid))
	f.Add([]byte(one))
	for _, tc := range badCases(f) {
		if len(tc.data) < 1<<16 {
			f.Add([]byte(tc.data))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		snap, err := ParseAt(data, "fuzz.yaml", t0)
		errs := Validate(data, "fuzz.yaml")
		if (err == nil) != (len(errs) == 0) || (err == nil) != (snap != nil) {
			t.Fatalf("ParseAt = %v, %v but Validate = %v", snap, err, errs)
		}
		for _, e := range errs {
			var ce *Error
			if !errors.As(e, &ce) || !errors.Is(e, ErrInvalid) || ce.Msg == "" || ce.Line < 0 {
				t.Fatalf("bad error %#v", e)
			}
		}
		if err != nil {
			return
		}
		names := snap.Names()
		if len(names) == 0 {
			t.Fatal("accepted a configuration without namespaces")
		}
		for _, name := range names {
			ns, ok := snap.Namespace(name)
			if !ok {
				t.Fatalf("Names has %q, Namespace does not", name)
			}
			subjects := []string{"\x00not-a-subject-anyone-overrides"}
			for _, o := range ns.Overrides {
				subjects = append(subjects, o.Subject)
			}
			for _, s := range subjects {
				ls, err := snap.Resolve(name, s)
				if err != nil {
					t.Fatalf("Resolve(%q, %q): %v", name, s, err)
				}
				if len(ls.Rules) == 0 || len(ls.Rules) > limit.MaxRules {
					t.Fatalf("Resolve(%q, %q): %d rules", name, s, len(ls.Rules))
				}
				for _, r := range ls.Rules {
					if err := r.Validate(); err != nil {
						t.Fatalf("Resolve(%q, %q): %v", name, s, err)
					}
				}
			}
		}
	})
}

// fromPolicy places policy.New's errors in the file by their paths, never
// their messages, and keeps an error it cannot place rather than lose it.
func TestFromPolicy(t *testing.T) {
	c := newChecker("f.yaml")
	c.at("namespaces[placeholder-0]", "namespaces[orders]", 9)
	c.at("namespaces[placeholder-0].limits[a]", "namespaces[orders].limits[a]", 11)
	fe := func(msg string, path ...string) error { return &policy.FieldError{Path: path, Err: errors.New(msg)} }
	for _, tc := range []struct {
		msg  error
		want Error
	}{
		{fe("5 is wrong", "namespaces", "[placeholder-0]", "limits", "[a]", "burst"),
			Error{Source: "f.yaml", Line: 11, Path: "namespaces[orders].limits[a].burst", Msg: "5 is wrong"}},
		{fe("bad", "namespaces", "[placeholder-0]", "name"),
			Error{Source: "f.yaml", Line: 9, Path: "namespaces[orders].name", Msg: "bad"}},
		{fe("bad", "namespaces", "[placeholder-0]"),
			Error{Source: "f.yaml", Line: 9, Path: "namespaces[orders]", Msg: "bad"}},
		{fe("a message that names namespaces[placeholder-0].limits[a]", "namespaces", "[placeholder-0]", "limits", "[a]", "limit"),
			Error{Source: "f.yaml", Line: 11, Path: "namespaces[orders].limits[a].limit", Msg: "a message that names namespaces[placeholder-0].limits[a]"}},
		{fe("bad", "namespaces", "[other]", "name"),
			Error{Source: "f.yaml", Path: "namespaces[other].name", Msg: "bad"}},
		{errors.New("something else"), Error{Source: "f.yaml", Msg: "something else"}},
	} {
		if got := c.fromPolicy(tc.msg); *got != tc.want {
			t.Errorf("fromPolicy(%q) = %#v, want %#v", tc.msg, *got, tc.want)
		}
	}
}
