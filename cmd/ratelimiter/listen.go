package main

import (
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"time"
)

// httpFlags are the timeouts of every HTTP listener of serve (the API, the
// admin API, the reverse proxy): one set, so that no listener is softer
// than another.
type httpFlags struct {
	readHeaderTimeout time.Duration
	readTimeout       time.Duration
	writeTimeout      time.Duration
	idleTimeout       time.Duration
}

func (h *httpFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&h.readHeaderTimeout, "read-header-timeout", 5*time.Second, "every HTTP listener: longest a client may take to send a request's headers")
	fs.DurationVar(&h.readTimeout, "read-timeout", 30*time.Second, "every HTTP listener: longest a client may take to send a whole request, body included")
	fs.DurationVar(&h.writeTimeout, "write-timeout", 30*time.Second, "every HTTP listener: longest from the end of a request's headers to the end of its answer (the proxy's upstream included)")
	fs.DurationVar(&h.idleTimeout, "idle-timeout", 2*time.Minute, "every HTTP listener: longest a kept-alive connection may wait for its next request")
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
