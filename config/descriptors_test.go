package config

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

const descriptorsYAML = `namespaces:
  - name: orders
    limits:
      - {name: per-user, algorithm: token_bucket, limit: 100, period: 1m}
    descriptors:
      - key: remote_address
        limits:
          - {name: per-ip, algorithm: token_bucket, limit: 20, period: 1s}
      - key: route
        value: "POST /orders"
        descriptors:
          - key: user
            limits:
              - {name: per-user-route, algorithm: gcra, limit: 10, period: 1s}
              - {name: trial, algorithm: fixed_window, limit: 5, period: 1s, shadow_mode: true}
      - key: endpoint
        value: orders
        limits:
          - {name: global, algorithm: sliding_window_log, limit: 5000, period: 1s}
      - key: remote_address
        value: 10.0.0.1
        unlimited: true
    overrides:
      - descriptors: ["remote_address=10.0.0.7"]
        limits: {per-ip: {limit: 2}}
    request_descriptors:
      - [{key: remote_address, from: client_address}]
      - [{key: route, from: value, value: "POST /orders"}, {key: user, from: header, header: X-User-ID}]
      - [{key: endpoint, from: path, paths: ["/orders/*"]}]
`

// A namespace's descriptors, its shadow limits and an override of a
// descriptor read from YAML into the policy.
func TestDescriptorsConfig(t *testing.T) {
	snap, err := ParseAt([]byte(descriptorsYAML), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]policy.Match, 4)
	err = snap.ResolveDescriptors("orders", []policy.Descriptor{
		{Entries: []policy.Entry{{Key: "remote_address", Value: "10.0.0.7"}}},
		{Entries: []policy.Entry{{Key: "route", Value: "POST /orders"}, {Key: "user", Value: "42"}}},
		{Entries: []policy.Entry{{Key: "endpoint", Value: "orders"}}},
		{Entries: []policy.Entry{{Key: "remote_address", Value: "10.0.0.1"}}},
	}, out)
	if err != nil {
		t.Fatal(err)
	}
	if out[0].Rules[0].Limit != 2 || !out[0].Overridden {
		t.Errorf("the descriptor override: %+v", out[0])
	}
	if r := out[1].Rules; len(r) != 2 || r[0].Limit != 10 || r[1].Shadow != true || r[0].Shadow {
		t.Errorf("route user: %+v", r)
	}
	if out[2].Rules[0].Algorithm != limit.SlidingWindowLog || !out[3].Unlimited {
		t.Errorf("endpoint, unlimited: %+v %+v", out[2], out[3])
	}
	if set, err := snap.Resolve("orders", "u"); err != nil || set.Rules[0].Period != time.Minute {
		t.Errorf("the subject limits: %+v %v", set, err)
	}
	ns, _ := snap.Namespace("orders")
	if rd := ns.RequestDescriptors; len(rd) != 3 || rd[1][1].Header != "X-User-ID" || rd[2][0].Paths[0] != "/orders/*" {
		t.Errorf("request descriptors: %+v", rd)
	}
	bad := strings.Replace(descriptorsYAML, "from: client_address", "from: cookie", 1)
	if errs := Validate([]byte(bad), "orders.yaml"); len(errs) != 1 || !strings.Contains(errs[0].Error(),
		`orders.yaml:27: namespaces[orders].request_descriptors[0]: entry 0 (remote_address): from "cookie", want one of`) {
		t.Errorf("a bad source: %v", errs)
	}
}

// Errors in descriptors are reported at their lines.
func TestDescriptorsConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"bad limit", "limit: 20,", "limit: -20,", []string{
			"orders.yaml:8: namespaces[orders].descriptors[0].limits[per-ip].limit: -20 is outside [1, 1000000000]"}},
		{"unlimited with limits", "        unlimited: true\n", "        unlimited: true\n        limits: [{name: x, algorithm: gcra, limit: 1, period: 1s}]\n", []string{
			"orders.yaml:22: namespaces[orders].descriptors[3].unlimited: an unlimited descriptor has no limits"}},
		{"not a bool", "unlimited: true", "unlimited: yes please", []string{
			`orders.yaml:22: namespaces[orders].descriptors[3].unlimited: want true or false, got "yes please"`}},
		{"unknown field", "        value: orders\n", "        valeu: orders\n", []string{
			"orders.yaml:17: namespaces[orders].descriptors[2].valeu: unknown field (want key, value, limits, unlimited, name, replaces, shadow_mode, share_threshold, detailed_metric, value_to_metric, descriptors)"}},
		{"override of no descriptor limit", "remote_address=10.0.0.7", "nothing=here", []string{
			"orders.yaml:24: namespaces[orders].overrides[0].descriptors[0]: the descriptor matches no limit of the namespace"}},
		{"override not key=value", "remote_address=10.0.0.7", "nonsense", []string{
			`orders.yaml:24: namespaces[orders].overrides[0].descriptors[0]: invalid descriptor: "nonsense" is not key=value (want key=value,key=value, each query-escaped)`}},
		{"nested empty key", "          - key: user\n", "          - value: user\n", []string{
			"orders.yaml:12: namespaces[orders].descriptors[1].descriptors[0].key: descriptor has empty key"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(descriptorsYAML, tc.from) {
				t.Fatalf("%q not in the file", tc.from)
			}
			var got []string
			for _, err := range Validate([]byte(strings.Replace(descriptorsYAML, tc.from, tc.to, 1)), "orders.yaml") {
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}

const leaseYAML = `namespaces:
  - name: orders
    descriptors:
      - key: endpoint
        value: place_order
        limits:
          - {name: global, algorithm: token_bucket, limit: 1000, period: 1s, burst: 2000, lease: true}
      - key: user
        limits:
          - {name: per-user, algorithm: token_bucket, limit: 10, period: 1s}
  - name: tenants
    limits:
      - {name: tenant, algorithm: gcra, limit: 5000, period: 1s, lease: true}
`

// A leased limit reads from YAML; one that cannot be leased, or does not
// stand alone, is refused at its line.
func TestLeaseConfig(t *testing.T) {
	snap, err := ParseAt([]byte(leaseYAML), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]policy.Match, 2)
	if err := snap.ResolveDescriptors("orders", []policy.Descriptor{
		{Entries: []policy.Entry{{Key: "endpoint", Value: "place_order"}}},
		{Entries: []policy.Entry{{Key: "user", Value: "42"}}},
	}, out); err != nil {
		t.Fatal(err)
	}
	if r := out[0].Rules; len(r) != 1 || !r[0].Lease || r[0].Burst != 2000 || out[1].Rules[0].Lease {
		t.Errorf("leased descriptor: %+v, the other: %+v", out[0].Rules, out[1].Rules)
	}
	if set, err := snap.Resolve("tenants", "acme"); err != nil || !set.Rules[0].Lease {
		t.Errorf("a leased subject limit: %+v %v", set, err)
	}
	for _, tc := range []struct {
		name, from, to string
		want           []string
	}{
		{"a window", "algorithm: token_bucket, limit: 1000, period: 1s, burst: 2000,", "algorithm: fixed_window, limit: 1000, period: 1s,", []string{
			"orders.yaml:7: namespaces[orders].descriptors[0].limits[global].lease: only a token_bucket can be leased, not a fixed_window"}},
		{"a burst of 1", "burst: 2000,", "burst: 1,", []string{
			"orders.yaml:7: namespaces[orders].descriptors[0].limits[global].lease: a leased token_bucket needs a burst of at least 2, not 1"}},
		{"not alone", "          - {name: per-user,", "          - {name: also, algorithm: gcra, limit: 5, period: 1s, lease: true}\n          - {name: per-user,", []string{
			"orders.yaml:10: namespaces[orders].descriptors[1].limits[also].lease: a leased limit stands alone in its limits (give it a namespace or a descriptor of its own; a request checks several descriptors at once)"}},
		{"not a bool", "burst: 2000, lease: true}", "burst: 2000, lease: sure}", []string{
			`orders.yaml:7: namespaces[orders].descriptors[0].limits[global].lease: want true or false, got sure`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if !strings.Contains(leaseYAML, tc.from) {
				t.Fatalf("%q not in the file", tc.from)
			}
			var got []string
			for _, err := range Validate([]byte(strings.Replace(leaseYAML, tc.from, tc.to, 1)), "orders.yaml") {
				got = append(got, err.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("\n got %s\nwant %s", strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
			}
		})
	}
}
