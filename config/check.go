package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// checker reads one file. It reports what it finds wrong with the file as
// YAML (syntax, shapes, types, unknown and duplicate keys, required fields,
// durations, algorithm names, the config-only rules on burst and patches)
// and builds the []policy.Namespace that policy.New then validates: policy
// owns the semantic rules (name syntax, bounds, counts, subjects, patched
// limits), and the checker only maps its messages back to the file.
//
// When the file is well-formed the namespaces are exactly what it says.
// Otherwise, so that everything policy.New reports is a real problem named at
// one place, the checker hands it stand-ins for what it already reported:
//
//   - a limit that does not decode becomes a valid placeholder rule, which
//     keeps the count and the indices of the namespace's limits;
//   - a later duplicate name, and a name that does not decode, becomes a
//     synthetic name no element has (so policy sees no duplicate, and paths
//     such as limits[per-minute] name one element);
//   - a namespace whose limits do not decode, an override without a usable
//     subject, a subject that is not a string, and a patch that does not
//     decode, names an unknown limit or patches an invalid one are left out.
//
// A snapshot built from stand-ins is never returned: the file had errors.
type checker struct {
	source string
	errs   []*Error
	// places maps each path policy.New may print for the namespaces it is
	// given to the path and line of the same thing in the file.
	places map[string]place
}

type place struct {
	path string
	line int
}

// nowhere is the policy path of what policy.New is not given: no path it
// prints starts with it.
const nowhere = "-"

func newChecker(source string) *checker {
	return &checker{source: source, places: make(map[string]place)}
}

func (c *checker) errorf(line int, path, format string, args ...any) {
	c.errs = append(c.errs, &Error{Source: c.source, Line: line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

// at records that policy path pp is path in the file, on line.
func (c *checker) at(pp, path string, line int) {
	if !strings.HasPrefix(pp, nowhere) {
		c.places[pp] = place{path, line}
	}
}

// atFields records the fields of a mapping that are there.
func (c *checker) atFields(f map[string]field, pp, path string) {
	for name, v := range f {
		c.at(join(pp, name), join(path, name), v.key.Line)
	}
}

// keyLine is the line of field f, or of its mapping n when f is absent.
func keyLine(f field, n *yaml.Node) int {
	if f.key != nil {
		return f.key.Line
	}
	return n.Line
}

// required returns the value of field name, or reports it missing.
func (c *checker) required(f map[string]field, n *yaml.Node, path, name string) *yaml.Node {
	if v := f[name]; v.present() {
		return v.val
	}
	c.errorf(keyLine(f[name], n), join(path, name), "required")
	return nil
}

// file reads data. It returns the namespaces for policy.New, or false when
// there is nothing policy.New could usefully check.
func (c *checker) file(data []byte) ([]policy.Namespace, bool) {
	if len(data) > MaxSize {
		c.errorf(0, "", "file is larger than %d bytes (4 MiB)", MaxSize)
		return nil, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		c.syntax(err, data)
		return nil, false
	}
	var next yaml.Node
	if err := dec.Decode(&next); err != io.EOF {
		if err != nil {
			c.syntax(err, data)
		} else {
			c.errorf(next.Line, "", "a second YAML document: the configuration is one document")
		}
		return nil, false
	}

	// An empty file is a configuration without namespaces, which policy
	// reports ("namespaces: at least one namespace is required").
	c.at("namespaces", "namespaces", 0)
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		return []policy.Namespace{}, true
	}
	root, ok := c.fields(doc.Content[0], "", "a mapping with a namespaces list", "namespaces")
	if !ok {
		return nil, false
	}
	f := root["namespaces"]
	if !f.present() {
		c.at("namespaces", "namespaces", keyLine(f, doc.Content[0]))
		return []policy.Namespace{}, true
	}
	c.at("namespaces", "namespaces", f.key.Line)
	items, ok := c.list(f.val, "namespaces")
	if !ok {
		return nil, false
	}
	names := c.names(items, "namespaces", "namespace")
	nss := make([]policy.Namespace, 0, len(items))
	for i, n := range items {
		if ns, ok := c.namespace(n, names[i], len(nss)); ok {
			nss = append(nss, ns)
		}
	}
	if len(nss) == 0 && len(items) > 0 {
		return nil, false // all reported; policy would only add "at least one namespace"
	}
	return nss, true
}

// named is the name of an element of a list of namespaces or limits.
type named struct {
	// path is the element's path in the file: parent[name], or parent[i]
	// when it has no name.
	path string
	// name is the name as written, "" when absent or unreadable.
	name string
	// pname is the name policy.New is given: name, or a synthetic name for
	// a later duplicate and for an absent or unreadable name or element.
	pname string
}

// names reads the names of the elements of a list, reporting names absent
// or given twice; kind is "namespace" or "limit". policy.New checks the
// syntax of the names.
func (c *checker) names(items []*yaml.Node, parent, kind string) []named {
	out := make([]named, len(items))
	synthetic := make([]bool, len(items))
	taken := make(map[string]bool, len(items))
	first := make(map[string]int, len(items))
	for i, n := range items {
		e := &out[i]
		e.path = elem(parent, "", i)
		if n.Kind != yaml.MappingNode || n.Style&yaml.TaggedStyle != 0 {
			synthetic[i] = true // reported when the element is read
			continue
		}
		v := lookup(n, "name")
		if v == nil || isNull(v) || v.Kind == yaml.ScalarNode && v.Value == "" && v.Style&yaml.TaggedStyle == 0 {
			c.errorf(n.Line, join(e.path, "name"), "required")
			synthetic[i] = true
			continue
		}
		s, ok := c.str(v, join(e.path, "name"))
		if !ok {
			synthetic[i] = true
			continue
		}
		e.name, e.path = s, elem(parent, s, i)
		taken[s] = true
		if line, dup := first[s]; dup {
			c.errorf(v.Line, join(e.path, "name"), "duplicate %s name (first on line %d)", kind, line)
			synthetic[i] = true
			continue
		}
		first[s] = v.Line
	}
	k := 0
	for i := range out {
		out[i].pname = out[i].name
		if !synthetic[i] {
			continue
		}
		for taken["placeholder-"+strconv.Itoa(k)] {
			k++
		}
		out[i].pname = "placeholder-" + strconv.Itoa(k)
		taken[out[i].pname] = true
	}
	return out
}

// namespace reads one namespace; pi is its index among those given to
// policy.New. It returns false when the namespace is left out.
func (c *checker) namespace(n *yaml.Node, nm named, pi int) (policy.Namespace, bool) {
	f, ok := c.fields(n, nm.path, "a mapping (name, subject_header, cost_header, on_store_error, limits, descriptors, descriptor_algorithm, request_descriptors, overrides)",
		"name", "subject_header", "cost_header", "on_store_error", "limits", "descriptors", "descriptor_algorithm", "request_descriptors", "overrides")
	if !ok {
		return policy.Namespace{}, false
	}
	lpath := join(nm.path, "limits")
	var items []*yaml.Node
	keep := true
	if l := f["limits"]; l.present() {
		items, keep = c.list(l.val, lpath)
	}
	pp := nowhere
	if keep {
		pp = elem("namespaces", nm.pname, pi)
	}
	c.at(pp, nm.path, n.Line)
	c.atFields(f, pp, nm.path)
	c.at(join(pp, "limits"), lpath, keyLine(f["limits"], n))

	ns := policy.Namespace{Name: nm.pname, SubjectHeader: DefaultSubjectHeader}
	if h := f["subject_header"]; h.present() {
		hpath := join(nm.path, "subject_header")
		if s, ok := c.str(h.val, hpath); ok {
			if headerName(s) {
				ns.SubjectHeader = s
			} else {
				c.errorf(h.val.Line, hpath, "%s is not an HTTP header name", lit(h.val))
			}
		}
	}
	if h := f["cost_header"]; h.present() {
		hpath := join(nm.path, "cost_header")
		if s, ok := c.str(h.val, hpath); ok {
			switch {
			case !headerName(s):
				c.errorf(h.val.Line, hpath, "%s is not an HTTP header name", lit(h.val))
			case strings.EqualFold(s, ns.SubjectHeader):
				c.errorf(h.val.Line, hpath, "%s is the subject header too", lit(h.val))
			default:
				ns.CostHeader = s
			}
		}
	}
	if p := f["on_store_error"]; p.present() {
		ppath := join(nm.path, "on_store_error")
		if s, ok := c.str(p.val, ppath); ok {
			if fp, err := policy.ParseFailurePolicy(s); err == nil {
				ns.OnStoreError = fp
			} else {
				c.errorf(p.val.Line, ppath, "%q is not a failure policy (want one of %s)", s, strings.Join(policy.FailurePolicies(), ", "))
			}
		}
	}
	if a := f["descriptor_algorithm"]; a.present() {
		ns.DescriptorAlgorithm, _ = c.algorithm(a.val, join(nm.path, "descriptor_algorithm"))
	}
	var stood map[string]bool
	if keep {
		ns.Rules, stood = c.rules(items, lpath, join(pp, "limits"))
	}
	if d := f["descriptors"]; d.present() {
		ns.Descriptors = c.descriptors(d, join(nm.path, "descriptors"), join(pp, "descriptors"))
	}
	if d := f["request_descriptors"]; d.present() {
		ns.RequestDescriptors = c.requestDescriptors(d, join(nm.path, "request_descriptors"), join(pp, "request_descriptors"))
	}
	ns.Overrides = c.overrides(f["overrides"], join(nm.path, "overrides"), join(pp, "overrides"), stood)
	return ns, keep
}

// matcherFields are the fields of an entry of descriptors.
var matcherFields = []string{"key", "value", "limits", "unlimited", "name", "replaces", "shadow_mode",
	"share_threshold", "detailed_metric", "value_to_metric", "descriptors"}

// descriptors reads a list of descriptor matchers (a namespace's, or a
// matcher's children); pp is its policy path.
func (c *checker) descriptors(f field, path, pp string) []policy.Matcher {
	items, ok := c.list(f.val, path)
	if !ok {
		return nil
	}
	out := make([]policy.Matcher, 0, len(items))
	for i, n := range items {
		if m, ok := c.matcher(n, path, pp, i); ok {
			out = append(out, m)
		}
	}
	return out
}

// matcher reads one descriptor matcher, the i-th of its list.
func (c *checker) matcher(n *yaml.Node, parent, ppParent string, i int) (policy.Matcher, bool) {
	var m policy.Matcher
	path := elem(parent, "", i)
	f, ok := c.fields(n, path, "a mapping ("+strings.Join(matcherFields, ", ")+")", matcherFields...)
	if !ok {
		return m, false
	}
	if k := f["key"]; k.present() {
		m.Key, _ = c.str(k.val, join(path, "key"))
	}
	if v := f["value"]; v.present() {
		m.Value, _ = c.str(v.val, join(path, "value"))
	}
	pname := m.Key
	switch {
	case m.Key == "":
		pname = strconv.Itoa(i)
	case m.Value != "":
		pname = m.Key + "=" + m.Value
	}
	pp := ppParent + policy.Elem(pname)
	c.at(pp, path, n.Line)
	c.atFields(f, pp, path)
	if !f["key"].present() {
		c.at(join(pp, "key"), join(path, "key"), n.Line)
	}
	if l := f["limits"]; l.present() {
		lpath := join(path, "limits")
		if items, ok := c.list(l.val, lpath); ok {
			m.Rules, _ = c.rules(items, lpath, join(pp, "limits"))
		}
	}
	m.Unlimited = c.flag(f["unlimited"], join(path, "unlimited"))
	m.ShareThreshold = c.flag(f["share_threshold"], join(path, "share_threshold"))
	m.DetailedMetric = c.flag(f["detailed_metric"], join(path, "detailed_metric"))
	m.ValueToMetric = c.flag(f["value_to_metric"], join(path, "value_to_metric"))
	if c.flag(f["shadow_mode"], join(path, "shadow_mode")) {
		for j := range m.Rules {
			m.Rules[j].Shadow = true
		}
	}
	if v := f["name"]; v.present() {
		m.Name, _ = c.str(v.val, join(path, "name"))
	}
	if r := f["replaces"]; r.present() {
		rpath := join(path, "replaces")
		items, _ := c.list(r.val, rpath)
		for j, item := range items {
			if s, ok := c.str(item, elem(rpath, "", j)); ok {
				m.Replaces = append(m.Replaces, s)
			}
		}
	}
	if d := f["descriptors"]; d.present() {
		m.Descriptors = c.descriptors(d, join(path, "descriptors"), join(pp, "descriptors"))
	}
	return m, true
}

// requestDescriptors reads a namespace's request_descriptors: a list of
// descriptors, each a list of entries {key, from, header, value, paths}.
// policy.New checks what the entries say.
func (c *checker) requestDescriptors(f field, path, pp string) []policy.RequestDescriptor {
	items, ok := c.list(f.val, path)
	if !ok {
		return nil
	}
	var out []policy.RequestDescriptor
	for i, item := range items {
		dpath := elem(path, "", i)
		c.at(elem(pp, "", i), dpath, item.Line)
		entries, ok := c.list(item, dpath)
		if !ok {
			continue
		}
		var rd policy.RequestDescriptor
		for j, en := range entries {
			epath := elem(dpath, "", j)
			ef, ok := c.fields(en, epath, "a mapping (key, from, header, value, paths)", "key", "from", "header", "value", "paths")
			if !ok {
				continue
			}
			var e policy.RequestEntry
			if v := c.required(ef, en, epath, "key"); v != nil {
				e.Key, _ = c.str(v, join(epath, "key"))
			}
			if v := c.required(ef, en, epath, "from"); v != nil {
				e.From, _ = c.str(v, join(epath, "from"))
			}
			if v := ef["header"]; v.present() {
				e.Header, _ = c.str(v.val, join(epath, "header"))
			}
			if v := ef["value"]; v.present() {
				e.Value, _ = c.str(v.val, join(epath, "value"))
			}
			if v := ef["paths"]; v.present() {
				ppath := join(epath, "paths")
				ps, _ := c.list(v.val, ppath)
				for k, p := range ps {
					if s, ok := c.str(p, elem(ppath, "", k)); ok {
						e.Paths = append(e.Paths, s)
					}
				}
			}
			rd = append(rd, e)
		}
		out = append(out, rd)
	}
	return out
}

// flag reads an optional boolean field (false when absent).
func (c *checker) flag(f field, path string) bool {
	if !f.present() {
		return false
	}
	if f.val.Kind != yaml.ScalarNode || f.val.ShortTag() != "!!bool" {
		c.errorf(f.val.Line, path, "want true or false, got %s", describe(f.val))
		return false
	}
	return f.val.Value == "true"
}

// headerName reports whether s is an HTTP field name (RFC 9110 token).
func headerName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !('a' <= b && b <= 'z' || 'A' <= b && b <= 'Z' || '0' <= b && b <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0) {
			return false
		}
	}
	return true
}

// rules reads the limits of a namespace, and the names, as written, of
// those that did not decode and stand as placeholders.
func (c *checker) rules(items []*yaml.Node, path, pp string) ([]limit.Rule, map[string]bool) {
	names := c.names(items, path, "limit")
	rules := make([]limit.Rule, len(items))
	stood := map[string]bool{}
	for j, n := range items {
		var ok bool
		rules[j], ok = c.rule(n, names[j], elem(pp, names[j].pname, j))
		if !ok && names[j].name != "" {
			stood[names[j].name] = true
		}
	}
	return rules, stood
}

// rule reads one limit; pp is its policy path. A limit that does not decode
// is returned as a valid placeholder, and false.
func (c *checker) rule(n *yaml.Node, nm named, pp string) (limit.Rule, bool) {
	placeholder := limit.Rule{Name: nm.pname, Algorithm: limit.FixedWindow, Limit: 1, Period: time.Second}
	c.at(pp, nm.path, n.Line)
	f, ok := c.fields(n, nm.path, "a mapping (name, algorithm, limit, period, burst, shadow_mode, lease)",
		"name", "algorithm", "limit", "period", "burst", "shadow_mode", "lease")
	if !ok {
		return placeholder, false
	}
	c.atFields(f, pp, nm.path)
	r := limit.Rule{Name: nm.pname}
	decoded := true
	if v := c.required(f, n, nm.path, "algorithm"); v != nil {
		r.Algorithm, ok = c.algorithm(v, join(nm.path, "algorithm"))
		decoded = decoded && ok
	} else {
		decoded = false
	}
	if v := c.required(f, n, nm.path, "limit"); v != nil {
		r.Limit, ok = c.integer(v, join(nm.path, "limit"))
		decoded = decoded && ok
	} else {
		decoded = false
	}
	if v := c.required(f, n, nm.path, "period"); v != nil {
		r.Period, ok = c.duration(v, join(nm.path, "period"))
		decoded = decoded && ok
	} else {
		decoded = false
	}
	if b := f["burst"]; b.present() {
		bpath := join(nm.path, "burst")
		if v, ok := c.integer(b.val, bpath); ok {
			if v <= 0 { // 0 would silently mean "= limit": omit burst for that
				c.errorf(b.val.Line, bpath, "%s", limit.OutOfRange(v))
			} else {
				r.Burst = v // policy.New refuses it on a window algorithm
			}
		}
	}
	r.Shadow = c.flag(f["shadow_mode"], join(nm.path, "shadow_mode"))
	r.Lease = c.flag(f["lease"], join(nm.path, "lease"))
	if !decoded {
		return placeholder, false
	}
	return r, true
}

// overrides reads the overrides of a namespace: one policy.Override per
// subject of each entry. pp is their policy path; stood names the limits
// that stand as placeholders, whose patches policy.New is not given (it
// would judge them against the placeholder).
func (c *checker) overrides(f field, path, pp string, stood map[string]bool) []policy.Override {
	if !f.present() {
		return nil
	}
	items, ok := c.list(f.val, path)
	if !ok {
		return nil
	}
	var out []policy.Override
	for k, item := range items {
		out = append(out, c.override(item, elem(path, "", k), pp, stood)...)
	}
	return out
}

// override reads one entry of overrides: its subjects (or descriptors,
// written "key=value,key=value"), each with the same patches. The policy
// paths of each subject's override (pp[subject]) are recorded at the
// entry's lines.
func (c *checker) override(n *yaml.Node, path, pp string, stood map[string]bool) []policy.Override {
	f, ok := c.fields(n, path, "a mapping (subjects or descriptors, limits)", "subjects", "descriptors", "limits")
	if !ok {
		return nil
	}
	var subjects, spaths []string
	var lines []int
	spath := join(path, "subjects")
	s, d := f["subjects"], f["descriptors"]
	switch {
	case s.present() && d.present():
		c.errorf(d.key.Line, join(path, "descriptors"), "give subjects or descriptors, not both")
	case s.present():
		items, _ := c.list(s.val, spath)
		for i, item := range items {
			if v, ok := c.str(item, elem(spath, "", i)); ok {
				subjects = append(subjects, v)
				spaths = append(spaths, elem(spath, "", i))
				lines = append(lines, item.Line)
			}
		}
		if len(items) == 0 {
			c.errorf(s.val.Line, spath, "at least one subject is required")
		}
	case d.present():
		dpath := join(path, "descriptors")
		items, _ := c.list(d.val, dpath)
		for i, item := range items {
			ipath := elem(dpath, "", i)
			v, ok := c.str(item, ipath)
			if !ok {
				continue
			}
			entries, err := policy.ParseDescriptorSubject(v)
			if err != nil {
				c.errorf(item.Line, ipath, "%v (want key=value,key=value, each query-escaped)", err)
				continue
			}
			subjects = append(subjects, policy.DescriptorSubject(entries, nil))
			spaths = append(spaths, ipath)
			lines = append(lines, item.Line)
		}
		if len(items) == 0 {
			c.errorf(d.val.Line, dpath, "at least one descriptor is required")
		}
	default:
		c.errorf(keyLine(f["subjects"], n), spath, "at least one subject is required")
	}
	lpath := join(path, "limits")
	patches, entries := c.patches(f["limits"], n, lpath)
	for name := range patches {
		if stood[name] {
			delete(patches, name) // judged against a placeholder, it would only add noise
			if len(patches) == 0 {
				patches = nil
			}
		}
	}
	out := make([]policy.Override, 0, len(subjects))
	for i, subj := range subjects {
		opp := pp + policy.Elem(policy.SubjectName(subj))
		c.at(opp, path, n.Line)
		c.at(join(opp, "subject"), spaths[i], lines[i])
		c.at(join(opp, "descriptor"), spaths[i], lines[i])
		c.at(join(opp, "limits"), lpath, keyLine(f["limits"], n))
		for name, line := range entries {
			c.at(join(opp, "limits")+policy.Elem(name), lpath+policy.Elem(name), line)
		}
		if patches != nil {
			out = append(out, policy.Override{Subject: subj, Limits: patches})
		}
	}
	return out
}

// patches reads the limits of an override entry (n): limit name -> patch,
// each as policy.NewPatch has it, and the line of each name. Only the
// patches that read are returned (nil when none does): policy.New would
// only add errors about what is already reported.
func (c *checker) patches(f field, n *yaml.Node, path string) (map[string]policy.Patch, map[string]int) {
	if !f.present() {
		c.errorf(keyLine(f, n), path, "at least one limit is required")
		return nil, nil
	}
	entries, ok := c.pairs(f.val, path, "a mapping from limit names to the fields they change")
	if !ok {
		return nil, nil
	}
	out := make(map[string]policy.Patch, len(entries))
	lines := make(map[string]int, len(entries))
	for _, e := range entries {
		name := e.key.Value
		lines[name] = e.key.Line
		if p, ok := c.patch(e, path+policy.Elem(name)); ok {
			out[name] = p
		}
	}
	if len(out) == 0 {
		return nil, lines
	}
	return out, lines // policy.New checks the count, the names and the patched limits
}

// patch reads one patch as written (its shape: a mapping of integers and
// strings) and has policy.NewPatch judge it.
func (c *checker) patch(e field, path string) (policy.Patch, bool) {
	const want = "a mapping (limit, period, burst, algorithm)"
	if isNull(e.val) {
		c.errorf(e.key.Line, path, "want %s, got nothing", want)
		return policy.Patch{}, false
	}
	f, ok := c.fields(e.val, path, want, "limit", "period", "burst", "algorithm")
	if !ok {
		return policy.Patch{}, false
	}
	var pf policy.PatchFields
	good := true
	if v := f["limit"]; v.present() {
		n, ok := c.integer(v.val, join(path, "limit"))
		pf.Limit, good = &n, good && ok
	}
	if v := f["burst"]; v.present() {
		n, ok := c.integer(v.val, join(path, "burst"))
		pf.Burst, good = &n, good && ok
	}
	if v := f["period"]; v.present() {
		s, ok := c.scalar(v.val, join(path, "period"), "a duration such as 500ms, 30s, 1m or 1h")
		pf.Period, good = &s, good && ok
	}
	if v := f["algorithm"]; v.present() {
		s, ok := c.str(v.val, join(path, "algorithm"))
		pf.Algorithm, good = &s, good && ok
	}
	if !good {
		return policy.Patch{}, false
	}
	p, err := policy.NewPatch(pf)
	if err != nil {
		var fe *policy.FieldError
		line, epath, msg := e.key.Line, path, err
		if errors.As(err, &fe) {
			msg = fe.Err
			if len(fe.Path) == 1 && f[fe.Path[0]].val != nil {
				line, epath = f[fe.Path[0]].val.Line, join(path, fe.Path[0])
			}
		}
		c.errorf(line, epath, "%s", msg)
		return policy.Patch{}, false
	}
	return p, true
}

// policyErrors records the errors of policy.New, each at its place in the
// file. An entry of overrides that lists several subjects gives each the
// same error once.
func (c *checker) policyErrors(err error) {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	seen := map[string]bool{}
	for _, e := range errs {
		fe := c.fromPolicy(e)
		if k := fe.Error(); !seen[k] {
			seen[k] = true
			c.errs = append(c.errs, fe)
		}
	}
}

// fromPolicy places one error of policy.New, a *policy.FieldError such as
// namespaces[orders].limits[per-minute].limit: -5 is outside [1, 1000000000],
// in the file: at the line of the longest part of its path the file has,
// with the rest of the path after it. Only the path is read, never the
// message, so rewording a message cannot move it.
func (c *checker) fromPolicy(err error) *Error {
	var fe *policy.FieldError
	if !errors.As(err, &fe) {
		return &Error{Source: c.source, Msg: err.Error()}
	}
	for i := len(fe.Path); i > 0; i-- {
		pl, ok := c.places[policy.FormatPath(fe.Path[:i])]
		if !ok {
			continue
		}
		path := pl.path
		if rest := policy.FormatPath(fe.Path[i:]); rest != "" {
			if strings.HasPrefix(rest, "[") {
				path += rest
			} else {
				path = join(path, rest)
			}
		}
		return &Error{Source: c.source, Line: pl.line, Path: path, Msg: fe.Err.Error()}
	}
	return &Error{Source: c.source, Path: policy.FormatPath(fe.Path), Msg: fe.Err.Error()}
}
