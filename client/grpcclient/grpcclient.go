// Package grpcclient checks rate limits over the native gRPC API
// (ratelimiter.v1.RateLimiter.CheckStream): concurrent Check calls from any
// number of goroutines share one bidirectional stream, each a message
// with an id of its own, answered as soon as the server decides it; gRPC's
// writer coalesces the messages queued at once into one write, so many
// decisions share a syscall. Each call keeps its own deadline. A broken
// stream fails the calls waiting on it, and the next call opens a new one.
package grpcclient

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	pb "github.com/distributedratelimiter/ratelimiter/api/ratelimiterv1"
	"github.com/distributedratelimiter/ratelimiter/client"
)

// ErrClosed is returned by Check after Close.
var ErrClosed = errors.New("ratelimiter grpc client: closed")

// Client is safe for concurrent use. Create it with New.
type Client struct {
	conn *grpc.ClientConn
	rl   pb.RateLimiterClient

	mu      sync.Mutex
	stream  pb.RateLimiter_CheckStreamClient
	cancel  context.CancelFunc
	next    uint64
	waiting map[uint64]chan *pb.CheckResponse
	closed  bool
	sendMu  sync.Mutex
}

// New connects to target ("127.0.0.1:8081"); without opts, in plain text
// (grpc.WithTransportCredentials(insecure.NewCredentials())).
func New(target string, opts ...grpc.DialOption) (*Client, error) {
	if len(opts) == 0 {
		opts = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("ratelimiter grpc client: %w", err)
	}
	return &Client{conn: conn, rl: pb.NewRateLimiterClient(conn), waiting: map[uint64]chan *pb.CheckResponse{}}, nil
}

// Check asks the server to decide req over the shared stream. A denial is
// a Result; a check the server could not decide is a *client.Error.
func (c *Client) Check(ctx context.Context, req client.Request) (client.Result, error) {
	if err := ctx.Err(); err != nil {
		return client.Result{}, err
	}
	ch := make(chan *pb.CheckResponse, 1)
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return client.Result{}, ErrClosed
	}
	stream, err := c.streamLocked()
	if err != nil {
		c.mu.Unlock()
		return client.Result{}, err
	}
	c.next++
	id := c.next
	c.waiting[id] = ch
	c.mu.Unlock()

	c.sendMu.Lock()
	err = stream.Send(&pb.CheckRequest{Id: id, Namespace: req.Namespace, Subject: req.Subject, Cost: req.Cost, Peek: req.Peek})
	c.sendMu.Unlock()
	if err != nil {
		c.forget(id)
		c.broken(stream)
		return client.Result{}, fmt.Errorf("ratelimiter grpc client: %w", err)
	}
	select {
	case res, ok := <-ch:
		if !ok {
			return client.Result{}, errors.New("ratelimiter grpc client: the stream broke before the answer")
		}
		r, err := result(res)
		r.Namespace, r.Subject = req.Namespace, req.Subject
		return r, err
	case <-ctx.Done():
		c.forget(id)
		return client.Result{}, ctx.Err()
	}
}

// streamLocked returns the open stream, opening one if needed; the
// caller holds c.mu.
func (c *Client) streamLocked() (pb.RateLimiter_CheckStreamClient, error) {
	if c.stream != nil {
		return c.stream, nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := c.rl.CheckStream(ctx)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("ratelimiter grpc client: %w", err)
	}
	c.stream, c.cancel = stream, cancel
	go c.receive(stream)
	return stream, nil
}

// receive hands each answer of stream to its call until the stream ends.
func (c *Client) receive(stream pb.RateLimiter_CheckStreamClient) {
	for {
		res, err := stream.Recv()
		if err != nil {
			c.broken(stream)
			return
		}
		c.mu.Lock()
		ch := c.waiting[res.GetId()]
		delete(c.waiting, res.GetId())
		c.mu.Unlock()
		if ch != nil {
			ch <- res
		}
	}
}

// broken drops stream and fails the calls waiting on it.
func (c *Client) broken(stream pb.RateLimiter_CheckStreamClient) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stream != stream {
		return
	}
	c.cancel()
	c.stream = nil
	for id, ch := range c.waiting {
		close(ch)
		delete(c.waiting, id)
	}
}

func (c *Client) forget(id uint64) {
	c.mu.Lock()
	delete(c.waiting, id)
	c.mu.Unlock()
}

// result turns an answer into a Result or an error.
func result(res *pb.CheckResponse) (client.Result, error) {
	if res.GetError() != "" {
		return client.Result{}, &client.Error{Status: int(res.GetStatus()), Message: res.GetError()}
	}
	r := client.Result{Status: int(res.GetStatus()), Allowed: res.GetAllowed(), RetryAfterMs: res.GetRetryAfterMs(), DelayMs: res.GetDelayMs(),
		DecidedBy: res.GetDecidedBy(), ShadowDenied: res.GetShadowDenied()}
	for _, l := range res.GetLimits() {
		r.Limits = append(r.Limits, client.Limit{Name: l.GetName(), Limit: l.GetLimit(), Remaining: l.GetRemaining(),
			ResetAfterMs: l.GetResetAfterMs(), RetryAfterMs: l.GetRetryAfterMs(), PeriodMs: l.GetPeriodMs(), Shadow: l.GetShadow()})
	}
	return r, nil
}

// Close ends the stream and the connection; later calls get ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	if c.cancel != nil {
		c.cancel()
	}
	c.mu.Unlock()
	return c.conn.Close()
}
