package httpapi

import (
	"strconv"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// The check response is appended by hand with strconv: the shape is fixed,
// and this is several times faster than encoding/json with no reflection and
// one buffer reused through a pool (see BenchmarkCheckHandler).

// appendCheckBody appends the JSON body of a check response:
//
//	{"allowed":bool,"namespace":..,"subject":..,"retry_after_ms":int,"delay_ms":int,"decided_by":..,
//	 ["reason":..,] "limits":[{"name":..,"limit":int,"remaining":int,"reset_after_ms":int,"retry_after_ms":int,"period_ms":int}]}
func appendCheckBody(b []byte, res *service.Result) []byte {
	v := &res.Verdict
	b = append(b, `{"allowed":`...)
	b = strconv.AppendBool(b, v.Allowed)
	b = append(b, `,"namespace":`...)
	b = appendString(b, res.Namespace)
	b = append(b, `,"subject":`...)
	b = appendString(b, res.Subject)
	b = append(b, `,"retry_after_ms":`...)
	b = strconv.AppendInt(b, headers.CeilMillis(v.RetryAfter), 10)
	b = append(b, `,"delay_ms":`...)
	b = strconv.AppendInt(b, headers.CeilMillis(v.Delay), 10)
	b = append(b, `,"decided_by":"`...)
	b = append(b, res.DecidedBy.String()...)
	b = append(b, '"')
	if !v.Allowed && v.RetryAfter == limit.RetryNever && v.N > 0 {
		b = append(b, `,"reason":`...)
		b = appendString(b, "cost exceeds capacity of limit "+res.Set.Rules[v.Binding()].Name)
	}
	if v.Shadow {
		// A limit in shadow mode (or --shadow-mode) would have denied it.
		b = append(b, `,"shadow_denied":true`...)
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
		b = strconv.AppendInt(b, headers.CeilMillis(d.ResetAfter), 10)
		b = append(b, `,"retry_after_ms":`...)
		b = strconv.AppendInt(b, headers.CeilMillis(d.RetryAfter), 10)
		b = append(b, `,"period_ms":`...)
		b = strconv.AppendInt(b, res.Set.Rules[i].Period.Milliseconds(), 10)
		if d.Shadow {
			b = append(b, `,"shadow":true`...)
		}
		b = append(b, '}')
	}
	b = append(b, ']')
	if res.Descriptors != nil {
		b = appendDescriptors(b, res)
	}
	return append(b, "}\n"...)
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
	contentTypeJSON      = "application/json"
	contentTypeTextPlain = "text/plain; charset=utf-8"
)
