package service_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store"
)

func TestClassify(t *testing.T) {
	for _, c := range []struct {
		err  error
		want service.ErrorClass
	}{
		{fmt.Errorf("x: %w", service.ErrInvalidNamespace), service.Invalid},
		{fmt.Errorf("x: %w", service.ErrInvalidSubject), service.Invalid},
		{fmt.Errorf("x: %w", service.ErrInvalidCost), service.Invalid},
		{fmt.Errorf("x: %w", policy.ErrUnknownNamespace), service.UnknownNamespace},
		{fmt.Errorf("x: %w", store.ErrUnavailable), service.Unavailable},
		{store.ErrClosed, service.Unavailable},
		// A store call cut by the caller: the context's class wins.
		{fmt.Errorf("%w: %w", store.ErrUnavailable, context.Canceled), service.Canceled},
		{fmt.Errorf("%w: %w", store.ErrUnavailable, context.DeadlineExceeded), service.DeadlineExceeded},
		{store.ErrInvalidRequest, service.Internal},
		{errors.New("boom"), service.Internal},
	} {
		if got := service.Classify(c.err); got != c.want {
			t.Errorf("Classify(%v) = %d, want %d", c.err, got, c.want)
		}
	}
}
