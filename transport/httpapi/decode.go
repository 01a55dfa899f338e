package httpapi

import (
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/service"
)

// The check request body is decoded by hand: a strict scanner for its one
// fixed shape is several times faster than encoding/json's reflection and
// allocates only the two strings (see BenchmarkCheckHandler). FuzzDecodeCheck
// holds it to encoding/json: the same documents are accepted, with the same
// values.

// decodeCheck parses a check request body: exactly one JSON object with the
// members "namespace" (string), "subject" (string) and "cost" (integer,
// optional, default 1; 0 is a peek), and nothing after it but whitespace.
//
// It is stricter than encoding/json in three ways, on purpose: member names
// are case-sensitive, a member may appear only once, and cost must be written
// as an integer (no fraction or exponent). A null member counts as absent.
// Errors name the problem and are meant for the client (400). Validating the
// values is the service's job (subject rules, cost bounds), except that
// namespace must be present.
func decodeCheck(body []byte) (service.Request, error) {
	d := decoder{b: body}
	req := service.Request{Cost: 1}
	if err := d.object(&req); err == errHasDescriptors {
		return decodeDescriptors(body)
	} else if err != nil {
		return service.Request{}, err
	}
	if req.Namespace == "" {
		return req, errors.New("namespace is required")
	}
	return req, nil
}

type decoder struct {
	b []byte
	i int
}

var (
	// errHasDescriptors sends a body with descriptors to decodeDescriptors.
	errHasDescriptors = errors.New("descriptors")
	errEmptyBody      = errors.New("invalid request body: empty, want a JSON object")
	errTrailing       = errors.New("invalid request body: unexpected data after the JSON object")
)

func (d *decoder) syntax(what string) error {
	if d.i >= len(d.b) {
		return errors.New("invalid request body: malformed JSON: unexpected end of input")
	}
	return errors.New("invalid request body: malformed JSON at offset " + strconv.Itoa(d.i) + ": " + what)
}

func (d *decoder) ws() {
	for d.i < len(d.b) {
		switch d.b[d.i] {
		case ' ', '\t', '\n', '\r':
			d.i++
		default:
			return
		}
	}
}

// object decodes the top-level object into req.
func (d *decoder) object(req *service.Request) error {
	d.ws()
	if d.i >= len(d.b) {
		return errEmptyBody
	}
	if d.b[d.i] != '{' {
		if kind := d.kind(); kind != "" {
			return errors.New("invalid request body: want a JSON object, got " + kind)
		}
		return d.syntax("want a JSON object")
	}
	d.i++
	var seen [3]bool
	d.ws()
	if d.i < len(d.b) && d.b[d.i] == '}' {
		d.i++
		return d.end()
	}
	for {
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != '"' {
			return d.syntax("want a member name")
		}
		raw, err := d.rawStr()
		if err != nil {
			return err
		}
		var key string
		var field int
		switch string(raw) { // compared without allocating
		case "namespace":
			key, field = "namespace", 0
		case "subject":
			key, field = "subject", 1
		case "cost":
			key, field = "cost", 2
		case "descriptors":
			return errHasDescriptors
		default:
			return errors.New("invalid request body: unknown field " + truncate(string(raw), 64))
		}
		if seen[field] {
			return errors.New("invalid request body: duplicate field " + strconv.Quote(key))
		}
		seen[field] = true
		d.ws()
		if d.i >= len(d.b) || d.b[d.i] != ':' {
			return d.syntax("want ':' after a member name")
		}
		d.i++
		d.ws()
		if err := d.member(field, key, req); err != nil {
			return err
		}
		d.ws()
		if d.i >= len(d.b) {
			return d.syntax("")
		}
		switch d.b[d.i] {
		case ',':
			d.i++
		case '}':
			d.i++
			return d.end()
		default:
			return d.syntax("want ',' or '}' after a member")
		}
	}
}

// end checks that only whitespace follows the object.
func (d *decoder) end() error {
	d.ws()
	if d.i != len(d.b) {
		return errTrailing
	}
	return nil
}

// member decodes the value of field (0 namespace, 1 subject, 2 cost).
func (d *decoder) member(field int, key string, req *service.Request) error {
	if d.i >= len(d.b) {
		return d.syntax("")
	}
	if d.literal("null") {
		return nil
	}
	c := d.b[d.i]
	if field == 2 {
		if c != '-' && (c < '0' || c > '9') {
			if kind := d.kind(); kind != "" {
				return errors.New("cost: must be an integer, got " + kind)
			}
			return d.syntax("want a value")
		}
		n, err := d.integer()
		if err != nil {
			return err
		}
		req.Cost = n
		return nil
	}
	if c != '"' {
		if kind := d.kind(); kind != "" {
			return errors.New("invalid request body: " + key + " must be a string, got " + kind)
		}
		return d.syntax("want a value")
	}
	s, err := d.str()
	if err != nil {
		return err
	}
	if field == 0 {
		req.Namespace = s
	} else {
		req.Subject = s
	}
	return nil
}

// kind names the JSON type of the value starting at d.i, judged by its first
// byte (or, for true, false and null, the whole literal), or "" when no value
// starts there.
func (d *decoder) kind() string {
	rest := d.b[d.i:]
	has := func(lit string) bool { return len(rest) >= len(lit) && string(rest[:len(lit)]) == lit }
	switch c := rest[0]; {
	case c == '{':
		return "object"
	case c == '[':
		return "array"
	case c == '"':
		return "string"
	case has("true") || has("false"):
		return "bool"
	case has("null"):
		return "null"
	case c == '-' || (c >= '0' && c <= '9'):
		return "number"
	}
	return ""
}

// literal consumes lit if the input continues with it.
func (d *decoder) literal(lit string) bool {
	if len(d.b)-d.i >= len(lit) && string(d.b[d.i:d.i+len(lit)]) == lit {
		d.i += len(lit)
		return true
	}
	return false
}

// integer scans a JSON number and requires it to be an integer in int64.
func (d *decoder) integer() (int64, error) {
	start := d.i
	if d.b[d.i] == '-' {
		d.i++
	}
	switch {
	case d.i < len(d.b) && d.b[d.i] == '0':
		d.i++
	case d.i < len(d.b) && d.b[d.i] >= '1' && d.b[d.i] <= '9':
		for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
			d.i++
		}
	default:
		return 0, d.syntax("malformed number")
	}
	intEnd := d.i
	if d.i < len(d.b) && d.b[d.i] == '.' {
		d.i++
		if !d.digits() {
			return 0, d.syntax("malformed number")
		}
	}
	if d.i < len(d.b) && (d.b[d.i] == 'e' || d.b[d.i] == 'E') {
		d.i++
		if d.i < len(d.b) && (d.b[d.i] == '+' || d.b[d.i] == '-') {
			d.i++
		}
		if !d.digits() {
			return 0, d.syntax("malformed number")
		}
	}
	text := d.b[start:d.i]
	if d.i != intEnd {
		return 0, errors.New("cost: must be an integer, got " + truncate(string(text), 32))
	}
	n, err := strconv.ParseInt(string(text), 10, 64)
	if err != nil {
		return 0, errors.New("cost: " + truncate(string(text), 32) + " is out of range")
	}
	return n, nil
}

func (d *decoder) digits() bool {
	start := d.i
	for d.i < len(d.b) && d.b[d.i] >= '0' && d.b[d.i] <= '9' {
		d.i++
	}
	return d.i > start
}

// str scans a JSON string at d.i (which holds '"') and returns its value.
func (d *decoder) str() (string, error) {
	b, err := d.rawStr()
	return string(b), err
}

// rawStr scans a JSON string at d.i (which holds '"') and returns its value,
// which aliases the input when the string holds no escapes and only ASCII.
// Unlike encoding/json, which replaces them with U+FFFD, it refuses invalid
// UTF-8 and unpaired surrogate escapes: two different raw subjects must
// never become one bucket.
func (d *decoder) rawStr() ([]byte, error) {
	d.i++ // opening quote
	start := d.i
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return d.b[start : d.i-1], nil
		case c == '\\' || c < 0x20 || c >= utf8.RuneSelf:
			return d.slowStr(start)
		}
		d.i++
	}
	return nil, d.syntax("")
}

// slowStr finishes a string that needs unescaping or UTF-8 checks, from
// start (just after the opening quote); d.i is where the fast scan stopped.
func (d *decoder) slowStr(start int) ([]byte, error) {
	out := make([]byte, 0, d.i-start+16)
	out = append(out, d.b[start:d.i]...)
	for d.i < len(d.b) {
		c := d.b[d.i]
		switch {
		case c == '"':
			d.i++
			return out, nil
		case c < 0x20:
			return nil, d.syntax("control character in string")
		case c < utf8.RuneSelf && c != '\\':
			out = append(out, c)
			d.i++
		case c >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(d.b[d.i:])
			if r == utf8.RuneError && size == 1 {
				return nil, d.syntax("invalid UTF-8 in string")
			}
			out = append(out, d.b[d.i:d.i+size]...)
			d.i += size
		default: // backslash
			d.i++
			if d.i >= len(d.b) {
				return nil, d.syntax("")
			}
			e := d.b[d.i]
			d.i++
			switch e {
			case '"', '\\', '/':
				out = append(out, e)
			case 'b':
				out = append(out, '\b')
			case 'f':
				out = append(out, '\f')
			case 'n':
				out = append(out, '\n')
			case 'r':
				out = append(out, '\r')
			case 't':
				out = append(out, '\t')
			case 'u':
				r, ok := d.hex4()
				if !ok {
					return nil, d.syntax("malformed \\u escape")
				}
				if utf16.IsSurrogate(r) {
					dec := utf8.RuneError
					if d.literal(`\u`) {
						if lo, ok := d.hex4(); ok {
							dec = utf16.DecodeRune(r, lo)
						}
					}
					if dec == utf8.RuneError {
						return nil, d.syntax("unpaired surrogate in string")
					}
					r = dec
				}
				out = utf8.AppendRune(out, r)
			default:
				d.i--
				return nil, d.syntax("invalid escape in string")
			}
		}
	}
	return nil, d.syntax("")
}

func (d *decoder) hex4() (rune, bool) {
	if len(d.b)-d.i < 4 {
		return 0, false
	}
	var r rune
	for _, c := range d.b[d.i : d.i+4] {
		switch {
		case c >= '0' && c <= '9':
			c -= '0'
		case c >= 'a' && c <= 'f':
			c = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	d.i += 4
	return r, true
}

func truncate(s string, n int) string {
	if len(s) > n {
		return strconv.Quote(s[:n]) + "..."
	}
	return strconv.Quote(s)
}
