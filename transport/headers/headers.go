// Package headers renders a rate limit decision as HTTP response headers,
// the same way for every HTTP transport (the JSON API, the gate endpoint,
// the net/http middleware and the reverse proxy):
//
//	RateLimit-Policy: "per-minute";q=100;w=60, "per-hour";q=1000;w=3600
//	RateLimit: "per-minute";r=57;t=12            (the binding limit)
//	X-RateLimit-Limit, X-RateLimit-Remaining, X-RateLimit-Reset (seconds)
//	Retry-After: whole seconds, rounded up, at least 1 (denied; absent when
//	             the request can never pass)
//	RateLimit-Decided-By: store | deny-cache | local | open | closed | shed | policy
//	RateLimit-Shadow: denied (a limit in shadow mode would have denied it)
//
// A check the instance shed for overload (service.ErrOverloaded) is no
// decision: it carries only RateLimit-Decided-By: shed and Retry-After
// (SetShed), with a 503.
//
// RateLimit-Policy and RateLimit follow the IETF httpapi rate limit headers
// draft; the X-RateLimit-* trio is the older de facto convention most
// clients read.
package headers

import (
	"net/http"
	"strconv"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// Canonical header keys (http.CanonicalHeaderKey of each), so that header
// maps are written without canonicalizing.
const (
	Policy     = "Ratelimit-Policy" // RateLimit-Policy
	RateLimit  = "Ratelimit"        // RateLimit
	XLimit     = "X-Ratelimit-Limit"
	XRemaining = "X-Ratelimit-Remaining"
	XReset     = "X-Ratelimit-Reset"
	RetryAfter = "Retry-After"
	DecidedBy  = "Ratelimit-Decided-By" // RateLimit-Decided-By
	// Shadow is set, to "denied", on a request a limit in shadow mode (or
	// --shadow-mode) would have denied and that was admitted.
	Shadow = "Ratelimit-Shadow" // RateLimit-Shadow
	// Cost is the request header a trusted proxy sets to charge a request
	// more than one unit (the gate endpoint reads it).
	Cost = "X-Ratelimit-Cost"
)

// CeilMillis returns d in milliseconds rounded up (1ns is 1ms), 0 for
// other d <= 0, or -1 for limit.RetryNever (which is -1ns): the *_ms
// fields of JSON answers.
func CeilMillis(d time.Duration) int64 {
	if d == limit.RetryNever {
		return -1
	}
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// ErrorStatus is the HTTP status of a check that failed with err, for every
// transport that speaks in HTTP statuses (the JSON API, /v1/checks, the
// native gRPC API's answers): 400 bad input, 404 unknown namespace, 503 the
// store or the instance unable to decide now, 500 anything else (a bug).
func ErrorStatus(err error) int {
	switch service.Classify(err) {
	case service.Invalid:
		return http.StatusBadRequest
	case service.UnknownNamespace:
		return http.StatusNotFound
	case service.Overloaded, service.Unavailable, service.Canceled, service.DeadlineExceeded:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// CeilSeconds returns d in whole seconds rounded up; 0 for d <= 0.
func CeilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// decidedByValues are the values of RateLimit-Decided-By, one shared
// slice per path: full (len == cap), so that a later Header.Add copies.
var decidedByValues = func() (vals [service.NumDecidedBy][]string) {
	for i := range vals {
		vals[i] = []string{service.DecidedBy(i).String()}
	}
	return vals
}()

// shedRetryAfter is the Retry-After of a shed check.
var shedRetryAfter = []string{strconv.FormatInt(max(1, CeilSeconds(service.ShedRetryAfter)), 10)}

// SetShed sets the headers of a check the instance shed for overload
// (service.ErrOverloaded), which transports answer with 503:
// RateLimit-Decided-By: shed, and Retry-After: service.ShedRetryAfter in
// whole seconds.
func SetShed(h http.Header) {
	h[DecidedBy] = decidedByValues[service.DecidedByShed]
	h[RetryAfter] = shedRetryAfter
}

// Set sets the rate limit headers of a check's result on h:
//
//	RateLimit-Decided-By: store | deny-cache | local | open | closed
//	RateLimit-Policy: "per-minute";q=100;w=60, "per-hour";q=1000;w=3600
//	RateLimit: "per-minute";r=57;t=12              (the binding limit)
//	X-RateLimit-Limit / -Remaining / -Reset        (the binding limit; reset in seconds)
//	Retry-After: seconds, rounded up, at least 1   (denied, unless retry is never)
//
// and Content-Type: contentType unless it is empty. scratch is a reusable
// buffer; it is returned grown. All values are substrings of one string and
// share one []string backing array, so the headers cost two allocations.
func Set(h http.Header, res *service.Result, contentType string, scratch []byte) []byte {
	v := &res.Verdict
	if int(res.DecidedBy) < len(decidedByValues) {
		h[DecidedBy] = decidedByValues[res.DecidedBy]
	}
	if v.N == 0 { // no limits to report (a valid policy has at least one)
		if contentType != "" {
			h["Content-Type"] = []string{contentType}
		}
		return scratch
	}
	b := scratch[:0]
	var ends [6]int
	for i := range v.N {
		if i > 0 {
			b = append(b, ", "...)
		}
		r := &res.Set.Rules[i]
		b = append(b, '"')
		b = append(b, r.Name...)
		b = append(b, `";q=`...)
		b = strconv.AppendInt(b, v.D[i].Limit, 10)
		b = append(b, ";w="...)
		b = strconv.AppendInt(b, CeilSeconds(r.Period), 10)
	}
	ends[0] = len(b)
	bi := v.Binding()
	d := &v.D[bi]
	reset := CeilSeconds(d.ResetAfter)
	b = append(b, '"')
	b = append(b, res.Set.Rules[bi].Name...)
	b = append(b, `";r=`...)
	b = strconv.AppendInt(b, d.Remaining, 10)
	b = append(b, ";t="...)
	b = strconv.AppendInt(b, reset, 10)
	ends[1] = len(b)
	b = strconv.AppendInt(b, d.Limit, 10)
	ends[2] = len(b)
	b = strconv.AppendInt(b, d.Remaining, 10)
	ends[3] = len(b)
	b = strconv.AppendInt(b, reset, 10)
	ends[4] = len(b)
	n := 5
	if !v.Allowed && v.RetryAfter != limit.RetryNever {
		b = strconv.AppendInt(b, max(1, CeilSeconds(v.RetryAfter)), 10)
		ends[5] = len(b)
		n = 6
	}
	s := string(b)
	vals := make([]string, n+1)
	start := 0
	for i := range n {
		vals[i] = s[start:ends[i]]
		start = ends[i]
	}
	h[Policy] = vals[0:1:1]
	h[RateLimit] = vals[1:2:2]
	h[XLimit] = vals[2:3:3]
	h[XRemaining] = vals[3:4:4]
	h[XReset] = vals[4:5:5]
	if n == 6 {
		h[RetryAfter] = vals[5:6:6]
	}
	if contentType != "" {
		vals[n] = contentType
		h["Content-Type"] = vals[n : n+1 : n+1]
	}
	if v.Shadow {
		h[Shadow] = shadowDenied
	}
	return b
}

var shadowDenied = []string{"denied"}
