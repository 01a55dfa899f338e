package overrides

import (
	"context"
	"errors"
	"fmt"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"sync/atomic"
	"time"
)

// ErrNotConnected is what a Pending store answers before Set.
var ErrNotConnected = fmt.Errorf("%w: not connected yet", ErrUnavailable)

// Pending is a Store that is not connected yet (a server started while
// Redis was unreachable): every call fails with ErrNotConnected, which wraps
// ErrUnavailable, until Set hands over the real store; Watch waits for it
// and then watches it, so the real store's first resync reports every
// namespace and the caller loads them.
type Pending struct {
	inner atomic.Pointer[pendingBox]
	ready chan struct{}
}

type pendingBox struct{ st Store }

// NewPending returns a Pending store.
func NewPending() *Pending { return &Pending{ready: make(chan struct{})} }

// Set hands over the real store. It may be called once.
func (p *Pending) Set(st Store) error {
	if !p.inner.CompareAndSwap(nil, &pendingBox{st}) {
		return errors.New("overrides: Pending.Set called twice")
	}
	close(p.ready)
	return nil
}

func (p *Pending) store() Store {
	if b := p.inner.Load(); b != nil {
		return b.st
	}
	return nil
}

// Load implements Store.
func (p *Pending) Load(ctx context.Context, ns string) ([]policy.Override, error) {
	if st := p.store(); st != nil {
		return st.Load(ctx, ns)
	}
	return nil, ErrNotConnected
}

// Put implements Store.
func (p *Pending) Put(ctx context.Context, o policy.Override, max int) error {
	if st := p.store(); st != nil {
		return st.Put(ctx, o, max)
	}
	return ErrNotConnected
}

// Delete implements Store.
func (p *Pending) Delete(ctx context.Context, ns, subject string) (bool, error) {
	if st := p.store(); st != nil {
		return st.Delete(ctx, ns, subject)
	}
	return false, ErrNotConnected
}

// DeleteExpired implements Store.
func (p *Pending) DeleteExpired(ctx context.Context, ns string, subjects []string, now time.Time) error {
	if st := p.store(); st != nil {
		return st.DeleteExpired(ctx, ns, subjects, now)
	}
	return ErrNotConnected
}

// Watch implements Store: it waits for Set, then watches the real store,
// until ctx is done.
func (p *Pending) Watch(ctx context.Context, namespaces func() []string, changed func(ns string)) {
	select {
	case <-ctx.Done():
		return
	case <-p.ready:
	}
	p.store().Watch(ctx, namespaces, changed)
}

var _ Store = (*Pending)(nil)
