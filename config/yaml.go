package config

import (
	"bytes"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"go.yaml.in/yaml/v3"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
)

// This file reads values out of a yaml.Node tree, reporting every problem to
// the checker with its path and line. Each reader returns ok=false when it
// reported a problem; the caller then leaves the value out.

// field is one key of a mapping and its value.
type field struct {
	key, val *yaml.Node
}

// present reports whether the key is there with a non-null value: "burst:"
// reads as no burst at all.
func (f field) present() bool { return f.val != nil && !isNull(f.val) }

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" && n.Style&yaml.TaggedStyle == 0
}

// usable reports whether n may be read at all: aliases and explicit tags
// are refused so that a file says what it means in plain values.
func (c *checker) usable(n *yaml.Node, path string) bool {
	switch {
	case n.Kind == yaml.AliasNode:
		c.errorf(n.Line, path, "aliases (*%s) are not supported; write the value out", n.Value)
	case n.Style&yaml.TaggedStyle != 0:
		c.errorf(n.Line, path, "tags (%s) are not supported", n.Tag)
	default:
		return true
	}
	return false
}

// pairs returns the entries of mapping n in order, reporting keys that are
// not strings and keys given twice (the first is kept).
func (c *checker) pairs(n *yaml.Node, path, want string) ([]field, bool) {
	if !c.usable(n, path) {
		return nil, false
	}
	if n.Kind != yaml.MappingNode {
		c.errorf(n.Line, path, "want %s, got %s", want, describe(n))
		return nil, false
	}
	out := make([]field, 0, len(n.Content)/2)
	first := make(map[string]int, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if !c.usable(k, path) {
			continue
		}
		if k.Kind != yaml.ScalarNode || isNull(k) {
			c.errorf(k.Line, path, "keys must be strings, got %s", describe(k))
			continue
		}
		if line, dup := first[k.Value]; dup {
			c.errorf(k.Line, join(path, k.Value), "duplicate key (first on line %d)", line)
			continue
		}
		first[k.Value] = k.Line
		out = append(out, field{k, v})
	}
	return out, true
}

// fields reads mapping n whose keys must be among known. An unknown key is
// reported and left out.
func (c *checker) fields(n *yaml.Node, path, want string, known ...string) (map[string]field, bool) {
	ps, ok := c.pairs(n, path, want)
	if !ok {
		return nil, false
	}
	out := make(map[string]field, len(ps))
	for _, p := range ps {
		if !slices.Contains(known, p.key.Value) {
			c.errorf(p.key.Line, join(path, p.key.Value), "unknown field (want %s)", strings.Join(known, ", "))
			continue
		}
		out[p.key.Value] = p
	}
	return out, true
}

// lookup returns the value of the first key named key of mapping n, or nil.
// It reports nothing: it lets a caller learn an element's name, to name its
// path, before reading the element.
func lookup(n *yaml.Node, key string) *yaml.Node {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k := n.Content[i]; k.Kind == yaml.ScalarNode && k.Value == key {
			return n.Content[i+1]
		}
	}
	return nil
}

// list reads a sequence; null reads as an empty one.
func (c *checker) list(n *yaml.Node, path string) ([]*yaml.Node, bool) {
	if !c.usable(n, path) {
		return nil, false
	}
	switch {
	case isNull(n):
		return nil, true
	case n.Kind == yaml.SequenceNode:
		return n.Content, true
	}
	c.errorf(n.Line, path, "want a list, got %s", describe(n))
	return nil, false
}

// str reads a scalar as the text written, so that subjects: [12345] is the
// subject "12345" whatever YAML would make of the number.
func (c *checker) str(n *yaml.Node, path string) (string, bool) {
	if !c.usable(n, path) {
		return "", false
	}
	if n.Kind != yaml.ScalarNode || isNull(n) {
		c.errorf(n.Line, path, "want a string, got %s", describe(n))
		return "", false
	}
	return n.Value, true
}

// decimal is how integers are written: no leading zero (YAML 1.1 reads 010
// as 8), no 0x/0o/0b, underscores between digits allowed.
var decimal = regexp.MustCompile(`^[-+]?(0|[1-9](_?[0-9])*)$`)

// digits matches integers too large for YAML to keep as integers (it turns
// them into floats).
var digits = regexp.MustCompile(`^[-+]?[0-9][0-9_]*$`)

// integer reads a limit or a burst. A number out of int64 is reported with
// their bounds, as limit.Rule.Normalize would report a smaller one.
func (c *checker) integer(n *yaml.Node, path string) (int64, bool) {
	if !c.usable(n, path) {
		return 0, false
	}
	if n.Kind != yaml.ScalarNode {
		c.errorf(n.Line, path, "want an integer, got %s", describe(n))
		return 0, false
	}
	switch n.ShortTag() {
	case "!!int":
		if !decimal.MatchString(n.Value) {
			c.errorf(n.Line, path, "%s is not a decimal integer", lit(n))
			return 0, false
		}
		v, err := strconv.ParseInt(strings.ReplaceAll(n.Value, "_", ""), 10, 64)
		if err != nil { // out of int64
			c.errorf(n.Line, path, "%s", limit.OutOfRange(lit(n)))
			return 0, false
		}
		return v, true
	case "!!float":
		if digits.MatchString(n.Value) {
			c.errorf(n.Line, path, "%s", limit.OutOfRange(lit(n)))
			return 0, false
		}
	}
	c.errorf(n.Line, path, "%s is not an integer", lit(n))
	return 0, false
}

// scalar reads the text of a string or integer scalar (a duration, which
// "0" may be written as), wanted as want.
func (c *checker) scalar(n *yaml.Node, path, want string) (string, bool) {
	if !c.usable(n, path) {
		return "", false
	}
	if t := n.ShortTag(); n.Kind != yaml.ScalarNode || t != "!!str" && t != "!!int" {
		c.errorf(n.Line, path, "want %s, got %s", want, describe(n))
		return "", false
	}
	return n.Value, true
}

// duration reads a period (policy.ParsePeriod); "0" is allowed, as Go
// allows it.
func (c *checker) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := c.scalar(n, path, "a duration such as 500ms, 30s, 1m or 1h")
	if !ok {
		return 0, false
	}
	d, err := policy.ParsePeriod(s)
	if err != nil {
		c.errorf(n.Line, path, "%v", err)
		return 0, false
	}
	return d, true
}

// algorithm reads an algorithm name.
func (c *checker) algorithm(n *yaml.Node, path string) (limit.Algorithm, bool) {
	s, ok := c.str(n, path)
	if !ok {
		return 0, false
	}
	a, err := limit.ParseAlgorithm(s)
	if err != nil {
		c.errorf(n.Line, path, "%v", err)
		return 0, false
	}
	return a, true
}

// describe names what n is, for "want X, got Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	case yaml.DocumentNode:
		return "a document"
	}
	if isNull(n) {
		return "nothing"
	}
	return lit(n)
}

// maxLit bounds how much of a value an error message quotes.
const maxLit = 64

// lit renders scalar n as written: plain when that is unambiguous, quoted
// otherwise, and shortened if long.
func lit(n *yaml.Node) string {
	s := n.Value
	long := len(s) > maxLit
	if long {
		i := maxLit
		for i > 0 && !utf8.RuneStart(s[i]) {
			i--
		}
		s = s[:i]
	}
	plain := n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle|yaml.LiteralStyle|yaml.FoldedStyle) == 0 &&
		s != "" && !strings.ContainsFunc(s, unicode.IsSpace) && printable(s)
	if !plain {
		s = strconv.Quote(s)
	}
	if long {
		s += "..."
	}
	return s
}

func printable(s string) bool {
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

// yamlLine splits the messages of yaml's syntax errors ("yaml: line 3: ...").
var yamlLine = regexp.MustCompile(`(?s)^yaml: line ([0-9]+): (.*)$`)

// syntax reports an error of the YAML parser. Its line is the parser's, which
// for some errors is the line before the problem.
func (c *checker) syntax(err error, data []byte) {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	line := 0
	if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
		line, _ = strconv.Atoi(m[1])
		msg = m[2]
	}
	if line > 0 && !strings.Contains(msg, "tab") && hasTab(data, line) {
		msg += " (YAML does not allow tabs for indentation; use spaces)"
	}
	c.errorf(line, "", "%s", msg)
}

// hasTab reports whether line n (1-based) of data or the line after it, to
// allow for the parser's line being one early, holds a tab.
func hasTab(data []byte, n int) bool {
	lines := bytes.SplitN(data, []byte("\n"), n+2)
	for i := n - 1; i <= n && i < len(lines); i++ {
		if i >= 0 && bytes.IndexByte(lines[i], '\t') >= 0 {
			return true
		}
	}
	return false
}

// join appends a field name to a path.
func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// elem is the path of an element of a list or map: parent[name], or
// parent[i] when the element has no name.
func elem(parent, name string, i int) string {
	if name == "" {
		return parent + "[" + strconv.Itoa(i) + "]"
	}
	return parent + "[" + name + "]"
}
