package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"github.com/valyala/fasthttp"
	"google.golang.org/grpc"
)

// The no-op servers answer a check as this service does on the same
// transport (the same status, headers and body size) without deciding
// anything: what the transport itself costs, to compare a single check's
// CPU time with. Each runs as its own process (peers noop-http ADDR, ...)
// so that its CPU time is its own.

// noopBody is a one-limit answer of POST /v1/check, as this service writes it.
const noopBody = `{"allowed":true,"namespace":"orders","subject":"user-1234","retry_after_ms":0,"delay_ms":0,"decided_by":"store","limits":[{"name":"per-hour","limit":1000000000,"remaining":999999999,"reset_after_ms":4,"retry_after_ms":0,"period_ms":3600000}]}` + "\n"

// noopHeaders are the answer's rate limit headers.
var noopHeaders = [][2]string{
	{"Content-Type", "application/json"},
	{"Ratelimit", `"per-hour";r=999999999;t=1`},
	{"Ratelimit-Decided-By", "store"},
	{"Ratelimit-Policy", `"per-hour";q=1000000000;w=3600`},
	{"X-Ratelimit-Limit", "1000000000"},
	{"X-Ratelimit-Remaining", "999999999"},
	{"X-Ratelimit-Reset", "1"},
}

// noop runs the no-op server kind on addr until killed.
func noop(kind, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	switch kind {
	case "noop-http":
		// net/http with this service's server settings.
		srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.Copy(io.Discard, r.Body)
			h := w.Header()
			for _, kv := range noopHeaders {
				h[kv[0]] = []string{kv[1]}
			}
			io.WriteString(w, noopBody)
		}), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
			IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
		return srv.Serve(ln)
	case "noop-fasthttp":
		srv := &fasthttp.Server{Handler: func(c *fasthttp.RequestCtx) {
			_ = c.PostBody()
			for _, kv := range noopHeaders {
				c.Response.Header.Set(kv[0], kv[1])
			}
			c.WriteString(noopBody)
		}, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute, ReadBufferSize: 64 << 10}
		return srv.Serve(ln)
	case "noop-rls":
		g := grpc.NewServer()
		rlsv3.RegisterRateLimitServiceServer(g, noopRLS{})
		return g.Serve(ln)
	}
	os.Exit(2)
	return nil
}

type noopRLS struct {
	rlsv3.UnimplementedRateLimitServiceServer
}

// ShouldRateLimit answers OK with the status and headers this service
// gives an admitted descriptor.
func (noopRLS) ShouldRateLimit(_ context.Context, req *rlsv3.RateLimitRequest) (*rlsv3.RateLimitResponse, error) {
	res := &rlsv3.RateLimitResponse{OverallCode: rlsv3.RateLimitResponse_OK}
	for range req.GetDescriptors() {
		res.Statuses = append(res.Statuses, &rlsv3.RateLimitResponse_DescriptorStatus{Code: rlsv3.RateLimitResponse_OK,
			CurrentLimit:   &rlsv3.RateLimitResponse_RateLimit{RequestsPerUnit: 1_000_000_000, Unit: rlsv3.RateLimitResponse_RateLimit_HOUR},
			LimitRemaining: 999_999_999})
	}
	for _, kv := range noopHeaders[1:] {
		res.ResponseHeadersToAdd = append(res.ResponseHeadersToAdd, &corev3.HeaderValue{Key: kv[0], Value: kv[1]})
	}
	return res, nil
}
