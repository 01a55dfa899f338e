package redisstore

import (
	"context"
	"github.com/distributedratelimiter/ratelimiter/overrides/overridestest"
	"sync"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/distributedratelimiter/ratelimiter/internal/redistest"
)

func redisClient(t *testing.T, addrs []string, cluster bool) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: addrs, DisableCache: true, ForceSingleClient: !cluster})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

func newOverrides(t *testing.T, c rueidis.Client, opts OverridesOptions) *Overrides {
	t.Helper()
	s, err := NewOverrides(c, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestRedisStoreStandalone(t *testing.T) {
	srv := redistest.Standalone(t)
	s := newOverrides(t, redisClient(t, []string{srv.Addr()}, false), OverridesOptions{})
	overridestest.Conformance(t, s)
	// The layout the docs describe.
	if got := srv.MustDo("HEXISTS", "rl:overrides:{orders}", "user-42"); got != "1" {
		t.Fatalf("HEXISTS = %s", got)
	}
	if rev := srv.MustDo("GET", "rl:overrides:{orders}:rev"); rev == "" || rev[0] < '1' || rev[0] > '9' {
		t.Fatalf("revision %q", rev)
	}
}

func TestRedisStoreCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	s := newOverrides(t, redisClient(t, c.Addrs(), true), OverridesOptions{})
	overridestest.Conformance(t, s)
}

// A stored value that does not decode is skipped and reported; the rest
// still loads.
func TestRedisStoreCorruptValue(t *testing.T) {
	srv := redistest.Standalone(t)
	s := newOverrides(t, redisClient(t, []string{srv.Addr()}, false), OverridesOptions{})
	ctx := context.Background()
	if err := s.Put(ctx, overridestest.Override("orders", "good", 5, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	srv.MustDo("HSET", "rl:overrides:{orders}", "bad", "{oops")
	got, err := s.Load(ctx, "orders")
	if len(got) != 1 || got[0].Subject != "good" || err == nil {
		t.Fatalf("load: %v %v", overridestest.Subjects(got), err)
	}
}

// notices collects the namespaces Watch reports.
type notices struct {
	mu   sync.Mutex
	seen map[string]int
	c    chan string
}

func newNotices() *notices { return &notices{seen: map[string]int{}, c: make(chan string, 1000)} }

func (n *notices) changed(ns string) {
	n.mu.Lock()
	n.seen[ns]++
	n.mu.Unlock()
	n.c <- ns
}

// wait returns once ns has been reported.
func (n *notices) wait(t *testing.T, ns string) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case got := <-n.c:
			if got == ns {
				return
			}
		case <-timeout:
			t.Fatalf("no notice for %s within 10s", ns)
		}
	}
}

func (n *notices) drain() {
	for len(n.c) > 0 {
		<-n.c
	}
}

// Changes on one instance are announced to the others, and a change whose
// notice was lost is found by the resync.
func TestRedisWatch(t *testing.T) {
	srv := redistest.Standalone(t)
	testWatch(t, []string{srv.Addr()}, false)
}

// On a cluster the namespaces' hashes live on different shards, and a
// PUBLISH on one node reaches subscribers on every node.
func TestRedisWatchCluster(t *testing.T) {
	c := redistest.Cluster(t, 3, 0)
	addrs := c.Addrs()
	// The reader subscribes through the last node, the writer through the first.
	testWatch(t, append(addrs[2:], addrs[:2]...), true)
}

func testWatch(t *testing.T, addrs []string, cluster bool) {
	writer := newOverrides(t, redisClient(t, addrs[:1], cluster), OverridesOptions{})
	// A resync interval far beyond the test: only notices can be seen.
	reader := newOverrides(t, redisClient(t, addrs[len(addrs)-1:], cluster), OverridesOptions{Resync: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := newNotices()
	nss := func() []string { return []string{"orders", "payments"} }
	done := make(chan struct{})
	go func() { reader.Watch(ctx, nss, n.changed); close(done) }()

	// The first subscription compares revisions: nothing loaded yet, so
	// every namespace is reported.
	n.wait(t, "orders")
	for _, ns := range nss() {
		if _, err := reader.Load(ctx, ns); err != nil {
			t.Fatal(err)
		}
	}
	n.drain()
	if err := writer.Put(ctx, overridestest.Override("payments", "u", 1, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "payments")
	if _, err := writer.Delete(ctx, "payments", "u"); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "payments")
	cancel()
	<-done
}

func TestRedisResyncHealsAMissedNotice(t *testing.T) {
	srv := redistest.Standalone(t)
	addrs := []string{srv.Addr()}
	// The writer announces on another channel: the reader never hears it.
	writer := newOverrides(t, redisClient(t, addrs, false), OverridesOptions{Channel: "elsewhere"})
	reader := newOverrides(t, redisClient(t, addrs, false), OverridesOptions{Resync: 20 * time.Millisecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if _, err := reader.Load(ctx, "orders"); err != nil {
		t.Fatal(err)
	}
	n := newNotices()
	done := make(chan struct{})
	go func() { reader.Watch(ctx, func() []string { return []string{"orders"} }, n.changed); close(done) }()
	if err := writer.Put(ctx, overridestest.Override("orders", "u", 1, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "orders")
	got, err := reader.Load(ctx, "orders")
	if err != nil || len(got) != 1 {
		t.Fatalf("after the resync: %v %v", got, err)
	}
	// Once loaded, the revisions agree: a comparison reports nothing.
	if err := reader.compareRevisions(ctx, []string{"orders"}, func(ns string) {
		t.Errorf("the resync reported %s, whose revision this reader has loaded", ns)
	}); err != nil {
		t.Fatal(err)
	}
	// And a later change missed again is healed again.
	n.drain()
	if err := writer.Put(ctx, overridestest.Override("orders", "v", 1, time.Time{}), 10); err != nil {
		t.Fatal(err)
	}
	n.wait(t, "orders")
	cancel()
	<-done
}

// A Redis that lost its data (a restart without persistence) changes the
// revision even though the counter starts again.
func TestRedisRevisionSurvivesDataLoss(t *testing.T) {
	srv := redistest.Standalone(t)
	s := newOverrides(t, redisClient(t, []string{srv.Addr()}, false), OverridesOptions{})
	ctx := context.Background()
	s.Put(ctx, overridestest.Override("orders", "u", 1, time.Time{}), 10)
	before := srv.MustDo("GET", "rl:overrides:{orders}:rev")
	srv.MustDo("FLUSHALL")
	s.Put(ctx, overridestest.Override("orders", "u", 1, time.Time{}), 10)
	after := srv.MustDo("GET", "rl:overrides:{orders}:rev")
	if before == after || after[:2] != "1@" {
		t.Fatalf("revisions %q then %q", before, after)
	}
}
