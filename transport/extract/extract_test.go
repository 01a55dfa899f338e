package extract

import (
	"net/http/httptest"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

func TestClientAddress(t *testing.T) {
	trusted, err := ParseTrusted("10.0.0.0/8, 192.168.1.7, fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	o := Options{TrustedProxies: trusted}
	for _, c := range []struct {
		name, peer string
		headers    map[string]string
		want       string
	}{
		{"no proxy", "203.0.113.9:5000", nil, "203.0.113.9"},
		{"a forged header from an untrusted peer is ignored", "203.0.113.9:5000",
			map[string]string{"X-Forwarded-For": "1.2.3.4", "Forwarded": "for=5.6.7.8"}, "203.0.113.9"},
		{"a trusted proxy's X-Forwarded-For", "10.1.2.3:80", map[string]string{"X-Forwarded-For": "198.51.100.4"}, "198.51.100.4"},
		{"the client's own additions stay on the left", "10.1.2.3:80",
			map[string]string{"X-Forwarded-For": "6.6.6.6, 198.51.100.4"}, "198.51.100.4"},
		{"a chain of trusted proxies", "10.1.2.3:80",
			map[string]string{"X-Forwarded-For": "6.6.6.6, 198.51.100.4, 192.168.1.7, 10.9.9.9"}, "198.51.100.4"},
		{"Forwarded wins over X-Forwarded-For", "10.1.2.3:80",
			map[string]string{"Forwarded": `for=198.51.100.5;proto=https, for="[2001:db8:cafe::17]:4711"`, "X-Forwarded-For": "1.1.1.1"},
			"2001:db8:cafe::/64"},
		{"garbage stops at the last trusted hop", "10.1.2.3:80", map[string]string{"X-Forwarded-For": "198.51.100.4, not-an-ip"}, "10.1.2.3"},
		{"every hop trusted: the leftmost", "10.1.2.3:80", map[string]string{"X-Forwarded-For": "10.0.0.1, 10.0.0.2"}, "10.0.0.1"},
		{"IPv6 grouped by /64", "[2001:db8:1:2:aaaa:bbbb:cccc:dddd]:443", nil, "2001:db8:1:2::/64"},
		{"IPv4-mapped IPv6 is IPv4", "[::ffff:198.51.100.9]:443", nil, "198.51.100.9"},
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = c.peer
		for k, v := range c.headers {
			r.Header.Set(k, v)
		}
		got, err := ClientAddress(r, o)
		if err != nil || got != c.want {
			t.Errorf("%s: %q %v, want %q", c.name, got, err, c.want)
		}
	}
	r := httptest.NewRequest("GET", "/", nil)
	r.RemoteAddr = "[2001:db8:1:2:aaaa::1]:443"
	if got, _ := ClientAddress(r, Options{IPv6Prefix: 48}); got != "2001:db8:1::/48" {
		t.Errorf("a /48: %q", got)
	}
	r.RemoteAddr = "pipe"
	if _, err := ClientAddress(r, o); err == nil {
		t.Error("no address accepted")
	}
	if _, err := ParseTrusted("10.0.0.0/8, nonsense"); err == nil {
		t.Error("a bad prefix accepted")
	}
}

// A namespace's request descriptors from a request: a missing header or an
// unmatched path leaves its descriptor out; paths match their patterns.
func TestDescriptors(t *testing.T) {
	ns := &policy.Namespace{RequestDescriptors: []policy.RequestDescriptor{
		{{Key: "remote_address", From: policy.FromClientAddress}},
		{{Key: "route", From: policy.FromMethod}, {Key: "path", From: policy.FromPath, Paths: []string{"/orders/*", "/users/*/cart"}}},
		{{Key: "user", From: policy.FromHeader, Header: "X-User-ID"}},
		{{Key: "endpoint", From: policy.FromValue, Value: "orders"}},
	}}
	r := httptest.NewRequest("POST", "/orders/42", nil)
	r.RemoteAddr = "198.51.100.4:999"
	ds, err := Descriptors(r, ns, 2, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 3 || ds[0].Entries[0].Value != "198.51.100.4" || ds[1].Entries[1].Value != "/orders/*" ||
		ds[1].Entries[0].Value != "POST" || ds[2].Entries[0].Value != "orders" || ds[2].Cost != 2 {
		t.Fatalf("%+v", ds)
	}
	r = httptest.NewRequest("GET", "/elsewhere", nil)
	r.Header.Set("X-User-ID", "u1")
	ds, _ = Descriptors(r, ns, 1, Options{})
	if len(ds) != 3 || ds[1].Entries[0].Value != "u1" {
		t.Fatalf("unmatched path: %+v", ds)
	}
}
