package policy

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// Runtime overrides.
//
// A snapshot built by New holds the configuration file. WithOverrides layers
// runtime overrides (set through the admin API, kept in the override store)
// on top of it and returns a new snapshot; the file's snapshot is unchanged
// and stays the base of every layer built from it, so a file reload followed
// by WithOverrides gives the new file with the same runtime overrides.
//
// A runtime override of a subject is merged with the file's override of the
// same subject, if any, limit by limit and field by field: a field the
// runtime patch sets wins, a field it leaves at zero comes from the file's
// patch, and a field neither sets comes from the namespace. The merged patch
// is applied exactly as the file's overrides are (applyPatches): a burst that
// followed the limit keeps following it. Deleting the runtime override gives
// the subject back what the file says.

// Sentinel errors of runtime overrides. Every error of CheckOverride and
// every OverrideError wraps ErrInvalid and, where it applies, one of these
// (or ErrUnknownNamespace).
var (
	// ErrUnknownLimit is wrapped by the error for a patch of a limit the
	// namespace does not define.
	ErrUnknownLimit = errors.New("unknown limit")
	// ErrExpired is wrapped by the error for an override whose expiry is
	// not after now.
	ErrExpired = errors.New("override expired")
)

// RuntimeOverride gives one subject of one namespace other parameters for
// some of the namespace's limits. It is a value: WithOverrides and
// CheckOverride do not retain the caller's Limits map, and those a snapshot
// returns must not be modified.
type RuntimeOverride struct {
	Namespace string
	Subject   string
	// Limits maps limit names of the namespace to patches. Each patch sets
	// at least one field; a zero field keeps the file's value. Negative
	// fields are invalid.
	Limits map[string]Patch
	// ExpiresAt, when not zero, is the instant the override stops applying.
	ExpiresAt time.Time
}

// Expired reports whether o has an expiry that is not after now.
func (o *RuntimeOverride) Expired(now time.Time) bool {
	return !o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now)
}

// OverrideError reports a runtime override that does not apply to a snapshot
// (an unknown namespace or limit, an invalid patch). Err wraps ErrInvalid.
type OverrideError struct {
	Namespace, Subject string
	Err                error
}

func (e *OverrideError) Error() string {
	return e.Namespace + "/" + e.Subject + ": " + e.Err.Error()
}

func (e *OverrideError) Unwrap() error { return e.Err }

// runtimeLayer is what WithOverrides adds to a snapshot.
type runtimeLayer struct {
	base *Snapshot
	// applied holds the overrides in force, by namespace, sorted by subject.
	applied    map[string][]RuntimeOverride
	nextExpiry time.Time
}

// Base returns the snapshot of the configuration file that s layers runtime
// overrides on, or s itself when s has no runtime layer.
func (s *Snapshot) Base() *Snapshot {
	if s.runtime != nil {
		return s.runtime.base
	}
	return s
}

// RuntimeOverrides returns the runtime overrides in force in namespace ns,
// sorted by subject. The caller must not modify them.
func (s *Snapshot) RuntimeOverrides(ns string) []RuntimeOverride {
	if s.runtime == nil {
		return nil
	}
	return s.runtime.applied[ns]
}

// NextExpiry returns the earliest ExpiresAt among the runtime overrides in
// force, or the zero time when none expires. The owner of the snapshot
// rebuilds it then (WithOverrides), so that the override stops applying.
func (s *Snapshot) NextExpiry() time.Time {
	if s.runtime == nil {
		return time.Time{}
	}
	return s.runtime.nextExpiry
}

// CheckOverride validates o against s the way the configuration file's
// overrides are validated, and returns the limit set the subject would
// get: the namespace must exist (ErrUnknownNamespace), the subject pass
// ValidateSubject, o name 1 to limit.MaxRules limits of the namespace
// (ErrUnknownLimit), each patch set at least one field and none negative,
// burst only for a bucket algorithm, the patched rules normalize, and the
// expiry, when set, be after now (ErrExpired). Every error wraps ErrInvalid.
func (s *Snapshot) CheckOverride(o RuntimeOverride, now time.Time) ([]limit.Rule, error) {
	base := s.Base()
	c, ok := base.namespaces[o.Namespace]
	if !ok {
		return nil, fmt.Errorf("%w: %w %q", ErrInvalid, ErrUnknownNamespace, o.Namespace)
	}
	if err := ValidateSubject(o.Subject); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if o.Expired(now) {
		return nil, fmt.Errorf("%w: %w: expires_at %s is not in the future", ErrInvalid, ErrExpired, o.ExpiresAt.UTC().Format(time.RFC3339Nano))
	}
	return c.runtimeRules(o.Subject, o.Limits, c.files[o.Subject])
}

// WithOverrides returns a snapshot of s's configuration file (s.Base())
// with ovs layered on top, replacing any runtime layer s has. Overrides
// that have expired at now are left out silently; overrides that do not
// apply (see CheckOverride) are left out and returned, one OverrideError
// each, so that a file reload that drops a limit cannot be refused because
// of runtime state. When two overrides name the same namespace and subject
// the later one wins. The returned snapshot has s's Version and LoadedAt.
// WithOverrides does not modify s or retain ovs.
func (s *Snapshot) WithOverrides(ovs []RuntimeOverride, now time.Time) (*Snapshot, []*OverrideError) {
	base := s.Base()
	layer := &runtimeLayer{base: base, applied: map[string][]RuntimeOverride{}}
	out := &Snapshot{version: base.version, loadedAt: base.loadedAt, names: base.names, runtime: layer,
		namespaces: make(map[string]*compiled, len(base.namespaces))}
	for name, c := range base.namespaces {
		out.namespaces[name] = c
	}

	// The last override of each namespace and subject, by namespace.
	byNS := map[string]map[string]RuntimeOverride{}
	var errs []*OverrideError
	for _, o := range ovs {
		if o.Expired(now) {
			continue
		}
		if _, ok := base.namespaces[o.Namespace]; !ok {
			errs = append(errs, &OverrideError{o.Namespace, o.Subject,
				fmt.Errorf("%w: %w %q", ErrInvalid, ErrUnknownNamespace, o.Namespace)})
			continue
		}
		m := byNS[o.Namespace]
		if m == nil {
			m = map[string]RuntimeOverride{}
			byNS[o.Namespace] = m
		}
		m[o.Subject] = o
	}
	for name, m := range byNS {
		c := base.namespaces[name]
		nc := &compiled{ns: c.ns, defaulted: c.defaulted, byName: c.byName, files: c.files,
			overrides: make(map[string][]limit.Rule, len(c.overrides)+len(m))}
		for subj, rules := range c.overrides {
			nc.overrides[subj] = rules
		}
		applied := make([]RuntimeOverride, 0, len(m))
		for subj, o := range m {
			rules, err := nc.runtimeRules(subj, o.Limits, c.files[subj])
			if err != nil {
				errs = append(errs, &OverrideError{name, subj, err})
				continue
			}
			nc.overrides[subj] = rules
			o.Limits = maps.Clone(o.Limits)
			applied = append(applied, o)
			if !o.ExpiresAt.IsZero() && (layer.nextExpiry.IsZero() || o.ExpiresAt.Before(layer.nextExpiry)) {
				layer.nextExpiry = o.ExpiresAt
			}
		}
		sort.Slice(applied, func(i, j int) bool { return applied[i].Subject < applied[j].Subject })
		if len(applied) > 0 {
			layer.applied[name] = applied
		}
		out.namespaces[name] = nc
	}
	sort.Slice(errs, func(i, j int) bool {
		if errs[i].Namespace != errs[j].Namespace {
			return errs[i].Namespace < errs[j].Namespace
		}
		return errs[i].Subject < errs[j].Subject
	})
	return out, errs
}

// runtimeRules validates the runtime patches of subject and returns its
// limit set: the namespace's rules with file (the file's patches of that
// subject, possibly nil) and then patches merged field by field.
func (c *compiled) runtimeRules(subject string, patches, file map[string]Patch) ([]limit.Rule, error) {
	if err := ValidateSubject(subject); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if len(patches) == 0 || len(patches) > limit.MaxRules {
		return nil, fmt.Errorf("%w: limits: %d patches, want 1 to %d", ErrInvalid, len(patches), limit.MaxRules)
	}
	names := make([]string, 0, len(patches))
	for name := range patches {
		names = append(names, name)
	}
	sort.Strings(names)
	merged := make(map[string]Patch, len(patches)+len(file))
	for name, p := range file {
		merged[name] = p
	}
	for _, name := range names {
		p := patches[name]
		j, ok := c.byName[name]
		if !ok {
			return nil, fmt.Errorf("%w: limits[%s]: %w: the namespace has %s", ErrInvalid, name, ErrUnknownLimit, c.ruleNames())
		}
		if p == (Patch{}) {
			return nil, fmt.Errorf("%w: limits[%s]: want at least one of limit, period, burst, algorithm", ErrInvalid, name)
		}
		f := merged[name]
		if p.Algorithm != 0 {
			if _, err := limit.ParseAlgorithm(p.Algorithm.String()); err != nil {
				return nil, fmt.Errorf("%w: limits[%s].algorithm: %w", ErrInvalid, name, err)
			}
			f.Algorithm = p.Algorithm
		}
		alg := f.Algorithm
		if alg == 0 {
			alg = c.ns.Rules[j].Algorithm
		}
		if p.Limit != 0 {
			f.Limit = p.Limit
		}
		if p.Period != 0 {
			f.Period = p.Period
		}
		if p.Burst != 0 {
			f.Burst = p.Burst
		} else if !alg.Bucket() {
			f.Burst = 0 // a file burst does not survive a switch to a window algorithm
		}
		// Negative fields and a burst on a window algorithm are refused by
		// applyPatches, for file and runtime overrides alike.
		merged[name] = f
	}
	rules, err := applyPatches(c.ns.Rules, c.defaulted, c.byName, merged)
	if err != nil {
		return nil, fmt.Errorf("%w: limits%w", ErrInvalid, err)
	}
	return rules, nil
}

func (c *compiled) ruleNames() string {
	s := ""
	for i, r := range c.ns.Rules {
		if i > 0 {
			s += ", "
		}
		s += r.Name
	}
	return s
}
