package main

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/distributedratelimiter/ratelimiter/transport/rls"
)

// newRLS is Envoy's rate limit service protocol (gRPC) over svc, with the
// standard gRPC health service, which reports NOT_SERVING once shutdown
// begins.
func newRLS(s *rls.Server, traced bool) netServer {
	var opts []grpc.ServerOption
	if traced {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	}
	g := grpc.NewServer(opts...)
	s.Register(g)
	hs := health.NewServer()
	hs.SetServingStatus("envoy.service.ratelimit.v3.RateLimitService", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return grpcServer{Server: g, beforeStop: hs.Shutdown}
}
