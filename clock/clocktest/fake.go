// Package clocktest provides a Fake clock that tests move by hand.
package clocktest

import (
	"sync"
	"time"
)

// Fake is a Clock that only moves when told to. The zero value is not usable;
// call New. It is safe for concurrent use.
type Fake struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Fake clock standing at t.
func New(t time.Time) *Fake { return &Fake{now: t} }

// Now returns the clock's current instant.
func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

// Advance moves the clock by d (which may be negative, to model a clock that
// steps back) and returns the new instant.
func (f *Fake) Advance(d time.Duration) time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = f.now.Add(d)
	return f.now
}

// Set moves the clock to t.
func (f *Fake) Set(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.now = t
}
