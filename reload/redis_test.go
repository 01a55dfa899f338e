package reload

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/store/redisstore"
)

func redisOverrides(t *testing.T, addr string, opts redisstore.OverridesOptions) overrides.Store {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{addr}, DisableCache: true, ForceSingleClient: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	s, err := redisstore.NewOverrides(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Two instances share Redis: a change on one is in force on the other, by
// notice or, with the notice lost, by resync; a new instance starts with the
// overrides in force.
func TestRedisOverridesPropagate(t *testing.T) {
	srv := redistest.Standalone(t)
	a := newEnv(t, baseYAML, envOpts{store: redisOverrides(t, srv.Addr(), redisstore.OverridesOptions{}), after: time.After})
	b := newEnv(t, baseYAML, envOpts{store: redisOverrides(t, srv.Addr(), redisstore.OverridesOptions{Resync: 50 * time.Millisecond}), after: time.After})
	// n resyncs once an hour: within the test only a notice can reach it.
	n := newEnv(t, baseYAML, envOpts{store: redisOverrides(t, srv.Addr(), redisstore.OverridesOptions{Resync: time.Hour}), after: time.After})

	put(t, a.ctrl, "vip", map[string]policy.Patch{"per-hour": {Limit: 7}}, time.Time{})
	n.rec.until(t, "put seen on n, by notice", func() bool { return n.limitOf("vip") == 7 })
	b.rec.until(t, "put seen on b", func() bool { return b.limitOf("vip") == 7 })
	if err := a.ctrl.Delete(context.Background(), "orders", "vip"); err != nil {
		t.Fatal(err)
	}
	n.rec.until(t, "delete seen on n, by notice", func() bool { return n.limitOf("vip") == 2 })
	b.rec.until(t, "delete seen on b", func() bool { return b.limitOf("vip") == 2 })

	// A writer whose notices go to another channel: b heals by resync.
	silent := newEnv(t, baseYAML, envOpts{store: redisOverrides(t, srv.Addr(), redisstore.OverridesOptions{Channel: "nowhere"}), after: time.After})
	put(t, silent.ctrl, "quiet", map[string]policy.Patch{"per-hour": {Limit: 9}}, time.Time{})
	b.rec.until(t, "missed notice healed on b", func() bool { return b.limitOf("quiet") == 9 })

	// A restarted instance loads them before it serves.
	c := newEnv(t, baseYAML, envOpts{store: redisOverrides(t, srv.Addr(), redisstore.OverridesOptions{}), after: time.After})
	if c.limitOf("quiet") != 9 {
		t.Fatal("a new instance started without the stored override")
	}
}
