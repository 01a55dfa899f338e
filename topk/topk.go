// Package topk keeps, per namespace, the subjects denied most often
// recently: the answer to "who is hitting the limits right now?", which
// per-subject metrics cannot give (a label per subject would flood
// Prometheus).
//
// # Model
//
// A Tracker is a service.Observer that counts denied checks per
// (namespace, subject) in Space-Saving sketches (Metwally, Agrawal and El
// Abbadi, 2005): a fixed number of counters; a subject not counted yet takes
// over the smallest counter, inheriting its count as its possible error. Any
// subject denied more than total/capacity times in a window is guaranteed
// to be held, and a reported count overestimates the true one by at most
// its Error. Memory is fixed: Capacity counters per stripe and namespace,
// whatever the number of distinct subjects.
//
// Counts cover a sliding span of one to two Windows: the current window and
// the previous one, rotated on the injected clock. Each namespace's counters
// are split over Stripes stripes by a seeded hash of the subject, each
// with its own lock, so a flood of denials on many cores does not serialize
// on one mutex; a subject always lands in the same stripe, so the stripes'
// top lists merge exactly.
package topk

import (
	"cmp"
	"hash/maphash"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
)

// Defaults of Options.
const (
	DefaultCapacity = 64
	DefaultStripes  = 8
	DefaultWindow   = time.Minute
)

// Options configure a Tracker. The zero value is usable.
type Options struct {
	// Capacity is the number of counters per stripe and namespace.
	// Default DefaultCapacity.
	Capacity int
	// Stripes is the number of independently locked sketches per namespace.
	// Default DefaultStripes.
	Stripes int
	// Window is how long a window lasts; counts cover the current and the
	// previous one. Default DefaultWindow.
	Window time.Duration
	// Clock rotates the windows. Default clock.System.
	Clock clock.Clock
}

// Entry is one subject of a top list.
type Entry struct {
	Subject string `json:"subject"`
	// Denied is the number of denied checks counted for the subject over
	// the last one to two windows; it overestimates by at most Error.
	Denied uint64 `json:"denied"`
	Error  uint64 `json:"error"`
}

// Tracker counts denials. It is safe for concurrent use.
type Tracker struct {
	o    Options
	seed maphash.Seed

	// nss is read by every denial without a lock and replaced whole (copy
	// on write) when a namespace comes or goes, which is rare: a shared
	// read lock would be one cache line every core writes during a flood.
	nss atomic.Pointer[map[string]*namespace]
	mu  sync.Mutex // serializes the replacements
}

type namespace struct{ stripes []stripe }

type stripe struct {
	mu        sync.Mutex
	cur, prev *sketch
	started   time.Time // of cur
}

// New returns a Tracker.
func New(o Options) *Tracker {
	if o.Capacity <= 0 {
		o.Capacity = DefaultCapacity
	}
	if o.Stripes <= 0 {
		o.Stripes = DefaultStripes
	}
	if o.Window <= 0 {
		o.Window = DefaultWindow
	}
	if o.Clock == nil {
		o.Clock = clock.System
	}
	t := &Tracker{o: o, seed: maphash.MakeSeed()}
	t.nss.Store(&map[string]*namespace{})
	return t
}

// ObserveCheck implements service.Observer: it counts denied checks of
// namespaces the policy has (never user input alone), decided for the
// subject (by the store, the deny cache or the local fallback: not the
// closed failure policy, which denies everyone), and not peeks (polling a
// subject's state is not hitting its limit).
func (t *Tracker) ObserveCheck(res service.Result, err error, _ time.Duration) {
	if err != nil || res.Verdict.Allowed || res.Set.Namespace == nil || res.Cost == 0 {
		return
	}
	switch res.DecidedBy {
	case service.DecidedByStore, service.DecidedByDenyCache, service.DecidedByLocal:
		t.Add(res.Namespace, res.Subject)
	}
}

// ObserveSnapshot implements service.Observer: namespaces the policy no
// longer has are forgotten. (A check still finishing on the previous
// snapshot may count into a dropped namespace once more, re-creating its
// counters: a fixed amount of memory, reported by nobody, gone at the next
// reload that drops it.)
func (t *Tracker) ObserveSnapshot(snap *policy.Snapshot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	next := maps.Clone(*t.nss.Load())
	maps.DeleteFunc(next, func(name string, _ *namespace) bool {
		_, ok := snap.Namespace(name)
		return !ok
	})
	t.nss.Store(&next)
}

// Add counts one denial of subject in ns.
func (t *Tracker) Add(ns, subject string) {
	n := t.namespace(ns)
	s := &n.stripes[maphash.String(t.seed, subject)%uint64(len(n.stripes))]
	now := t.o.Clock.Now()
	s.mu.Lock()
	s.rotate(now, t.o.Window, t.o.Capacity)
	s.cur.add(subject)
	s.mu.Unlock()
}

func (t *Tracker) namespace(ns string) *namespace {
	if n := (*t.nss.Load())[ns]; n != nil {
		return n
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if n := (*t.nss.Load())[ns]; n != nil {
		return n
	}
	n := &namespace{stripes: make([]stripe, t.o.Stripes)}
	next := maps.Clone(*t.nss.Load())
	next[ns] = n
	t.nss.Store(&next)
	return n
}

// rotate moves to a new window when the current one is over. The caller
// holds s.mu.
func (s *stripe) rotate(now time.Time, window time.Duration, capacity int) {
	if s.cur == nil {
		s.cur, s.started = newSketch(capacity), now
		return
	}
	switch age := now.Sub(s.started); {
	case age < window:
	case age < 2*window: // the current window becomes the previous one
		s.prev, s.cur, s.started = s.cur, newSketch(capacity), s.started.Add(window)
	default: // both are over
		s.prev, s.cur, s.started = nil, newSketch(capacity), now
	}
}

// Namespaces returns the namespaces with counters, sorted.
func (t *Tracker) Namespaces() []string {
	return slices.Sorted(maps.Keys(*t.nss.Load()))
}

// Window returns the length of a window: counts cover one to two of them.
func (t *Tracker) Window() time.Duration { return t.o.Window }

// Top returns up to n subjects of ns, most denied first (ties by subject).
func (t *Tracker) Top(ns string, n int) []Entry {
	nsp := (*t.nss.Load())[ns]
	if nsp == nil || n <= 0 {
		return []Entry{}
	}
	now := t.o.Clock.Now()
	var all []Entry
	for i := range nsp.stripes {
		s := &nsp.stripes[i]
		s.mu.Lock()
		if s.cur != nil {
			s.rotate(now, t.o.Window, t.o.Capacity)
			all = s.merged(all)
		}
		s.mu.Unlock()
	}
	slices.SortFunc(all, func(a, b Entry) int {
		if c := cmp.Compare(b.Denied, a.Denied); c != 0 {
			return c
		}
		return cmp.Compare(a.Subject, b.Subject)
	})
	return all[:min(n, len(all))]
}

// merged appends the stripe's entries over both windows to out. A subject
// in one window only may have been counted in the other below that
// sketch's smallest counter: that is added to its error.
func (s *stripe) merged(out []Entry) []Entry {
	var prevMin uint64
	if s.prev != nil && len(s.prev.heap) == s.prev.capacity {
		prevMin = s.prev.heap[0].count
	}
	curMin := uint64(0)
	if len(s.cur.heap) == s.cur.capacity {
		curMin = s.cur.heap[0].count
	}
	for _, c := range s.cur.heap {
		e := Entry{Subject: c.subject, Denied: c.count, Error: c.err}
		if s.prev != nil {
			if p, ok := s.prev.index[c.subject]; ok {
				e.Denied += s.prev.heap[p].count
				e.Error += s.prev.heap[p].err
			} else {
				e.Error += prevMin
				e.Denied += prevMin
			}
		}
		out = append(out, e)
	}
	if s.prev != nil {
		for _, c := range s.prev.heap {
			if _, ok := s.cur.index[c.subject]; !ok {
				out = append(out, Entry{Subject: c.subject, Denied: c.count + curMin, Error: c.err + curMin})
			}
		}
	}
	return out
}
