// Package policy turns configuration into an immutable Snapshot that resolves
// a request (namespace, subject) to the limit set that applies to it.
//
// A Snapshot is built once per configuration version (file load, reload,
// override change), validated as a whole, and then only read: the service
// holds the current one behind an atomic pointer and swaps it on change, so a
// check in flight finishes on the snapshot it started with. Per-subject
// overrides are resolved at build time; Resolve does no allocation.
package policy

import (
	"errors"
	"fmt"
	"maps"
	"regexp"
	"sort"
	"time"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// Sentinel errors.
var (
	// ErrUnknownNamespace is returned by Resolve for a namespace the
	// snapshot does not define.
	ErrUnknownNamespace = errors.New("unknown namespace")
	// ErrInvalid wraps every validation error of New.
	ErrInvalid = errors.New("invalid policy")
	// ErrNoSubjectLimits is returned by Resolve for a namespace that has
	// descriptors and no limits per subject.
	ErrNoSubjectLimits = errors.New("no limits per subject")
)

// MaxSubjectLen bounds the length of a subject identifier, in bytes.
const MaxSubjectLen = 256

var nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// Namespace is a named group of limits, such as "orders".
type Namespace struct {
	Name string
	// SubjectHeader is the request header gate and proxy modes read the
	// subject from ("X-User-ID").
	SubjectHeader string
	// CostHeader, when set, is the request header gate and proxy modes read
	// a request's cost from: one a trusted hop in front sets, dropping the
	// client's own. Empty (the default): every request costs 1, whatever
	// its headers say, so a client cannot choose what it is charged.
	CostHeader string
	// Rules is the limit set every subject gets unless overridden.
	Rules []limit.Rule
	// Overrides give listed subjects other parameters for some Rules, one
	// Override per subject (their Namespace may be left empty).
	Overrides []Override
	// OnStoreError answers checks when the store fails (see FailurePolicy);
	// the zero value is FailLocal.
	OnStoreError FailurePolicy
	// Descriptors is the tree of limits of a request's descriptors
	// (descriptor.go); nil when the namespace limits subjects only.
	Descriptors []Matcher
	// DescriptorAlgorithm enforces a limit a descriptor carries itself
	// (Envoy's descriptor limit). Default limit.FixedWindow, as Envoy's own
	// rate limit service counts.
	DescriptorAlgorithm limit.Algorithm
	// RequestDescriptors say how the gate, the reverse proxy and the
	// middleware build an HTTP request's descriptors (request.go).
	RequestDescriptors []RequestDescriptor
}

// LimitSet is what a request resolves to.
type LimitSet struct {
	Namespace *Namespace
	// Rules is the effective limit set, normalized. Callers must not modify it.
	Rules []limit.Rule
	// Overridden reports whether a per-subject override applies.
	Overridden bool
}

type compiled struct {
	ns        *Namespace
	overrides map[string][]limit.Rule
	// defaulted[j] reports whether ns.Rules[j].Burst was left to default
	// (to follow the limit); byName maps rule names to indices. Runtime
	// overrides (dynamic.go) patch with the same semantics as the file's.
	defaulted []bool
	byName    map[string]int
	// files maps the subjects of the file's overrides to their patches,
	// which a runtime override of the subject patches on top of.
	files map[string]map[string]Patch
	// tree is the compiled descriptor tree (descriptor.go).
	tree level
}

// Snapshot is an immutable, validated policy. It is safe for concurrent use.
type Snapshot struct {
	version    string
	loadedAt   time.Time
	namespaces map[string]*compiled
	names      []string
	// runtime is the layer of runtime overrides (dynamic.go); nil for a
	// snapshot built by New.
	runtime *runtimeLayer
}

// New validates namespaces and builds a Snapshot. version identifies the
// configuration (e.g. a content hash) and loadedAt when it was built. Every
// problem found is reported, each a *FieldError naming its place
// (namespaces[orders].limits[per-minute].limit: ...), joined in one error
// wrapping ErrInvalid. New takes ownership of namespaces.
func New(namespaces []Namespace, version string, loadedAt time.Time) (*Snapshot, error) {
	s := &Snapshot{version: version, loadedAt: loadedAt, namespaces: make(map[string]*compiled, len(namespaces))}
	var errs []error
	fail := func(err error, path ...string) { errs = append(errs, fieldErr(err, path...)) }
	if len(namespaces) == 0 {
		fail(errors.New("at least one namespace is required"), "namespaces")
	}
	for i := range namespaces {
		ns := &namespaces[i]
		where := []string{"namespaces", index(i)}
		if ns.Name != "" {
			where = []string{"namespaces", Elem(ns.Name)}
		}
		at := func(p ...string) []string { return append(append([]string(nil), where...), p...) }
		if !nameRE.MatchString(ns.Name) {
			fail(fmt.Errorf("%q must be 1-64 letters, digits, '_', '.' or '-'", ns.Name), at("name")...)
		} else if _, dup := s.namespaces[ns.Name]; dup {
			fail(errors.New("duplicate namespace"), at("name")...)
		}
		if len(ns.Rules) == 0 && len(ns.Descriptors) == 0 {
			fail(errors.New("a namespace needs limits (per subject) or descriptors"), at("limits")...)
		}
		if a := ns.DescriptorAlgorithm; a != 0 && a.String() == fmt.Sprintf("algorithm(%d)", uint8(a)) {
			fail(fmt.Errorf("%v is not an algorithm", a), at("descriptor_algorithm")...)
		}
		if ns.OnStoreError > FailClosed {
			fail(fmt.Errorf("%v is not a failure policy", ns.OnStoreError), at("on_store_error")...)
		}
		defaulted, byName, invalid := checkRules(ns.Rules, at(), fail)
		for j, rd := range ns.RequestDescriptors {
			if err := rd.validate(); err != nil {
				fail(err, at("request_descriptors", index(j))...)
			}
		}
		c := &compiled{ns: ns, overrides: map[string][]limit.Rule{}, defaulted: defaulted, byName: byName,
			files: map[string]map[string]Patch{}, tree: compileTree(ns.Descriptors, where, fail)}
		for _, o := range ns.Overrides {
			oat := at("overrides", Elem(SubjectName(o.Subject)))
			base, bdefaulted, bbyName, err := c.target(o.Subject)
			if errors.Is(err, errInvalidTarget) {
				continue // its limits are reported
			}
			if err != nil {
				fail(err, oat...)
				continue
			}
			if _, dup := c.overrides[o.Subject]; dup {
				fail(fmt.Errorf("%q is overridden twice", SubjectName(o.Subject)), append(oat, "subject")...)
				continue
			}
			if err := checkPatches(o.Limits); err != nil {
				fail(err, oat...)
				continue
			}
			patches := o.Limits
			if !IsDescriptorSubject(o.Subject) {
				patches = without(o.Limits, invalid)
			}
			if len(patches) == 0 {
				continue
			}
			rules, err := applyPatches(base, bdefaulted, bbyName, patches)
			if err != nil {
				fail(err, oat...)
				continue
			}
			c.overrides[o.Subject] = rules
			c.files[o.Subject] = o.Limits
		}
		if nameRE.MatchString(ns.Name) {
			s.namespaces[ns.Name] = c
		}
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	for name := range s.namespaces {
		s.names = append(s.names, name)
	}
	sort.Strings(s.names)
	return s, nil
}

// checkRules validates and normalizes a limit set in place, reporting each
// problem at where: the indices of the rules whose burst was left to
// default (to follow the limit), the index of each name, and the names of
// the rules that are invalid.
func checkRules(rules []limit.Rule, where []string, fail func(error, ...string)) (defaulted []bool, byName map[string]int, invalid map[string]bool) {
	at := func(p ...string) []string { return append(append([]string(nil), where...), p...) }
	byName = make(map[string]int, len(rules))
	// A burst left at 0 defaults to the limit, and keeps following it when
	// an override changes the limit; an explicit burst stays.
	defaulted = make([]bool, len(rules))
	// invalid holds the limits already reported: an override that patches
	// one is not checked, its errors would only repeat them.
	invalid = map[string]bool{}
	if len(rules) > limit.MaxRules {
		fail(fmt.Errorf("%d limits, at most %d", len(rules), limit.MaxRules), at("limits")...)
	}
	for j := range rules {
		defaulted[j] = rules[j].Burst == 0
		r := &rules[j]
		rat := at("limits", index(j))
		if r.Name != "" {
			rat = at("limits", Elem(r.Name))
		}
		if !nameRE.MatchString(r.Name) {
			fail(fmt.Errorf("%q must be 1-64 letters, digits, '_', '.' or '-'", r.Name), append(rat, "name")...)
		} else if _, dup := byName[r.Name]; dup {
			fail(errors.New("duplicate limit name"), append(rat, "name")...)
		}
		byName[r.Name] = j
		if err := checkBurst(*r); err != nil {
			fail(err, rat...)
			invalid[r.Name] = true
			r.Burst = 0 // and see what else is wrong with it
		}
		n, err := r.Normalize()
		if err != nil {
			fail(err, rat...)
			invalid[r.Name] = true
			continue
		}
		*r = n
	}
	if len(rules) > 1 {
		for j := range rules {
			if rules[j].Lease {
				fail(errors.New("a leased limit stands alone in its limits (give it a namespace or a descriptor of its own; a request checks several descriptors at once)"),
					at("limits", Elem(rules[j].Name), "lease")...)
			}
		}
	}
	return defaulted, byName, invalid
}

// ValidateSubject reports whether s is a usable subject identifier: 1 to
// MaxSubjectLen bytes of valid UTF-8 with no control characters. (Invalid
// UTF-8 would not survive a JSON round trip: two subjects could become one
// in a stored override.)
func ValidateSubject(s string) error {
	if s == "" || len(s) > MaxSubjectLen {
		return fmt.Errorf("subject must be 1 to %d bytes, got %d", MaxSubjectLen, len(s))
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("subject %q is not valid UTF-8", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return fmt.Errorf("subject %q contains a control character", s)
		}
	}
	return nil
}

// Resolve returns the limit set for subject in namespace ns. It returns an
// error wrapping ErrUnknownNamespace, or ErrNoSubjectLimits for a
// namespace that limits descriptors only.
func (s *Snapshot) Resolve(ns, subject string) (LimitSet, error) {
	c, ok := s.namespaces[ns]
	if !ok {
		return LimitSet{}, fmt.Errorf("%w %q", ErrUnknownNamespace, ns)
	}
	if len(c.ns.Rules) == 0 {
		return LimitSet{Namespace: c.ns}, fmt.Errorf("%w: namespace %q limits descriptors only", ErrNoSubjectLimits, ns)
	}
	if rules, ok := c.overrides[subject]; ok {
		return LimitSet{Namespace: c.ns, Rules: rules, Overridden: true}, nil
	}
	return LimitSet{Namespace: c.ns, Rules: c.ns.Rules}, nil
}

// Namespace returns the namespace named name.
func (s *Snapshot) Namespace(name string) (*Namespace, bool) {
	c, ok := s.namespaces[name]
	if !ok {
		return nil, false
	}
	return c.ns, true
}

// Names returns the namespace names, sorted.
func (s *Snapshot) Names() []string { return append([]string(nil), s.names...) }

// Version identifies the configuration the snapshot was built from.
func (s *Snapshot) Version() string { return s.version }

// LoadedAt is when the snapshot was built.
func (s *Snapshot) LoadedAt() time.Time { return s.loadedAt }

// Key returns the store key of a subject: "namespace:subject". Namespace
// names cannot contain ':', so keys of different namespaces never collide.
func Key(ns, subject string) string { return ns + ":" + subject }

// without returns patches without those of names (patches itself when it
// has none).
func without(patches map[string]Patch, names map[string]bool) map[string]Patch {
	out := patches
	for name := range patches {
		if names[name] {
			if len(out) == len(patches) {
				out = maps.Clone(patches)
			}
			delete(out, name)
		}
	}
	return out
}
