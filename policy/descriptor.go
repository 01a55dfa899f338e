package policy

import (
	"errors"
	"fmt"
	"net/url"
	"regexp"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/limit"
)

// Descriptors: a request may name, besides (or instead of) its subject, any
// number of descriptors, each an ordered list of entries, as Envoy's rate
// limit protocol does: [(remote_address, 10.0.0.7)], [(route, POST
// /orders), (user, 42)], [(endpoint, orders)]. A namespace's tree of
// Matchers says which limit set each one gets, with the semantics of
// envoyproxy/ratelimit's configuration:
//
//   - A descriptor walks the tree entry by entry. At each level, its entry
//     matches the child of the same key and value first, then the first
//     child (in configuration order) whose value is a pattern the value
//     matches (each '*' matches any run of characters, the empty one
//     included), then the child of the same key with no value (any value).
//     Keys match exactly.
//   - A limit applies only when the descriptor has as many entries as the
//     depth of the node it ends on: a descriptor shorter or longer than the
//     tree's path gets none. A node may carry a limit set and children.
//   - A node without a limit set answers "no limit" (a placeholder, or an
//     allow-list entry that overrides a key-only sibling); an Unlimited node
//     answers unlimited; a Blocked node (Envoy's requests_per_unit: 0)
//     denies every request.
//   - Each distinct descriptor value path is its own subject, with its own
//     state, except where a node with ShareThreshold matched by pattern:
//     every value the pattern matches then shares one state.
//   - A node's Name can be Replaced by another matched node of the same
//     request: the replaced descriptor is not checked.
//
// Entry keys and values match exactly as sent, unlike envoyproxy/ratelimit,
// which matches on "key_value" joined by an underscore and so confuses
// (a_b, c) with (a, b_c) and lets a pattern in a key match other keys.

// MaxEntries bounds the entries of one descriptor, MaxEntryLen the bytes
// of a key or a value.
const (
	MaxEntries  = 16
	MaxEntryLen = 256
)

// ErrInvalidDescriptor wraps the errors of ValidateDescriptor.
var ErrInvalidDescriptor = errors.New("invalid descriptor")

// Entry is one (key, value) pair of a descriptor.
type Entry struct {
	Key   string
	Value string
}

// Descriptor is one descriptor of a request.
type Descriptor struct {
	Entries []Entry
	// Limit, when not nil, is the descriptor's own limit (Envoy sends it
	// when its route says so): it replaces what the tree says, as in
	// envoyproxy/ratelimit.
	Limit *DescriptorLimit
}

// DescriptorLimit is a limit a descriptor carries itself: RequestsPerUnit
// per Unit, enforced with the namespace's DescriptorAlgorithm.
type DescriptorLimit struct {
	RequestsPerUnit int64
	Unit            time.Duration
}

// Matcher is one node of a namespace's descriptor tree: the limit set of
// the descriptors whose entry at its depth it matches (see the package
// documentation above).
type Matcher struct {
	// Key is the entry key it matches; required.
	Key string
	// Value is the entry value it matches: "" matches any value (each its
	// own subject), one with '*' is a pattern.
	Value string
	// Rules is the node's limit set; nil for none.
	Rules []limit.Rule
	// Unlimited answers unlimited: nothing is checked (exclusive with
	// Rules and Blocked).
	Unlimited bool
	// Blocked denies every request (Envoy's requests_per_unit: 0;
	// exclusive with Rules).
	Blocked bool
	// Unit is the window Blocked reports (Envoy's unit), for the answer.
	Unit time.Duration
	// Name names the node's limit for Replaces; Replaces lists the names
	// of other nodes' limits that this one, when matched in the same
	// request, takes the place of.
	Name     string
	Replaces []string
	// ShareThreshold makes every value Value's pattern matches share one
	// state (Value must hold a '*').
	ShareThreshold bool
	// DetailedMetric and ValueToMetric shape the key of the node's
	// per-descriptor metrics, as in envoyproxy/ratelimit (see Match.Stat).
	DetailedMetric bool
	ValueToMetric  bool
	// Descriptors are the children: the next entry of a descriptor.
	Descriptors []Matcher
}

// Match is what one descriptor resolves to.
type Match struct {
	// Key is the store key of the descriptor's state; "" when nothing is
	// checked (no limit, unlimited, blocked, replaced).
	Key string
	// Rules is the limit set to check; nil when nothing is.
	Rules []limit.Rule
	// Limited reports a limit: Rules to check, or Blocked.
	Limited bool
	// Unlimited, Blocked: the node's; Replaced: another descriptor of the
	// request replaced this one's limit (nothing is checked).
	Unlimited, Blocked, Replaced bool
	// Unit is the window a Blocked node reports.
	Unit time.Duration
	// Name is the node's limit name.
	Name string
	// Stat is the descriptor's metric key, envoyproxy/ratelimit's:
	// "domain.key_value.subkey" (see statKey); "" when no limit applies.
	Stat string
	// Overridden reports a runtime override of this descriptor.
	Overridden bool
}

// node is a compiled Matcher.
type node struct {
	m        *Matcher
	rules    []limit.Rule
	pattern  []string // Value split at '*', when it has one
	children level
	// defaulted and byName are checkRules' for rules: what overrides of
	// the node's descriptors are applied with.
	defaulted []bool
	byName    map[string]int
	// invalid: the node's limits did not validate (reported), so its
	// overrides are not judged.
	invalid bool
}

// level is the compiled children of a node (or a namespace's roots).
type level struct {
	exact map[Entry]*node
	wild  []*node // in configuration order
	any   map[string]*node
}

func (l *level) empty() bool { return len(l.exact) == 0 && len(l.wild) == 0 && len(l.any) == 0 }

// match finds the child an entry goes to, and how: exactly, by pattern, or
// by key alone.
func (l *level) match(e Entry) (*node, matchKind) {
	if n, ok := l.exact[e]; ok {
		return n, byValue
	}
	for _, n := range l.wild {
		if n.m.Key == e.Key && wildMatch(n.pattern, e.Value) {
			return n, byPattern
		}
	}
	if n, ok := l.any[e.Key]; ok {
		return n, byKey
	}
	return nil, 0
}

type matchKind uint8

const (
	byValue matchKind = iota + 1
	byPattern
	byKey
)

// wildMatch reports whether v matches the pattern split at its '*'s: the
// first piece is a prefix, the last a suffix, the others appear in order
// between them, without overlap.
func wildMatch(pieces []string, v string) bool {
	first, last := pieces[0], pieces[len(pieces)-1]
	if !strings.HasPrefix(v, first) {
		return false
	}
	v = v[len(first):]
	for _, p := range pieces[1 : len(pieces)-1] {
		i := strings.Index(v, p)
		if i < 0 {
			return false
		}
		v = v[i+len(p):]
	}
	return strings.HasSuffix(v, last)
}

// ValidateDescriptor reports whether d is usable: at most MaxEntries
// entries, keys not empty, keys and values at most MaxEntryLen bytes of
// valid UTF-8 without control characters, and a positive limit of its own,
// if any. A descriptor without entries is valid and matches nothing.
func ValidateDescriptor(d Descriptor) error {
	if len(d.Entries) > MaxEntries {
		return fmt.Errorf("%w: %d entries, at most %d", ErrInvalidDescriptor, len(d.Entries), MaxEntries)
	}
	for i, e := range d.Entries {
		if e.Key == "" {
			return fmt.Errorf("%w: entry %d has an empty key", ErrInvalidDescriptor, i)
		}
		for _, s := range []string{e.Key, e.Value} {
			if err := checkText(s); err != nil {
				return fmt.Errorf("%w: entry %d: %w", ErrInvalidDescriptor, i, err)
			}
		}
	}
	if l := d.Limit; l != nil && (l.RequestsPerUnit < 0 || l.RequestsPerUnit > limit.MaxLimit || l.Unit <= 0) {
		return fmt.Errorf("%w: its own limit %d per %v", ErrInvalidDescriptor, l.RequestsPerUnit, l.Unit)
	}
	return nil
}

func checkText(s string) error {
	if len(s) > MaxEntryLen {
		return fmt.Errorf("%d bytes, at most %d", len(s), MaxEntryLen)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%q is not valid UTF-8", s)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return fmt.Errorf("%q contains a control character", s)
		}
	}
	return nil
}

// descriptorMark starts the store key suffix of a descriptor: subjects
// cannot hold a control character, so a descriptor's key never collides
// with a subject's.
const descriptorMark = "\x1d"

// DescriptorSubject is the subject string a descriptor's state and its
// runtime overrides are kept under: a control character (no subject has
// one) and the entries as "key=value" pairs, each query-escaped, joined by
// ",". shared[i], when set, replaces entry i's value (a ShareThreshold
// pattern).
func DescriptorSubject(entries []Entry, shared []string) string {
	var b strings.Builder
	b.WriteString(descriptorMark)
	for i, e := range entries {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(url.QueryEscape(e.Key))
		b.WriteByte('=')
		v := e.Value
		if shared != nil && shared[i] != "" {
			v = shared[i]
		}
		b.WriteString(url.QueryEscape(v))
	}
	return b.String()
}

// SubjectName is how a subject is written in errors and paths: itself, or
// for a DescriptorSubject its entries without the mark
// ("route=POST+%2Forders,user=42").
func SubjectName(subject string) string { return strings.TrimPrefix(subject, descriptorMark) }

// IsDescriptorSubject reports whether subject is a DescriptorSubject.
func IsDescriptorSubject(subject string) bool { return strings.HasPrefix(subject, descriptorMark) }

// ParseDescriptorSubject reads the entries of a DescriptorSubject, or of its
// written form without the mark ("route=POST+%2Forders,user=42").
func ParseDescriptorSubject(s string) ([]Entry, error) {
	s = strings.TrimPrefix(s, descriptorMark)
	if s == "" {
		return nil, fmt.Errorf("%w: no entries", ErrInvalidDescriptor)
	}
	var out []Entry
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("%w: %q is not key=value", ErrInvalidDescriptor, kv)
		}
		key, err1 := url.QueryUnescape(k)
		val, err2 := url.QueryUnescape(v)
		if err := errors.Join(err1, err2); err != nil {
			return nil, fmt.Errorf("%w: %q: %w", ErrInvalidDescriptor, kv, err)
		}
		out = append(out, Entry{key, val})
	}
	if err := ValidateDescriptor(Descriptor{Entries: out}); err != nil {
		return nil, err
	}
	return out, nil
}

// compileTree validates a namespace's matchers and compiles them; errors
// go to fail with their paths.
func compileTree(ms []Matcher, where []string, fail func(error, ...string)) level {
	l := level{exact: map[Entry]*node{}, any: map[string]*node{}}
	for i := range ms {
		m := &ms[i]
		at := append(append([]string(nil), where...), "descriptors", Elem(matcherName(m, i)))
		n := &node{m: m}
		ok := true
		switch {
		case m.Key == "":
			fail(errors.New("descriptor has empty key"), append(at, "key")...)
			ok = false
		case checkText(m.Key) != nil:
			fail(checkText(m.Key), append(at, "key")...)
			ok = false
		case checkText(m.Value) != nil:
			fail(checkText(m.Value), append(at, "value")...)
			ok = false
		}
		if strings.Contains(m.Value, "*") {
			n.pattern = strings.Split(m.Value, "*")
		} else if m.ShareThreshold {
			fail(fmt.Errorf("share_threshold can only be used with wildcard values (containing '*'), but found %q", m.Value), append(at, "share_threshold")...)
		}
		switch {
		case m.Unlimited && (len(m.Rules) > 0 || m.Blocked):
			fail(errors.New("an unlimited descriptor has no limits"), append(at, "unlimited")...)
		case m.Blocked && len(m.Rules) > 0:
			fail(errors.New("a blocked descriptor (requests_per_unit: 0) has no other limits"), append(at, "limits")...)
		case m.Blocked && m.Unit <= 0:
			fail(errors.New("a blocked descriptor needs its unit"), append(at, "unit")...)
		}
		if len(m.Rules) > 0 {
			rules := append([]limit.Rule(nil), m.Rules...)
			defaulted, byName, invalid := checkRules(rules, at, fail)
			if len(invalid) == 0 {
				n.rules, n.defaulted, n.byName = rules, defaulted, byName
			} else {
				n.invalid = true
			}
		}
		if err := checkText(m.Name); err != nil {
			fail(err, append(at, "name")...)
		}
		for _, r := range m.Replaces {
			switch {
			case r == "":
				fail(errors.New("should not have an empty replaces entry"), append(at, "replaces")...)
			case r == m.Name:
				fail(errors.New("replaces should not contain name of same descriptor"), append(at, "replaces")...)
			}
		}
		if len(m.Replaces) > 0 && len(m.Rules) == 0 && !m.Unlimited && !m.Blocked {
			fail(errors.New("replaces needs a limit on the same descriptor"), append(at, "replaces")...)
		}
		n.children = compileTree(m.Descriptors, at, fail)
		if !ok {
			continue
		}
		e := Entry{m.Key, m.Value}
		dup := false
		switch {
		case m.Value == "":
			_, dup = l.any[m.Key]
			l.any[m.Key] = n
		case n.pattern != nil:
			for _, w := range l.wild {
				dup = dup || (w.m.Key == m.Key && w.m.Value == m.Value)
			}
			l.wild = append(l.wild, n)
		default:
			_, dup = l.exact[e]
			l.exact[e] = n
		}
		if dup {
			fail(fmt.Errorf("duplicate descriptor %s", matcherName(m, i)), at...)
		}
	}
	return l
}

// matcherName is a matcher's name in error paths: "key=value", or "key".
func matcherName(m *Matcher, i int) string {
	switch {
	case m.Key == "":
		return fmt.Sprint(i)
	case m.Value == "":
		return m.Key
	}
	return m.Key + "=" + m.Value
}

// resolve finds the node descriptor d ends on, its store subject and its
// metric key.
func (c *compiled) resolve(d Descriptor) (n *node, subject, stat string) {
	if len(d.Entries) == 0 || c.tree.empty() {
		return nil, "", ""
	}
	l := &c.tree
	nodes := make([]*node, 0, len(d.Entries))
	kinds := make([]matchKind, 0, len(d.Entries))
	for i, e := range d.Entries {
		m, kind := l.match(e)
		if m == nil {
			return nil, "", ""
		}
		nodes, kinds = append(nodes, m), append(kinds, kind)
		if i == len(d.Entries)-1 {
			break
		}
		if m.children.empty() {
			return nil, "", ""
		}
		l = &m.children
	}
	n = nodes[len(nodes)-1]
	var shared []string
	for i, m := range nodes {
		if kinds[i] == byPattern && m.m.ShareThreshold {
			if shared == nil {
				shared = make([]string, len(nodes))
			}
			shared[i] = m.m.Value
		}
	}
	return n, DescriptorSubject(d.Entries, shared), statKey(c.ns.Name, d.Entries, nodes, kinds)
}

// statKey is the metric key of a descriptor that ended on the last of
// nodes, as envoyproxy/ratelimit forms it: "domain" then, per entry, "key"
// or "key_value". By default that is the configuration path: the value
// (or pattern) a node names, none for a key-only node. ValueToMetric on a
// node writes the request's value where the node has none or a pattern;
// DetailedMetric on the last node writes the request's value of every
// entry; a ShareThreshold pattern that matched is always written as the
// pattern (its values share one state, and one metric).
func statKey(domain string, entries []Entry, nodes []*node, kinds []matchKind) string {
	leaf := nodes[len(nodes)-1].m
	shares := false
	for i := range nodes {
		shares = shares || (kinds[i] == byPattern && nodes[i].m.ShareThreshold)
	}
	var b strings.Builder
	b.WriteString(domain)
	for i, e := range entries {
		m := nodes[i].m
		b.WriteByte('.')
		b.WriteString(e.Key)
		switch {
		case kinds[i] == byPattern && m.ShareThreshold:
			b.WriteString("_" + m.Value)
		case leaf.DetailedMetric && (e.Value != "" || !shares):
			b.WriteString("_" + e.Value)
		case leaf.DetailedMetric:
		case kinds[i] == byValue:
			b.WriteString("_" + e.Value)
		case kinds[i] == byPattern && m.ValueToMetric:
			b.WriteString("_" + e.Value)
		case kinds[i] == byPattern:
			b.WriteString("_" + m.Value)
		case m.ValueToMetric && e.Value != "":
			b.WriteString("_" + e.Value)
		}
	}
	return sanitizeStat(b.String())
}

// ownLimitStat is the metric key of a descriptor that carried its own
// limit: every entry as key_value, or key when its value is empty.
func ownLimitStat(domain string, entries []Entry) string {
	var b strings.Builder
	b.WriteString(domain)
	for _, e := range entries {
		b.WriteByte('.')
		b.WriteString(e.Key)
		if e.Value != "" {
			b.WriteString("_" + e.Value)
		}
	}
	return sanitizeStat(b.String())
}

var ipv4 = regexp.MustCompile(`\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}`)

var statReplacer = strings.NewReplacer(":", "_", "|", "_")

// sanitizeStat makes a metric key safe as envoyproxy/ratelimit does: ':'
// and '|' become '_', and so do the dots of an IPv4 address in it.
func sanitizeStat(s string) string {
	s = statReplacer.Replace(s)
	if !hasDottedDigits(s) {
		return s
	}
	return ipv4.ReplaceAllStringFunc(s, func(ip string) string { return strings.ReplaceAll(ip, ".", "_") })
}

// hasDottedDigits reports a digit, a dot and a digit in a row: what an
// IPv4 address needs, cheap to rule out before the regexp.
func hasDottedDigits(s string) bool {
	for i := 1; i+1 < len(s); i++ {
		if s[i] == '.' && s[i-1] >= '0' && s[i-1] <= '9' && s[i+1] >= '0' && s[i+1] <= '9' {
			return true
		}
	}
	return false
}

// ResolveDescriptors resolves the descriptors of one request to namespace
// ns into out (len(out) == len(ds)): each descriptor's limit set and store
// key, or why nothing is checked. A descriptor with its own Limit gets
// that limit, with the namespace's DescriptorAlgorithm, whatever the tree
// says. Names that a matched node Replaces drop the matched nodes of that
// Name across the request. It returns an error wrapping
// ErrUnknownNamespace, or ErrInvalidDescriptor for a descriptor
// ValidateDescriptor refuses.
func (s *Snapshot) ResolveDescriptors(ns string, ds []Descriptor, out []Match) error {
	c, ok := s.namespaces[ns]
	if !ok {
		return fmt.Errorf("%w %q", ErrUnknownNamespace, ns)
	}
	replaced := map[string]bool{}
	for i, d := range ds {
		if err := ValidateDescriptor(d); err != nil {
			return fmt.Errorf("descriptor %d: %w", i, err)
		}
		out[i] = Match{}
		if d.Limit != nil {
			out[i] = c.ownLimit(d)
			continue
		}
		n, subject, stat := c.resolve(d)
		if n == nil {
			continue
		}
		m := &out[i]
		m.Name, m.Stat = n.m.Name, stat
		for _, r := range n.m.Replaces {
			replaced[r] = true
		}
		switch {
		case n.m.Unlimited:
			m.Unlimited = true
		case n.m.Blocked:
			m.Blocked, m.Limited, m.Unit = true, true, n.m.Unit
		case n.rules != nil:
			m.Limited, m.Key, m.Rules = true, Key(ns, subject), n.rules
			if rules, ok := c.overrides[subject]; ok {
				m.Rules, m.Overridden = rules, true
			}
		default:
			m.Stat = "" // a placeholder or an allow-list entry: no limit
		}
	}
	if len(replaced) > 0 {
		for i := range out {
			if m := &out[i]; m.Limited && m.Name != "" && replaced[m.Name] {
				*m = Match{Replaced: true, Name: m.Name}
			}
		}
	}
	return nil
}

// ownLimit is the match of a descriptor that carries its own limit.
func (c *compiled) ownLimit(d Descriptor) Match {
	stat := ownLimitStat(c.ns.Name, d.Entries)
	if d.Limit.RequestsPerUnit == 0 {
		return Match{Limited: true, Blocked: true, Unit: d.Limit.Unit, Stat: stat}
	}
	alg := c.ns.DescriptorAlgorithm
	if alg == 0 {
		alg = limit.FixedWindow
	}
	r, err := limit.Rule{Name: "descriptor-limit", Algorithm: alg, Limit: d.Limit.RequestsPerUnit, Period: d.Limit.Unit}.Normalize()
	if err != nil { // bounds: the unit and the count were checked, the pair may not fit a bucket
		return Match{Limited: true, Blocked: true, Unit: d.Limit.Unit, Stat: stat}
	}
	return Match{Limited: true, Key: Key(c.ns.Name, DescriptorSubject(d.Entries, nil)), Rules: []limit.Rule{r}, Stat: stat}
}

// ResolveTarget is Resolve for the target of an override: a subject, or a
// descriptor (DescriptorSubject), whose limit set it resolves to.
func (s *Snapshot) ResolveTarget(ns, subject string) (LimitSet, error) {
	if !IsDescriptorSubject(subject) {
		return s.Resolve(ns, subject)
	}
	entries, err := ParseDescriptorSubject(subject)
	if err != nil {
		return LimitSet{}, err
	}
	out := make([]Match, 1)
	if err := s.ResolveDescriptors(ns, []Descriptor{{Entries: entries}}, out); err != nil {
		return LimitSet{}, err
	}
	set := LimitSet{Rules: out[0].Rules, Overridden: out[0].Overridden}
	set.Namespace, _ = s.Namespace(ns)
	return set, nil
}

// HasDescriptors reports whether namespace ns has a descriptor tree.
func (s *Snapshot) HasDescriptors(ns string) bool {
	c, ok := s.namespaces[ns]
	return ok && !c.tree.empty()
}
