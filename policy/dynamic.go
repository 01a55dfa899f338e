package policy

import (
	"errors"
	"fmt"
	"maps"
	"sort"
	"strings"
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

// Sentinel errors of overrides. Every error of CheckOverride and every
// OverrideError wraps ErrInvalid and, where it applies, one of these (or
// ErrUnknownNamespace).
var (
	// ErrUnknownLimit is wrapped by the error for a patch of a limit the
	// namespace does not define.
	ErrUnknownLimit = errors.New("unknown limit")
	// ErrExpired is wrapped by the error for an override whose expiry is
	// not after now.
	ErrExpired = errors.New("override expired")
)

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
	applied map[string][]Override
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
func (s *Snapshot) RuntimeOverrides(ns string) []Override {
	if s.runtime == nil {
		return nil
	}
	return s.runtime.applied[ns]
}

// CheckOverride validates o against s the way the configuration file's
// overrides are validated, and returns the limit set the subject would
// get: the namespace must exist (ErrUnknownNamespace), the subject pass
// ValidateSubject, o name 1 to limit.MaxRules limits of the namespace
// (ErrUnknownLimit), each patch set at least one field and none negative,
// burst only for a bucket algorithm, the patched rules normalize, and the
// expiry, when set, be after now (ErrExpired). Every error is a
// *FieldError, its path relative to the override (limits[per-minute].burst),
// and wraps ErrInvalid.
func (s *Snapshot) CheckOverride(o Override, now time.Time) ([]limit.Rule, error) {
	base := s.Base()
	c, ok := base.namespaces[o.Namespace]
	if !ok {
		return nil, fieldErr(fmt.Errorf("%w %q", ErrUnknownNamespace, o.Namespace), "namespace")
	}
	if o.Expired(now) {
		return nil, fieldErr(fmt.Errorf("%w: %s is not in the future", ErrExpired, o.ExpiresAt.UTC().Format(time.RFC3339Nano)), "expires_at")
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
func (s *Snapshot) WithOverrides(ovs []Override, now time.Time) (*Snapshot, []*OverrideError) {
	base := s.Base()
	layer := &runtimeLayer{base: base, applied: map[string][]Override{}}
	out := &Snapshot{version: base.version, loadedAt: base.loadedAt, names: base.names, runtime: layer,
		namespaces: make(map[string]*compiled, len(base.namespaces))}
	for name, c := range base.namespaces {
		out.namespaces[name] = c
	}

	// The last override of each namespace and subject, by namespace.
	byNS := map[string]map[string]Override{}
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
			m = map[string]Override{}
			byNS[o.Namespace] = m
		}
		m[o.Subject] = o
	}
	for name, m := range byNS {
		c := base.namespaces[name]
		nc := &compiled{ns: c.ns, defaulted: c.defaulted, byName: c.byName, files: c.files, tree: c.tree,
			overrides: make(map[string][]limit.Rule, len(c.overrides)+len(m))}
		for subj, rules := range c.overrides {
			nc.overrides[subj] = rules
		}
		applied := make([]Override, 0, len(m))
		for subj, o := range m {
			rules, err := nc.runtimeRules(subj, o.Limits, c.files[subj])
			if err != nil {
				errs = append(errs, &OverrideError{name, subj, err})
				continue
			}
			nc.overrides[subj] = rules
			o.Limits = maps.Clone(o.Limits)
			applied = append(applied, o)
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
	rules, defaulted, byName, err := c.target(subject)
	if err != nil {
		return nil, err
	}
	if err := checkPatches(patches); err != nil {
		return nil, err
	}
	return applyPatches(rules, defaulted, byName, mergePatches(rules, byName, file, patches))
}

// errInvalidTarget is target's error for a descriptor whose node's limits
// are invalid: already reported, so New does not judge its overrides.
var errInvalidTarget = errors.New("the descriptor's limits are invalid")

// target returns the limit set an override of subject patches: the
// namespace's, or for a descriptor (DescriptorSubject) the limit set of the
// node it resolves to, with the burst defaults and the name index it is
// patched with.
func (c *compiled) target(subject string) ([]limit.Rule, []bool, map[string]int, error) {
	if !IsDescriptorSubject(subject) {
		if err := ValidateSubject(subject); err != nil {
			return nil, nil, nil, fieldErr(err, "subject")
		}
		if len(c.ns.Rules) == 0 {
			return nil, nil, nil, fieldErr(errors.New("the namespace limits descriptors only: override a descriptor"), "subject")
		}
		return c.ns.Rules, c.defaulted, c.byName, nil
	}
	entries, err := ParseDescriptorSubject(subject)
	if err != nil {
		return nil, nil, nil, fieldErr(err, "descriptor")
	}
	n, resolved, _ := c.resolve(Descriptor{Entries: entries})
	switch {
	case n != nil && n.invalid:
		return nil, nil, nil, errInvalidTarget
	case n == nil || n.rules == nil:
		return nil, nil, nil, fieldErr(errors.New("the descriptor matches no limit of the namespace"), "descriptor")
	case resolved != subject:
		return nil, nil, nil, fieldErr(fmt.Errorf("the descriptor shares its state with every value of its pattern: override %s",
			strings.TrimPrefix(resolved, descriptorMark)), "descriptor")
	}
	return n.rules, n.defaulted, n.byName, nil
}
