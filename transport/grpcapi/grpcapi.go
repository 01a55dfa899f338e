// Package grpcapi serves the native gRPC API (ratelimiter.v1.RateLimiter,
// proto/ratelimiter/v1) over a service: Check; CheckMany, up to MaxChecks,
// each subject's in order (service.CheckMany); and CheckStream, each check
// decided as it arrives by up to MaxStreamWorkers goroutines per stream and
// answered as soon as it is decided, with its request's id. A check that
// cannot be decided is answered with its status and error, like POST
// /v1/checks; the stream and the call go on.
package grpcapi

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/distributedratelimiter/ratelimiter/api/ratelimiterv1"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// MaxChecks bounds the checks of one CheckMany.
const MaxChecks = 1000

// MaxStreamInFlight bounds the checks of one stream received and not yet
// answered: past it, the stream's next message waits (flow control does
// the rest).
const MaxStreamInFlight = 256

// MaxStreamWorkers bounds the goroutines deciding one stream's checks.
const MaxStreamWorkers = 64

// Server implements pb.RateLimiterServer. Create it with New.
type Server struct {
	pb.UnimplementedRateLimiterServer
	svc *service.Service
}

// New returns the server of svc.
func New(svc *service.Service) *Server { return &Server{svc: svc} }

// Register registers s on g.
func (s *Server) Register(g grpc.ServiceRegistrar) { pb.RegisterRateLimiterServer(g, s) }

// Check implements pb.RateLimiterServer.
func (s *Server) Check(ctx context.Context, req *pb.CheckRequest) (*pb.CheckResponse, error) {
	return s.decide(ctx, req), nil
}

// CheckMany implements pb.RateLimiterServer.
func (s *Server) CheckMany(ctx context.Context, req *pb.CheckManyRequest) (*pb.CheckManyResponse, error) {
	if n := len(req.GetChecks()); n == 0 || n > MaxChecks {
		return nil, status.Errorf(codes.InvalidArgument, "%d checks, want 1 to %d", n, MaxChecks)
	}
	reqs := make([]service.Request, len(req.Checks))
	for i, c := range req.Checks {
		reqs[i] = request(c)
	}
	res, errs := make([]service.Result, len(reqs)), make([]error, len(reqs))
	s.svc.CheckMany(ctx, reqs, res, errs)
	out := &pb.CheckManyResponse{Results: make([]*pb.CheckResponse, len(req.Checks))}
	for i, c := range req.Checks {
		out.Results[i] = response(c.GetId(), &res[i], errs[i])
	}
	return out, nil
}

// CheckStream implements pb.RateLimiterServer. The stream's checks are
// decided by up to MaxStreamWorkers goroutines of its own, started as the
// stream needs them and kept until it ends (a goroutine per message would
// grow a fresh stack for every check), each answer sent as soon as it is
// decided.
func (s *Server) CheckStream(stream pb.RateLimiter_CheckStreamServer) error {
	ctx := stream.Context()
	var mu sync.Mutex // Send is not safe for concurrent use
	var sendErr error
	work := make(chan *pb.CheckRequest, MaxStreamInFlight)
	var wg sync.WaitGroup
	defer func() {
		close(work)
		wg.Wait()
	}()
	workers := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if workers < MaxStreamWorkers && (workers == 0 || len(work) > 0) {
			workers++
			wg.Go(func() {
				for req := range work {
					res := s.decide(ctx, req)
					mu.Lock()
					if sendErr == nil {
						sendErr = stream.Send(res)
					}
					mu.Unlock()
				}
			})
		}
		work <- req
	}
}

// decide answers one check.
func (s *Server) decide(ctx context.Context, req *pb.CheckRequest) *pb.CheckResponse {
	res := service.GetResult() // not in this frame: see service.CheckTo
	defer service.PutResult(res)
	err := s.svc.CheckTo(ctx, request(req), res)
	return response(req.GetId(), res, err)
}

// request is the service's request of a check; cost 0 means 1 unless a
// peek.
func request(req *pb.CheckRequest) service.Request {
	cost := req.GetCost()
	switch {
	case req.GetPeek():
		cost = 0
	case cost == 0:
		cost = 1
	}
	return service.Request{Namespace: req.GetNamespace(), Subject: req.GetSubject(), Cost: cost}
}

// response is the answer of check id, decided as res or failed with err.
func response(id uint64, res *service.Result, err error) *pb.CheckResponse {
	out := &pb.CheckResponse{Id: id}
	if err != nil {
		out.Status, out.Error = int32(headers.ErrorStatus(err)), err.Error()
		return out
	}
	v := &res.Verdict
	out.Allowed, out.DecidedBy, out.ShadowDenied = v.Allowed, res.DecidedBy.String(), v.Shadow
	out.Status = http.StatusOK
	if !v.Allowed {
		out.Status = http.StatusTooManyRequests
	}
	out.RetryAfterMs, out.DelayMs = headers.CeilMillis(v.RetryAfter), headers.CeilMillis(v.Delay)
	ds := v.Decisions()
	out.Limits = make([]*pb.Limit, len(ds))
	for i, d := range ds {
		r := &res.Set.Rules[i]
		out.Limits[i] = &pb.Limit{Name: r.Name, Limit: d.Limit, Remaining: d.Remaining,
			ResetAfterMs: headers.CeilMillis(d.ResetAfter), RetryAfterMs: headers.CeilMillis(d.RetryAfter),
			PeriodMs: r.Period.Milliseconds(), Shadow: d.Shadow}
	}
	return out
}
