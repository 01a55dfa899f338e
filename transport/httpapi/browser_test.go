package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Browser safety: curl-like clients pass; cross-site and foreign-Host
// requests do not.
func TestBrowserSafe(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(200) })
	loop, err := BrowserSafe(ok, BrowserOptions{LoopbackOnly: true, AllowedHosts: []string{"limiter.internal", "*.svc.cluster.local"},
		TrustedOrigins: []string{"https://dash.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	open, err := BrowserSafe(ok, BrowserOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		h      http.Handler
		method string
		host   string
		hdr    map[string]string
		want   int
	}{
		{"curl -d, form content type, no Origin", loop, "POST", "127.0.0.1:8080", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 200},
		{"localhost", loop, "POST", "localhost:8080", nil, 200},
		{"IPv6 loopback", loop, "GET", "[::1]:8080", nil, 200},
		{"a sub-name of localhost", loop, "GET", "app.localhost", nil, 200},
		{"an allowed name", loop, "GET", "limiter.internal:80", nil, 200},
		{"an allowed wildcard", loop, "GET", "rl.default.svc.cluster.local", nil, 200},
		{"DNS rebinding: a foreign name on loopback", loop, "GET", "evil.example:8080", nil, 403},
		{"a public address on loopback", loop, "GET", "203.0.113.5", nil, 403},
		{"any host off loopback without a list", open, "GET", "evil.example", nil, 200},
		{"cross-site POST (Sec-Fetch-Site)", loop, "POST", "localhost:8080", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"}, 403},
		{"cross-site GET: the gate charges on GET", loop, "GET", "localhost:8080", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"same-site from another port", loop, "POST", "localhost:8080", map[string]string{"Sec-Fetch-Site": "same-site", "Origin": "http://localhost:3000"}, 403},
		{"cross-origin POST, old browser (Origin only)", loop, "POST", "localhost:8080", map[string]string{"Origin": "https://evil.example"}, 403},
		{"same-origin browser POST", loop, "POST", "localhost:8080", map[string]string{"Sec-Fetch-Site": "same-origin", "Origin": "http://localhost:8080"}, 200},
		{"a trusted origin", loop, "POST", "localhost:8080", map[string]string{"Sec-Fetch-Site": "cross-site", "Origin": "https://dash.example.com"}, 200},
		{"user typed the URL", loop, "GET", "localhost:8080", map[string]string{"Sec-Fetch-Site": "none"}, 200},
	} {
		r := httptest.NewRequest(tc.method, "/v1/check", nil)
		r.Host = tc.host
		for k, v := range tc.hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		tc.h.ServeHTTP(w, r)
		if w.Code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, w.Code, w.Body, tc.want)
		}
	}
	if _, err := BrowserSafe(ok, BrowserOptions{TrustedOrigins: []string{"not a url"}}); err == nil {
		t.Error("a bad trusted origin accepted")
	}
	if _, err := BrowserSafe(ok, BrowserOptions{AllowedHosts: []string{"evil.example:80"}}); err == nil {
		t.Error("an allowed host with a port accepted")
	}
}
