package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// membersScript renews (or removes) one instance's membership and counts
// the live members. The set is ONE sorted set, so it lives in one slot and
// works on a Cluster: member = instance id, score = the instant (Redis
// server time, ms) its membership expires. Expired members are dropped on
// every call, and the key itself expires when every instance is gone.
//
// KEYS[1]: the set. ARGV[1]: instance id; ARGV[2]: TTL in ms; ARGV[3]: "1"
// to leave. Returns the number of live members.
//
// It is sent with EVAL, not EVALSHA: it runs once a second per instance,
// and keeping it out of cmdstat_evalsha keeps that counter a pure count of
// rate limit script calls.
const membersScript = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[3] == '1' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[1])
end
local n = redis.call('ZCARD', KEYS[1])
if n > 0 then redis.call('PEXPIRE', KEYS[1], 2 * ttl) end
return n
`

// MembersOptions configure Members.
type MembersOptions struct {
	// ID names this instance; default: host name, PID and a random suffix.
	ID string
	// Interval is how often the instance renews its membership and reads
	// the count. Default 1s.
	Interval time.Duration
	// TTL is how long a membership lasts without renewal: an instance that
	// stops (or loses Redis) for longer is no longer counted. Default
	// 3 * Interval.
	TTL time.Duration
	// Fallback is the count Count reports until the first renewal
	// succeeds (Redis down since start). Default 1.
	Fallback int
	// OnError, when set, is called with each failed renewal.
	OnError func(error)
}

// Members announces this instance in Redis with a heartbeat and counts the
// live instances sharing the store. The count sizes each instance's share
// of the limits when Redis fails (service.Guard.Instances): it is the last
// count read, kept while Redis is unreachable, which is exactly when the
// share is needed. It is safe for concurrent use.
type Members struct {
	s        *Store
	key      string
	id       string
	interval time.Duration
	ttl      time.Duration
	onError  func(error)
	count    atomic.Int64 // what Count reports

	// A drop of the count is believed once every count read for 2*TTL
	// was lower (see observe): since when, and the highest of them.
	lowSince time.Time
	lowMax   int64
	stop     chan struct{}
	done     chan struct{}
	once     sync.Once
}

// MembersKey returns the key of the members set: one key, its own hash tag.
// Store keys always have a ':' inside their braces, so it cannot collide.
func (s *Store) MembersKey() string { return s.prefix + "{instances}" }

// StartMembers announces this instance at once (bounded by the store's
// Timeout; a failure is not fatal) and then every Interval from a
// goroutine, until Close.
func (s *Store) StartMembers(opts MembersOptions) *Members {
	if opts.Interval <= 0 {
		opts.Interval = time.Second
	}
	if opts.TTL <= 0 {
		opts.TTL = 3 * opts.Interval
	}
	if opts.Fallback < 1 {
		opts.Fallback = 1
	}
	if opts.ID == "" {
		opts.ID = instanceID()
	}
	m := &Members{
		s: s, key: s.MembersKey(), id: opts.ID, interval: opts.Interval, ttl: opts.TTL,
		onError: opts.OnError, stop: make(chan struct{}), done: make(chan struct{}),
	}
	m.count.Store(int64(opts.Fallback))
	m.renew(false)
	go m.loop()
	return m
}

func instanceID() string {
	host, _ := os.Hostname()
	var b [4]byte
	rand.Read(b[:])
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + hex.EncodeToString(b[:])
}

// ID returns this instance's id.
func (m *Members) ID() string { return m.id }

// Count returns the number of live instances last read, this one included;
// at least 1.
func (m *Members) Count() int { return int(max(1, m.count.Load())) }

func (m *Members) loop() {
	defer close(m.done)
	t := time.NewTicker(m.interval)
	defer t.Stop()
	for {
		select {
		case <-m.stop:
			return
		case <-t.C:
			m.renew(false)
		}
	}
}

// renew runs the script once; leave removes the membership instead.
func (m *Members) renew(leave bool) error {
	ctx, cancel := context.WithTimeout(context.Background(), m.s.timeout)
	defer cancel()
	l := "0"
	if leave {
		l = "1"
	}
	c := m.s.client
	n, err := c.Do(ctx, c.B().Eval().Script(membersScript).Numkeys(1).Key(m.key).
		Arg(m.id, strconv.FormatInt(m.ttl.Milliseconds(), 10), l).Build()).AsInt64()
	if err != nil {
		err = fmt.Errorf("redisstore: members: %w", err)
		// A drop must be seen in readings spread over 2*TTL of working
		// renewals; an outage in between restarts the window, or the first
		// reading after a long outage (before the others renewed) would be
		// believed at once.
		m.lowSince = time.Time{}
		if m.onError != nil {
			m.onError(err)
		}
		return err
	}
	if !leave && n >= 1 {
		m.observe(n, time.Now())
	}
	return nil
}

// observe takes a count read at now. A rise is reported at once; a drop
// only once every count read for 2*TTL was lower, and then as the highest
// of them. Right after a failover the promoted replica holds memberships
// that had expired meanwhile, so the first renewals read 1, then 2, ...
// until every instance has renewed: a count too low means a local share
// too large, the unsafe direction, while a count briefly too high only
// makes the shares smaller. Calls are serialized (the heartbeat goroutine,
// or StartMembers before it starts).
func (m *Members) observe(n int64, now time.Time) {
	switch {
	case n >= m.count.Load():
		m.count.Store(n)
		m.lowSince = time.Time{}
	case m.lowSince.IsZero():
		m.lowSince, m.lowMax = now, n
	default:
		m.lowMax = max(m.lowMax, n)
		if now.Sub(m.lowSince) >= 2*m.ttl {
			m.count.Store(m.lowMax)
			m.lowSince = time.Time{}
		}
	}
}

// Close stops the heartbeat and removes this instance from the set, so the
// others' shares grow at their next renewal. Call it before closing the
// Store.
func (m *Members) Close() error {
	var err error
	m.once.Do(func() {
		close(m.stop)
		<-m.done
		err = m.renew(true)
		if errors.Is(err, context.DeadlineExceeded) {
			err = nil // Redis unreachable: the membership expires by itself
		}
	})
	return err
}
