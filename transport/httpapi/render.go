package httpapi

import (
	"net/http"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// The check response is appended by hand with strconv: the shape is fixed,
// and this is several times faster than encoding/json with no reflection and
// one buffer reused through a pool (see BenchmarkCheckHandler).

// ceilMillis returns d in milliseconds rounded up (1ns is 1ms), or -1 for
// limit.RetryNever.
func ceilMillis(d time.Duration) int64 {
	if d == limit.RetryNever {
		return -1
	}
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// ceilSeconds returns d in whole seconds rounded up; 0 for d <= 0.
func ceilSeconds(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Second - 1) / time.Second)
}

// appendCheckBody appends the JSON body of a check response:
//
//	{"allowed":bool,"namespace":..,"subject":..,"retry_after_ms":int,"delay_ms":int,
//	 ["reason":..,] "limits":[{"name":..,"limit":int,"remaining":int,"reset_after_ms":int,"retry_after_ms":int}]}
func appendCheckBody(b []byte, res *service.Result) []byte {
	v := &res.Verdict
	b = append(b, `{"allowed":`...)
	b = strconv.AppendBool(b, v.Allowed)
	b = append(b, `,"namespace":`...)
	b = appendString(b, res.Namespace)
	b = append(b, `,"subject":`...)
	b = appendString(b, res.Subject)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, ceilMillis(v.RetryAfter), 10)
	b = append(b, `,"delay_ms":`...)
	b = strconv.AppendInt(b, ceilMillis(v.Delay), 10)
	if !v.Allowed && v.RetryAfter == limit.RetryNever && v.N > 0 {
		b = append(b, `,"reason":`...)
		b = appendString(b, "cost exceeds capacity of limit "+res.Set.Rules[v.Binding()].Name)
	}
	b = append(b, `,"limits":[`...)
	for i, d := range v.Decisions() {
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"name":`...)
		b = appendString(b, res.Set.Rules[i].Name)
		b = append(b, `,"limit":`...)
		b = strconv.AppendInt(b, d.Limit, 10)
		b = append(b, `,"remaining":`...)
		b = strconv.AppendInt(b, d.Remaining, 10)
		b = append(b, `,"reset_after_ms":`...)
		b = strconv.AppendInt(b, ceilMillis(d.ResetAfter), 10)
		b = append(b, `,"retry_after_ms":`...)
		b = strconv.AppendInt(b, ceilMillis(d.RetryAfter), 10)
		b = append(b, '}')
	}
	return append(b, "]}\n"...)
}

// appendError appends {"error":msg}.
func appendError(b []byte, msg string) []byte {
	b = append(b, `{"error":`...)
	b = appendString(b, msg)
	return append(b, "}\n"...)
}

const hex = "0123456789abcdef"

// appendString appends s as a JSON string. Like encoding/json it escapes
// control characters, '"', '\\', '<', '>', '&', U+2028 and U+2029, and
// replaces invalid UTF-8 with U+FFFD, so the output is valid JSON for any s.
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hex[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

// Canonical header keys, so that the map is written without canonicalizing.
const (
	hdrContentType       = "Content-Type"
	hdrRateLimitPolicy   = "Ratelimit-Policy" // RateLimit-Policy
	hdrRateLimit         = "Ratelimit"        // RateLimit
	hdrXRateLimitLimit   = "X-Ratelimit-Limit"
	hdrXRateLimitRemain  = "X-Ratelimit-Remaining"
	hdrXRateLimitReset   = "X-Ratelimit-Reset"
	hdrRetryAfter        = "Retry-After"
	hdrXRateLimitCost    = "X-Ratelimit-Cost"
	hdrDecidedBy         = "Ratelimit-Decided-By" // RateLimit-Decided-By
	contentTypeJSON      = "application/json"
	contentTypeTextPlain = "text/plain; charset=utf-8"
)

// decidedByValues are the values of RateLimit-Decided-By, one shared
// slice per path: full (len == cap), so that a later Header.Add copies.
var decidedByValues = func() (vals [service.NumDecidedBy][]string) {
	for i := range vals {
		vals[i] = []string{service.DecidedBy(i).String()}
	}
	return vals
}()

// setLimitHeaders sets the rate limit headers of a verdict on h:
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
func setLimitHeaders(h http.Header, res *service.Result, contentType string, scratch []byte) []byte {
	v := &res.Verdict
	if int(res.DecidedBy) < len(decidedByValues) {
		h[hdrDecidedBy] = decidedByValues[res.DecidedBy]
	}
	if v.N == 0 { // no limits to report (a valid policy has at least one)
		if contentType != "" {
			h[hdrContentType] = []string{contentType}
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
		b = strconv.AppendInt(b, ceilSeconds(r.Period), 10)
	}
	ends[0] = len(b)
	bi := v.Binding()
	d := &v.D[bi]
	reset := ceilSeconds(d.ResetAfter)
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
		b = strconv.AppendInt(b, max(1, ceilSeconds(v.RetryAfter)), 10)
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
	h[hdrRateLimitPolicy] = vals[0:1:1]
	h[hdrRateLimit] = vals[1:2:2]
	h[hdrXRateLimitLimit] = vals[2:3:3]
	h[hdrXRateLimitRemain] = vals[3:4:4]
	h[hdrXRateLimitReset] = vals[4:5:5]
	if n == 6 {
		h[hdrRetryAfter] = vals[5:6:6]
	}
	if contentType != "" {
		vals[n] = contentType
		h[hdrContentType] = vals[n : n+1 : n+1]
	}
	return b
}
