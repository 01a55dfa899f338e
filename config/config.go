// Package config reads the YAML rate limit configuration and turns it into a
// validated *policy.Snapshot.
//
// # Schema
//
// One YAML document holding one mapping:
//
//	namespaces:                        # required, at least one
//	  - name: orders                   # required; 1-64 of [A-Za-z0-9_.-], not starting with _ . -
//	    subject_header: X-User-ID      # optional, default "X-User-ID"; an HTTP header name
//	    cost_header: X-RateLimit-Cost  # optional, default none: every gate and proxy request
//	                                   #   costs 1; when set, the header (a trusted hop sets it)
//	                                   #   gives the cost, a positive integer
//	    on_store_error: local          # optional, default local: how checks are answered when
//	                                   #   the store fails (local, open or closed; policy.FailurePolicy)
//	    limits:                        # required, 1 to limit.MaxRules
//	      - name: per-minute           # required, unique in the namespace
//	        algorithm: token_bucket    # required: token_bucket (alias gcra), leaky_bucket,
//	                                   #   sliding_window_log, sliding_window_counter, fixed_window
//	        limit: 100                 # required, units per period, 1 to limit.MaxLimit
//	        period: 1m                 # required, a Go duration ("500ms", "30s", "1m", "1h")
//	        burst: 20                  # optional, token_bucket/gcra/leaky_bucket only; default = limit
//	    overrides:                     # optional: other limits for listed subjects
//	      - subjects: ["vip-1"]        # required, at least one
//	        limits:                    # required: limit name -> the fields that change
//	          per-minute: {limit: 1000, burst: 200}
//
// A patch under overrides[].limits may set limit, period, burst and algorithm;
// the fields it leaves out keep the namespace's value (policy.Patch). When a
// patch changes limit but not burst and the namespace's burst was the default,
// the burst follows the new limit.
//
// Defaults are only the three stated above: subject_header "X-User-ID",
// on_store_error local, and burst = limit for the bucket algorithms. A key with no value ("burst:") is
// the same as an absent key. Everything else is explicit: there is no default
// algorithm. Subjects and names are the text written: subjects: [12345] is
// the subject "12345".
//
// The decoding is strict so that every deployment's file reads alike and a
// typo cannot pass silently: unknown fields, duplicate keys, more than one
// YAML document, aliases (*x) and explicit tags (!x) are errors; integers
// must be written in decimal ("1_000" is allowed, "0x10" and "010" are not);
// "burst" on a window algorithm is an error; "burst: 0" is an error (omit it
// for the default), as is an override patch without a field; files over
// MaxSize bytes are refused.
//
// # Errors
//
// Validate returns every problem found, each an *Error with the source, the
// line where known, and the path of the field in policy's notation (an
// element without a usable name is named by its index, namespaces[0]):
//
//	orders.yaml:7: namespaces[orders].limits[per-minute].limit: -5 is outside [1, 1000000000]
//
// Parse and Load return the same errors joined (errors.Join), one per line.
// Every one wraps ErrInvalid; failing to read a file does not.
//
// A few problems show only once others are fixed: a YAML syntax error stops
// the reading (and its line is the parser's, for some errors the line before
// the problem); the bounds of a limit with a field that does not decode
// (limit: "ten") are checked once it decodes; an override of an invalid limit
// is checked once that limit is valid; policy.New reports at most one
// out-of-bounds patch per override. Nothing in this package panics on any
// input.
package config

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/distributedratelimiter/ratelimiter/policy"
)

// MaxSize is the largest configuration, in bytes, that Parse and Load accept.
const MaxSize = 4 << 20

// DefaultSubjectHeader is the subject_header of a namespace that sets none.
const DefaultSubjectHeader = "X-User-ID"

// ErrInvalid is wrapped by every error that reports a problem in the
// configuration itself (as opposed to failing to read it).
var ErrInvalid = errors.New("invalid configuration")

// Example is the example configuration, deploy/example.yaml: an "orders"
// namespace with a per-minute token bucket (100/1m, burst 20), a per-hour
// sliding window counter (1000/1h) and a VIP override. `ratelimiter serve`
// runs it when given no configuration. Callers must not modify it.
//
//go:embed example.yaml
var Example []byte

// Error is one problem in a configuration file.
type Error struct {
	// Source names the file, as given to Parse or Load.
	Source string
	// Line is the 1-based line of the problem, or 0 when unknown.
	Line int
	// Path is the field in policy's notation
	// ("namespaces[orders].limits[per-minute].limit"), or "" when the
	// problem is with the file as a whole.
	Path string
	// Msg says what is wrong ("-5 is outside [1, 1000000000]").
	Msg string
}

// Error formats e as "source:line: path: msg", leaving out the line when it
// is unknown and the path when it is empty.
func (e *Error) Error() string {
	var b bytes.Buffer
	b.WriteString(e.Source)
	if e.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(e.Line))
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Unwrap returns ErrInvalid.
func (e *Error) Unwrap() error { return ErrInvalid }

// Parse is ParseAt(data, source, time.Now()).
func Parse(data []byte, source string) (*policy.Snapshot, error) {
	return ParseAt(data, source, time.Now())
}

// ParseAt decodes and validates data and builds a snapshot whose Version is
// the first 12 hex digits of the SHA-256 of data and whose LoadedAt is now.
// source names the file in error messages. On failure it returns every
// problem found (see Validate), joined with errors.Join; each wraps
// ErrInvalid. ParseAt does not retain data.
func ParseAt(data []byte, source string, now time.Time) (*policy.Snapshot, error) {
	snap, errs := parse(data, source, version(data), now)
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return snap, nil
}

// Validate reports every problem found in data, each an *Error wrapping
// ErrInvalid, sorted by line; nil means that Parse would succeed. source
// names the file in the messages.
func Validate(data []byte, source string) []error {
	_, errs := parse(data, source, "", time.Time{})
	return errs
}

// Load is LoadAt(path, time.Now()).
func Load(path string) (*policy.Snapshot, error) {
	return LoadAt(path, time.Now())
}

// LoadAt reads the file at path with ReadFile and parses it with path as
// the source.
func LoadAt(path string, now time.Time) (*policy.Snapshot, error) {
	data, err := ReadFile(path)
	if err != nil {
		return nil, err
	}
	return ParseAt(data, path, now)
}

// ReadFile reads the file at path for Validate or Parse. It reads at most
// MaxSize+1 bytes, enough for them to refuse an oversized file without
// reading all of it (or forever, from a device). An error reading the file
// is returned wrapped ("config: open x.yaml: no such file or directory"), so
// errors.Is(err, fs.ErrNotExist) works; it does not wrap ErrInvalid.
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return data, nil
}

// version identifies a configuration by its bytes.
func version(data []byte) string {
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:6])
}

// parse runs the checker and, when it found nothing wrong, returns the
// snapshot. The errors are *Error values sorted by line.
func parse(data []byte, source, version string, now time.Time) (*policy.Snapshot, []error) {
	return parseWith(data, source, version, now, nil)
}

// parseWith is parse with extra namespaces (validated already) beside the
// file's: those of an envoyproxy/ratelimit configuration.
func parseWith(data []byte, source, version string, now time.Time, extra []policy.Namespace) (*policy.Snapshot, []error) {
	c := newChecker(source)
	nss, ok := c.file(data)
	nss = append(nss, extra...)
	var snap *policy.Snapshot
	if ok {
		// nss is a faithful copy of the file when c found no problem, and
		// otherwise a stand-in built so that policy.New reports only real
		// problems (see checker): its snapshot is then discarded.
		var err error
		snap, err = policy.New(nss, version, now)
		if err != nil {
			c.policyErrors(err)
		}
	}
	if len(c.errs) == 0 {
		if snap == nil { // a bug of the checker: never return nil, nil
			c.errorf(0, "", "internal error: no snapshot and no error")
		} else {
			return snap, nil
		}
	}
	slices.SortStableFunc(c.errs, func(a, b *Error) int { return a.Line - b.Line })
	errs := make([]error, len(c.errs))
	for i, e := range c.errs {
		errs[i] = e
	}
	return nil, errs
}
