package httpapi

import (
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// FuzzDecodePut: no body panics the decoder, what it accepts has patches
// with no zero-meaning field written as zero (policy.NewPatch), and policy
// judges the override without panicking: what it admits has 1 to
// limit.MaxRules limits.
func FuzzDecodePut(f *testing.F) {
	for _, s := range []string{
		`{"limits":{"per-minute":{"limit":1000,"burst":200,"period":"1m","algorithm":"gcra"}},"ttl":"24h"}`,
		`{"limits":{"per-hour":{"limit":5}},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"limits":{"x":{}}}`, `{"limits":{"x":null}}`, `{}`, `[]`, `null`, ``, `{"limits":{"x":{"limit":-1}}}`,
		`{"limits":{"x":{"period":"-5s"}}}`, `{"limits":{"x":{"limit":1}}} trailing`, `{"ttl":"1h","expires_at":"x"}`,
	} {
		f.Add([]byte(s))
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	snap := ordersPolicy(f, "v1")
	f.Fuzz(func(t *testing.T, body []byte) {
		o, err := decodePut(body, "orders", "u", now)
		if err != nil {
			return
		}
		if _, err := snap.CheckOverride(o, now); err == nil && (len(o.Limits) == 0 || len(o.Limits) > limit.MaxRules) {
			t.Fatalf("policy admitted %d limits", len(o.Limits))
		}
		for name, p := range o.Limits {
			if p.Limit < 0 || p.Burst < 0 || p.Period < 0 || (p.Limit == 0 && p.Burst == 0 && p.Period == 0 && p.Algorithm == 0) {
				t.Fatalf("accepted patch %s: %+v", name, p)
			}
		}
		if !o.ExpiresAt.IsZero() && o.ExpiresAt.Location() != time.UTC {
			t.Fatalf("expiry not in UTC: %v", o.ExpiresAt)
		}
	})
}
