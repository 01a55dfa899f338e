package service

import (
	"context"
	"errors"
	"sync"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// Checker is what a transport needs of a Service: *Service.
type Checker interface {
	// Check decides a request (see Service.Check).
	Check(ctx context.Context, req Request) (Result, error)
	// Validate reports what Check would refuse the request for, without
	// deciding it: a transport that checks several requests as one (Envoy's
	// descriptors) validates them all before charging any.
	Validate(req Request) error
	// Snapshot is the policy in force.
	Snapshot() *policy.Snapshot
}

var _ Checker = (*Service)(nil)

// CheckTo decides req with c into *res, overwritten whole: through
// Service.CheckTo when c is a *Service, else c.Check (a type that wraps a
// Service to change its Check keeps its Check). A transport on a goroutine
// of its own per call (gRPC) uses it so that no frame on its path holds a
// Result by value (632 bytes, and a call that returns one reserves about
// three): a stack that outgrows what its goroutine started with is copied.
func CheckTo(c Checker, ctx context.Context, req Request, res *Result) error {
	if s, ok := c.(*Service); ok {
		return s.CheckTo(ctx, req, res)
	}
	return checkByValue(c, ctx, req, res)
}

// resultPool recycles the Results transports decide into (GetResult).
var resultPool = sync.Pool{New: func() any { return new(Result) }}

// GetResult returns a Result to decide into with CheckTo, from a pool;
// PutResult gives it back once nothing refers to it (nor to its
// Descriptors) any more.
func GetResult() *Result { return resultPool.Get().(*Result) }

// PutResult clears r (so that it holds no policy snapshot) and returns it
// to the pool GetResult takes from.
func PutResult(r *Result) {
	*r = Result{}
	resultPool.Put(r)
}

// checkByValue is CheckTo through Check, in a frame of its own.
//
//go:noinline
func checkByValue(c Checker, ctx context.Context, req Request, res *Result) (err error) {
	*res, err = c.Check(ctx, req)
	return err
}

// ErrorClass is what a failed Check means for its caller, whatever the
// transport renders it as.
type ErrorClass uint8

// The classes of Classify.
const (
	// Internal: a bug (store.ErrInvalidRequest included: the service builds
	// store requests); transports log it (HTTP 500, gRPC Internal).
	Internal ErrorClass = iota
	// Invalid: the request is bad (namespace, subject or cost).
	Invalid
	// UnknownNamespace: the policy has no such namespace.
	UnknownNamespace
	// Unavailable: the store is closed or cannot answer and no failure
	// policy did.
	Unavailable
	// Canceled: the caller's context was cancelled.
	Canceled
	// DeadlineExceeded: the caller's deadline passed.
	DeadlineExceeded
	// Overloaded: the instance shed the check (ErrOverloaded): the store is
	// healthy but more checks wait for it than the instance lets queue.
	// Transports answer "unavailable, retry after ShedRetryAfter", never
	// an admission.
	Overloaded
)

// Classify returns the class of an error of Check, for transports to map
// to their status codes in one place each.
func Classify(err error) ErrorClass {
	switch {
	case errors.Is(err, ErrInvalidNamespace), errors.Is(err, ErrInvalidSubject), errors.Is(err, ErrInvalidCost),
		errors.Is(err, policy.ErrInvalidDescriptor), errors.Is(err, policy.ErrNoSubjectLimits):
		return Invalid
	case errors.Is(err, policy.ErrUnknownNamespace):
		return UnknownNamespace
	case errors.Is(err, ErrOverloaded):
		return Overloaded
	case errors.Is(err, context.Canceled):
		return Canceled
	case errors.Is(err, context.DeadlineExceeded):
		return DeadlineExceeded
	case errors.Is(err, store.ErrUnavailable), errors.Is(err, store.ErrClosed):
		return Unavailable
	}
	return Internal
}
