// Package redisstore is the distributed Store: limiter state lives in Redis
// (standalone, Sentinel for HA, or Redis Cluster for sharding and
// replication), shared by any number of stateless ratelimiter instances.
//
// # Atomicity
//
// Every check is one Lua script call (apply.lua, embedded) that reads,
// decides and writes all the rules of one subject: Redis runs a script
// without interleaving any other command, so check-and-consume is atomic and
// a limit set is all-or-nothing. All keys of one subject share a cluster hash
// tag, "rl:{namespace:subject}:rule", so they live in one slot and the script
// is legal on Redis Cluster. Scripts run by EVALSHA, falling back to EVAL when
// the server has lost its script cache (a restart or a failover).
//
// # Time
//
// By default the script reads the Redis server's clock (TIME), so instances
// whose clocks disagree still agree on every decision. With Options.Clock set,
// the caller's clock is used instead; the conformance suite uses this mode to
// run the same fake-clock timelines as the in-memory store.
//
// # Batching
//
// Concurrent checks are batched: while one script call is in flight, the
// checks that arrive queue up and go to Redis together in the next call,
// which processes them in arrival order. A lone check is sent at once, so
// batching adds no latency when idle and divides the per-call cost of Redis
// under load. On a standalone or Sentinel deployment any checks may share a
// call; on a Cluster only checks of the same key do (a hot subject coalesced
// into one call), since one script may touch one slot only: each key has
// its own calls in flight (at most MaxInFlight) and its own queue behind
// them, so a key on a slow node holds up no other key.
package redisstore

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/store"
)

//go:embed apply.lua
var applySource string

// scriptSHA is the EVALSHA name of apply.lua.
var scriptSHA = func() string {
	h := sha1.Sum([]byte(applySource))
	return hex.EncodeToString(h[:])
}()

// Mode selects how the client finds Redis.
type Mode string

// The deployment modes.
const (
	// Standalone talks to one Redis server (or a proxy in front of one).
	Standalone Mode = "standalone"
	// Sentinel asks the sentinels in Addrs for the primary of MasterName
	// and follows failovers.
	Sentinel Mode = "sentinel"
	// Cluster talks to a Redis Cluster; Addrs are seed nodes.
	Cluster Mode = "cluster"
)

// Options configure a Store.
type Options struct {
	// Addrs are host:port addresses: the server, the sentinels, or cluster
	// seed nodes, by Mode.
	Addrs []string
	// Mode is Standalone, Sentinel or Cluster. Default Standalone.
	Mode Mode
	// MasterName is the Sentinel master set name (Sentinel mode).
	MasterName string
	// Username and Password authenticate to Redis (ACL or requirepass).
	Username, Password string
	// TLS, when set, encrypts every connection with it: to the server, the
	// sentinels and the primaries they name, or every Cluster node (whose
	// TLS ports CLUSTER SHARDS gives). Nil: plain TCP.
	TLS *tls.Config
	// Prefix starts every key. Default "rl:".
	Prefix string
	// Clock, when set, supplies the time instead of the Redis server.
	Clock clock.Clock
	// MaxBatch is the largest number of checks sent in one script call.
	// Default 128; 1 disables batching.
	MaxBatch int
	// MaxInFlight is how many batches may be in flight at once, so that
	// Redis works on one while the next is built and sent. Default 2.
	MaxInFlight int
	// Timeout bounds each Redis call. Default 1s.
	Timeout time.Duration
	// TopologyRefresh is how often a Sentinel or Cluster client re-reads
	// the topology, besides following +switch-master events and MOVED
	// replies: it recovers a client from a missed event (a demoted primary
	// answering READONLY). Default 2s; negative disables it.
	TopologyRefresh time.Duration
	// Observe, when set, is called after every script call of checks
	// with its round trip (sending included, for a pipeline the whole
	// pipeline's) and the checks it carried, failed or not: what the
	// store's metrics show. It must be fast and safe for concurrent use.
	Observe func(took time.Duration, checks int)
}

// Store is the Redis store.Store. It is safe for concurrent use.
type Store struct {
	client     rueidis.Client
	prefix     string
	clock      clock.Clock
	cluster    bool
	maxBatch   int
	observe    func(time.Duration, int)
	maxIn      int
	timeout    time.Duration
	sha        string
	ruleArgs   sync.Map // *limit.Rule -> *[argsPerRule]string, the rule's script arguments
	cachedArgs atomic.Int64

	mu       sync.Mutex
	pending  []*call
	keys     map[string]keyQueue // Cluster: the keys with script calls in flight
	inflight int
	closed   atomic.Bool
	wg       sync.WaitGroup
}

// keyQueue is a Cluster key's script calls in flight and the checks of the
// key queued behind them, which go together in the next call.
type keyQueue struct {
	inflight int
	pending  []*call
}

// call is one queued check: one part (Apply) or several (ApplyAll),
// decided all-or-nothing in one script call.
type call struct {
	ctx   context.Context // the caller's: a call it gave up on is not sent
	parts []store.Request
	// batch is the store key a Cluster may send this call with others of
	// (a hot subject's checks, coalesced); "" for a call of several parts,
	// which goes alone.
	batch string
	keys  []string        // one per rule of every part, in order
	out   []limit.Verdict // one per part
	// at is the instant the script decided at (seconds, nanoseconds), and
	// marks, when not nil, receive per rule where a consumption landed
	// (relative to at): what refund.lua needs.
	at    [2]int64
	marks []int64
	// demand, for a lease's take (one part, one rule, cost -n), is the
	// key of its limit's standing reports and rep the take's; the script
	// returns their sum, in thousandths of a unit per second, in the
	// decision's reset slot.
	demand string
	rep    store.Report
	err    error
	done   chan struct{}

	one  [1]store.Request // parts of a single check, without an allocation
	oneV [1]limit.Verdict
}

// New connects to Redis as opts describe.
func New(opts Options) (*Store, error) {
	if len(opts.Addrs) == 0 {
		return nil, errors.New("redisstore: no addresses")
	}
	co := rueidis.ClientOption{
		InitAddress:  opts.Addrs,
		Username:     opts.Username,
		Password:     opts.Password,
		DisableCache: true,
		TLSConfig:    opts.TLS,
	}
	switch opts.Mode {
	case "", Standalone:
		co.ForceSingleClient = true
	case Sentinel:
		if opts.MasterName == "" {
			return nil, errors.New("redisstore: sentinel mode needs a master name")
		}
		co.Sentinel = rueidis.SentinelOption{MasterSet: opts.MasterName, Username: opts.Username, Password: opts.Password,
			TLSConfig: opts.TLS, TopologyRefreshInterval: topologyRefresh(opts)}
	case Cluster:
	default:
		return nil, fmt.Errorf("redisstore: unknown mode %q (want standalone, sentinel or cluster)", opts.Mode)
	}
	resilient(&co, opts)
	c, err := rueidis.NewClient(co)
	if err != nil {
		if refused(err) {
			// Redis answered and said no: waiting will not change that.
			return nil, fmt.Errorf("redisstore: connect to %s %v: %w", modeName(opts.Mode), opts.Addrs, err)
		}
		return nil, fmt.Errorf("redisstore: connect to %s %v: %w: %w", modeName(opts.Mode), opts.Addrs, store.ErrUnavailable, err)
	}
	return NewFromClient(c, opts), nil
}

// refused reports whether a connection error is Redis refusing the
// credentials or the permissions, or a TLS certificate that does not verify
// (a wrong authority, an expired certificate, another name): a deployment
// error, not Redis being away.
func refused(err error) bool {
	var ve *tls.CertificateVerificationError
	if errors.As(err, &ve) {
		return true
	}
	var re *rueidis.RedisError
	if errors.As(err, &re) {
		msg := re.Error()
		for _, p := range []string{"WRONGPASS", "NOAUTH", "NOPERM", "ERR AUTH"} {
			if strings.HasPrefix(msg, p) {
				return true
			}
		}
	}
	return false
}

func modeName(m Mode) string {
	if m == "" {
		return string(Standalone)
	}
	return string(m)
}

// NewFromClient wraps an existing rueidis client; the Store owns it and closes
// it on Close. opts.Addrs, Username, Password and MasterName are ignored.
func NewFromClient(c rueidis.Client, opts Options) *Store {
	s := &Store{
		client:   c,
		prefix:   opts.Prefix,
		clock:    opts.Clock,
		cluster:  opts.Mode == Cluster,
		maxBatch: opts.MaxBatch,
		maxIn:    opts.MaxInFlight,
		observe:  opts.Observe,
		timeout:  opts.Timeout,
		sha:      scriptSHA,
		keys:     map[string]keyQueue{},
	}
	if s.prefix == "" {
		s.prefix = "rl:"
	}
	if s.maxBatch <= 0 {
		s.maxBatch = 128
	}
	if s.maxIn <= 0 {
		s.maxIn = 2
	}
	if s.timeout <= 0 {
		s.timeout = time.Second
	}
	return s
}

// Key returns the Redis key holding rule's state for a store key: the store
// key is the cluster hash tag, so all rules of a subject share a slot.
func (s *Store) Key(storeKey, rule string) string {
	return s.prefix + "{" + storeKey + "}:" + rule
}

// Apply implements store.Store.
func (s *Store) Apply(ctx context.Context, req store.Request) (limit.Verdict, error) {
	if s.closed.Load() {
		return limit.Verdict{}, store.ErrClosed
	}
	if err := req.Validate(); err != nil {
		return limit.Verdict{}, err
	}
	if err := ctx.Err(); err != nil {
		return limit.Verdict{}, fmt.Errorf("redisstore: %w: %w", store.ErrUnavailable, err)
	}
	c := &call{ctx: ctx, batch: req.Key, done: make(chan struct{})}
	c.one[0] = req
	c.parts, c.out = c.one[:], c.oneV[:]
	c.keys = make([]string, len(req.Rules))
	for i, r := range req.Rules {
		c.keys[i] = s.Key(req.Key, r.Name)
	}
	if err := s.await(ctx, c); err != nil {
		return limit.Verdict{}, err
	}
	return c.out[0], nil
}

// await queues c and waits for its answer.
func (s *Store) await(ctx context.Context, c *call) error {
	s.enqueue(c)
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		// A call still queued is dropped (send skips it); one already sent
		// may still reach Redis and consume: the caller gave up on the
		// answer, not on the request.
		return fmt.Errorf("redisstore: %w: %w", store.ErrUnavailable, ctx.Err())
	}
}

// newCall returns the call of parts, which a script call decides
// all-or-nothing: on a Cluster, parts of one hash slot.
func (s *Store) newCall(ctx context.Context, parts []store.Request, out []limit.Verdict) *call {
	c := &call{ctx: ctx, parts: parts, out: out, done: make(chan struct{})}
	if len(parts) == 1 {
		c.batch = parts[0].Key
	}
	for _, p := range parts {
		for _, r := range p.Rules {
			c.keys = append(c.keys, s.Key(p.Key, r.Name))
		}
	}
	return c
}

// enqueue queues c. If fewer than MaxInFlight batches are in flight, the
// caller becomes a flusher: it sends everything queued (its own check
// included) from its own goroutine, so a lone check costs no goroutine hop.
// Checks that queue up meanwhile are sent by a background flusher, which keeps
// sending until the queue is empty: batches form by themselves under load.
func (s *Store) enqueue(c *call) {
	s.mu.Lock()
	if s.closed.Load() {
		s.mu.Unlock()
		c.err = store.ErrClosed
		close(c.done)
		return
	}
	if s.cluster && c.batch != "" {
		s.enqueueKey(c) // unlocks s.mu
		return
	}
	s.pending = append(s.pending, c)
	if s.inflight >= s.maxIn {
		s.mu.Unlock()
		return
	}
	s.inflight++
	s.wg.Add(1)
	batch := s.pending
	s.pending = nil
	s.mu.Unlock()
	if c.ctx.Done() != nil {
		// The caller has a deadline: it must be free to leave at it, so it
		// cannot be the one waiting on Redis (resilience.go).
		go s.flushFrom(batch)
		return
	}
	s.send(batch)
	if !s.handOff() {
		return
	}
	go s.flushLoop()
}

// enqueueKey queues c, a check of one Cluster key; the caller holds s.mu,
// which enqueueKey releases. On a Cluster a script call holds the checks of
// one key, so batches form per key: while MaxInFlight calls of the key are
// out, its checks wait for the next one, and a key on a slow or dead node
// holds up no other key.
func (s *Store) enqueueKey(c *call) {
	q := s.keys[c.batch]
	if q.inflight >= s.maxIn {
		q.pending = append(q.pending, c)
		s.keys[c.batch] = q
		s.mu.Unlock()
		return
	}
	q.inflight++
	s.keys[c.batch] = q
	s.wg.Add(1)
	s.mu.Unlock()
	go s.flushKey(c.batch, c)
}

// flushKey sends first, a check of key, then what queued for the key
// meanwhile, until nothing is queued.
func (s *Store) flushKey(key string, first *call) {
	defer s.wg.Done()
	one := [1]*call{first}
	calls := one[:]
	for {
		if calls = dropAbandoned(calls); len(calls) > 0 {
			groups := chunk(calls, s.maxBatch)
			cmds, nowS, nowNs := s.commands(groups)
			s.sendTogether(groups, cmds, nowS, nowNs)
		}
		s.mu.Lock()
		q := s.keys[key]
		if len(q.pending) == 0 {
			if q.inflight--; q.inflight == 0 {
				delete(s.keys, key)
			} else {
				s.keys[key] = q
			}
			s.mu.Unlock()
			return
		}
		calls, q.pending = q.pending, nil
		s.keys[key] = q
		s.mu.Unlock()
	}
}

// flushFrom sends batch, then goes on flushing while checks are queued.
func (s *Store) flushFrom(batch []*call) {
	s.send(batch)
	if s.handOff() {
		s.flushLoop()
	}
}

// handOff ends a flush when nothing is queued and reports whether a flusher
// must go on.
func (s *Store) handOff() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.pending) == 0 {
		s.inflight--
		s.wg.Done()
		return false
	}
	return true
}

func (s *Store) flushLoop() {
	for {
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		s.mu.Unlock()
		s.send(batch)
		if !s.handOff() {
			return
		}
	}
}

// send executes a set of queued calls as few script calls as the deployment
// allows, pipelined together, and completes every call.
func (s *Store) send(calls []*call) {
	calls = dropAbandoned(calls)
	if len(calls) == 0 {
		return
	}
	groups := s.group(calls)
	cmds, nowS, nowNs := s.commands(groups)
	if s.cluster {
		// Always apart, even for one group: a flush of one key on a dead
		// node must not hold a flusher slot, and with it every other
		// node's checks, for the whole timeout (resilience.go).
		s.sendApart(groups, cmds, nowS, nowNs)
		return
	}
	s.sendTogether(groups, cmds, nowS, nowNs)
}

// commands builds the script call of each group; nowS and nowNs are the
// client clock's instant (Options.Clock), empty for Redis's own.
func (s *Store) commands(groups [][]*call) (cmds rueidis.Commands, nowS, nowNs string) {
	cmds = make(rueidis.Commands, len(groups))
	if s.clock != nil {
		now := s.clock.Now().UnixNano()
		nowS, nowNs = strconv.FormatInt(now/1e9, 10), strconv.FormatInt(now%1e9, 10)
	}
	for i, g := range groups {
		cmds[i] = s.command(s.sha, g, nowS, nowNs)
	}
	return cmds, nowS, nowNs
}

// sendTogether sends the groups' script calls pipelined and completes them.
func (s *Store) sendTogether(groups [][]*call, cmds rueidis.Commands, nowS, nowNs string) {
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	start := time.Now()
	results := s.client.DoMulti(ctx, cmds...)
	for i, g := range groups {
		res := results[i]
		if err, ok := rueidis.IsRedisErr(res.Error()); ok && err.IsNoScript() {
			res = s.client.Do(ctx, s.command("", g, nowS, nowNs))
		}
		s.observed(start, len(g))
		s.complete(g, res)
	}
}

// observed reports a script call of checks sent at start (Options.Observe).
func (s *Store) observed(start time.Time, checks int) {
	if s.observe != nil {
		s.observe(time.Since(start), checks)
	}
}

// group splits calls into script calls of at most maxBatch checks; on a
// Cluster, each script call holds checks of a single key.
func (s *Store) group(calls []*call) [][]*call {
	if !s.cluster {
		return chunk(calls, s.maxBatch)
	}
	var groups [][]*call
	byKey := make(map[string]int, len(calls))
	for _, c := range calls {
		if c.batch == "" {
			groups = append(groups, []*call{c})
			continue
		}
		i, ok := byKey[c.batch]
		if !ok || len(groups[i]) >= s.maxBatch {
			i = len(groups)
			byKey[c.batch] = i
			groups = append(groups, nil)
		}
		groups[i] = append(groups[i], c)
	}
	return groups
}

// chunk splits calls into groups of at most n.
func chunk(calls []*call, n int) [][]*call {
	groups := make([][]*call, 0, (len(calls)+n-1)/n)
	for len(calls) > 0 {
		k := min(len(calls), n)
		groups = append(groups, calls[:k])
		calls = calls[k:]
	}
	return groups
}

// command builds EVALSHA (or EVAL when sha is "") of the script for a group.
func (s *Store) command(sha string, g []*call, nowS, nowNs string) rueidis.Completed {
	// Each distinct rule is sent once; checks refer to it by its 1-based
	// index. A batch's checks mostly share one policy's rules, so this
	// divides the arguments Redis parses and the script converts.
	index := make(map[*limit.Rule]int, 4)
	var table []*limit.Rule
	nkeys, nrefs := 0, 0
	// repeats tells the script whether a key may occur in several checks:
	// "1" makes it cache keys across checks, "0" read and write each once.
	repeats := "0"
	var seen map[string]struct{}
	if len(g) > 1 {
		seen = make(map[string]struct{}, len(g))
	}
	for _, c := range g {
		for _, p := range c.parts {
			if seen != nil && repeats == "0" {
				if _, dup := seen[p.Key]; dup {
					repeats = "1"
				}
				seen[p.Key] = struct{}{}
			}
			nrefs += 2 * len(p.Rules)
			for j := range p.Rules {
				if r := &p.Rules[j]; index[r] == 0 {
					table = append(table, r)
					index[r] = len(table)
				}
			}
		}
		nkeys += len(c.keys)
		nrefs++
		if c.demand != "" {
			nkeys++
			nrefs += 3
		}
	}
	keys := make([]string, 0, nkeys)
	args := make([]string, 0, 5+argsPerRule*len(table)+nrefs)
	args = append(args, nowS, nowNs, strconv.Itoa(len(g)), repeats, strconv.Itoa(len(table)))
	for _, r := range table {
		a := s.args(r)
		args = append(args, a[:]...)
	}
	for _, c := range g {
		keys = append(keys, c.keys...)
		args = append(args, strconv.Itoa(len(c.keys)))
		for _, p := range c.parts {
			cost := strconv.FormatInt(p.Cost, 10)
			for j := range p.Rules {
				args = append(args, strconv.Itoa(index[&p.Rules[j]]), cost)
			}
		}
		if c.demand != "" {
			keys = append(keys, c.demand)
			args = append(args, c.rep.Holder, strconv.FormatFloat(c.rep.Demand, 'g', -1, 64), strconv.FormatInt(int64(c.rep.For), 10))
		}
	}
	b := s.client.B()
	if sha == "" {
		return b.Eval().Script(applySource).Numkeys(int64(nkeys)).Key(keys...).Arg(args...).Build()
	}
	return b.Evalsha().Sha1(sha).Numkeys(int64(nkeys)).Key(keys...).Arg(args...).Build()
}

// args returns the script arguments of a rule: algorithm, limit, period,
// burst, interval, shadow. Rules come from long-lived policy snapshots, so they are
// formatted once per rule and cached by address; the cache is dropped when it
// grows past a bound (many reloads).
func (s *Store) args(r *limit.Rule) *[argsPerRule]string {
	if a, ok := s.ruleArgs.Load(r); ok {
		return a.(*[argsPerRule]string)
	}
	shadow := "0"
	if r.Shadow {
		shadow = "1"
	}
	a := &[argsPerRule]string{
		strconv.Itoa(int(r.Algorithm)),
		strconv.FormatInt(r.Limit, 10),
		strconv.FormatInt(int64(r.Period), 10),
		strconv.FormatInt(r.Burst, 10),
		strconv.FormatInt(int64(r.Interval()), 10),
		shadow,
	}
	if s.cachedArgs.Add(1) > 10_000 {
		s.ruleArgs.Clear()
		s.cachedArgs.Store(0)
	}
	s.ruleArgs.Store(r, a)
	return a
}

// complete decodes a script reply into the verdicts of its calls.
func (s *Store) complete(g []*call, res rueidis.RedisResult) {
	vals, err := res.AsIntSlice()
	if err == nil {
		want := 2
		for _, c := range g {
			want += valuesPerRule * len(c.keys)
		}
		if len(vals) != want {
			err = fmt.Errorf("script returned %d values, want %d", len(vals), want)
		}
	}
	var at [2]int64
	if err == nil {
		at, vals = [2]int64{vals[0], vals[1]}, vals[2:]
	}
	for _, c := range g {
		if err != nil {
			c.err = fmt.Errorf("redisstore: check %q: %w: %w", c.parts[0].Key, store.ErrUnavailable, err)
			close(c.done)
			continue
		}
		c.at = at
		k := 0
		for i, p := range c.parts {
			var ds [limit.MaxRules]limit.Decision
			for j, r := range p.Rules {
				v := vals[:valuesPerRule]
				vals = vals[valuesPerRule:]
				if r.Algorithm == limit.FixedWindow {
					fixedWindowDurations(v, at[1])
				}
				ds[j] = limit.Decision{
					Allowed:    v[0] == 1,
					Limit:      r.Limit,
					Remaining:  v[1],
					ResetAfter: time.Duration(v[2]),
					RetryAfter: time.Duration(v[3]),
					Delay:      time.Duration(v[4]),
					Shadow:     r.Shadow,
				}
				if c.marks != nil {
					c.marks[k] = v[5]
				}
				k++
			}
			c.out[i] = limit.Combine(ds[:len(p.Rules)])
			c.out[i].At = at[0]*1e9 + at[1]
		}
		close(c.done)
	}
}

// fixedWindowDurations turns a fixed window's reset and retry, which
// apply.lua returns in whole milliseconds from the current millisecond
// (exact for any period), into nanoseconds from now: a window of a year is
// more nanoseconds than a double holds exactly. nowNs is the script's
// instant within its second.
func fixedWindowDurations(v []int64, nowNs int64) {
	sub := nowNs % 1_000_000 // how far now is past its millisecond
	for _, i := range []int{2, 3} {
		if v[i] > 0 {
			v[i] = v[i]*1_000_000 - sub
		}
	}
}

// valuesPerRule is what apply.lua returns per rule: allowed, remaining,
// reset, retry, delay, mark.
const valuesPerRule = 6

// argsPerRule is the number of script arguments of a rule (args).
const argsPerRule = 6

// Close waits for in-flight calls and closes the client. Apply after Close
// returns store.ErrClosed.
func (s *Store) Close() error {
	s.mu.Lock()
	already := s.closed.Swap(true)
	s.mu.Unlock()
	if already {
		return nil
	}
	s.wg.Wait()
	s.client.Close()
	return nil
}

// Client returns the underlying client (for health checks and tests).
func (s *Store) Client() rueidis.Client { return s.client }

// String describes the store for logs.
func (s *Store) String() string {
	mode := "standalone"
	if s.cluster {
		mode = "cluster"
	}
	return "redis(" + mode + ", prefix=" + strings.TrimSuffix(s.prefix, ":") + ")"
}

var _ store.Store = (*Store)(nil)
