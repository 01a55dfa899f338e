package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// envoyproxy/ratelimit's configuration, unchanged: serve --envoy-config
// PATH reads a file, or every *.yaml and *.yml file of a directory (not
// its subdirectories), each holding one domain, which becomes a namespace
// with a descriptor tree (policy.Matcher):
//
//	domain: edge_proxy_per_ip
//	descriptors:
//	  - key: remote_address
//	    rate_limit: {unit: second, requests_per_unit: 10}
//	  - key: remote_address
//	    value: 50.0.0.5
//	    rate_limit: {unit: second, requests_per_unit: 0}
//
// Each node: key (required), value, rate_limit {requests_per_unit, unit,
// unlimited, name, replaces: [{name}]}, descriptors, shadow_mode,
// detailed_metric, value_to_metric, share_threshold, and metadata (read,
// not used: it only feeds envoyproxy/ratelimit's dynamic metadata). Units
// are second, minute, hour, day, week, month (30 days) and year (365
// days), in any case, as envoyproxy/ratelimit computes them (with the
// token bucket, at most 31 days: limit.MaxPeriod). A rate limit is requests_per_unit per
// unit with EnvoyOptions.Algorithm: a fixed window aligned to the epoch by
// default, as envoyproxy/ratelimit counts; requests_per_unit 0 denies every
// request.
//
// The reading is envoyproxy/ratelimit's, errors included (each at its file
// and line), with these differences, all stricter: a key valid elsewhere
// is an error at the wrong level (envoyproxy/ratelimit accepts it and
// ignores it); quota_mode is refused (not supported); a domain must be a
// namespace name (1-64 of [A-Za-z0-9_.-]).

// EnvoyOptions tune LoadEnvoy.
type EnvoyOptions struct {
	// Algorithm enforces every rate_limit. Default limit.FixedWindow, as
	// envoyproxy/ratelimit counts (a window aligned to the Unix epoch);
	// limit.TokenBucket smooths instead (requests_per_unit per unit, a
	// burst of requests_per_unit).
	Algorithm limit.Algorithm
}

// envoyUnits are the units of rate_limit, in seconds, as envoyproxy/ratelimit
// computes them.
var envoyUnits = map[string]time.Duration{
	"SECOND": time.Second,
	"MINUTE": time.Minute,
	"HOUR":   time.Hour,
	"DAY":    24 * time.Hour,
	"WEEK":   7 * 24 * time.Hour,
	"MONTH":  30 * 24 * time.Hour,
	"YEAR":   365 * 24 * time.Hour,
}

// envoyFiles lists the configuration files of path: itself, or its
// directory's *.yaml and *.yml files, sorted.
func envoyFiles(path string) ([]string, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{path}, nil
	}
	ents, err := os.ReadDir(path)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && !strings.HasPrefix(n, ".") && (strings.HasSuffix(n, ".yaml") || strings.HasSuffix(n, ".yml")) {
			out = append(out, filepath.Join(path, n))
		}
	}
	return out, nil
}

// EnvoyData reads the configuration files of path: their names (as given)
// and contents, in order. It fails when path cannot be read.
func EnvoyData(path string) (names []string, contents [][]byte, err error) {
	files, err := envoyFiles(path)
	if err != nil {
		return nil, nil, err
	}
	for _, f := range files {
		data, err := ReadFile(f)
		if err != nil {
			return nil, nil, err
		}
		names = append(names, f)
		contents = append(contents, data)
	}
	return names, contents, nil
}

// ValidateEnvoy reads envoyproxy/ratelimit configuration files and returns
// every problem found, each an *Error naming its file and line.
func ValidateEnvoy(names []string, contents [][]byte, opts EnvoyOptions) []error {
	_, errs := envoyNamespaces(names, contents, opts)
	return errs
}

// ParseEnvoy reads envoyproxy/ratelimit configuration files into one
// namespace per domain. Its error joins every problem found.
func ParseEnvoy(names []string, contents [][]byte, opts EnvoyOptions) ([]policy.Namespace, error) {
	nss, errs := envoyNamespaces(names, contents, opts)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	// policy.New judges what the files alone cannot (limit bounds):
	// its errors name the domain and the path.
	if _, err := policy.New(slices.Clone(nss), "", time.Time{}); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	return nss, nil
}

func envoyNamespaces(names []string, contents [][]byte, opts EnvoyOptions) ([]policy.Namespace, []error) {
	alg := opts.Algorithm
	if alg == 0 {
		alg = limit.FixedWindow
	}
	var nss []policy.Namespace
	var errs []error
	domains := map[string]string{}
	for i, name := range names {
		r := &envoyReader{source: name, alg: alg}
		ns, ok := r.file(contents[i])
		errs = append(errs, r.errs...)
		if !ok {
			continue
		}
		if first, dup := domains[ns.Name]; dup {
			errs = append(errs, &Error{Source: name, Msg: fmt.Sprintf("duplicate domain '%s' in config file (first in %s)", ns.Name, first)})
			continue
		}
		domains[ns.Name] = name
		nss = append(nss, ns)
	}
	return nss, errs
}

// envoyReader reads one file.
type envoyReader struct {
	source string
	alg    limit.Algorithm
	errs   []error
}

func (r *envoyReader) errorf(line int, format string, args ...any) {
	r.errs = append(r.errs, &Error{Source: r.source, Line: line, Msg: fmt.Sprintf(format, args...)})
}

func (r *envoyReader) file(data []byte) (policy.Namespace, bool) {
	var ns policy.Namespace
	if len(data) > MaxSize {
		r.errorf(0, "file is larger than %d bytes (4 MiB)", MaxSize)
		return ns, false
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil && err != io.EOF {
		r.errorf(0, "error loading config file: %v", err)
		return ns, false
	}
	if len(doc.Content) == 0 || isNull(doc.Content[0]) {
		r.errorf(0, "config file cannot have empty domain")
		return ns, false
	}
	root := doc.Content[0]
	f, ok := r.mapping(root, "domain", "descriptors")
	if !ok {
		return ns, false
	}
	d, ok := r.text(f["domain"])
	if !ok || d == "" {
		if ok {
			r.errorf(line(f["domain"], root), "config file cannot have empty domain")
		}
		return ns, false
	}
	ns = policy.Namespace{Name: d, SubjectHeader: DefaultSubjectHeader, DescriptorAlgorithm: r.alg}
	ns.Descriptors = r.descriptors(f["descriptors"], d)
	if len(ns.Descriptors) == 0 && len(r.errs) == 0 {
		// A domain without descriptors limits nothing: it answers OK.
		ns.Descriptors = []policy.Matcher{}
	}
	return ns, len(r.errs) == 0
}

func line(f field, parent *yaml.Node) int {
	if f.key != nil {
		return f.key.Line
	}
	return parent.Line
}

// mapping reads a mapping whose keys must be among known.
func (r *envoyReader) mapping(n *yaml.Node, known ...string) (map[string]field, bool) {
	if n.Kind != yaml.MappingNode {
		r.errorf(n.Line, "error loading config file: want a mapping, got %s", describe(n))
		return nil, false
	}
	out := make(map[string]field, len(n.Content)/2)
	ok := true
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.ShortTag() != "!!str" {
			r.errorf(k.Line, "config error, key is not of type string: %s", k.Value)
			ok = false
			continue
		}
		if !slices.Contains(known, k.Value) {
			if k.Value == "quota_mode" {
				r.errorf(k.Line, "quota_mode is not supported by this limiter")
			} else {
				r.errorf(k.Line, "config error, unknown key '%s'", k.Value)
			}
			ok = false
			continue
		}
		if _, dup := out[k.Value]; dup {
			r.errorf(k.Line, "config error, duplicate key '%s'", k.Value)
			ok = false
			continue
		}
		out[k.Value] = field{key: k, val: v}
	}
	return out, ok
}

// text reads a scalar as its text ("key: 123" is the key "123"); an
// absent or null field reads as "".
func (r *envoyReader) text(f field) (string, bool) {
	if !f.present() {
		return "", true
	}
	if f.val.Kind != yaml.ScalarNode {
		r.errorf(f.val.Line, "error loading config file: want a string, got %s", describe(f.val))
		return "", false
	}
	if t := f.val.ShortTag(); t == "!!float" {
		r.errorf(f.val.Line, "error checking config")
		return "", false
	}
	return f.val.Value, true
}

// flag reads a boolean; an absent or null field reads as false.
func (r *envoyReader) flag(f field) bool {
	if !f.present() {
		return false
	}
	if f.val.Kind != yaml.ScalarNode || f.val.ShortTag() != "!!bool" {
		r.errorf(f.val.Line, "error loading config file: cannot unmarshal %s `%s` into bool", f.val.ShortTag(), f.val.Value)
		return false
	}
	return strings.EqualFold(f.val.Value, "true")
}

// list reads a list of mappings.
func (r *envoyReader) list(f field) []*yaml.Node {
	if !f.present() {
		return nil
	}
	if f.val.Kind != yaml.SequenceNode {
		r.errorf(f.val.Line, "error loading config file: cannot unmarshal %s into a list", describe(f.val))
		return nil
	}
	var out []*yaml.Node
	for _, n := range f.val.Content {
		if n.Kind != yaml.MappingNode {
			r.errorf(n.Line, "config error, yaml file contains list of type other than map: %s", n.Value)
			continue
		}
		out = append(out, n)
	}
	return out
}

var descriptorKeys = []string{"key", "value", "rate_limit", "descriptors", "shadow_mode", "detailed_metric",
	"value_to_metric", "share_threshold", "metadata"}

// descriptors reads a list of descriptors at the composite key path.
func (r *envoyReader) descriptors(f field, path string) []policy.Matcher {
	items := r.list(f)
	out := make([]policy.Matcher, 0, len(items))
	seen := map[string]bool{}
	for _, n := range items {
		fs, ok := r.mapping(n, descriptorKeys...)
		if !ok {
			continue
		}
		var m policy.Matcher
		m.Key, _ = r.text(fs["key"])
		m.Value, _ = r.text(fs["value"])
		if m.Key == "" {
			r.errorf(n.Line, "descriptor has empty key")
			continue
		}
		final := m.Key
		if m.Value != "" {
			final += "_" + m.Value
		}
		full := path + "." + final
		if seen[final] {
			r.errorf(n.Line, "duplicate descriptor composite key '%s'", full)
			continue
		}
		seen[final] = true
		shadow := r.flag(fs["shadow_mode"])
		m.DetailedMetric = r.flag(fs["detailed_metric"])
		m.ValueToMetric = r.flag(fs["value_to_metric"])
		m.ShareThreshold = r.flag(fs["share_threshold"])
		if rl := fs["rate_limit"]; rl.present() {
			r.rateLimit(rl, &m, shadow)
		}
		if m.ShareThreshold && !strings.Contains(final, "*") {
			r.errorf(n.Line, "share_threshold can only be used with wildcard values (containing '*'), but found key '%s'", final)
		}
		m.Descriptors = r.descriptors(fs["descriptors"], full)
		out = append(out, m)
	}
	return out
}

var rateLimitKeys = []string{"requests_per_unit", "unit", "unlimited", "name", "replaces"}

// rateLimit reads a rate_limit block into m.
func (r *envoyReader) rateLimit(f field, m *policy.Matcher, shadow bool) {
	fs, ok := r.mapping(f.val, rateLimitKeys...)
	if !ok {
		return
	}
	at := f.key.Line
	unitText, _ := r.text(fs["unit"])
	unit, validUnit := envoyUnits[strings.ToUpper(unitText)]
	m.Unlimited = r.flag(fs["unlimited"])
	switch {
	case m.Unlimited && validUnit:
		r.errorf(at, "should not specify rate limit unit when unlimited")
		return
	case !m.Unlimited && !validUnit:
		r.errorf(at, "invalid rate limit unit '%s'", unitText)
		return
	}
	m.Name, _ = r.text(fs["name"])
	for _, rep := range r.list(fs["replaces"]) {
		rf, ok := r.mapping(rep, "name")
		if !ok {
			continue
		}
		name, _ := r.text(rf["name"])
		switch {
		case name == "":
			r.errorf(rep.Line, "should not have an empty replaces entry")
		case name == m.Name:
			r.errorf(rep.Line, "replaces should not contain name of same descriptor")
		default:
			m.Replaces = append(m.Replaces, name)
		}
	}
	if m.Unlimited {
		return
	}
	rpu := int64(0)
	if v := fs["requests_per_unit"]; v.present() {
		n, err := strconv.ParseInt(v.val.Value, 10, 64)
		if v.val.Kind != yaml.ScalarNode || v.val.ShortTag() != "!!int" || err != nil || n < 0 || n > math.MaxUint32 {
			r.errorf(v.val.Line, "error loading config file: cannot unmarshal %s `%s` into uint32", v.val.ShortTag(), v.val.Value)
			return
		}
		rpu = n
	}
	if rpu == 0 {
		m.Blocked, m.Unit = true, unit
		return
	}
	m.Rules = []limit.Rule{{Name: "rate_limit", Algorithm: r.alg, Limit: rpu, Period: unit, Shadow: shadow}}
}
