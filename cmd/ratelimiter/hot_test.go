package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

// One hot subject flooding three `ratelimiter serve` instances that share
// one Redis, as fast as the test's workers can send: the admitted count is
// exactly the limit, every answer comes from the store or the deny cache,
// and Redis sees a small fraction of the checks as script calls. Twice:
// with the deny cache (the default), and without it, where only the
// coalescing of concurrent checks of the key into one script call
// (redisstore batching) reduces the calls.
func TestHotSubjectThroughThreeInstances(t *testing.T) {
	if testing.Short() {
		t.Skip("floods three servers")
	}
	srv := redistest.Standalone(t)
	bin := buildBinary(t)
	cfg := filepath.Join(t.TempDir(), "hot.yaml")
	// 1000 per day: no refill worth a unit during the flood. closed: a
	// check that missed its deadline would show as decided-by closed.
	if err := os.WriteFile(cfg, []byte(`namespaces:
  - name: hot
    on_store_error: closed
    limits:
      - name: per-day
        algorithm: token_bucket
        limit: 1000
        period: 24h
`), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		// maxShare bounds script calls / checks: the deny cache answers a
		// denied subject locally until its retry instant; coalescing alone
		// only joins the checks that arrive while a call is in flight.
		maxShare float64
	}{
		{"deny cache", nil, 0.10},
		{"coalescing only", []string{"--deny-cache-size", "0"}, 0.90},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var addrs []string
			for range 3 {
				// Default flags: a flood that saturates both cores must
				// still be decided by the store.
				s := startServer(t, bin, append([]string{"--config", cfg, "--store", "redis", "--redis-addrs", srv.Addr()}, tc.args...)...)
				addrs = append(addrs, s.addr)
			}
			srv.MustDo("CONFIG", "RESETSTAT")
			subject := strings.ReplaceAll(tc.name, " ", "-")
			f := flood(t, addrs, subject, 48, 3*time.Second)
			info, err := srv.Info("commandstats")
			if err != nil {
				t.Fatal(err)
			}
			calls := statCalls(info["cmdstat_evalsha"]) + statCalls(info["cmdstat_eval"])
			t.Logf("%s: %d checks in %v (%.0f/s) through 3 instances: %d admitted, %d denied; decided by %v",
				tc.name, f.checks, f.took.Round(time.Millisecond), float64(f.checks)/f.took.Seconds(), f.admitted, f.checks-f.admitted, f.by)
			t.Logf("%s: Redis script calls %d for %d checks: %.2f%% (%.1f checks per call)",
				tc.name, calls, f.checks, 100*float64(calls)/float64(f.checks), float64(f.checks)/float64(max(calls, 1)))
			if f.errors > 0 {
				t.Fatalf("%d checks failed", f.errors)
			}
			if f.admitted != 1000 {
				t.Fatalf("admitted %d, want exactly the limit, 1000", f.admitted)
			}
			for by := range f.by {
				if by != "store" && by != "deny-cache" {
					t.Errorf("checks decided by %q: %v", by, f.by)
				}
			}
			if f.checks < 2000 || float64(calls) > tc.maxShare*float64(f.checks) {
				t.Errorf("%d script calls for %d checks: want at most %.0f%%", calls, f.checks, 100*tc.maxShare)
			}
		})
	}
}

type floodResult struct {
	checks, admitted, errors int64
	took                     time.Duration
	by                       map[string]int64
}

// flood sends checks of one subject from workers goroutines, round robin
// over addrs, for d, and counts the answers by status and deciding path.
func flood(t *testing.T, addrs []string, subject string, workers int, d time.Duration) floodResult {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	defer client.CloseIdleConnections()
	body := fmt.Sprintf(`{"namespace":"hot","subject":%q,"cost":1}`, subject)
	var checks, admitted, errs atomic.Int64
	var mu sync.Mutex
	by := map[string]int64{}
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			own := map[string]int64{}
			for i := w; time.Now().Before(stop); i += workers {
				resp, err := client.Post("http://"+addrs[i%len(addrs)]+"/v1/check", "application/json", strings.NewReader(body))
				if err != nil {
					errs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				checks.Add(1)
				switch resp.StatusCode {
				case http.StatusOK:
					admitted.Add(1)
				case http.StatusTooManyRequests:
				default:
					errs.Add(1)
				}
				own[resp.Header.Get("RateLimit-Decided-By")]++
			}
			mu.Lock()
			for k, v := range own {
				by[k] += v
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	return floodResult{checks: checks.Load(), admitted: admitted.Load(), errors: errs.Load(), took: time.Since(start), by: by}
}

// statCalls reads calls=N out of an INFO commandstats value.
func statCalls(v string) int64 {
	n, _ := strconv.ParseInt(strings.TrimPrefix(strings.Split(v, ",")[0], "calls="), 10, 64)
	return n
}
