package client_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/internal/apitest"
	"github.com/distributedratelimiter/ratelimiter/transport/httpapi"
)

func newClient(t *testing.T, url string, o client.Options) *client.Client {
	t.Helper()
	c, err := client.New(url, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// 2,000 concurrent checks of 40 subjects: each subject admitted exactly 50
// times of 50, in far fewer requests than checks.
func TestConcurrentChecksBatchAndStayExact(t *testing.T) {
	srv := apitest.New(t, 50)
	c := newClient(t, srv.URL, client.Options{})
	apitest.ExactUnderConcurrency(t, c, 2000, 40, 50)
	t.Logf("2,000 checks in %d requests", srv.Batches.Load())
	if n := srv.Batches.Load(); n >= 2000/4 {
		t.Errorf("2,000 concurrent checks took %d requests: want batches (at most a quarter as many)", n)
	}
}

// Peeks consume nothing; a cost is charged; the server's refusal of one
// check is that check's error, not its neighbours'.
func TestCostsPeeksAndErrors(t *testing.T) {
	srv := apitest.New(t, 50)
	c := newClient(t, srv.URL, client.Options{})
	ctx := context.Background()
	res, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a", Cost: 49})
	if err != nil || !res.Allowed || res.Limits[0].Remaining != 1 {
		t.Fatalf("cost 49: %+v %v", res, err)
	}
	for range 3 {
		if res, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a", Peek: true}); err != nil || !res.Allowed || res.Limits[0].Remaining != 1 {
			t.Fatalf("peek: %+v %v", res, err)
		}
	}
	if res, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a", Cost: 2}); err != nil || res.Allowed || res.Status != 429 || res.RetryAfter() <= 0 {
		t.Fatalf("cost 2 of 1 left: %+v %v, want 429 with a retry", res, err)
	}
	var e *client.Error
	if _, err := c.Check(ctx, client.Request{Namespace: "nope", Subject: "a"}); !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("unknown namespace: %v, want a 404 *Error", err)
	}
	if _, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a", Cost: -1}); !errors.As(err, &e) || e.Status != 400 {
		t.Errorf("negative cost: %v, want a 400 *Error", err)
	}
}

// A call keeps its own deadline; a server that is gone is an error.
func TestDeadlinesAndDownServer(t *testing.T) {
	srv := apitest.New(t, 50)
	c := newClient(t, srv.URL, client.Options{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a"}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled call: %v", err)
	}
	if srv.Batches.Load() != 0 {
		t.Errorf("a canceled call was sent")
	}
	srv.Close()
	if _, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: "a"}); err == nil {
		t.Error("a check against a closed server succeeded")
	}
	c.Close()
	if _, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: "a"}); !errors.Is(err, client.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
	if _, err := client.New("localhost:8080", client.Options{}); err == nil {
		t.Error("a base URL without a scheme was accepted")
	}
}

// enteredThenCanceled is a context that is live when Check looks at it on
// entry and canceled from then on: a call that queues and is given up on
// while earlier requests are out.
type enteredThenCanceled struct {
	context.Context
	looked atomic.Bool
	done   chan struct{}
}

func (c *enteredThenCanceled) Err() error {
	if c.looked.Swap(true) {
		return context.Canceled
	}
	return nil
}

func (c *enteredThenCanceled) Done() <-chan struct{} { return c.done }

// A call given up on while it waits behind a request in flight is never
// sent: when that request returns, the next one leaves without it.
func TestQueuedCallGivenUpIsNotSent(t *testing.T) {
	svc := apitest.Service(t, 50)
	h := httpapi.New(svc, httpapi.Options{})
	arrived, release := make(chan struct{}), make(chan struct{})
	var requests atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if requests.Add(1) == 1 {
			close(arrived)
			<-release // the first request is held: the next calls queue behind it
		}
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	c := newClient(t, srv.URL, client.Options{MaxInFlight: 1})
	first := make(chan error, 1)
	go func() {
		_, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: "held"})
		first <- err
	}()
	<-arrived
	given := &enteredThenCanceled{Context: context.Background(), done: make(chan struct{})}
	close(given.done)
	if _, err := c.Check(given, client.Request{Namespace: "orders", Subject: "given-up"}); !errors.Is(err, context.Canceled) {
		t.Fatalf("queued call given up: %v", err)
	}
	close(release)
	if err := <-first; err != nil {
		t.Fatal(err)
	}
	c.Close() // waits for the flush that found the given-up call
	if n := requests.Load(); n != 1 {
		t.Errorf("%d requests, want 1: the given-up call was sent", n)
	}
}
