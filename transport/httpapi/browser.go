package httpapi

import (
	"fmt"
	"net"
	"net/http"
	"strings"
)

// BrowserOptions configure BrowserSafe.
type BrowserOptions struct {
	// AllowedHosts are the Host names requests may carry (a name, or
	// "*.example.com" for its subdomains); empty allows any, unless
	// LoopbackOnly.
	AllowedHosts []string
	// LoopbackOnly restricts the Host to loopback names and addresses
	// (localhost, *.localhost, 127.0.0.0/8, ::1) besides AllowedHosts: what
	// a listener bound to a loopback address serves, so that a web page
	// whose name an attacker points at 127.0.0.1 (DNS rebinding) cannot
	// reach it.
	LoopbackOnly bool
	// TrustedOrigins are the browser origins ("https://dash.example.com")
	// allowed to call cross-origin.
	TrustedOrigins []string
}

// BrowserSafe refuses, with 403, what a web page a user visits could make
// the user's browser send to the limiter: a request for a Host it does not
// serve (DNS rebinding: a page of evil.example resolved to 127.0.0.1,
// reading the answers), a request of any method that the browser marks as
// coming from another site (Sec-Fetch-Site other than same-origin or none:
// the gate charges on GET, so safe methods are no exception here), and an
// unsafe request whose Origin is not the Host's
// (http.CrossOriginProtection, for browsers without Sec-Fetch-Site).
// Clients that are not browsers (curl, SDKs, proxies) send neither header
// and are not affected, whatever their Content-Type.
func BrowserSafe(next http.Handler, o BrowserOptions) (http.Handler, error) {
	cop := http.NewCrossOriginProtection()
	trusted := map[string]bool{}
	for _, origin := range o.TrustedOrigins {
		if err := cop.AddTrustedOrigin(origin); err != nil {
			return nil, fmt.Errorf("trusted origin %q: %w", origin, err)
		}
		trusted[origin] = true
	}
	for _, h := range o.AllowedHosts {
		if h == "" || strings.ContainsAny(h, "/: ") {
			return nil, fmt.Errorf("allowed host %q: want a host name, or *.domain", h)
		}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !hostAllowed(r.Host, o) {
			writeError(w, http.StatusForbidden, "host "+truncate(r.Host, 64)+" is not served here")
			return
		}
		switch r.Header.Get("Sec-Fetch-Site") {
		case "", "same-origin", "none":
		default:
			if !trusted[r.Header.Get("Origin")] {
				writeError(w, http.StatusForbidden, "cross-site browser requests are refused")
				return
			}
		}
		if err := cop.Check(r); err != nil {
			writeError(w, http.StatusForbidden, "cross-origin browser requests are refused")
			return
		}
		next.ServeHTTP(w, r)
	}), nil
}

// hostAllowed reports whether a request's Host is one the listener serves.
func hostAllowed(hostport string, o BrowserOptions) bool {
	if len(o.AllowedHosts) == 0 && !o.LoopbackOnly {
		return true
	}
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.ToLower(strings.TrimSuffix(strings.Trim(host, "[]"), "."))
	for _, a := range o.AllowedHosts {
		a = strings.ToLower(a)
		if host == a || (strings.HasPrefix(a, "*.") && strings.HasSuffix(host, a[1:])) {
			return true
		}
	}
	if !o.LoopbackOnly {
		return false
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// IsLoopbackListener reports whether addr, a listener's address, is on a
// loopback interface only.
func IsLoopbackListener(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
