package redisstore

import (
	"context"
	"errors"
	"fmt"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"
)

// DefaultOverridesResync is how often a Overrides's Watch compares revisions.
const DefaultOverridesResync = 5 * time.Second

// OverridesOptions configure a Overrides. The zero value is usable.
type OverridesOptions struct {
	// Prefix starts every key and the channel. Default "rl:".
	Prefix string
	// Channel is the pub/sub channel of change notices. Default
	// Prefix+"overrides".
	Channel string
	// Resync is how often Watch compares each namespace's revision with
	// the one last loaded, to heal a missed notice. Default DefaultOverridesResync.
	Resync time.Duration
	// Timeout bounds each Redis call. Default 2s.
	Timeout time.Duration
	// Logger receives subscription and resync errors. Default: discard.
	Logger *slog.Logger
}

// Overrides keeps overrides in Redis, shared by every instance:
//
//	<prefix>overrides:{<namespace>}      hash: subject -> stored override (JSON)
//	<prefix>overrides:{<namespace>}:rev  string: the namespace's revision, "<n>@<redis time>"
//	<prefix>overrides                    pub/sub channel: the namespace of each change
//
// The two keys of a namespace share a hash tag, so each script below touches
// one slot and runs on Redis Cluster; a namespace's overrides live on one
// shard. Every change is one script that writes the hash, sets a new
// revision and publishes the namespace (PUBLISH reaches every node of a
// cluster). The revision holds Redis' clock as well as a counter, so a
// Redis that lost its data and counts again from 1 still gives revisions
// an instance has not seen.
//
// It is safe for concurrent use. It does not own the client.
type Overrides struct {
	client  rueidis.Client
	prefix  string
	channel string
	resync  time.Duration
	timeout time.Duration
	log     *slog.Logger

	mu   sync.Mutex
	revs map[string]string // namespace -> revision of the last Load
}

// NewRedis returns a Overrides on client (the one the Redis limiter store
// uses: redisstore.Store.Client).
func NewOverrides(client rueidis.Client, opts OverridesOptions) (*Overrides, error) {
	if client == nil {
		return nil, errors.New("redisstore: overrides: nil Redis client")
	}
	s := &Overrides{client: client, prefix: opts.Prefix, channel: opts.Channel, resync: opts.Resync,
		timeout: opts.Timeout, log: opts.Logger, revs: map[string]string{}}
	if s.prefix == "" {
		s.prefix = "rl:"
	}
	if s.channel == "" {
		s.channel = s.prefix + "overrides"
	}
	if s.resync <= 0 {
		s.resync = DefaultOverridesResync
	}
	if s.timeout <= 0 {
		s.timeout = 2 * time.Second
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	return s, nil
}

// keys returns the hash and revision keys of namespace ns.
func (s *Overrides) keys(ns string) []string {
	h := s.prefix + "overrides:{" + ns + "}"
	return []string{h, h + ":rev"}
}

// bump is the Lua that sets a new revision and announces the change;
// ARGV[1] is the channel and ARGV[2] the namespace.
const bump = `
local function bump()
  local t = redis.call('TIME')
  local prev = redis.call('GET', KEYS[2])
  local n = 1
  if prev then n = (tonumber(string.match(prev, '^(%d+)@')) or 0) + 1 end
  redis.call('SET', KEYS[2], n .. '@' .. t[1] .. '.' .. t[2])
  redis.call('PUBLISH', ARGV[1], ARGV[2])
end
`

// KEYS: hash, rev. Returns {revision or "", HGETALL}.
var loadScript = rueidis.NewLuaScript(`
return {redis.call('GET', KEYS[2]) or '', redis.call('HGETALL', KEYS[1])}
`)

// ARGV: channel, ns, subject, value, max. Returns 1, or -1 when the
// namespace is full.
var putScript = rueidis.NewLuaScript(bump + `
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 0 and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return -1
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
bump()
return 1
`)

// ARGV: channel, ns, subject. Returns the number of fields removed.
var deleteScript = rueidis.NewLuaScript(bump + `
local n = redis.call('HDEL', KEYS[1], ARGV[3])
if n > 0 then bump() end
return n
`)

// ARGV: channel, ns, now (Unix ms), subjects... Removes those whose
// expires_at_ms is set and not after now. Returns how many.
var expireScript = rueidis.NewLuaScript(bump + `
local now = tonumber(ARGV[3])
local n = 0
for i = 4, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local ok, o = pcall(cjson.decode, v)
    if ok and type(o) == 'table' and type(o.expires_at_ms) == 'number' and o.expires_at_ms > 0 and o.expires_at_ms <= now then
      redis.call('HDEL', KEYS[1], ARGV[i])
      n = n + 1
    end
  end
end
if n > 0 then bump() end
return n
`)

func (s *Overrides) unavailable(op string, err error) error {
	return fmt.Errorf("redisstore: overrides: redis %s: %w: %w", op, overrides.ErrUnavailable, err)
}

// Load implements Store and records the namespace's revision for Watch.
func (s *Overrides) Load(ctx context.Context, ns string) ([]policy.Override, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	vals, err := loadScript.Exec(ctx, s.client, s.keys(ns), nil).ToArray()
	if err != nil {
		return nil, s.unavailable("load "+ns, err)
	}
	if len(vals) != 2 {
		return nil, s.unavailable("load "+ns, fmt.Errorf("script returned %d values, want 2", len(vals)))
	}
	rev, err := vals[0].ToString()
	if err != nil {
		return nil, s.unavailable("load "+ns, err)
	}
	fields, err := vals[1].AsStrMap()
	if err != nil {
		return nil, s.unavailable("load "+ns, err)
	}
	out := make([]policy.Override, 0, len(fields))
	var errs []error
	for subj, v := range fields {
		o, err := overrides.Unmarshal(ns, subj, []byte(v))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, o)
	}
	overrides.SortBySubject(out)
	s.mu.Lock()
	s.revs[ns] = rev
	s.mu.Unlock()
	return out, errors.Join(errs...)
}

// Put implements Store.
func (s *Overrides) Put(ctx context.Context, o policy.Override, max int) error {
	if err := overrides.CheckKey(o.Namespace, o.Subject); err != nil {
		return err
	}
	data, err := overrides.Marshal(o)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := putScript.Exec(ctx, s.client, s.keys(o.Namespace),
		[]string{s.channel, o.Namespace, o.Subject, string(data), strconv.Itoa(max)}).AsInt64()
	if err != nil {
		return s.unavailable("put", err)
	}
	if n < 0 {
		return fmt.Errorf("redisstore: overrides: %w: namespace %s holds %d (the maximum)", overrides.ErrTooMany, o.Namespace, max)
	}
	return nil
}

// Delete implements Store.
func (s *Overrides) Delete(ctx context.Context, ns, subject string) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	n, err := deleteScript.Exec(ctx, s.client, s.keys(ns), []string{s.channel, ns, subject}).AsInt64()
	if err != nil {
		return false, s.unavailable("delete", err)
	}
	return n > 0, nil
}

// DeleteExpired implements Store. It compares the expiry Redis holds, so
// an override put again with a later expiry stays.
func (s *Overrides) DeleteExpired(ctx context.Context, ns string, subjects []string, now time.Time) error {
	if len(subjects) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	args := append([]string{s.channel, ns, strconv.FormatInt(now.UnixMilli(), 10)}, subjects...)
	if err := expireScript.Exec(ctx, s.client, s.keys(ns), args).Error(); err != nil {
		return s.unavailable("expire", err)
	}
	return nil
}

// maxNamespaceLen bounds the names Watch passes on from the channel, which
// anyone with access to Redis can publish on.
const maxNamespaceLen = 64

// Watch implements Store. It subscribes to the channel and calls changed
// for every namespace announced there; it resubscribes after a lost
// connection, with backoff. Every Resync, and after every (re)subscription,
// it reads the revision of each namespace and calls changed for those whose
// revision differs from the one Load last saw: a notice lost while the
// subscription was down, or dropped, is healed within Resync.
func (s *Overrides) Watch(ctx context.Context, namespaces func() []string, changed func(ns string)) {
	resyncNow := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.subscribe(ctx, changed, resyncNow)
	}()
	t := time.NewTicker(s.resync)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case <-t.C:
		case <-resyncNow:
		}
		err := s.compareRevisions(ctx, namespaces(), changed)
		switch {
		case err != nil && !failing && ctx.Err() == nil:
			s.log.Warn("redisstore: overrides: resync failed; will retry", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("redisstore: overrides: resync works again")
			failing = false
		}
	}
}

func (s *Overrides) subscribe(ctx context.Context, changed func(string), resyncNow chan<- struct{}) {
	backoff := 100 * time.Millisecond
	hook := func(sub rueidis.PubSubSubscription) {
		if sub.Kind != "subscribe" {
			return
		}
		select { // must not block: it runs on the client's pipeline
		case resyncNow <- struct{}{}:
		default:
		}
	}
	for {
		subscribed := time.Now()
		err := s.client.Receive(rueidis.WithOnSubscriptionHook(ctx, hook), s.client.B().Subscribe().Channel(s.channel).Build(),
			func(m rueidis.PubSubMessage) {
				if m.Message != "" && len(m.Message) <= maxNamespaceLen {
					changed(m.Message)
				}
			})
		if ctx.Err() != nil {
			return
		}
		if time.Since(subscribed) > 10*time.Second {
			backoff = 100 * time.Millisecond
		}
		s.log.Warn("redisstore: overrides: subscription lost; resubscribing", "channel", s.channel, "err", err, "backoff", backoff.String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// compareRevisions calls changed for each namespace whose revision in Redis
// is not the one Load last saw.
func (s *Overrides) compareRevisions(ctx context.Context, nss []string, changed func(string)) error {
	if len(nss) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	cmds := make(rueidis.Commands, len(nss))
	for i, ns := range nss {
		cmds[i] = s.client.B().Get().Key(s.keys(ns)[1]).Build()
	}
	var errs []error
	for i, res := range s.client.DoMulti(ctx, cmds...) {
		rev, err := res.ToString()
		if rueidis.IsRedisNil(err) {
			rev, err = "", nil
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		s.mu.Lock()
		last, ok := s.revs[nss[i]]
		s.mu.Unlock()
		if !ok || last != rev {
			changed(nss[i])
		}
	}
	if len(errs) > 0 {
		return s.unavailable("resync", errors.Join(errs...))
	}
	return nil
}

var _ overrides.Store = (*Overrides)(nil)
