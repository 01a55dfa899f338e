package grpcclient_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
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
	var mu sync.Mutex
	admitted := map[string]int{}
	var wg sync.WaitGroup
	for i := range 2000 {
		wg.Go(func() {
			s := fmt.Sprint("user-", i%40)
			res, err := c.Check(context.Background(), client.Request{Namespace: "orders", Subject: s})
			if err != nil {
				t.Error(err)
				return
			}
			if res.Subject != s || (res.Status == 200) != res.Allowed {
				t.Errorf("result %+v", res)
			}
			if res.Allowed {
				mu.Lock()
				admitted[s]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	for s, n := range admitted {
		if n != 50 {
			t.Errorf("%s admitted %d, want 50", s, n)
		}
	}
	if len(admitted) != 40 {
		t.Errorf("%d subjects admitted", len(admitted))
	}
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
