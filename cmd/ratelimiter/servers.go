package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"

	"github.com/distributedratelimiter/ratelimiter/tlsfiles"
	"google.golang.org/grpc"
)

// netServer is what serve runs on a listener, in the spirit of Caddy's App
// (Start, Stop): *http.Server is one (the API, the admin API, the reverse
// proxy), grpcServer adapts Envoy's rate limit service.
type netServer interface {
	Serve(net.Listener) error
	// Shutdown stops accepting and lets what is in flight finish within
	// ctx; Close stops at once.
	Shutdown(ctx context.Context) error
	Close() error
}

// listener is a server bound to its address, named for logs and errors
// ("" for the API, "admin", "proxy", "grpc", "rls").
type listener struct {
	name  string
	srv   netServer
	ln    net.Listener
	attrs []any // logged with "<name> listening"
}

// exit is a server's Serve returning.
type exit struct {
	name string
	err  error
}

// servers are the listeners of one serve, started together and stopped
// together.
type servers struct {
	log *slog.Logger
	// tls, when set, is every listener's TLS (--tls-cert-file).
	tls     *tlsfiles.Reloader
	list    []*listener
	exited  chan exit
	started int
}

// build makes the server of a bound listener (an HTTP handler may depend
// on the address, see httpFlags.browserServer).
type build func(net.Listener) (netServer, error)

// add binds addr and builds its server, which start serves; the caller
// closes the servers on an error.
func (s *servers) add(name, addr string, b build, attrs ...any) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	if s.tls != nil {
		ln = tls.NewListener(ln, s.tls.ServerConfig(alpn(name)...))
		attrs = append(attrs, "tls", true)
	}
	srv, err := b(ln)
	if err != nil {
		ln.Close()
		return err
	}
	s.list = append(s.list, &listener{name: name, srv: srv, ln: ln, attrs: attrs})
	return nil
}

// start serves every listener, each on its own goroutine.
func (s *servers) start() {
	s.exited = make(chan exit, len(s.list))
	for _, l := range s.list {
		go func() { s.exited <- exit{l.name, l.srv.Serve(l.ln)} }()
		s.started++
		msg := "listening"
		if l.name != "" {
			msg = l.name + " listening"
		}
		s.log.Info(msg, append([]any{"addr", l.ln.Addr().String()}, l.attrs...)...)
	}
}

// failed receives the exit of a server that stopped serving on its own.
func (s *servers) failed() <-chan exit { return s.exited }

// shutdown stops every listener together, letting what is in flight
// finish within ctx, and waits for them; it reports the first error.
func (s *servers) shutdown(ctx context.Context) error {
	errs := make(chan error, len(s.list))
	for _, l := range s.list {
		go func() {
			if err := l.srv.Shutdown(ctx); err != nil {
				errs <- fmt.Errorf("graceful shutdown of %s: %w", l.describe(), err)
				return
			}
			errs <- nil
		}()
	}
	var first error
	for range s.list {
		if err := <-errs; err != nil && first == nil {
			first = err
		}
	}
	for range s.started {
		if e := <-s.exited; e.err != nil && !errors.Is(e.err, http.ErrServerClosed) && first == nil {
			first = fmt.Errorf("%s: %w", describe(e.name), e.err)
		}
	}
	s.started = 0
	return first
}

// close stops every listener at once (an error return of serve).
func (s *servers) close() {
	for _, l := range s.list {
		l.srv.Close()
		l.ln.Close()
	}
}

func (l *listener) describe() string { return describe(l.name) }

func describe(name string) string {
	if name == "" {
		return "the http server"
	}
	return "the " + name + " server"
}

// grpcServer is a gRPC server as a netServer: Shutdown is GracefulStop within
// ctx, then Stop; before, it reports NOT_SERVING to health checkers.
type grpcServer struct {
	*grpc.Server
	beforeStop func()
}

func (g grpcServer) Shutdown(ctx context.Context) error {
	if g.beforeStop != nil {
		g.beforeStop()
	}
	done := make(chan struct{})
	go func() { g.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		g.Stop()
		<-done
	}
	return nil
}

func (g grpcServer) Close() error {
	g.Stop()
	return nil
}
