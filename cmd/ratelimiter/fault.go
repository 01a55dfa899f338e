package main

import (
	"flag"
	"fmt"
	"time"

	"github.com/distributedratelimiter/ratelimiter/service"
)

// faultFlags are the settings of `serve` for a shared store that may fail:
// the per-check deadline, the circuit breaker, the local fallback's share
// (instance count) and the deny cache. They apply to --store redis only: the
// memory store is in process and neither blocks nor fails.
type faultFlags struct {
	maxWait           time.Duration
	storeQueue        int
	legacyTimeout     legacyDuration // --store-timeout, the old name of --store-max-wait
	instances         int
	heartbeat         time.Duration
	denyCacheSize     int
	breakerOpenFor    time.Duration
	breakerMinCalls   int
	breakerRatio      float64
	closedRetryAfter  time.Duration
	disableBreaker    bool
	topologyRefreshes time.Duration
}

func (f *faultFlags) register(fs *flag.FlagSet) {
	fs.DurationVar(&f.maxWait, "store-max-wait", service.DefaultMaxWait,
		"redis store: longest a check waits for Redis; past it the check is shed (503) if Redis answered other checks meanwhile, or answered by the namespace's on_store_error policy if Redis answered none")
	fs.IntVar(&f.storeQueue, "store-queue", service.DefaultMaxWaiting,
		"redis store: most checks waiting for Redis at once; one more is shed at once (503 with Retry-After, decided_by=\"shed\"), never decided without Redis")
	fs.Var(&f.legacyTimeout, "store-timeout", "deprecated: the old name of --store-max-wait")
	fs.IntVar(&f.instances, "instances", 1,
		"redis store: the number of instances to assume until the heartbeat has counted them (sizes each instance's share of a limit when Redis fails)")
	fs.DurationVar(&f.heartbeat, "heartbeat", time.Second,
		"redis store: how often this instance announces itself and counts the live instances (an instance silent for 3 heartbeats is gone)")
	fs.IntVar(&f.denyCacheSize, "deny-cache-size", service.DefaultDenyCacheSize,
		"redis store: most subjects remembered as denied, answered without Redis until their denial ends; 0 disables the deny cache")
	fs.DurationVar(&f.breakerOpenFor, "breaker-open-for", 500*time.Millisecond,
		"redis store: how long the circuit breaker stays open before each background probe of Redis (checks are never the probes)")
	fs.IntVar(&f.breakerMinCalls, "breaker-min-calls", 20,
		"redis store: fewest calls in a 1s window that may open the circuit breaker")
	fs.Float64Var(&f.breakerRatio, "breaker-failure-ratio", 0.5,
		"redis store: share of failed calls in a 1s window that opens the circuit breaker")
	fs.BoolVar(&f.disableBreaker, "disable-breaker", false,
		"redis store: no circuit breaker: every check tries Redis (and waits up to --store-max-wait when it is down)")
	fs.DurationVar(&f.closedRetryAfter, "closed-retry-after", service.DefaultClosedRetryAfter,
		"redis store: Retry-After of the denials of on_store_error: closed")
	fs.DurationVar(&f.topologyRefreshes, "redis-topology-refresh", 2*time.Second,
		"redis store, sentinel and cluster modes: how often the client re-reads the topology besides following failover events")
}

func (f *faultFlags) validate() error {
	switch {
	case f.maxWait <= 0:
		return fmt.Errorf("--store-max-wait: %v, want more than 0", f.maxWait)
	case f.storeQueue < 1:
		return fmt.Errorf("--store-queue: %d, want at least 1", f.storeQueue)
	case f.instances < 1:
		return fmt.Errorf("--instances: %d, want at least 1", f.instances)
	case f.heartbeat <= 0:
		return fmt.Errorf("--heartbeat: %v, want more than 0", f.heartbeat)
	case f.denyCacheSize < 0:
		return fmt.Errorf("--deny-cache-size: %d, want 0 (off) or more", f.denyCacheSize)
	case f.breakerOpenFor <= 0:
		return fmt.Errorf("--breaker-open-for: %v, want more than 0", f.breakerOpenFor)
	case f.breakerMinCalls < 1:
		return fmt.Errorf("--breaker-min-calls: %d, want at least 1", f.breakerMinCalls)
	case f.breakerRatio <= 0 || f.breakerRatio > 1:
		return fmt.Errorf("--breaker-failure-ratio: %v, want (0, 1]", f.breakerRatio)
	case f.closedRetryAfter <= 0:
		return fmt.Errorf("--closed-retry-after: %v, want more than 0", f.closedRetryAfter)
	case f.topologyRefreshes <= 0:
		return fmt.Errorf("--redis-topology-refresh: %v, want more than 0", f.topologyRefreshes)
	}
	return nil
}

// legacyDuration is a deprecated duration flag: it remembers its value and
// that it was given, for deprecations to resolve against its new name.
type legacyDuration struct {
	v     time.Duration
	given bool
}

func (d *legacyDuration) String() string {
	if d == nil || !d.given {
		return ""
	}
	return d.v.String()
}

func (d *legacyDuration) Set(s string) error {
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.v, d.given = v, true
	return nil
}

// deprecations applies the deprecated flags given (on the command line or
// in the environment) after parseFlags, and returns a warning for each. A
// deprecated name never overrides its new name when both are given.
func (f *faultFlags) deprecations(fs *flag.FlagSet) []string {
	if !f.legacyTimeout.given {
		return nil
	}
	newGiven := false
	fs.Visit(func(fl *flag.Flag) { newGiven = newGiven || fl.Name == "store-max-wait" })
	if !newGiven {
		f.maxWait = f.legacyTimeout.v
	}
	return []string{"--store-timeout is deprecated: it is now --store-max-wait, the longest a check waits for a Redis that is busy " +
		"but answering (default 1s); a check past it is shed while Redis answers others, and only a Redis that answers nothing " +
		"hands checks to on_store_error"}
}
