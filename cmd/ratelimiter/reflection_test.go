package main

import (
	"context"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	rpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/descriptorpb"
)

// Every gRPC listener (the native API and Envoy's protocol) answers server
// reflection as grpcurl asks it (`list`, then `describe` of a service) and
// the standard health service.
func TestGRPCReflectionAndHealth(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	s := startServer(t, buildBinary(t), "--grpc-listen", "127.0.0.1:0", "--rls-listen", "127.0.0.1:0")
	for _, tc := range []struct{ listener, service, method string }{
		{"grpc", "ratelimiter.v1.RateLimiter", "CheckStream"},
		{"rls", "envoy.service.ratelimit.v3.RateLimitService", "ShouldRateLimit"},
	} {
		addr, _ := s.waitLog(t, tc.listener+" listening", 5*time.Second)["addr"].(string)
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		stream, err := rpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		ask := func(req *rpb.ServerReflectionRequest) *rpb.ServerReflectionResponse {
			t.Helper()
			if err := stream.Send(req); err != nil {
				t.Fatal(err)
			}
			res, err := stream.Recv()
			if err != nil {
				t.Fatal(err)
			}
			return res
		}
		// grpcurl list
		var names []string
		for _, sv := range ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_ListServices{}}).GetListServicesResponse().GetService() {
			names = append(names, sv.GetName())
		}
		for _, want := range []string{tc.service, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
			if !slices.Contains(names, want) {
				t.Errorf("%s: list %v, want %s", tc.listener, names, want)
			}
		}
		// grpcurl describe SERVICE
		files := ask(&rpb.ServerReflectionRequest{MessageRequest: &rpb.ServerReflectionRequest_FileContainingSymbol{FileContainingSymbol: tc.service}}).
			GetFileDescriptorResponse().GetFileDescriptorProto()
		found := false
		for _, raw := range files {
			var fd descriptorpb.FileDescriptorProto
			if err := proto.Unmarshal(raw, &fd); err != nil {
				t.Fatal(err)
			}
			for _, sv := range fd.GetService() {
				if fd.GetPackage()+"."+sv.GetName() != tc.service {
					continue
				}
				for _, m := range sv.GetMethod() {
					found = found || m.GetName() == tc.method
				}
			}
		}
		if !found {
			t.Errorf("%s: describe %s: no method %s in %d files", tc.listener, tc.service, tc.method, len(files))
		}
		h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: tc.service})
		if err != nil || h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s: health of %s: %v %v", tc.listener, tc.service, h, err)
		}
	}
}
