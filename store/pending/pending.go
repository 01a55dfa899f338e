// Package pending is a store.Store that is not connected yet: it lets a
// server start, and answer by its failure policies, while its shared store
// (Redis) cannot be reached, instead of waiting with its listener closed.
//
// Until Set gives it the real store, Apply validates the request and fails
// with ErrNotConnected, which wraps store.ErrUnavailable: the service's
// Guard then answers with the namespace's on_store_error policy, exactly as
// during an outage of a connected store, and readiness reports the
// instance degraded, not down. From Set on, every call goes to the real
// store. Close closes the real store, or the one Set gives it later.
package pending

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// ErrNotConnected is Apply's error before Set.
var ErrNotConnected = fmt.Errorf("%w: not connected yet", store.ErrUnavailable)

// Store is the pending store. It is safe for concurrent use.
type Store struct {
	inner atomic.Pointer[box]
	ready chan struct{}

	mu     sync.Mutex
	closed atomic.Bool
}

type box struct{ st store.Store }

// New returns a Store with no real store yet.
func New() *Store { return &Store{ready: make(chan struct{})} }

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if b := s.inner.Load(); b != nil {
		return b.st.Apply(ctx, req)
	}
	if s.closed.Load() {
		return limit.Verdict{}, store.ErrClosed
	}
	if err := req.Validate(); err != nil {
		return limit.Verdict{}, err
	}
	return limit.Verdict{}, ErrNotConnected
}

// ApplyAll implements store.Store, as Apply.
func (s *Store) ApplyAll(ctx context.Context, reqs []store.Request, out []limit.Verdict) (bool, error) {
	if b := s.inner.Load(); b != nil {
		return b.st.ApplyAll(ctx, reqs, out)
	}
	if s.closed.Load() {
		return false, store.ErrClosed
	}
	if err := store.ValidateAll(reqs, out); err != nil {
		return false, err
	}
	return false, ErrNotConnected
}

// Take implements store.Leaser: ErrNotConnected before Set, then the real
// store's Take (ErrInvalidRequest if it cannot lease).
func (s *Store) Take(ctx context.Context, key string, rule limit.Rule, n int64, rep store.Report) (store.Grant, error) {
	l, err := s.leaser()
	if err != nil {
		return store.Grant{}, err
	}
	return l.Take(ctx, key, rule, n, rep)
}

// Return implements store.Leaser, as Take.
func (s *Store) Return(ctx context.Context, key string, rule limit.Rule, g store.Grant, unused int64) error {
	l, err := s.leaser()
	if err != nil {
		return err
	}
	return l.Return(ctx, key, rule, g, unused)
}

func (s *Store) leaser() (store.Leaser, error) {
	b := s.inner.Load()
	switch {
	case b != nil:
		if l, ok := b.st.(store.Leaser); ok {
			return l, nil
		}
		return nil, fmt.Errorf("%w: %T cannot lease", store.ErrInvalidRequest, b.st)
	case s.closed.Load():
		return nil, store.ErrClosed
	}
	return nil, ErrNotConnected
}

// Set hands over the real store; every later call goes to it. After Close
// it closes st and returns store.ErrClosed; a second Set is an error.
func (s *Store) Set(st store.Store) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Load() {
		st.Close()
		return store.ErrClosed
	}
	if s.inner.Load() != nil {
		return errors.New("pending: Set called twice")
	}
	s.inner.Store(&box{st})
	close(s.ready)
	return nil
}

// Ready is closed once Set has handed over the real store.
func (s *Store) Ready() <-chan struct{} { return s.ready }

// Close closes the real store, if it is there yet. Apply then fails with
// store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed.Swap(true) {
		return nil
	}
	if b := s.inner.Load(); b != nil {
		return b.st.Close()
	}
	return nil
}

// String describes the store for logs.
func (s *Store) String() string {
	if b := s.inner.Load(); b != nil {
		return fmt.Sprint(b.st)
	}
	return "pending (not connected yet)"
}

var (
	_ store.Store  = (*Store)(nil)
	_ store.Leaser = (*Store)(nil)
)
