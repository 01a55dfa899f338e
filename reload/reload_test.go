package reload

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/config"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

// Waits are event-driven (the recorder signals every call) with a generous
// deadline; nothing asserts on how long anything took.
const deadline = 10 * time.Second

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const baseYAML = `namespaces:
  - name: orders
    limits:
      - name: per-hour
        algorithm: token_bucket
        limit: 2
        period: 1h
      - name: per-day
        algorithm: fixed_window
        limit: 100
        period: 24h
`

// recorder records what the controller reports and signals each call.
type recorder struct {
	mu       sync.Mutex
	ok, fail int
	active   map[string]int
	inactive int
	syncErrs int
	c        chan struct{}
}

func newRecorder() *recorder { return &recorder{c: make(chan struct{}, 1)} }

func (r *recorder) poke() {
	select {
	case r.c <- struct{}{}:
	default:
	}
}

func (r *recorder) Reloaded(ok bool) {
	r.mu.Lock()
	if ok {
		r.ok++
	} else {
		r.fail++
	}
	r.mu.Unlock()
	r.poke()
}
func (r *recorder) ConfigLoaded(string, time.Time) {}
func (r *recorder) Overrides(active map[string]int, inactive int) {
	r.mu.Lock()
	r.active, r.inactive = active, inactive
	r.mu.Unlock()
	r.poke()
}
func (r *recorder) SyncFailed() {
	r.mu.Lock()
	r.syncErrs++
	r.mu.Unlock()
	r.poke()
}

func (r *recorder) counts() (ok, fail int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ok, r.fail
}

// until waits for cond, re-checking whenever the recorder hears something.
func (r *recorder) until(t *testing.T, what string, cond func() bool) {
	t.Helper()
	timeout := time.After(deadline)
	for !cond() {
		select {
		case <-r.c:
		case <-timeout:
			t.Fatalf("%s: not within %v", what, deadline)
		}
	}
}

// syncBuffer is a log destination safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// fakeAfter hands out timers the test fires by hand.
type fakeAfter struct {
	mu     sync.Mutex
	timers []chan time.Time
	durs   []time.Duration
	armed  chan struct{}
}

func newFakeAfter() *fakeAfter { return &fakeAfter{armed: make(chan struct{}, 100)} }

func (f *fakeAfter) after(d time.Duration) <-chan time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan time.Time, 1)
	f.timers = append(f.timers, c)
	f.durs = append(f.durs, d)
	f.armed <- struct{}{}
	return c
}

// waitArmed waits until a timer of d is armed and returns its fire.
func (f *fakeAfter) waitArmed(t *testing.T, d time.Duration) func() {
	t.Helper()
	timeout := time.After(deadline)
	for {
		select {
		case <-f.armed:
			if got, fire := f.last(); got == d {
				return fire
			}
		case <-timeout:
			t.Fatalf("no timer of %v armed within %v", d, deadline)
		}
	}
}

// last returns the latest timer's duration and a function that fires it.
func (f *fakeAfter) last() (time.Duration, func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.timers[len(f.timers)-1]
	return f.durs[len(f.durs)-1], func() { c <- time.Now() }
}

type env struct {
	t     *testing.T
	path  string
	clk   *clocktest.Fake
	svc   *service.Service
	ctrl  *Controller
	rec   *recorder
	logs  *syncBuffer
	after *fakeAfter
	store overrides.Store
}

type envOpts struct {
	store overrides.Store
	watch bool
	after func(time.Duration) <-chan time.Time
}

func newEnv(t *testing.T, yaml string, o envOpts) *env {
	t.Helper()
	e := &env{t: t, path: filepath.Join(t.TempDir(), "config.yaml"), clk: clocktest.New(t0), rec: newRecorder(),
		logs: &syncBuffer{}, after: newFakeAfter(), store: o.store}
	e.write(yaml)
	snap, err := config.LoadAt(e.path, t0)
	if err != nil {
		t.Fatal(err)
	}
	st := memstore.New(memstore.Options{Clock: e.clk})
	t.Cleanup(func() { st.Close() })
	e.svc, err = service.New(st, snap, service.Options{Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	if e.store == nil {
		e.store, _ = overrides.OpenFile("")
	}
	after := o.after
	if after == nil {
		after = e.after.after
	}
	e.ctrl, err = New(Options{Path: e.path, Watch: o.watch, Debounce: 10 * time.Millisecond, Target: e.svc, Store: e.store,
		Clock: e.clk, After: after, Recorder: e.rec, Logger: slog.New(slog.NewJSONHandler(e.logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	if err := e.ctrl.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cancel(); e.ctrl.Wait() })
	return e
}

func (e *env) write(yaml string) {
	e.t.Helper()
	if err := os.WriteFile(e.path, []byte(yaml), 0o644); err != nil {
		e.t.Fatal(err)
	}
}

// allowed runs one check of cost 1 and reports whether it passed.
func (e *env) allowed(subject string) bool {
	e.t.Helper()
	res, err := e.svc.Check(context.Background(), service.Request{Namespace: "orders", Subject: subject, Cost: 1})
	if err != nil {
		e.t.Fatalf("check %s: %v", subject, err)
	}
	return res.Verdict.Allowed
}

// admits counts how many checks in a row pass, up to 1000.
func (e *env) admits(subject string) int {
	e.t.Helper()
	for n := range 1000 {
		if !e.allowed(subject) {
			return n
		}
	}
	return 1000
}

func (e *env) limitOf(subject string) int64 {
	set, err := e.svc.Snapshot().Resolve("orders", subject)
	if err != nil {
		e.t.Fatal(err)
	}
	return set.Rules[0].Limit
}

func TestReloadKeepsTheOldPolicyOnABadFile(t *testing.T) {
	e := newEnv(t, baseYAML, envOpts{})
	v1 := e.svc.Snapshot().Version()

	// Unchanged content is not a reload.
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatal(err)
	}
	if ok, fail := e.rec.counts(); ok != 0 || fail != 0 {
		t.Fatalf("unchanged file counted: %d %d", ok, fail)
	}

	e.write(strings.Replace(baseYAML, "limit: 2\n", "limit: -2\n", 1))
	err := e.ctrl.Reload(false)
	if !errors.Is(err, ErrReload) || !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "limits[per-hour].limit: -2 is outside") {
		t.Fatalf("bad file: %v", err)
	}
	if e.svc.Snapshot().Version() != v1 || e.limitOf("u") != 2 {
		t.Fatal("a bad file changed the policy")
	}
	// The same bad content again (a chmod, a second event): no new error.
	e.ctrl.Reload(false)
	if ok, fail := e.rec.counts(); ok != 0 || fail != 1 {
		t.Fatalf("counts %d/%d, want one failure", ok, fail)
	}
	lines := e.logs.lines("reload failed; keeping the running configuration")
	if len(lines) != 1 || lines[0]["level"] != "ERROR" || !strings.Contains(lines[0]["err"].(string), "-2 is outside") || lines[0]["version"] != v1 {
		t.Fatalf("error log: %v", lines)
	}
	// SIGHUP forces a retry, counted.
	e.ctrl.Reload(true)
	if _, fail := e.rec.counts(); fail != 2 {
		t.Fatalf("forced reload not counted: %d", fail)
	}
	// A missing file is an error too, and keeps the policy.
	os.Remove(e.path)
	if err := e.ctrl.Reload(false); !errors.Is(err, ErrReload) || e.svc.Snapshot().Version() != v1 {
		t.Fatalf("missing file: %v", err)
	}

	e.write(strings.Replace(baseYAML, "limit: 2\n", "limit: 5\n", 1))
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatal(err)
	}
	if e.svc.Snapshot().Version() == v1 || e.limitOf("u") != 5 {
		t.Fatal("a good file did not apply")
	}
	if ok, fail := e.rec.counts(); ok != 1 || fail != 3 {
		t.Fatalf("counts %d/%d", ok, fail)
	}
	if got := e.logs.lines("configuration reloaded"); len(got) != 1 || got[0]["previous"] != v1 {
		t.Fatalf("success log: %v", got)
	}
	if err := (&Controller{}).Reload(true); !errors.Is(err, ErrNoFile) {
		t.Fatalf("no file: %v", err)
	}
}

func TestWatchedFileReloads(t *testing.T) {
	e := newEnv(t, baseYAML, envOpts{watch: true, after: time.After})
	for _, lim := range []string{"3", "4"} {
		e.write(strings.Replace(baseYAML, "limit: 2\n", "limit: "+lim+"\n", 1))
		e.rec.until(t, "reload to "+lim, func() bool { return e.limitOf("u") == int64(lim[0]-'0') })
	}
	e.write("namespaces: [")
	e.rec.until(t, "a failed reload", func() bool { _, fail := e.rec.counts(); return fail == 1 })
	if e.limitOf("u") != 4 {
		t.Fatal("a bad file changed the policy")
	}
}

func put(t *testing.T, c *Controller, subject string, patches map[string]policy.Patch, expires time.Time) Status {
	t.Helper()
	st, err := c.Put(context.Background(), policy.Override{Namespace: "orders", Subject: subject, Limits: patches, ExpiresAt: expires})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func TestOverridesApplyAndSurviveReloads(t *testing.T) {
	e := newEnv(t, baseYAML, envOpts{})
	st := put(t, e.ctrl, "vip", map[string]policy.Patch{"per-hour": {Limit: 5}}, time.Time{})
	if !st.Active || st.Rules[0].Limit != 5 || !st.UpdatedAt.Equal(t0) {
		t.Fatalf("status %+v", st)
	}
	// In force on the next check, before Put returned.
	if n := e.admits("vip"); n != 5 {
		t.Fatalf("vip admitted %d, want 5", n)
	}
	if n := e.admits("other"); n != 2 {
		t.Fatalf("other admitted %d", n)
	}
	// A reload keeps the override.
	e.write(strings.Replace(baseYAML, "limit: 100\n", "limit: 200\n", 1))
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatal(err)
	}
	if e.limitOf("vip") != 5 {
		t.Fatal("override lost on reload")
	}
	// A file without per-hour: the override is kept but inactive, and
	// comes back with a file that has it.
	e.write(`namespaces:
  - name: orders
    limits:
      - name: per-minute
        algorithm: token_bucket
        limit: 9
        period: 1m
`)
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatalf("a reload was refused because of a runtime override: %v", err)
	}
	list, _ := e.ctrl.List("orders")
	if len(list) != 1 || list[0].Active || !strings.Contains(list[0].Problem, "unknown limit") {
		t.Fatalf("list after the limit went away: %+v", list)
	}
	if len(e.logs.lines("runtime override does not apply to the configuration in force")) != 1 {
		t.Fatal("no warning for the inactive override")
	}
	e.write(baseYAML)
	e.ctrl.Reload(false)
	if e.limitOf("vip") != 5 {
		t.Fatal("override did not come back")
	}
	// Delete gives the subject back the file's limits.
	if err := e.ctrl.Delete(context.Background(), "orders", "vip"); err != nil {
		t.Fatal(err)
	}
	if e.limitOf("vip") != 2 {
		t.Fatal("delete did not apply")
	}
	if err := e.ctrl.Delete(context.Background(), "orders", "vip"); !errors.Is(err, overrides.ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	if _, err := e.ctrl.Get("orders", "vip"); !errors.Is(err, overrides.ErrNotFound) {
		t.Fatalf("get: %v", err)
	}
	if _, err := e.ctrl.List("payments"); !errors.Is(err, policy.ErrUnknownNamespace) {
		t.Fatalf("list of an unknown namespace: %v", err)
	}
}

func TestPutRejects(t *testing.T) {
	e := newEnv(t, baseYAML, envOpts{})
	ctx := context.Background()
	for _, o := range []policy.Override{
		{Namespace: "payments", Subject: "u", Limits: map[string]policy.Patch{"per-hour": {Limit: 1}}},
		{Namespace: "orders", Subject: "u", Limits: map[string]policy.Patch{"per-week": {Limit: 1}}},
		{Namespace: "orders", Subject: "u", Limits: map[string]policy.Patch{"per-day": {Burst: 1}}},
		{Namespace: "orders", Subject: "u", Limits: map[string]policy.Patch{"per-hour": {Limit: 1}}, ExpiresAt: t0},
	} {
		if _, err := e.ctrl.Put(ctx, o); !errors.Is(err, policy.ErrInvalid) {
			t.Errorf("%+v: %v", o, err)
		}
	}
	if got, _ := e.store.Load(ctx, "orders"); len(got) != 0 {
		t.Fatalf("a rejected override was stored: %v", got)
	}
	c, _ := New(Options{Target: e.svc, MaxPerNamespace: 1})
	put(t, c, "a", map[string]policy.Patch{"per-hour": {Limit: 1}}, time.Time{})
	if _, err := c.Put(ctx, policy.Override{Namespace: "orders", Subject: "b", Limits: map[string]policy.Patch{"per-hour": {Limit: 1}}}); !errors.Is(err, overrides.ErrTooMany) {
		t.Fatalf("over the maximum: %v", err)
	}
}

func TestOverridesExpire(t *testing.T) {
	e := newEnv(t, baseYAML, envOpts{})
	put(t, e.ctrl, "temp", map[string]policy.Patch{"per-hour": {Limit: 7}}, t0.Add(time.Minute))
	put(t, e.ctrl, "later", map[string]policy.Patch{"per-hour": {Limit: 8}}, t0.Add(time.Hour))
	// The controller arms a timer for the earliest expiry.
	fire := e.after.waitArmed(t, time.Minute)
	e.clk.Advance(time.Minute)
	st, _ := e.ctrl.Get("orders", "temp")
	if st.Active || st.Problem != "expired" {
		t.Fatalf("status at expiry: %+v", st)
	}
	fire()
	e.rec.until(t, "expired override removed", func() bool { return e.limitOf("temp") == 2 })
	if e.limitOf("later") != 8 {
		t.Fatal("the later override went too")
	}
	got, _ := e.store.Load(context.Background(), "orders")
	if len(got) != 1 || got[0].Subject != "later" {
		t.Fatalf("store after expiry: %v", got)
	}
	// The next timer is for the later one.
	e.after.waitArmed(t, 59*time.Minute)
}

// The file store keeps overrides across a restart of the controller.
func TestFileStoreSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overrides.json")
	fs, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, baseYAML, envOpts{store: fs})
	put(t, e.ctrl, "vip", map[string]policy.Patch{"per-hour": {Limit: 5}}, time.Time{})
	fs2, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	e2 := newEnv(t, baseYAML, envOpts{store: fs2})
	if e2.limitOf("vip") != 5 {
		t.Fatal("override lost on restart")
	}
}

// An override that expired while no instance ran (stored, then found past
// its expiry at start) is removed from the store, not left to count against
// the namespace's maximum forever.
func TestOverrideExpiredWhileDownIsPurged(t *testing.T) {
	path := filepath.Join(t.TempDir(), "overrides.json")
	fs, err := overrides.OpenFile(path)
	if err != nil {
		t.Fatal(err)
	}
	stale := policy.Override{Namespace: "orders", Subject: "gone",
		Limits: map[string]policy.Patch{"per-hour": {Limit: 7}}, ExpiresAt: t0.Add(-time.Minute), UpdatedAt: t0.Add(-time.Hour)}
	if err := fs.Put(context.Background(), stale, 100); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t, baseYAML, envOpts{store: fs})
	if e.limitOf("gone") != 2 {
		t.Fatal("an expired override applies")
	}
	fire := e.after.waitArmed(t, time.Millisecond) // already past: at once
	fire()
	e.rec.until(t, "expired override purged", func() bool {
		got, _ := e.store.Load(context.Background(), "orders")
		return len(got) == 0
	})
}

const twoNamespacesYAML = baseYAML + `  - name: search
    limits:
      - name: per-second
        algorithm: token_bucket
        limit: 10
        period: 1s
`

// A namespace a reload drops is forgotten with its overrides; when a later
// file brings it back, its overrides are loaded from the store again, with
// what other instances wrote meanwhile, not what this one knew before.
func TestNamespaceBackLoadsItsOverridesAgain(t *testing.T) {
	e := newEnv(t, twoNamespacesYAML, envOpts{})
	ctx := context.Background()
	if _, err := e.ctrl.Put(ctx, policy.Override{Namespace: "search", Subject: "bot",
		Limits: map[string]policy.Patch{"per-second": {Limit: 3}}}); err != nil {
		t.Fatal(err)
	}
	e.write(baseYAML)
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatal(err)
	}
	if _, err := e.ctrl.List("search"); !errors.Is(err, policy.ErrUnknownNamespace) {
		t.Fatalf("list of a dropped namespace: %v", err)
	}
	// Another instance, still on the old file, changes the override.
	if err := e.store.Put(ctx, policy.Override{Namespace: "search", Subject: "bot",
		Limits: map[string]policy.Patch{"per-second": {Limit: 4}}, UpdatedAt: t0}, 100); err != nil {
		t.Fatal(err)
	}
	e.write(twoNamespacesYAML)
	if err := e.ctrl.Reload(false); err != nil {
		t.Fatal(err)
	}
	e.rec.until(t, "the returning namespace's overrides loaded", func() bool {
		st, err := e.ctrl.Get("search", "bot")
		return err == nil && st.Active && st.Rules[0].Limit == 4
	})
}

// blockingStore is an override store whose Put waits until released.
type blockingStore struct {
	overrides.Store
	entered, release chan struct{}
}

func (b *blockingStore) Put(ctx context.Context, o policy.Override, max int) error {
	b.entered <- struct{}{}
	<-b.release
	return b.Store.Put(ctx, o, max)
}

// Readers never wait for a writer: while a Put waits for the store, the
// policy in force, List and Get answer, with the state before the Put.
func TestReadersDoNotWaitForAWriter(t *testing.T) {
	mem, _ := overrides.OpenFile("")
	bs := &blockingStore{Store: mem, entered: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, baseYAML, envOpts{store: bs})
	done := make(chan error, 1)
	go func() {
		_, err := e.ctrl.Put(context.Background(), policy.Override{Namespace: "orders", Subject: "vip",
			Limits: map[string]policy.Patch{"per-hour": {Limit: 5}}})
		done <- err
	}()
	<-bs.entered
	read := make(chan struct{})
	go func() {
		defer close(read)
		if e.ctrl.Snapshot() == nil || e.limitOf("vip") != 2 {
			t.Error("the policy in force changed before the store answered")
		}
		if list, err := e.ctrl.List("orders"); err != nil || len(list) != 0 {
			t.Errorf("list while a Put waits: %v, %v", list, err)
		}
		if _, err := e.ctrl.Get("orders", "vip"); !errors.Is(err, overrides.ErrNotFound) {
			t.Errorf("get while a Put waits: %v", err)
		}
	}()
	select {
	case <-read:
	case <-time.After(deadline):
		t.Fatal("readers waited for the writer")
	}
	close(bs.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if e.limitOf("vip") != 5 {
		t.Fatal("the Put did not apply")
	}
}
