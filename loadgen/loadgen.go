// Package loadgen drives a running ratelimiter deployment with checks and
// measures it: `ratelimiter bench` is its command.
//
// A closed loop runs Callers goroutines, each sending its next check when
// the previous one is answered. An open loop sends Rate checks a second at
// fixed instants whatever the answers, at most Callers outstanding (a check
// due while that many are out is counted as not sent, the generator's own
// limit), and measures each latency from the instant the check was due, so
// that queueing in the server is not hidden (coordinated omission).
//
// Checks go over HTTP, one per request (ModeCheck, POST /v1/check) or
// coalesced by the Go client (ModeChecks, POST /v1/checks: package client),
// or over the native gRPC API, one unary call each (ModeGRPC) or every
// caller's checks on one shared stream (ModeStream: package
// client/grpcclient), or over Envoy's rate limit service protocol, one
// ShouldRateLimit call each (ModeRLS: domain the namespace, one descriptor
// {RLSKey: subject}), which envoyproxy/ratelimit serves too.
// With the server's PID, the report holds the server's CPU time per check,
// read from /proc (Linux).
package loadgen

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"

	pb "github.com/distributedratelimiter/ratelimiter/api/ratelimiterv1"
	"github.com/distributedratelimiter/ratelimiter/client"
	"github.com/distributedratelimiter/ratelimiter/client/grpcclient"
)

// Modes.
const (
	ModeCheck  = "check"  // one check per POST /v1/check
	ModeChecks = "checks" // the batching client, POST /v1/checks
	ModeGRPC   = "grpc"   // one unary Check per check, the native gRPC API
	ModeStream = "stream" // the stream client: every caller on one CheckStream
	ModeRLS    = "rls"    // one ShouldRateLimit per check, Envoy's protocol
)

// Config is one run.
type Config struct {
	URL  string // the server's base URL (ModeCheck, ModeChecks)
	GRPC string // the native gRPC API's address (ModeGRPC, ModeStream)
	RLS  string // Envoy's rate limit service's address (ModeRLS)
	// RLSKey is the descriptor key the subject is the value of (ModeRLS).
	// Default "user".
	RLSKey    string
	Mode      string
	Namespace string
	// Subjects are the distinct subjects checked, round robin; 1 is one
	// hot subject.
	Subjects int
	Callers  int
	Duration time.Duration
	// Rate is the open loop's checks per second; 0 runs a closed loop.
	Rate float64
	// PID, when not 0, is the server's process, whose CPU time is read.
	PID int
	// Progress, when not nil, receives a line a second.
	Progress io.Writer
	// Check, when set, sends each check instead of Mode, which then only
	// names the run: another service's client, driven with the same load
	// shape (the peers' comparison, bench/peers).
	Check Check
}

// Check sends one check of subject and says whether it was allowed; an
// error is a check that got no decision.
type Check func(ctx context.Context, subject string) (allowed bool, err error)

// Report is what a run measured.
type Report struct {
	Config                  Config
	Elapsed                 time.Duration
	Checks                  int64 // answered, allowed or denied
	Allowed, Denied, Errors int64
	NotSent                 int64 // open loop: due while Callers were out
	P50, P90, P99, P999     time.Duration
	// ServerCPU is the server's CPU time over the run (PID given).
	ServerCPU  time.Duration
	FirstError string
}

// PerSecond is the answered checks a second.
func (r Report) PerSecond() float64 { return float64(r.Checks) / r.Elapsed.Seconds() }

// CPUPerCheck is the server's CPU time per answered check (0 without PID).
func (r Report) CPUPerCheck() time.Duration {
	if r.Checks == 0 {
		return 0
	}
	return r.ServerCPU / time.Duration(r.Checks)
}

// String is the report for a terminal.
func (r Report) String() string {
	var b strings.Builder
	loop := "closed loop"
	if r.Config.Rate > 0 {
		loop = fmt.Sprintf("open loop at %.0f/s", r.Config.Rate)
	}
	fmt.Fprintf(&b, "%s, %s, %d callers, %d subjects, %v\n", r.Config.Mode, loop, r.Config.Callers, r.Config.Subjects, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(&b, "checks/s %.0f  allowed %d  denied %d  errors %d", r.PerSecond(), r.Allowed, r.Denied, r.Errors)
	if r.NotSent > 0 {
		fmt.Fprintf(&b, "  not sent %d (the generator's bound)", r.NotSent)
	}
	fmt.Fprintf(&b, "\nlatency p50 %v  p90 %v  p99 %v  p99.9 %v\n", r.P50, r.P90, r.P99, r.P999)
	if r.ServerCPU > 0 {
		fmt.Fprintf(&b, "server CPU %v: %.1f µs per check\n", r.ServerCPU.Round(time.Millisecond), float64(r.CPUPerCheck())/1e3)
	}
	if r.FirstError != "" {
		fmt.Fprintf(&b, "first error: %s\n", r.FirstError)
	}
	return b.String()
}

// outcome of one check.
const (
	allowed = iota
	denied
	failed
)

// Run drives the server as cfg says until cfg.Duration passes or ctx ends.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Callers < 1 || cfg.Subjects < 1 || cfg.Duration <= 0 || cfg.Rate < 0 || cfg.Namespace == "" {
		return Report{}, errors.New("loadgen: want callers, subjects and a duration of at least 1, a namespace, and a rate of 0 or more")
	}
	check, closeFn, err := checker(cfg)
	if err != nil {
		return Report{}, err
	}
	defer closeFn()
	subjects := make([]string, cfg.Subjects)
	for i := range subjects {
		subjects[i] = "user-" + strconv.Itoa(i)
	}
	var cpu0 time.Duration
	if cfg.PID != 0 {
		if cpu0, err = ProcessCPU(cfg.PID); err != nil {
			return Report{}, err
		}
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()

	var counts [3]atomic.Int64
	var firstErr atomic.Value
	var mu sync.Mutex
	var lats []time.Duration
	record := func(local []time.Duration) {
		mu.Lock()
		lats = append(lats, local...)
		mu.Unlock()
	}
	one := func(i int) (int, error) {
		return check(subjects[i%len(subjects)])
	}
	note := func(o int, err error) {
		counts[o].Add(1)
		if err != nil {
			firstErr.CompareAndSwap(nil, err.Error())
		}
	}
	stopProgress := progress(ctx, cfg.Progress, &counts)
	start := time.Now()
	var notSent int64
	var wg sync.WaitGroup
	if cfg.Rate == 0 {
		var next atomic.Int64
		for range cfg.Callers {
			wg.Go(func() {
				var local []time.Duration
				defer func() { record(local) }()
				for ctx.Err() == nil {
					t0 := time.Now()
					o, err := one(int(next.Add(1)))
					if ctx.Err() != nil && o == failed {
						return // cut off by the end of the run
					}
					local = append(local, time.Since(t0))
					note(o, err)
				}
			})
		}
	} else {
		out := make(chan struct{}, cfg.Callers)
		interval := time.Duration(float64(time.Second) / cfg.Rate)
		for i := 0; ; i++ {
			due := start.Add(time.Duration(i) * interval)
			if w := time.Until(due); w > 0 {
				t := time.NewTimer(w)
				select {
				case <-ctx.Done():
					t.Stop()
				case <-t.C:
				}
			}
			if ctx.Err() != nil {
				break
			}
			select {
			case out <- struct{}{}:
			default:
				notSent++
				continue
			}
			wg.Go(func() {
				defer func() { <-out }()
				o, err := one(i)
				record([]time.Duration{time.Since(due)})
				note(o, err)
			})
		}
	}
	wg.Wait()
	elapsed := time.Since(start)
	stopProgress()
	r := Report{Config: cfg, Elapsed: elapsed, Allowed: counts[allowed].Load(), Denied: counts[denied].Load(),
		Errors: counts[failed].Load(), NotSent: notSent}
	r.Checks = r.Allowed + r.Denied
	if v, ok := firstErr.Load().(string); ok {
		r.FirstError = v
	}
	slices.Sort(lats)
	r.P50, r.P90, r.P99, r.P999 = Quantile(lats, 0.50), Quantile(lats, 0.90), Quantile(lats, 0.99), Quantile(lats, 0.999)
	if cfg.PID != 0 {
		cpu1, err := ProcessCPU(cfg.PID)
		if err != nil {
			return r, err
		}
		r.ServerCPU = cpu1 - cpu0
	}
	return r, nil
}

// Quantile is the nearest-rank p-quantile of sorted: the smallest value
// with at least p of the values at or below it; 0 for none.
func Quantile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	return sorted[min(n-1, max(0, int(math.Ceil(p*float64(n)))-1))]
}

// checker returns the function that sends one check of a subject, by mode.
func checker(cfg Config) (func(subject string) (int, error), func(), error) {
	base := strings.TrimSuffix(cfg.URL, "/")
	if cfg.Check != nil {
		return outcomes(cfg.Check), func() {}, nil
	}
	switch cfg.Mode {
	case ModeCheck:
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = cfg.Callers
		hc := &http.Client{Transport: t, Timeout: checkTimeout}
		url := base + "/v1/check"
		prefix := `{"namespace":` + strconv.Quote(cfg.Namespace) + `,"subject":`
		return func(subject string) (int, error) {
			resp, err := hc.Post(url, "application/json", bytes.NewReader([]byte(prefix+strconv.Quote(subject)+"}")))
			if err != nil {
				return failed, err
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			switch resp.StatusCode {
			case http.StatusOK:
				return allowed, nil
			case http.StatusTooManyRequests:
				return denied, nil
			}
			return failed, fmt.Errorf("status %d", resp.StatusCode)
		}, hc.CloseIdleConnections, nil
	case ModeChecks:
		c, err := client.New(base, client.Options{Timeout: checkTimeout})
		if err != nil {
			return nil, nil, err
		}
		return outcomes(viaClient(c, cfg.Namespace)), func() { c.Close() }, nil
	case ModeGRPC:
		conn, err := grpc.NewClient(cfg.GRPC, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		rl := pb.NewRateLimiterClient(conn)
		return outcomes(func(ctx context.Context, subject string) (bool, error) {
			res, err := rl.Check(ctx, &pb.CheckRequest{Namespace: cfg.Namespace, Subject: subject})
			if err == nil && res.GetError() != "" {
				err = errors.New(res.GetError())
			}
			return res.GetAllowed(), err
		}), func() { conn.Close() }, nil
	case ModeStream:
		c, err := grpcclient.New(cfg.GRPC)
		if err != nil {
			return nil, nil, err
		}
		return outcomes(viaClient(c, cfg.Namespace)), func() { c.Close() }, nil
	case ModeRLS:
		conn, err := grpc.NewClient(cfg.RLS, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, nil, err
		}
		rl := rlsv3.NewRateLimitServiceClient(conn)
		key := cfg.RLSKey
		if key == "" {
			key = "user"
		}
		return outcomes(func(ctx context.Context, subject string) (bool, error) {
			res, err := rl.ShouldRateLimit(ctx, &rlsv3.RateLimitRequest{Domain: cfg.Namespace,
				Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: key, Value: subject}}}}})
			if c := res.GetOverallCode(); err == nil && c != rlsv3.RateLimitResponse_OK && c != rlsv3.RateLimitResponse_OVER_LIMIT {
				err = fmt.Errorf("overall code %v", c)
			}
			return res.GetOverallCode() == rlsv3.RateLimitResponse_OK, err
		}), func() { conn.Close() }, nil
	}
	return nil, nil, fmt.Errorf("loadgen: mode %q: want %s, %s, %s, %s or %s", cfg.Mode, ModeCheck, ModeChecks, ModeGRPC, ModeStream, ModeRLS)
}

// checkTimeout bounds one check of the generator.
const checkTimeout = 10 * time.Second

// viaClient is a Check through c, one of the batching clients (package
// client, client/grpcclient): their Check is the same.
func viaClient(c interface {
	Check(context.Context, client.Request) (client.Result, error)
}, namespace string) Check {
	return func(ctx context.Context, subject string) (bool, error) {
		res, err := c.Check(ctx, client.Request{Namespace: namespace, Subject: subject})
		return res.Allowed, err
	}
}

// outcomes sends each check through c, bounded by checkTimeout.
func outcomes(c Check) func(subject string) (int, error) {
	return func(subject string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), checkTimeout)
		defer cancel()
		ok, err := c(ctx, subject)
		switch {
		case err != nil:
			return failed, err
		case ok:
			return allowed, nil
		}
		return denied, nil
	}
}

// progress prints a line a second until the returned function is called.
func progress(ctx context.Context, w io.Writer, counts *[3]atomic.Int64) func() {
	if w == nil {
		return func() {}
	}
	done := make(chan struct{})
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var last int64
		for s := 1; ; s++ {
			select {
			case <-done:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			n := counts[allowed].Load() + counts[denied].Load()
			fmt.Fprintf(w, "%3ds  checks/s %7d  allowed %d  denied %d  errors %d\n", s, n-last,
				counts[allowed].Load(), counts[denied].Load(), counts[failed].Load())
			last = n
		}
	}()
	return func() { close(done); <-stopped }
}

// clockTicks is the kernel's USER_HZ on Linux: /proc counts CPU in it.
const clockTicks = 100

// ProcessCPU is a process's user and system CPU time so far, from
// /proc/PID/stat.
func ProcessCPU(pid int) (time.Duration, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, fmt.Errorf("loadgen: the server's CPU time: %w", err)
	}
	// The command name (field 2) is in parentheses and may hold spaces:
	// the fields after it start after the last ')'.
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("loadgen: /proc stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 13 {
		return 0, errors.New("loadgen: /proc stat: too few fields")
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64) // field 14
	stime, err2 := strconv.ParseInt(f[12], 10, 64) // field 15
	if err1 != nil || err2 != nil {
		return 0, errors.New("loadgen: /proc stat: bad utime or stime")
	}
	return time.Duration(utime+stime) * time.Second / clockTicks, nil
}
