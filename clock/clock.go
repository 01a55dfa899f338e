// Package clock abstracts the wall clock so that every time-dependent
// component takes its time from an injected Clock and tests can move time by
// hand (see clock/clocktest).
package clock

import "time"

// Clock tells the current instant. Implementations are safe for concurrent use.
type Clock interface {
	Now() time.Time
}

// System is the real wall clock.
var System Clock = systemClock{}

type systemClock struct{}

func (systemClock) Now() time.Time { return time.Now() }
