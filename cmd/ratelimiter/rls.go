package main

import (
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/reflection"

	"github.com/distributedratelimiter/ratelimiter/transport/grpcapi"
	"github.com/distributedratelimiter/ratelimiter/transport/rls"
)

// newRLS is Envoy's rate limit service protocol (gRPC) over svc.
func newRLS(s *rls.Server, traced bool) netServer {
	return newGRPC("envoy.service.ratelimit.v3.RateLimitService", s.Register, traced)
}

// newNative is the native gRPC API (ratelimiter.v1.RateLimiter).
func newNative(s *grpcapi.Server, traced bool) netServer {
	return newGRPC("ratelimiter.v1.RateLimiter", s.Register, traced)
}

// newGRPC is a gRPC server of one service, registered by register, with
// the standard gRPC health service, which reports NOT_SERVING once
// shutdown begins, and server reflection, so that grpcurl can list and
// describe it.
func newGRPC(name string, register func(grpc.ServiceRegistrar), traced bool) netServer {
	var opts []grpc.ServerOption
	if traced {
		opts = append(opts, grpc.StatsHandler(otelgrpc.NewServerHandler()))
	}
	g := grpc.NewServer(opts...)
	register(g)
	reflection.Register(g) // grpcurl -plaintext ADDR list / describe
	hs := health.NewServer()
	hs.SetServingStatus(name, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(g, hs)
	return grpcServer{Server: g, beforeStop: hs.Shutdown}
}
