package lease

// Settle waits for the takes and returns in flight.
func (s *Store) Settle() { s.wg.Wait() }

// ExpNeg is expNeg, for its test.
var ExpNeg = expNeg
