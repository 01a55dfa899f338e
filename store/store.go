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
	"time"

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
	// Lease marks a leased limit (one token bucket rule, Rules[0] as the
	// shared store keeps it): a lease.Store decides it from this
	// instance's slice of the bucket; any other store decides it as any
	// request.
	Lease bool
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

// MaxParts bounds the requests of one ApplyAll: the descriptors of one
// check.
const MaxParts = 64

// ValidateAll checks the preconditions of ApplyAll: 1 to MaxParts valid
// requests with distinct keys, and an out of the same length.
func ValidateAll(reqs []Request, out []limit.Verdict) error {
	if len(reqs) == 0 || len(reqs) > MaxParts {
		return fmt.Errorf("%w: %d parts, want 1 to %d", ErrInvalidRequest, len(reqs), MaxParts)
	}
	if len(out) != len(reqs) {
		return fmt.Errorf("%w: %d verdicts for %d parts", ErrInvalidRequest, len(out), len(reqs))
	}
	for i := range reqs {
		if err := reqs[i].Validate(); err != nil {
			return fmt.Errorf("part %d: %w", i, err)
		}
		for j := range i {
			if reqs[j].Key == reqs[i].Key {
				return fmt.Errorf("%w: key %q in parts %d and %d (one part, the costs summed)", ErrInvalidRequest, reqs[i].Key, j, i)
			}
		}
	}
	return nil
}

// Store keeps limiter state. Implementations are safe for concurrent use.
type Store interface {
	// Apply checks req against req.Rules for req.Key and, when every rule
	// admits it, consumes req.Cost from all of them, as one atomic step.
	// Errors wrap ErrInvalidRequest, ErrUnavailable or ErrClosed.
	Apply(ctx context.Context, req Request) (limit.Verdict, error)
	// ApplyAll decides the parts of one check together (the descriptors of
	// a request: per user, per IP, endpoint-wide), all-or-nothing across
	// them with the semantics of limit.ApplyParts: the check is allowed only
	// if every rule of every part admits its part's Cost, and only then is
	// anything consumed. out[i] receives reqs[i]'s verdict (for a denied
	// check, an admitting part reports a peek). reqs holds distinct keys
	// (ValidateAll). A store that can apply every part in one atomic step
	// does; one that cannot (parts in different Redis Cluster slots) says
	// in its documentation how it gets all-or-nothing and what it costs.
	// Errors as Apply's.
	ApplyAll(ctx context.Context, reqs []Request, out []limit.Verdict) (allowed bool, err error)
	// Close releases the store's resources. Apply after Close returns ErrClosed.
	Close() error
}

// Partitioner is implemented by a store that cannot decide every ApplyAll
// in one atomic step: a Redis Cluster, where one script touches one hash
// slot. Partition returns the indices of keys grouped by what the store
// decides atomically together, groups in order of first appearance. Parts
// of one group are decided atomically; a request over several groups is
// decided by reserve-then-refund: each group consumes if its parts admit,
// and if one denies, the others' consumption is refunded
// (limit.Rule.Refund). A store that does not implement Partitioner decides
// every ApplyAll atomically.
type Partitioner interface {
	Partition(keys []string) [][]int
}

// Grant is what a Leaser took for a lease: Taken units out of a key's token
// bucket (0 when it held none), and where the take landed, for Return.
type Grant struct {
	Taken int64
	// Decision is the bucket after the take: its Remaining, and when
	// nothing was taken, its RetryAfter (the wait for one unit).
	Decision limit.Decision
	// Demand is the total demand on the key after this take's Report:
	// the sum of the demands its holders reported and whose reports still
	// stand, this one's included (units per second).
	Demand float64
	// Mark and At locate the take in the bucket (limit.Rule.Mark, and the
	// store's instant as Unix seconds and nanoseconds when it keeps its
	// own time), for Return; opaque to callers.
	Mark int64
	At   [2]int64
}

// Report is a holder's demand on a leased key, sent with each take: the
// store keeps the last report of each holder until it lapses and answers
// every take with their sum (Grant.Demand), the total demand on the limit,
// from which each holder takes its share (package lease).
type Report struct {
	// Holder names the reporting holder (an instance); a later report of
	// the same holder replaces this one.
	Holder string
	// Demand is the units per second the holder is asked for, admitted or
	// not (>= 0).
	Demand float64
	// For is how long the report stands (> 0) unless replaced first.
	For time.Duration
}

// Validate checks a Report's preconditions.
func (r *Report) Validate() error {
	if r.Holder == "" || r.Demand < 0 || r.Demand != r.Demand || r.For <= 0 {
		return fmt.Errorf("%w: report %+v", ErrInvalidRequest, *r)
	}
	return nil
}

// Leaser is implemented by a store that hands out slices of a token bucket
// to instances that decide from them locally (leased limits, package
// lease): a take consumes the units in the shared bucket at once, so
// nothing spent from a slice can exceed what the bucket allows; a return
// gives back what a slice did not spend (limit.Rule.Refund: never more than
// the history without the take would hold).
type Leaser interface {
	// Take takes up to n units (n >= 1) of rule's token bucket for key,
	// and records rep, the caller's demand on the key, in the same atomic
	// step. Errors as Apply's.
	Take(ctx context.Context, key string, rule limit.Rule, n int64, rep Report) (Grant, error)
	// Return gives back unused units (1 to g.Taken) of a grant.
	Return(ctx context.Context, key string, rule limit.Rule, g Grant, unused int64) error
}
