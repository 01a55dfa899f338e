package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

func envoyErrs(files ...string) []string {
	var names []string
	var contents [][]byte
	for i := 0; i+1 < len(files); i += 2 {
		names = append(names, files[i])
		contents = append(contents, []byte(files[i+1]))
	}
	var out []string
	for _, err := range ValidateEnvoy(names, contents, EnvoyOptions{}) {
		out = append(out, err.Error())
	}
	return out
}

const basicEnvoy = `domain: test-domain
descriptors:
  - key: key1
    value: value1
    rate_limit:
      unit: minute
      requests_per_unit: 5
`

// Every malformed case of envoyproxy/ratelimit's own configuration tests
// (test/config/config_test.go), with its message, at its file and line; and
// the other cases its loader refuses.
func TestEnvoyConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		files []string
		want  string
	}{
		{"empty domain", []string{"empty_domain.yaml", "descriptors:\n"}, "empty_domain.yaml:1: config file cannot have empty domain"},
		{"empty file", []string{"empty.yaml", "# nothing\n"}, "empty.yaml: config file cannot have empty domain"},
		{"duplicate domain", []string{"basic.yaml", basicEnvoy, "duplicate_domain.yaml", "domain: test-domain\ndescriptors:\n"},
			"duplicate_domain.yaml: duplicate domain 'test-domain' in config file (first in basic.yaml)"},
		{"empty key", []string{"empty_key.yaml", "domain: test-domain\ndescriptors:\n  - value: value1\n"}, "empty_key.yaml:3: descriptor has empty key"},
		{"duplicate key", []string{"duplicate_key.yaml", basicEnvoy + "  - key: key1\n    value: value1\n"},
			"duplicate_key.yaml:8: duplicate descriptor composite key 'test-domain.key1_value1'"},
		{"nested duplicate key-only", []string{"d.yaml", "domain: d\ndescriptors:\n  - key: a\n    descriptors:\n      - key: b\n      - key: b\n"},
			"d.yaml:6: duplicate descriptor composite key 'd.a.b'"},
		{"bad unit", []string{"bad_limit_unit.yaml", strings.Replace(basicEnvoy, "unit: minute", "unit: foo", 1)},
			"bad_limit_unit.yaml:5: invalid rate limit unit 'foo'"},
		{"missing unit", []string{"u.yaml", strings.Replace(basicEnvoy, "      unit: minute\n", "", 1)}, "u.yaml:5: invalid rate limit unit ''"},
		{"empty rate_limit", []string{"u.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit: {}\n"}, "u.yaml:4: invalid rate limit unit ''"},
		{"replaces self", []string{"replaces_self.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      name: self\n      replaces: [{name: self}]\n      unit: second\n      requests_per_unit: 5\n"},
			"replaces_self.yaml:6: replaces should not contain name of same descriptor"},
		{"replaces empty", []string{"replaces_empty.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      name: self\n      replaces: [{name: }]\n      unit: second\n      requests_per_unit: 5\n"},
			"replaces_empty.yaml:6: should not have an empty replaces entry"},
		{"bad yaml", []string{"bad_yaml.yaml", "'''\n"}, "bad_yaml.yaml: error loading config file: yaml: line 2: found unexpected end of stream"},
		{"misspelled key", []string{"misspelled_key.yaml", strings.Replace(basicEnvoy, "rate_limit:", "ratelimit:", 1)},
			"misspelled_key.yaml:5: config error, unknown key 'ratelimit'"},
		{"misspelled key 2", []string{"misspelled_key2.yaml", strings.Replace(basicEnvoy, "requests_per_unit", "requestsperunit", 1)},
			"misspelled_key2.yaml:7: config error, unknown key 'requestsperunit'"},
		{"non-string key", []string{"non_string_key.yaml", "0.25: test-domain\ndescriptors:\n"}, "non_string_key.yaml:1: config error, key is not of type string: 0.25"},
		{"non-map list", []string{"non_map_list.yaml", "domain: d\ndescriptors:\n  - a\n  - b\n"},
			"non_map_list.yaml:3: config error, yaml file contains list of type other than map: a"},
		{"unlimited with unit", []string{"unlimited_with_unit.yaml", "domain: d\ndescriptors:\n  - key: k\n    rate_limit:\n      unlimited: true\n      unit: day\n      requests_per_unit: 25\n"},
			"unlimited_with_unit.yaml:4: should not specify rate limit unit when unlimited"},
		{"share_threshold without a pattern", []string{"s.yaml", "domain: d\ndescriptors:\n  - key: k\n    value: v\n    share_threshold: true\n"},
			"s.yaml:3: share_threshold can only be used with wildcard values (containing '*'), but found key 'k_v'"},
		{"negative requests_per_unit", []string{"n.yaml", strings.Replace(basicEnvoy, "requests_per_unit: 5", "requests_per_unit: -1", 1)},
			"n.yaml:7: error loading config file: cannot unmarshal !!int `-1` into uint32"},
		{"requests_per_unit over uint32", []string{"n.yaml", strings.Replace(basicEnvoy, "requests_per_unit: 5", "requests_per_unit: 5000000000", 1)},
			"n.yaml:7: error loading config file: cannot unmarshal !!int `5000000000` into uint32"},
		{"requests_per_unit a string", []string{"n.yaml", strings.Replace(basicEnvoy, "requests_per_unit: 5", "requests_per_unit: abc", 1)},
			"n.yaml:7: error loading config file: cannot unmarshal !!str `abc` into uint32"},
		{"bad bool", []string{"b.yaml", "domain: d\ndescriptors:\n  - key: k\n    shadow_mode: maybe\n"}, "b.yaml:4: error loading config file: cannot unmarshal !!str `maybe` into bool"},
		{"float value", []string{"f.yaml", "domain: d\ndescriptors:\n  - key: k\n    value: 1.5\n"}, "f.yaml:4: error checking config"},
		{"quota_mode", []string{"q.yaml", "domain: d\ndescriptors:\n  - key: k\n    quota_mode: true\n"}, "q.yaml:4: quota_mode is not supported by this limiter"},
		{"key at the wrong level", []string{"w.yaml", "domain: d\nunit: second\ndescriptors:\n"}, "w.yaml:2: config error, unknown key 'unit'"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := envoyErrs(tc.files...)
			if len(got) == 0 || !strings.HasPrefix(got[0], tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// What envoyproxy/ratelimit accepts, this accepts: any case of a unit,
// week and month, a null rate_limit, numbers as keys and values, YAML 1.1
// booleans, metadata.
func TestEnvoyConfigAccepts(t *testing.T) {
	ok := `domain: d
descriptors:
  - key: a
    rate_limit: {unit: SeCoNd, requests_per_unit: 1}
  - key: b
    rate_limit: {unit: week, requests_per_unit: 1}
  - key: c
    rate_limit: {unit: month, requests_per_unit: 1}
  - key: d
    rate_limit:
  - key: 123
    value: 456
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: e
    metadata: {anything: [1, 2.5, {x: y}]}
  - key: f
    rate_limit: {unlimited: true}
  - key: g
    rate_limit: {unit: YEAR, requests_per_unit: 2}
`
	nss, err := ParseEnvoy([]string{"ok.yaml"}, [][]byte{[]byte(ok)}, EnvoyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ms := nss[0].Descriptors
	if ms[0].Rules[0].Period != time.Second || ms[1].Rules[0].Period != 7*24*time.Hour || ms[2].Rules[0].Period != 30*24*time.Hour {
		t.Fatalf("units: %+v", ms[:3])
	}
	if ms[7].Rules[0].Period != 365*24*time.Hour {
		t.Fatalf("a year: %+v", ms[7])
	}
	if ms[3].Rules != nil || ms[4].Key != "123" || ms[4].Value != "456" || !ms[4].Rules[0].Shadow || !ms[6].Unlimited {
		t.Fatalf("nodes: %+v", ms)
	}
	if ms[0].Rules[0].Algorithm != limit.FixedWindow {
		t.Fatalf("default algorithm %v", ms[0].Rules[0].Algorithm)
	}
	smooth := strings.Replace(ok, "  - key: g\n    rate_limit: {unit: YEAR, requests_per_unit: 2}\n", "", 1)
	nss, err = ParseEnvoy([]string{"ok.yaml"}, [][]byte{[]byte(smooth)}, EnvoyOptions{Algorithm: limit.TokenBucket})
	if err != nil || nss[0].Descriptors[0].Rules[0].Algorithm != limit.TokenBucket {
		t.Fatalf("the token bucket switch: %v", err)
	}
	// A year is a fixed window's: a token bucket refills within 31 days.
	if _, err := ParseEnvoy([]string{"ok.yaml"}, [][]byte{[]byte(ok)}, EnvoyOptions{Algorithm: limit.TokenBucket}); err == nil || !strings.Contains(err.Error(), "8760h0m0s is outside") {
		t.Fatalf("a yearly token bucket: %v", err)
	}
}

// A directory holds one domain per *.yaml or *.yml file; other files are
// not read.
func TestEnvoyConfigDirectory(t *testing.T) {
	dir := t.TempDir()
	for name, data := range map[string]string{
		"a.yaml":       basicEnvoy,
		"b.yml":        "domain: other\ndescriptors:\n  - key: k\n    rate_limit: {unit: hour, requests_per_unit: 1}\n",
		"notes.txt":    "not: yaml: at all",
		".hidden.yaml": "garbage",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	names, contents, err := EnvoyData(dir)
	if err != nil {
		t.Fatal(err)
	}
	nss, err := ParseEnvoy(names, contents, EnvoyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(nss) != 2 || nss[0].Name != "test-domain" || nss[1].Name != "other" {
		t.Fatalf("%+v", nss)
	}
	snap, err := policy.New(nss, "v", time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	out := make([]policy.Match, 1)
	snap.ResolveDescriptors("test-domain", []policy.Descriptor{{Entries: []policy.Entry{{Key: "key1", Value: "value1"}}}}, out)
	if out[0].Rules[0].Limit != 5 || out[0].Rules[0].Period != time.Minute {
		t.Fatalf("%+v", out[0])
	}
}

// A directory watcher reports a file written, created or removed in it.
func TestDirWatcher(t *testing.T) {
	dir := t.TempDir()
	w, err := NewDirWatcher(dir, WatchOptions{Debounce: 10 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	wait := func(what string) {
		t.Helper()
		select {
		case <-w.C:
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no change reported", what)
		}
	}
	f := filepath.Join(dir, "a.yaml")
	os.WriteFile(f, []byte(basicEnvoy), 0o644)
	wait("create")
	os.WriteFile(f, []byte(basicEnvoy+"  - key: k2\n"), 0o644)
	wait("write")
	os.Remove(f)
	wait("remove")
}
