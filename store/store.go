// Package store defines the narrow interface between the rate limiting
// service and the place where limiter state lives (process memory, Redis).
//
// A Store applies one request to one key's whole limit set atomically and
// all-or-nothing, with the semantics of limit.Apply: a store is an adapter
// that loads the key's states, runs the algorithm (or a transcription of it
// that store/storetest holds to the same numbers) and saves the result, with
// no other request for that key in between.
package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// Sentinel errors. Implementations wrap them with %w and context.
var (
	// ErrClosed is returned by a Store that has been closed.
	ErrClosed = errors.New("store: closed")
	// ErrInvalidRequest is returned for a request that breaks the
	// preconditions below; it is a caller bug, not a store failure.
	ErrInvalidRequest = errors.New("store: invalid request")
	// ErrUnavailable wraps failures to reach the backing store (network,
	// timeouts, a Redis that is down). Callers apply their failure policy.
	ErrUnavailable = errors.New("store: unavailable")
)

// Request is one check of a key against a limit set.
type Request struct {
	// Key identifies the subject within its namespace: "namespace:subject".
	// All state of one key is updated together; Redis stores derive their
	// cluster hash tag from it, so one key lives on one shard.
	Key string
	// Rules is the limit set, each rule valid (limit.Rule.Normalize) and with
	// a distinct Name; at most limit.MaxRules. State is kept per rule Name:
	// a rule whose algorithm changes starts from a fresh state. The store
	// may retain the slice; callers must not modify it afterwards.
	Rules []limit.Rule
	// Cost is the number of units to consume, >= 0; 0 is a peek.
	Cost int64
}

// Validate checks the preconditions of a Request.
func (r *Request) Validate() error {
	switch {
	case r.Key == "":
		return fmt.Errorf("%w: empty key", ErrInvalidRequest)
	case len(r.Rules) == 0 || len(r.Rules) > limit.MaxRules:
		return fmt.Errorf("%w: %d rules, want 1 to %d", ErrInvalidRequest, len(r.Rules), limit.MaxRules)
	case r.Cost < 0:
		return fmt.Errorf("%w: negative cost %d", ErrInvalidRequest, r.Cost)
	}
	return nil
}

// Store keeps limiter state. Implementations are safe for concurrent use.
type Store interface {
	// Apply checks req against req.Rules for req.Key and, when every rule
	// admits it, consumes req.Cost from all of them, as one atomic step.
	// Errors wrap ErrInvalidRequest, ErrUnavailable or ErrClosed.
	Apply(ctx context.Context, req Request) (limit.Verdict, error)
	// Close releases the store's resources. Apply after Close returns ErrClosed.
	Close() error
}
