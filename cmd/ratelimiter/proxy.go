package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"

	"github.com/distributedratelimiter/ratelimiter/middleware"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/extract"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// proxyFlags are the settings of the reverse-proxy mode: a listener that
// checks every request against one namespace and forwards the allowed ones
// to an upstream (the protected backend).
type proxyFlags struct {
	listen    string
	upstream  string
	namespace string
	subject   string
	routes    routeList
}

// routeList is --proxy-route, given once per route: "PATTERN=NAMESPACE",
// PATTERN a net/http ServeMux pattern ("POST /orders/", "GET /search/{q}").
type routeList []route

type route struct{ pattern, namespace string }

func (l *routeList) String() string {
	var s []string
	for _, r := range *l {
		s = append(s, r.pattern+"="+r.namespace)
	}
	return strings.Join(s, " ")
}

func (l *routeList) Set(v string) error {
	i := strings.LastIndex(v, "=")
	if i <= 0 || i == len(v)-1 {
		return fmt.Errorf("%q is not PATTERN=NAMESPACE", v)
	}
	*l = append(*l, route{strings.TrimSpace(v[:i]), strings.TrimSpace(v[i+1:])})
	return nil
}

func (p *proxyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&p.listen, "proxy-listen", "", "reverse-proxy mode: `address` to accept the protected service's traffic on (with --proxy-upstream)")
	fs.StringVar(&p.upstream, "proxy-upstream", "", "reverse-proxy mode: `URL` of the service allowed requests are forwarded to")
	fs.StringVar(&p.namespace, "proxy-namespace", "", "reverse-proxy mode: namespace every request is checked against")
	fs.StringVar(&p.subject, "proxy-subject", "header", "reverse-proxy mode: what a request is limited as: header (the namespace's subject_header, which a trusted hop in front must set, dropping the client's own) or remote-addr (the client's address: see --trusted-proxies)")
	fs.Var(&p.routes, "proxy-route", "reverse-proxy mode: `PATTERN=NAMESPACE`, repeatable: requests matching the net/http pattern (\"POST /orders/\", \"GET /search/{q}\") are checked against NAMESPACE; the others against --proxy-namespace, or 404 without it")
}

// newProxy is the reverse proxy's handler, nil when the mode is off, and
// the attributes of its "proxy listening" line. Each request is checked by the middleware (subject from the
// namespace's subject_header or the client address, cost 1 unless the
// namespace names a trusted cost_header) and, when allowed, forwarded to the
// upstream with X-Forwarded-For/-Host/-Proto and X-Real-IP set from the
// connection (every client-set address header removed) and the subject
// header it was limited by.
// Denied requests are answered 429 by the proxy and never reach the
// upstream; an upstream that does not answer is 502. The rate limit headers
// of the answer are the proxy's: the upstream's own are dropped, so that a
// client never sees two policies.
func newProxy(f proxyFlags, ex extract.Options, svc *service.Service, log *slog.Logger) (http.Handler, []any, error) {
	if f.listen == "" && f.upstream == "" && f.namespace == "" && len(f.routes) == 0 {
		return nil, nil, nil
	}
	if f.listen == "" || f.upstream == "" || (f.namespace == "" && len(f.routes) == 0) {
		return nil, nil, errors.New("reverse-proxy mode needs --proxy-listen, --proxy-upstream and --proxy-namespace (or --proxy-route) together")
	}
	up, err := url.Parse(f.upstream)
	if err != nil || (up.Scheme != "http" && up.Scheme != "https") || up.Host == "" {
		return nil, nil, fmt.Errorf("--proxy-upstream: %q is not an http(s) URL with a host", f.upstream)
	}
	if f.subject != "header" && f.subject != "remote-addr" {
		return nil, nil, fmt.Errorf("--proxy-subject: %q, want header or remote-addr", f.subject)
	}
	mux := http.NewServeMux()
	routes := f.routes
	if f.namespace != "" {
		routes = append(routes[:len(routes):len(routes)], route{"/", f.namespace})
	}
	for _, rt := range routes {
		h, err := proxyTo(up, rt.namespace, f.subject, ex, svc, log)
		if err != nil {
			return nil, nil, err
		}
		if err := handle(mux, rt.pattern, h); err != nil {
			return nil, nil, fmt.Errorf("--proxy-route %s=%s: %w", rt.pattern, rt.namespace, err)
		}
	}
	return mux, []any{"upstream", up.Redacted(), "namespace", f.namespace, "routes", routes.String(), "subject", f.subject}, nil
}

// handle registers h for pattern, reporting an invalid or conflicting
// pattern (which ServeMux panics on) as an error.
func handle(mux *http.ServeMux, pattern string, h http.Handler) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	mux.Handle(pattern, h)
	return nil
}

// proxyTo is the reverse proxy to up, every request checked against
// namespace ns first.
func proxyTo(up *url.URL, ns, subject string, ex extract.Options, svc *service.Service, log *slog.Logger) (http.Handler, error) {
	mo := middleware.Options{Namespace: ns, Logger: log, Extract: ex}
	if subject == "remote-addr" {
		mo.Subject = middleware.ClientAddress(ex)
	}
	limit, err := middleware.New(svc, mo)
	if err != nil {
		return nil, fmt.Errorf("--proxy-namespace: %w", err)
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(up)
			// The client's own Forwarded and X-Forwarded-* are already gone
			// (Rewrite mode); these are this hop's, from the connection.
			pr.SetXForwarded()
			for _, h := range clientAddressHeaders {
				pr.Out.Header.Del(h)
			}
			if host, _, err := net.SplitHostPort(pr.In.RemoteAddr); err == nil {
				pr.Out.Header.Set("X-Real-Ip", host)
			}
			// The upstream sees exactly the subject the request was
			// limited as: a client cannot have it stripped as hop-by-hop
			// (Connection: close, X-User-ID) nor send a second one.
			if n, ok := svc.Snapshot().Namespace(ns); ok && subject == "header" {
				pr.Out.Header.Set(n.SubjectHeader, pr.In.Header.Get(n.SubjectHeader))
			}
		},
		ModifyResponse: func(resp *http.Response) error {
			for _, k := range []string{headers.Policy, headers.RateLimit, headers.XLimit, headers.XRemaining, headers.XReset, headers.DecidedBy, headers.Shadow} {
				resp.Header.Del(k)
			}
			return nil
		},
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return limit(rp), nil
}

// clientAddressHeaders are the request headers that claim a client's
// address, which a client can set to anything: the proxy removes them all
// and sets X-Real-IP (and X-Forwarded-For) from the connection itself.
var clientAddressHeaders = []string{
	"X-Real-Ip", "True-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip", "Cf-Connecting-Ip",
	"Fastly-Client-Ip", "X-Originating-Ip", "Client-Ip", "X-Forwarded", "Forwarded-For",
	"X-Forwarded-Server", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Original-Forwarded-For",
}
