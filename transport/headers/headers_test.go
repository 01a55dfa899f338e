package headers

import (
	"net/http"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

func TestCeilMillis(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{{-time.Second, 0}, {0, 0}, {1, 1}, {time.Millisecond, 1}, {time.Millisecond + 1, 2}, {limit.RetryNever, -1}} {
		if got := CeilMillis(c.d); got != c.want {
			t.Errorf("CeilMillis(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

func TestCeilSeconds(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want int64
	}{{-time.Second, 0}, {0, 0}, {1, 1}, {time.Second, 1}, {time.Second + 1, 2}, {2 * time.Hour, 7200}} {
		if got := CeilSeconds(c.d); got != c.want {
			t.Errorf("CeilSeconds(%v) = %d, want %d", c.d, got, c.want)
		}
	}
}

// result steps a fresh two-rule set through costs and returns the last
// check's result.
func result(t *testing.T, costs ...int64) *service.Result {
	t.Helper()
	var rules []limit.Rule
	for _, r := range []limit.Rule{
		{Name: "per-minute", Algorithm: limit.TokenBucket, Limit: 5, Period: time.Minute},
		{Name: "per-hour", Algorithm: limit.FixedWindow, Limit: 100, Period: time.Hour},
	} {
		n, err := r.Normalize()
		if err != nil {
			t.Fatal(err)
		}
		rules = append(rules, n)
	}
	st := make([]limit.State, len(rules))
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC).UnixNano()
	res := &service.Result{Namespace: "orders", Subject: "u", Set: policy.LimitSet{Rules: rules}}
	for _, c := range costs {
		res.Verdict, _ = limit.Apply(rules, st, now, c)
	}
	return res
}

func TestSetAllowedDeniedAndNever(t *testing.T) {
	for _, c := range []struct {
		name  string
		costs []int64
		want  map[string]string
	}{
		{"allowed", []int64{2}, map[string]string{
			Policy: `"per-minute";q=5;w=60, "per-hour";q=100;w=3600`, RateLimit: `"per-minute";r=3;t=24`,
			XLimit: "5", XRemaining: "3", XReset: "24", RetryAfter: "", DecidedBy: "store", "Content-Type": "application/json"}},
		// 5 spent: the next unit is 12s away.
		{"denied", []int64{5, 1}, map[string]string{
			RateLimit: `"per-minute";r=0;t=60`, XRemaining: "0", RetryAfter: "12"}},
		// A cost over the bucket can never pass: no Retry-After.
		{"never", []int64{6}, map[string]string{XRemaining: "5", RetryAfter: ""}},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := http.Header{}
			Set(h, result(t, c.costs...), "application/json", nil)
			for k, want := range c.want {
				if got := h.Get(k); got != want {
					t.Errorf("%s = %q, want %q", k, got, want)
				}
			}
		})
	}
}
