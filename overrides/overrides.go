// Package overrides keeps runtime per-subject overrides (set through the
// admin API) where they outlive the process and reach every instance.
//
// A Store holds policy.Override values by namespace and subject. Two
// implementations:
//
//   - FileStore, for the memory store (one instance): the overrides live in
//     the process and, when a path is given, in a JSON file rewritten
//     atomically (temporary file, fsync, rename, fsync of the directory) on
//     every change, so that a restart keeps them.
//   - RedisStore, for the Redis store (any number of instances): one hash
//     per namespace, a revision per namespace, and a pub/sub channel on which
//     every change is announced; instances reload a namespace on a message,
//     and a periodic resync compares revisions so that a missed message
//     heals.
//
// The Store validates nothing about limits: the caller (reload.Controller)
// validates an override against the policy before Put, and again whenever
// the policy changes. What a Store returns has been decoded strictly; a
// stored value that does not decode is skipped and reported (Load's error
// wraps ErrCorrupt only when nothing else failed).
package overrides

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// DefaultMaxPerNamespace bounds the overrides one namespace may hold unless
// the caller says otherwise.
const DefaultMaxPerNamespace = 10_000

// Sentinel errors. Store errors wrap one of them, or ErrUnavailable.
var (
	// ErrNotFound is returned by Delete callers for an override that does
	// not exist.
	ErrNotFound = errors.New("override not found")
	// ErrTooMany is returned by Put when the namespace already holds the
	// maximum number of overrides.
	ErrTooMany = errors.New("too many overrides")
	// ErrCorrupt wraps a stored override that does not decode.
	ErrCorrupt = errors.New("corrupt stored override")
	// ErrUnavailable wraps failures to reach the backing storage.
	ErrUnavailable = errors.New("override store unavailable")
)

// Store persists overrides. Implementations are safe for concurrent use.
type Store interface {
	// Load returns every override stored for namespace ns, sorted by
	// subject. Values that do not decode are left out; the error then
	// wraps ErrCorrupt and the overrides that decoded are still returned.
	Load(ctx context.Context, ns string) ([]policy.Override, error)
	// Put stores o, replacing the override of the same namespace and
	// subject. It fails with ErrTooMany when the namespace holds max other
	// overrides already.
	Put(ctx context.Context, o policy.Override, max int) error
	// Delete removes the override of ns and subject and reports whether
	// there was one.
	Delete(ctx context.Context, ns, subject string) (bool, error)
	// DeleteExpired removes, among the overrides of ns for subjects, those
	// whose expiry is not after now. An override put again meanwhile with
	// a later expiry stays.
	DeleteExpired(ctx context.Context, ns string, subjects []string, now time.Time) error
	// Watch calls changed(ns) whenever another writer (another instance)
	// may have changed namespace ns, until ctx is done; namespaces returns
	// the namespaces the caller cares about. changed must not block. A
	// store with no other writers returns when ctx is done.
	Watch(ctx context.Context, namespaces func() []string, changed func(ns string))
}

// stored is the JSON form of a policy.Override in a store (the namespace and
// subject are the key). Durations and instants are integers so that the
// Redis scripts can read them.
type stored struct {
	Limits      map[string]storedPatch `json:"limits"`
	ExpiresAtMS int64                  `json:"expires_at_ms,omitempty"`
	UpdatedAtMS int64                  `json:"updated_at_ms,omitempty"`
}

type storedPatch struct {
	Limit     int64  `json:"limit,omitempty"`
	PeriodMS  int64  `json:"period_ms,omitempty"`
	Burst     int64  `json:"burst,omitempty"`
	Algorithm string `json:"algorithm,omitempty"`
}

// maxValue bounds one stored value, in bytes: a patch of MaxRules limits
// is a few hundred bytes.
const maxValue = 16 << 10

// Marshal returns the stored form of o, which every Store keeps.
func Marshal(o policy.Override) ([]byte, error) {
	s := stored{Limits: make(map[string]storedPatch, len(o.Limits))}
	for name, p := range o.Limits {
		if p.Period%time.Millisecond != 0 {
			return nil, fmt.Errorf("overrides: %s/%s: limits[%s].period: %v is not a whole number of milliseconds",
				o.Namespace, o.Subject, name, p.Period)
		}
		sp := storedPatch{Limit: p.Limit, PeriodMS: p.Period.Milliseconds(), Burst: p.Burst}
		if p.Algorithm != 0 {
			sp.Algorithm = p.Algorithm.String()
		}
		s.Limits[name] = sp
	}
	if !o.ExpiresAt.IsZero() {
		s.ExpiresAtMS = max(o.ExpiresAt.UnixMilli(), 1)
	}
	if !o.UpdatedAt.IsZero() {
		s.UpdatedAtMS = o.UpdatedAt.UnixMilli()
	}
	return json.Marshal(s)
}

// Unmarshal reads the stored form of the override of ns and subject (errors
// wrap ErrCorrupt). It checks the shape, not the limits (policy does).
func Unmarshal(ns, subject string, data []byte) (policy.Override, error) {
	o := policy.Override{Namespace: ns, Subject: subject}
	fail := func(format string, args ...any) (policy.Override, error) {
		return policy.Override{}, fmt.Errorf("%w %s/%s: "+format, append([]any{ErrCorrupt, ns, subject}, args...)...)
	}
	if len(data) > maxValue {
		return fail("%d bytes", len(data))
	}
	var s stored
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return fail("%v", err)
	}
	if len(s.Limits) == 0 {
		return fail("no limits") // how many it may have is policy's to say
	}
	o.Limits = make(map[string]policy.Patch, len(s.Limits))
	for name, sp := range s.Limits {
		if sp.PeriodMS < 0 || sp.PeriodMS > math.MaxInt64/int64(time.Millisecond) {
			return fail("limits[%s].period_ms: %d is not a duration", name, sp.PeriodMS)
		}
		p := policy.Patch{Limit: sp.Limit, Period: time.Duration(sp.PeriodMS) * time.Millisecond, Burst: sp.Burst}
		if sp.Algorithm != "" {
			a, err := limit.ParseAlgorithm(sp.Algorithm)
			if err != nil {
				return fail("limits[%s]: %v", name, err)
			}
			p.Algorithm = a
		}
		o.Limits[name] = p
	}
	if s.ExpiresAtMS < 0 || s.UpdatedAtMS < 0 {
		return fail("negative instant")
	}
	if s.ExpiresAtMS > 0 {
		o.ExpiresAt = time.UnixMilli(s.ExpiresAtMS).UTC()
	}
	if s.UpdatedAtMS > 0 {
		o.UpdatedAt = time.UnixMilli(s.UpdatedAtMS).UTC()
	}
	return o, nil
}

// SortBySubject sorts overrides by subject, as Store.Load returns them.
func SortBySubject(list []policy.Override) {
	sort.Slice(list, func(i, j int) bool { return list[i].Subject < list[j].Subject })
}

// CheckKey rejects an empty namespace or subject: they would make keys and
// file entries that no check can reach.
func CheckKey(ns, subject string) error {
	if ns == "" || subject == "" {
		return fmt.Errorf("overrides: empty namespace or subject (%q, %q)", ns, subject)
	}
	return nil
}

// NoWatch is Store.Watch for stores without other writers: it returns when
// ctx is done.
func NoWatch(ctx context.Context) { <-ctx.Done() }
