package policy

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// This file is the one home of the rules of an override and of a patch of a
// limit, for every way one is written: the configuration file's overrides
// (package config), the admin API's (transport/httpapi) and the stored ones
// (package overrides). The decoders check only the shape of what they read
// (a mapping, an integer, a string) and hand the values to NewPatch and to
// the checks below; every error is a *FieldError that names its place by a
// path, so that a decoder can say where it is (the YAML loader: its line)
// without reading the message.

// Patch changes some parameters of one named limit for an overridden
// subject. A zero field keeps the value underneath (the file's override of
// the subject, if any, then the namespace's limit): which is why a patch
// as written must never set one to zero (NewPatch).
type Patch struct {
	Limit     int64
	Period    time.Duration
	Burst     int64
	Algorithm limit.Algorithm
}

// PatchFields is a patch as written (a configuration file's override, an
// admin API request, a stored override): a nil field is absent. Its JSON
// form is the admin API's: {"limit":1000,"period":"1m","burst":200,
// "algorithm":"token_bucket"}.
type PatchFields struct {
	Limit     *int64  `json:"limit,omitempty"`
	Period    *string `json:"period,omitempty"`
	Burst     *int64  `json:"burst,omitempty"`
	Algorithm *string `json:"algorithm,omitempty"`
}

// errEmptyPatch is the error of a patch that sets nothing.
var errEmptyPatch = errors.New("want at least one of limit, period, burst, algorithm")

// NewPatch returns the Patch f writes, or the *FieldError of the first
// field that is wrong (Path: the field's name): a patch sets at least one
// field; limit and burst are written above 0 (0 would mean "keep"); the
// period is a duration (ParsePeriod) above 0; the algorithm is a name
// limit.ParseAlgorithm knows. Bounds that depend on the limit patched
// (limit.Rule.Normalize, a burst on a window algorithm) are checked when
// the patch is applied.
func NewPatch(f PatchFields) (Patch, error) {
	var p Patch
	if f.Limit == nil && f.Period == nil && f.Burst == nil && f.Algorithm == nil {
		return p, &FieldError{Err: errEmptyPatch}
	}
	if f.Algorithm != nil {
		a, err := limit.ParseAlgorithm(*f.Algorithm)
		if err != nil {
			return p, fieldErr(err, "algorithm")
		}
		p.Algorithm = a
	}
	if err := count(f.Limit, "limit", &p.Limit); err != nil {
		return p, err
	}
	if f.Period != nil {
		d, err := ParsePeriod(*f.Period)
		if err == nil && d <= 0 {
			err = errors.New(limit.PeriodOutOfRange(d))
		}
		if err != nil {
			return p, fieldErr(err, "period")
		}
		p.Period = d
	}
	if err := count(f.Burst, "burst", &p.Burst); err != nil {
		return p, err
	}
	return p, nil
}

// count sets *dst to a limit or a burst as written, if given: above 0, as
// 0 would mean "keep".
func count(v *int64, field string, dst *int64) error {
	if v == nil {
		return nil
	}
	if *v < 1 {
		return fieldErr(errors.New(limit.OutOfRange(*v)), field)
	}
	*dst = *v
	return nil
}

// Fields returns p as written: its zero fields absent.
func (p Patch) Fields() PatchFields {
	var f PatchFields
	if p.Limit != 0 {
		f.Limit = &p.Limit
	}
	if p.Period != 0 {
		s := p.Period.String()
		f.Period = &s
	}
	if p.Burst != 0 {
		f.Burst = &p.Burst
	}
	if p.Algorithm != 0 {
		s := p.Algorithm.String()
		f.Algorithm = &s
	}
	return f
}

// ParsePeriod reads a period as written: a Go duration such as "500ms",
// "30s", "1m" or "1h".
func ParsePeriod(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration such as 500ms, 30s, 1m or 1h", s)
	}
	return d, nil
}

// Override gives one subject of one namespace other parameters for some of
// the namespace's limits: the configuration file's overrides (one per
// subject listed), and the runtime ones set through the admin API, which
// may expire. It is a value: New, WithOverrides and CheckOverride do not
// retain the caller's Limits map, and the ones a snapshot returns must not
// be modified.
type Override struct {
	// Namespace names the namespace; a Namespace's own Overrides may leave
	// it empty.
	Namespace string
	Subject   string
	// Limits maps limit names of the namespace to patches: 1 to
	// limit.MaxRules, each setting at least one field.
	Limits map[string]Patch
	// ExpiresAt, when not zero, is the instant a runtime override stops
	// applying.
	ExpiresAt time.Time
	// UpdatedAt is when a runtime override was last set (stores keep it);
	// zero for the file's.
	UpdatedAt time.Time
}

// Expired reports whether o has an expiry that is not after now.
func (o *Override) Expired(now time.Time) bool {
	return !o.ExpiresAt.IsZero() && !o.ExpiresAt.After(now)
}

// FieldError is a validation error at one place of a policy. Path holds
// the place's segments, field names plain and list elements in brackets:
// ["namespaces", "[orders]", "limits", "[per-minute]", "limit"], which
// prints as namespaces[orders].limits[per-minute].limit. It wraps ErrInvalid
// and Err.
type FieldError struct {
	Path []string
	Err  error
}

func (e *FieldError) Error() string {
	if len(e.Path) == 0 {
		return e.Err.Error()
	}
	return FormatPath(e.Path) + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() []error { return []error{ErrInvalid, e.Err} }

// FormatPath prints a FieldError's path.
func FormatPath(path []string) string {
	var b strings.Builder
	for i, seg := range path {
		if i > 0 && !strings.HasPrefix(seg, "[") {
			b.WriteByte('.')
		}
		b.WriteString(seg)
	}
	return b.String()
}

// Elem is the path segment of a list element: "[name]".
func Elem(name string) string { return "[" + name + "]" }

// fieldErr returns err at path, appended to err's own path when it is a
// *FieldError already, and a limit.RuleError at its field.
func fieldErr(err error, path ...string) *FieldError {
	var fe *FieldError
	if errors.As(err, &fe) {
		return &FieldError{Path: append(append([]string(nil), path...), fe.Path...), Err: fe.Err}
	}
	var re *limit.RuleError
	if errors.As(err, &re) {
		return &FieldError{Path: append(append([]string(nil), path...), re.Field), Err: ruleMsg{re}}
	}
	return &FieldError{Path: append([]string(nil), path...), Err: err}
}

// ruleMsg is a limit.RuleError placed at its field by a FieldError: its
// message without the field, and still the error it wraps.
type ruleMsg struct{ re *limit.RuleError }

func (m ruleMsg) Error() string { return m.re.Msg }
func (m ruleMsg) Unwrap() error { return m.re }

// applyPatches returns a copy of rules with patches applied, normalized:
// each names a limit of the set (byName); a burst only on a bucket
// algorithm, as patched; the patched limit normalizes. A limit patched to
// a new limit keeps following it with its burst when that defaulted to the
// limit (defaulted). Errors are *FieldError at limits[name].
func applyPatches(rules []limit.Rule, defaulted []bool, byName map[string]int, patches map[string]Patch) ([]limit.Rule, error) {
	out := append([]limit.Rule(nil), rules...)
	for _, name := range sortedNames(patches) {
		at := []string{"limits", Elem(name)}
		j, ok := byName[name]
		if !ok {
			return nil, fieldErr(fmt.Errorf("%w: the namespace has %s", ErrUnknownLimit, ruleNames(rules)), at...)
		}
		p := patches[name]
		if p.Limit < 0 || p.Burst < 0 || p.Period < 0 {
			return nil, fieldErr(errors.New("limit, period and burst must not be negative"), at...)
		}
		r := out[j]
		if p.Limit != 0 {
			r.Limit = p.Limit
			if p.Burst == 0 && defaulted[j] {
				r.Burst = 0 // the burst followed the limit: keep following it
			}
		}
		if p.Period != 0 {
			r.Period = p.Period
		}
		if p.Burst != 0 {
			r.Burst = p.Burst
		}
		if p.Algorithm != 0 {
			r.Algorithm = p.Algorithm
		}
		if p.Burst != 0 {
			if err := checkBurst(r); err != nil {
				return nil, fieldErr(err, at...)
			}
		}
		n, err := r.Normalize()
		if err != nil {
			return nil, fieldErr(err, at...)
		}
		out[j] = n
	}
	return out, nil
}

// checkBurst refuses a burst written for a window algorithm, which
// Normalize would drop silently: a limit's own or a patch's.
func checkBurst(r limit.Rule) error {
	if r.Burst != 0 && r.Algorithm != 0 && !r.Algorithm.Bucket() && r.Algorithm.String() != "" {
		if _, err := limit.ParseAlgorithm(r.Algorithm.String()); err == nil {
			return fieldErr(errors.New(limit.BurstOnWindow(r.Algorithm)), "burst")
		}
	}
	return nil
}

// checkPatches checks the set of patches of one override: 1 to
// limit.MaxRules of them, each setting a field.
func checkPatches(patches map[string]Patch) error {
	if len(patches) == 0 || len(patches) > limit.MaxRules {
		return fieldErr(fmt.Errorf("%d limits, want 1 to %d", len(patches), limit.MaxRules), "limits")
	}
	for _, name := range sortedNames(patches) {
		if patches[name] == (Patch{}) {
			return fieldErr(errEmptyPatch, "limits", Elem(name))
		}
	}
	return nil
}

// mergePatches returns file with patches laid on it field by field: a field
// a patch sets wins, one it leaves at zero comes from file. A burst of the
// file does not survive a patch to a window algorithm.
func mergePatches(rules []limit.Rule, byName map[string]int, file, patches map[string]Patch) map[string]Patch {
	merged := make(map[string]Patch, len(patches)+len(file))
	for name, p := range file {
		merged[name] = p
	}
	for name, p := range patches {
		f := merged[name]
		if p.Algorithm != 0 {
			f.Algorithm = p.Algorithm
		}
		alg := f.Algorithm
		if j, ok := byName[name]; ok && alg == 0 {
			alg = rules[j].Algorithm
		}
		if p.Limit != 0 {
			f.Limit = p.Limit
		}
		if p.Period != 0 {
			f.Period = p.Period
		}
		if p.Burst != 0 {
			f.Burst = p.Burst
		} else if alg != 0 && !alg.Bucket() {
			f.Burst = 0
		}
		merged[name] = f
	}
	return merged
}

func sortedNames[V any](m map[string]V) []string {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

func ruleNames(rules []limit.Rule) string {
	names := make([]string, len(rules))
	for i, r := range rules {
		names[i] = r.Name
	}
	return strings.Join(names, ", ")
}

// index returns the path segment of the i'th element.
func index(i int) string { return Elem(strconv.Itoa(i)) }
