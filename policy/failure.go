package policy

import "fmt"

// FailurePolicy says how a namespace's checks are answered when the store
// fails: an error, a timeout, or a circuit breaker that is open. The zero
// value is FailLocal, the default.
type FailurePolicy uint8

// The failure policies.
const (
	// FailLocal answers from an in-process limiter that holds this
	// instance's share of each limit (the limit divided by the number of
	// live instances, rounded up). The fleet then admits at most about the
	// limit (at most limit + instances - 1 per period, plus what the
	// buckets held when the outage began), and a flood is still cut. The
	// default: it keeps the backend protected and the service available.
	FailLocal FailurePolicy = iota
	// FailOpen admits every request: availability of the protected
	// endpoint over protection from floods.
	FailOpen
	// FailClosed denies every request: protection over availability (for
	// example a payment endpoint whose budget must never be exceeded).
	FailClosed
)

var failureNames = [...]string{FailLocal: "local", FailOpen: "open", FailClosed: "closed"}

// String returns the configuration name of p: "local", "open" or "closed".
func (p FailurePolicy) String() string {
	if int(p) < len(failureNames) {
		return failureNames[p]
	}
	return fmt.Sprintf("failure_policy(%d)", uint8(p))
}

// FailurePolicies lists the names ParseFailurePolicy accepts.
func FailurePolicies() []string { return []string{"open", "closed", "local"} }

// ParseFailurePolicy maps a configuration name ("open", "closed" or
// "local") to a FailurePolicy.
func ParseFailurePolicy(s string) (FailurePolicy, error) {
	for p, name := range failureNames {
		if name == s {
			return FailurePolicy(p), nil
		}
	}
	return 0, fmt.Errorf("%q is not a failure policy (want open, closed or local)", s)
}
