package service

// Internals the tests of package service_test read. They are not API: a
// caller watches the breaker through BreakerObserver and the metrics.

// BreakerState returns the state of the circuit breaker, or with several
// failure domains the most severe state among theirs (open, then
// half-open); BreakerClosed when the service has no Guard or the breakers
// are disabled.
func (s *Service) BreakerState() BreakerState {
	st := BreakerClosed
	if s.guard != nil && s.guard.breakers != nil {
		for i := range s.guard.breakers.state {
			st = max(st, BreakerState(s.guard.breakers.state[i].Load()))
		}
	}
	return st
}

// OpenBreakers returns how many failure domains' circuit breakers are not
// closed.
func (s *Service) OpenBreakers() int {
	n := 0
	if s.guard != nil && s.guard.breakers != nil {
		for i := range s.guard.breakers.state {
			if !s.guard.breakers.closed(i) {
				n++
			}
		}
	}
	return n
}

// DenyCacheLen returns the number of entries in the deny cache.
func (s *Service) DenyCacheLen() int {
	if s.guard == nil || s.guard.deny == nil {
		return 0
	}
	return s.guard.deny.len()
}
