package main

import (
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/distributedratelimiter/ratelimiter/transport/rls"
)

// newRLS is Envoy's rate limit service protocol (gRPC) over svc, with the
// standard gRPC health service, which reports NOT_SERVING once shutdown
// begins.
func newRLS(s *rls.Server) netServer {
	g := grpc.NewServer()
	s.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return grpcServer{Server: g, beforeStop: hs.Shutdown}
}
