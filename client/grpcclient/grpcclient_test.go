package grpcclient_test

import (
	"context"
	"errors"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/client/grpcclient"
	"github.com/distributedratelimiter/ratelimiter/internal/apitest"
)

// 2,000 concurrent checks of 40 subjects over one shared stream: exactly
// 50 admitted per subject; errors per check; deadlines; Close.
func TestClient(t *testing.T) {
	c, err := grpcclient.New(apitest.NewGRPC(t, 50))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	apitest.ExactUnderConcurrency(t, c, 2000, 40, 50)
	var e *client.Error
	if _, err := c.Check(context.Background(), client.Request{Namespace: "nope", Subject: "a"}); !errors.As(err, &e) || e.Status != 404 {
		t.Errorf("unknown namespace: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := c.Check(ctx, client.Request{Namespace: "orders", Subject: "a"}); !errors.Is(err, context.Canceled) {
		t.Errorf("canceled: %v", err)
	}
	c.Close()
	if _, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: "a"}); !errors.Is(err, grpcclient.ErrClosed) {
		t.Errorf("after Close: %v", err)
	}
}
