// Package leasesim simulates the lease protocol of package lease between
// regional deployments and one global budget holder, in virtual time and
// seeded, so that a run is the same on every machine.
//
// # The model
//
// The global holder is a store (memstore, on a virtual clock) that keeps the
// global limit's token bucket (its burst lowered by one lease of its rate,
// lease.Lease) and the regions' demand reports. Each region is one
// lease.Holder: it decides its own checks, in batches of one tick, from the
// slices it holds and never waits for the holder (lease.Holder.Admit), so
// no check ever costs a cross-region round trip. Takes, grants and returns
// travel with the region's one-way delay, fixed per region and drawn from
// [MinDelay, MaxDelay]. A region's demand follows a daily cycle peaking at
// its own local noon, on top of a global daily swing, so that demand moves
// between regions and the total crosses the limit twice a day.
//
// A partition cuts one region off the holder for PartitionFor: messages to
// and from it are lost. Its takes time out (TakeTimeout); it decides from
// its slices until they expire, then by its local failure policy: a bucket
// of its own holding the limit divided by the region count (as
// on_store_error: local divides a limit among instances). Meanwhile its
// report lapses at the holder and the other regions take the whole limit:
// the global over-admission of a partition is the partitioned region's
// local share, 1/Regions of the limit.
//
// # What is measured
//
// Every admission is fed, tick by tick, to an auditor: the global limit's
// own rule (limit.Rule.Take on one state). An admission the auditor cannot
// take is an over-admission, counted apart while every region reaches the
// holder and during partitions. Utilization is what was admitted over what
// the limit allows during the ticks whose demand exceeded the limit.
package leasesim

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/lease"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// Config is one simulation; the zero Config is Full, and a zero Run is one
// Day.
type Config struct {
	Regions int
	// Day is the period of the demand's daily cycle; Run how long to
	// simulate (default one Day).
	Day, Run time.Duration
	// Tick is the batch of time whose checks a region decides together.
	Tick time.Duration
	// Limit and Burst are the global limit, per second.
	Limit, Burst int64
	// Lease is the longest lease (lease.Lease).
	Lease time.Duration
	// MinDelay and MaxDelay bound the regions' one-way delays.
	MinDelay, MaxDelay time.Duration
	// Peak is the total demand at the busiest hour, in limits.
	Peak float64
	// Partitions cut as many regions off the holder, one at a time, each
	// for PartitionFor, at the busiest hours.
	Partitions   int
	PartitionFor time.Duration
	// TakeTimeout fails a take with no answer (a partition).
	TakeTimeout time.Duration
	Seed        uint64
}

// Full is the configuration of the multi-region design (docs/DESIGN.md).
var Full = Config{
	Regions: 100, Day: 24 * time.Hour, Tick: 10 * time.Millisecond,
	Limit: 100_000, Burst: 200_000, Lease: time.Second,
	MinDelay: 20 * time.Millisecond, MaxDelay: 150 * time.Millisecond,
	Peak: 1.6, Partitions: 4, PartitionFor: 5 * time.Minute,
	TakeTimeout: time.Second, Seed: 1,
}

// Small is the configuration the test command runs: 10 regions over a
// compressed day of two hours.
var Small = Config{
	Regions: 10, Day: 2 * time.Hour, Tick: 10 * time.Millisecond,
	Limit: 10_000, Burst: 20_000, Lease: time.Second,
	MinDelay: 20 * time.Millisecond, MaxDelay: 150 * time.Millisecond,
	Peak: 1.6, Partitions: 2, PartitionFor: 2 * time.Minute,
	TakeTimeout: time.Second, Seed: 1,
}

// Result is what a run measured.
type Result struct {
	Config Config
	// Checks were decided, all in their own region (Local); Waited
	// counts checks that waited for a cross-region message: none, by
	// construction (lease.Holder.Admit), and counted to show it.
	Checks, Admitted, Local, Waited int64
	// Over counts the admissions over what the limit allows, in the whole
	// run; with partitions, their doing, out of PartitionAllowed, what the
	// limit allowed over their windows (its rate over each, and its burst
	// once per partition). Compare runs the same configuration without
	// partitions, where Over must be 0, and with them.
	Over             int64
	PartitionAllowed float64
	// Saturated is the time whose demand exceeded the limit;
	// SaturatedUsed what was admitted then over what the limit allowed.
	Saturated     time.Duration
	SaturatedUsed float64
	// Takes and Returns are the messages the holder received.
	Takes, Returns int64
}

// PartitionOver is the over-admission of the partitions as a share of
// what the limit allowed over them.
func (r Result) PartitionOver() float64 {
	if r.PartitionAllowed == 0 {
		return 0
	}
	return float64(r.Over) / r.PartitionAllowed
}

// Compare runs cfg without partitions (every region reaches the holder)
// and with them, same seed, same demand.
func Compare(cfg Config) (reachable, partitioned Result, err error) {
	cfg = cfg.withDefaults()
	whole := cfg
	whole.Partitions = 0
	if reachable, err = Run(whole); err != nil {
		return reachable, partitioned, err
	}
	partitioned, err = Run(cfg)
	return reachable, partitioned, err
}

func (c Config) withDefaults() Config {
	d := Full
	if c.Regions == 0 {
		return d
	}
	if c.Run == 0 {
		c.Run = c.Day
	}
	return c
}

// region is one regional deployment.
type region struct {
	name     string
	h        *lease.Holder
	delay    time.Duration
	weight   float64 // share of the total demand at its peak
	phase    time.Duration
	owed     float64
	pending  *lease.Ask // the take in flight
	sent     time.Time
	seq      int // of the take in flight, to match its grant or timeout
	down     bool
	fallback limit.State
}

// event is a message arriving, or a take timing out.
type event struct {
	at     time.Time
	kind   int
	region int
	seq    int
	ask    lease.Ask
	grant  store.Grant
	ret    lease.Return
	order  int // ties in arrival order
}

const (
	evTake    = iota // a take reaches the holder
	evGrant          // a grant reaches its region
	evReturn         // a return reaches the holder
	evTimeout        // a take's answer is overdue
)

type queue []*event

func (q queue) Len() int { return len(q) }
func (q queue) Less(i, j int) bool {
	if !q[i].at.Equal(q[j].at) {
		return q[i].at.Before(q[j].at)
	}
	return q[i].order < q[j].order
}
func (q queue) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *queue) Push(x any)   { *q = append(*q, x.(*event)) }
func (q *queue) Pop() any {
	old := *q
	e := old[len(old)-1]
	*q = old[:len(old)-1]
	return e
}

// partition is one region cut off over [from, to).
type partition struct {
	region   int
	from, to time.Time
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

const key = "global:orders"

// Run simulates cfg.
func Run(cfg Config) (Result, error) {
	cfg = cfg.withDefaults()
	if cfg.Regions < 1 || cfg.Tick <= 0 || cfg.Day <= 0 || cfg.MaxDelay < cfg.MinDelay || cfg.TakeTimeout <= 0 {
		return Result{}, errors.New("leasesim: invalid configuration")
	}
	user, err := limit.Rule{Name: "global", Algorithm: limit.TokenBucket, Limit: cfg.Limit, Period: time.Second, Burst: cfg.Burst, Lease: true}.Normalize()
	if err != nil {
		return Result{}, err
	}
	storeRule, d, err := lease.Lease(user, cfg.Lease)
	if err != nil {
		return Result{}, err
	}
	share, err := limit.Rule{Name: "local", Algorithm: limit.TokenBucket, Limit: max(1, cfg.Limit/int64(cfg.Regions)), Period: time.Second,
		Burst: max(1, cfg.Burst/int64(cfg.Regions))}.Normalize()
	if err != nil {
		return Result{}, err
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x1ea5e))
	regions := make([]*region, cfg.Regions)
	var wsum float64
	for i := range regions {
		r := &region{
			name:  fmt.Sprintf("region-%03d", i),
			h:     lease.NewHolder(storeRule, d),
			delay: cfg.MinDelay + time.Duration(rng.Int64N(int64(cfg.MaxDelay-cfg.MinDelay)+1)),
			// Lognormal weights: a few big regions, many small ones.
			weight: math.Exp(rng.NormFloat64()),
			phase:  time.Duration(float64(cfg.Day) * float64(i) / float64(cfg.Regions)),
		}
		wsum += r.weight
		regions[i] = r
	}
	for _, r := range regions {
		r.weight /= wsum
	}
	demand := func(r *region, at time.Duration) float64 {
		local := 0.5 + 0.5*math.Cos(2*math.Pi*float64(at-r.phase)/float64(cfg.Day))
		global := 0.6 + 0.4*math.Cos(2*math.Pi*float64(at)/float64(cfg.Day))
		return r.weight * (0.2 + 0.8*local*local) * global
	}
	// Scale the demand so that its busiest tick is Peak limits.
	var top float64
	for i := range 1000 {
		at := time.Duration(int64(cfg.Day) * int64(i) / 1000)
		var sum float64
		for _, r := range regions {
			sum += demand(r, at)
		}
		top = max(top, sum)
	}
	scale := cfg.Peak * float64(cfg.Limit) / top

	// Partitions at the busiest hours (the global swing peaks at 0), on
	// regions drawn at random, one after another.
	var parts []partition
	for i := range cfg.Partitions {
		from := epoch.Add(time.Duration(i) * (cfg.PartitionFor + cfg.PartitionFor/2)).Add(cfg.PartitionFor)
		parts = append(parts, partition{region: rng.IntN(cfg.Regions), from: from, to: from.Add(cfg.PartitionFor)})
	}
	cut := func(ri int, at time.Time) bool {
		for _, p := range parts {
			if p.region == ri && !at.Before(p.from) && at.Before(p.to) {
				return true
			}
		}
		return false
	}

	clk := clocktest.New(epoch)
	holder := memstore.New(memstore.Options{Clock: clk, SweepInterval: -1})
	defer holder.Close()
	ctx := context.Background()
	res := Result{Config: cfg}
	var q queue
	order := 0
	send := func(e *event) {
		order++
		e.order = order
		heap.Push(&q, e)
	}
	giveBack := func(ri int, now time.Time, rets []lease.Return) {
		for _, ret := range rets {
			if !cut(ri, now) {
				send(&event{at: now.Add(regions[ri].delay), kind: evReturn, region: ri, ret: ret})
			}
		}
	}
	ask := func(ri int, now time.Time, a lease.Ask) {
		r := regions[ri]
		r.seq++
		r.pending, r.sent = &a, now
		if !cut(ri, now) {
			send(&event{at: now.Add(r.delay), kind: evTake, region: ri, seq: r.seq, ask: a})
		}
		send(&event{at: now.Add(cfg.TakeTimeout), kind: evTimeout, region: ri, seq: r.seq})
	}
	process := func(e *event) error {
		r := regions[e.region]
		switch e.kind {
		case evTake:
			clk.Set(e.at)
			res.Takes++
			g, err := holder.Take(ctx, key, storeRule, e.ask.N, store.Report{Holder: r.name, Demand: e.ask.Demand, For: 2 * d})
			if err != nil {
				return err
			}
			if cut(e.region, e.at) {
				// Lost on its way back: the units stay spent.
				return nil
			}
			send(&event{at: e.at.Add(r.delay), kind: evGrant, region: e.region, seq: e.seq, ask: e.ask, grant: g})
		case evReturn:
			clk.Set(e.at)
			res.Returns++
			return holder.Return(ctx, key, storeRule, e.ret.Grant, e.ret.Unused)
		case evGrant:
			if r.pending == nil || r.seq != e.seq {
				// It came after its timeout: give it back.
				if e.grant.Taken > 0 {
					giveBack(e.region, e.at, []lease.Return{{Grant: e.grant, Unused: e.grant.Taken}})
				}
				return nil
			}
			r.h.Granted(e.at, r.sent, *r.pending, e.grant)
			r.pending, r.down = nil, false
		case evTimeout:
			if r.pending != nil && r.seq == e.seq {
				r.h.Failed()
				r.pending, r.down = nil, true
			}
		}
		return nil
	}

	var audit limit.State
	end := epoch.Add(cfg.Run)
	for now := epoch; now.Before(end); now = now.Add(cfg.Tick) {
		for len(q) > 0 && !q[0].at.After(now) {
			if err := process(heap.Pop(&q).(*event)); err != nil {
				return res, err
			}
		}
		at := now.Sub(epoch)
		var admitted int64
		var total float64
		for ri, r := range regions {
			rate := scale * demand(r, at)
			total += rate
			r.owed += rate * cfg.Tick.Seconds()
			n := int64(r.owed)
			r.owed -= float64(n)
			giveBack(ri, now, r.h.Expire(now, nil))
			got, a := r.h.Admit(now, n, cfg.Regions)
			if a.N > 0 {
				ask(ri, now, a)
			}
			if got < n && r.down && r.h.Avail() == 0 {
				// The failure policy: the region's local share.
				more, _ := share.Take(&r.fallback, now.UnixNano(), n-got)
				got += more
			}
			res.Checks += n
			res.Local += n
			admitted += got
		}
		res.Admitted += admitted
		if admitted > 0 {
			ok, _ := user.Take(&audit, now.UnixNano(), admitted)
			res.Over += admitted - ok
		}
		if total > float64(cfg.Limit) {
			res.Saturated += cfg.Tick
			res.SaturatedUsed += float64(admitted)
		}
	}
	// Over a partition's window the limit allows its rate and its burst.
	res.PartitionAllowed = float64(len(parts)) * (float64(cfg.Limit)*cfg.PartitionFor.Seconds() + float64(cfg.Burst))
	if res.Saturated > 0 {
		res.SaturatedUsed /= float64(cfg.Limit) * res.Saturated.Seconds()
	}
	return res, nil
}
