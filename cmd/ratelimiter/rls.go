package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/rls"
)

// rlsServer is the running Envoy rate limit service; nil fields when off.
type rlsServer struct {
	srv    *grpc.Server
	health *health.Server
	served chan error
}

// startRLS serves Envoy's rate limit service protocol (gRPC) on addr, with
// the standard gRPC health service, when addr is set.
func startRLS(addr string, svc *service.Service, log *slog.Logger) (*rlsServer, error) {
	if addr == "" {
		return &rlsServer{}, nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("--rls-listen: %w", err)
	}
	g := grpc.NewServer()
	rls.New(svc).Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	r := &rlsServer{srv: g, health: hs, served: make(chan error, 1)}
	go func() { r.served <- g.Serve(ln) }()
	log.Info("rls listening", "addr", ln.Addr().String())
	return r, nil
}

// rlsServed receives the gRPC server's exit; nil without one.
func (r *rlsServer) rlsServed() <-chan error { return r.served }

// close stops the server at once (an error return of serve).
func (r *rlsServer) close() {
	if r.srv != nil {
		r.srv.Stop()
	}
}

// shutdown reports NOT_SERVING to health checkers, lets calls in flight
// finish within ctx, then stops.
func (r *rlsServer) shutdown(ctx context.Context) {
	if r.srv == nil {
		return
	}
	r.health.Shutdown()
	done := make(chan struct{})
	go func() { r.srv.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-ctx.Done():
		r.srv.Stop()
		<-done
	}
	<-r.served
}
