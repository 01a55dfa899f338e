package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
)

// httpFlags are the timeouts of every HTTP listener of serve (the API, the
// admin API, the reverse proxy): one set, so that no listener is softer
// than another.
type httpFlags struct {
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
	allowedHosts      string
	allowedOrigins    string
}

func (h *httpFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&h.readHeaderTimeout, "read-header-timeout", 5*time.Second, "every HTTP listener: longest a client may take to send a request's headers")
	fs.DurationVar(&h.readTimeout, "read-timeout", 30*time.Second, "every HTTP listener: longest a client may take to send a whole request, body included")
	fs.DurationVar(&h.writeTimeout, "write-timeout", 30*time.Second, "every HTTP listener: longest from the end of a request's headers to the end of its answer (the proxy's upstream included)")
	fs.DurationVar(&h.idleTimeout, "idle-timeout", 2*time.Minute, "every HTTP listener: longest a kept-alive connection may wait for its next request")
	fs.StringVar(&h.allowedHosts, "allowed-hosts", "", "API and admin listeners: comma-separated Host names requests may carry (name or *.domain); on a loopback listener, loopback names are allowed too and nothing else is (DNS rebinding); empty off loopback: any")
	fs.StringVar(&h.allowedOrigins, "allowed-origins", "", "API and admin listeners: comma-separated browser origins (https://dash.example.com) allowed to call cross-site; every other cross-site browser request is refused")
}

// browserServer serves h behind httpapi.BrowserSafe with the flags' hosts
// and origins (the API and the admin API, which browsers may be tricked
// into calling).
func (f httpFlags) browserServer(h http.Handler, log *slog.Logger) build {
	return func(ln net.Listener) (netServer, error) {
		safe, err := httpapi.BrowserSafe(h, httpapi.BrowserOptions{
			AllowedHosts:   splitList(f.allowedHosts),
			LoopbackOnly:   httpapi.IsLoopbackListener(ln.Addr()),
			TrustedOrigins: splitList(f.allowedOrigins),
		})
		if err != nil {
			return nil, err
		}
		return newHTTPServer(safe, f, log), nil
	}
}

// server serves h as it is (the reverse proxy, whose Host is the
// protected service's).
func (f httpFlags) server(h http.Handler, log *slog.Logger) build {
	return func(net.Listener) (netServer, error) { return newHTTPServer(h, f, log), nil }
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, v := range strings.Split(s, ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (h *httpFlags) validate() error {
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"--read-header-timeout", h.readHeaderTimeout}, {"--read-timeout", h.readTimeout}, {"--write-timeout", h.writeTimeout}, {"--idle-timeout", h.idleTimeout}} {
		if d.v <= 0 {
			return fmt.Errorf("%s: %v, want more than 0", d.name, d.v)
		}
	}
	// Checked here, before anything starts: browserServer cannot fail later.
	if _, err := httpapi.BrowserSafe(http.NotFoundHandler(), httpapi.BrowserOptions{
		AllowedHosts: splitList(h.allowedHosts), TrustedOrigins: splitList(h.allowedOrigins)}); err != nil {
		return fmt.Errorf("--allowed-hosts, --allowed-origins: %w", err)
	}
	return nil
}

// newHTTPServer is the one http.Server of every listener of serve.
func newHTTPServer(h http.Handler, f httpFlags, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: f.readHeaderTimeout,
		ReadTimeout:       f.readTimeout,
		WriteTimeout:      f.writeTimeout,
		IdleTimeout:       f.idleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
}
