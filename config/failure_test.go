package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

// on_store_error: the three policies decode, the default is local, and a
// wrong value is an error on its line.
func TestOnStoreError(t *testing.T) {
	for _, tc := range []struct {
		line string
		want policy.FailurePolicy
	}{
		{"", policy.FailLocal},
		{"    on_store_error: local\n", policy.FailLocal},
		{"    on_store_error: open\n", policy.FailOpen},
		{"    on_store_error: closed\n", policy.FailClosed},
		{"    on_store_error:\n", policy.FailLocal}, // no value is no key
	} {
		data := edit(t, "    subject_header: X-User-ID\n", "    subject_header: X-User-ID\n"+tc.line)
		snap, err := ParseAt([]byte(data), "orders.yaml", t0)
		if err != nil {
			t.Fatalf("%q: %v", tc.line, err)
		}
		ns, _ := snap.Namespace("orders")
		if ns.OnStoreError != tc.want {
			t.Errorf("%q: OnStoreError = %v, want %v", tc.line, ns.OnStoreError, tc.want)
		}
	}

	for _, tc := range []struct {
		line string
		want []string
	}{
		{"    on_store_error: fail_open\n", []string{
			`orders.yaml:4: namespaces[orders].on_store_error: "fail_open" is not a failure policy (want one of open, closed, local)`}},
		{"    on_store_error: [open]\n", []string{
			`orders.yaml:4: namespaces[orders].on_store_error: want a string, got a list`}},
		{"    on_store_error: open\n    on_store_error: closed\n", []string{
			`orders.yaml:5: namespaces[orders].on_store_error: duplicate key (first on line 4)`}},
		{"    on_store_eror: open\n", []string{
			`orders.yaml:4: namespaces[orders].on_store_eror: unknown field (want name, subject_header, cost_header, on_store_error, limits, descriptors, descriptor_algorithm, request_descriptors, overrides)`}},
	} {
		data := edit(t, "    subject_header: X-User-ID\n", "    subject_header: X-User-ID\n"+tc.line)
		var got []string
		for _, err := range Validate([]byte(data), "orders.yaml") {
			got = append(got, err.Error())
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%q:\n got %s\nwant %s", tc.line, strings.Join(got, "\n     "), strings.Join(tc.want, "\n     "))
		}
	}
}

func TestFailurePolicyNames(t *testing.T) {
	for _, name := range policy.FailurePolicies() {
		p, err := policy.ParseFailurePolicy(name)
		if err != nil || p.String() != name {
			t.Errorf("ParseFailurePolicy(%q) = %v, %v", name, p, err)
		}
	}
	if _, err := policy.ParseFailurePolicy("Open"); err == nil {
		t.Error(`ParseFailurePolicy("Open") succeeded`)
	}
	if _, err := policy.New([]policy.Namespace{{Name: "x", Rules: nil, OnStoreError: 7}}, "", t0); err == nil ||
		!strings.Contains(err.Error(), "namespaces[x].on_store_error: failure_policy(7) is not a failure policy") {
		t.Errorf("policy.New with OnStoreError 7: %v", err)
	}
}

// cost_header: none by default (every gated request costs 1); a header name
// otherwise, not the subject header.
func TestCostHeader(t *testing.T) {
	snap, err := ParseAt([]byte(edit(t, "name: orders", "name: orders")), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	if ns, _ := snap.Namespace("orders"); ns.CostHeader != "" {
		t.Errorf("default cost header %q, want none", ns.CostHeader)
	}
	data := edit(t, "    subject_header: X-User-ID\n", "    subject_header: X-User-ID\n    cost_header: X-RateLimit-Cost\n")
	snap, err = ParseAt([]byte(data), "orders.yaml", t0)
	if err != nil {
		t.Fatal(err)
	}
	if ns, _ := snap.Namespace("orders"); ns.CostHeader != "X-RateLimit-Cost" {
		t.Errorf("cost header %q", ns.CostHeader)
	}
	for _, tc := range []struct{ line, want string }{
		{"    cost_header: X Cost\n", `orders.yaml:4: namespaces[orders].cost_header: "X Cost" is not an HTTP header name`},
		{"    cost_header: x-user-id\n", `orders.yaml:4: namespaces[orders].cost_header: x-user-id is the subject header too`},
	} {
		errs := Validate([]byte(edit(t, "    subject_header: X-User-ID\n", "    subject_header: X-User-ID\n"+tc.line)), "orders.yaml")
		if len(errs) != 1 || errs[0].Error() != tc.want {
			t.Errorf("%q: %v, want %s", tc.line, errs, tc.want)
		}
	}
}
