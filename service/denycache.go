package service

import (
	"hash/maphash"
	"sync"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store"
)

// DefaultDenyCacheSize bounds the deny cache when Guard.DenyCacheSize is 0.
// An entry is about 500 bytes, so the default holds the cache under 20 MB.
const DefaultDenyCacheSize = 32768

// denyCache remembers subjects the store denied, until the instant their
// denial ends, so that a hot subject hammering a denied limit costs the
// store nothing until then.
//
// Exactness. A denied verdict's RetryAfter is the time until the same
// request would pass if nothing else consumes (limit.Verdict), and
// consumption by anyone only pushes that instant later: a denied request
// consumes nothing, and every algorithm's capacity only grows while nothing
// is consumed. So until start + RetryAfter, where start is when this
// instance sent the denied request (no later than the store's instant), the
// store would deny the same request again, whichever instance asked. The
// cache answers only that: a request of the same key and cost (a peek
// counts as cost 1, as in package limit), resolved to the very same limit
// set of the very same policy snapshot. A new snapshot (a reload, an
// override) clears the cache. RetryNever denials are not cached: they cost
// nothing to recompute and must carry their reason. One exception to
// exactness: across a Redis failover that lost the latest writes (async
// replication), or to a promoted replica whose clock runs ahead, the store
// may admit a little before the cached instant; the cache then denies for
// at most that replication lag or clock skew longer. Time is kept as
// monotonic spans (Service.epoch), so a stepped wall clock changes nothing.
//
// Memory is bounded: at most size entries in total, over 64 shards; a full
// shard first drops its expired entries, then the entry whose denial ends
// first among a few sampled.
type denyCache struct {
	seed     maphash.Seed
	perShard int
	shards   [denyShards]denyShard
}

const denyShards = 64

type denyShard struct {
	mu sync.Mutex
	m  map[string]*denyEntry
	_  [48]byte // keep neighbouring locks on different cache lines
}

type denyEntry struct {
	snap  *policy.Snapshot
	rules *limit.Rule // the limit set, by its first rule
	cost  int64       // max(cost, 1) of the denied request
	at    int64       // the instant the verdict's durations count from
	until int64       // at + RetryAfter
	v     limit.Verdict
}

func newDenyCache(size int) *denyCache {
	c := &denyCache{seed: maphash.MakeSeed(), perShard: max(1, size/denyShards)}
	for i := range c.shards {
		c.shards[i].m = make(map[string]*denyEntry)
	}
	return c
}

func (c *denyCache) shard(key string) *denyShard {
	return &c.shards[maphash.String(c.seed, key)%denyShards]
}

// lookup returns the cached denial of req at instant now, its durations
// counted from now. A leased limit is never cached: its denials cost no
// store call already, and its holder must see every check to measure its
// demand (lease.Holder).
func (c *denyCache) lookup(snap *policy.Snapshot, req store.Request, now int64) (limit.Verdict, bool) {
	if req.Lease {
		return limit.Verdict{}, false
	}
	sh := c.shard(req.Key)
	sh.mu.Lock()
	e, ok := sh.m[req.Key]
	if !ok {
		sh.mu.Unlock()
		return limit.Verdict{}, false
	}
	if now >= e.until || e.snap != snap || e.rules != &req.Rules[0] || e.cost != max(req.Cost, 1) {
		if now >= e.until || e.snap != snap {
			delete(sh.m, req.Key)
		}
		sh.mu.Unlock()
		return limit.Verdict{}, false
	}
	v := e.v
	at := e.at
	sh.mu.Unlock()

	elapsed := now - at
	v.RetryAfter -= time.Duration(elapsed)
	for i := range v.N {
		d := &v.D[i]
		d.ResetAfter = max(0, d.ResetAfter-time.Duration(elapsed))
		if !d.Allowed && d.RetryAfter != limit.RetryNever {
			d.RetryAfter = max(1, d.RetryAfter-time.Duration(elapsed))
		}
	}
	return v, true
}

// insert remembers the denial v of req, sent at instant at.
func (c *denyCache) insert(snap *policy.Snapshot, req store.Request, v *limit.Verdict, at int64) {
	if v.Allowed || v.RetryAfter <= 0 || v.RetryAfter == limit.RetryNever || len(req.Rules) == 0 || req.Lease {
		return
	}
	e := &denyEntry{snap: snap, rules: &req.Rules[0], cost: max(req.Cost, 1), at: at, until: at + int64(v.RetryAfter), v: *v}
	sh := c.shard(req.Key)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if _, ok := sh.m[req.Key]; !ok && len(sh.m) >= c.perShard {
		sh.makeRoom(at)
	}
	sh.m[req.Key] = e
}

// makeRoom samples up to eight entries of a full shard and drops the
// expired ones, or if none was, the one whose denial ends first. The caller
// holds sh.mu.
func (sh *denyShard) makeRoom(now int64) {
	var victim string
	soonest := int64(-1)
	dropped := false
	n := 0
	for k, e := range sh.m {
		if e.until <= now {
			delete(sh.m, k)
			dropped = true
		} else if soonest < 0 || e.until < soonest {
			victim, soonest = k, e.until
		}
		if n++; n == 8 {
			break
		}
	}
	if !dropped && soonest >= 0 {
		delete(sh.m, victim)
	}
}

// clear drops every entry (a new policy snapshot).
func (c *denyCache) clear() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		clear(sh.m)
		sh.mu.Unlock()
	}
}

func (c *denyCache) len() int {
	n := 0
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += len(sh.m)
		sh.mu.Unlock()
	}
	return n
}
