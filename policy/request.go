package policy

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// RequestDescriptor says how an HTTP request becomes one descriptor: its
// entries, in order, each from a part of the request, in the spirit of
// Envoy's rate limit actions. A request that lacks a part (a header it
// does not carry, a path no pattern matches) has no such descriptor, as
// with Envoy.
type RequestDescriptor []RequestEntry

// The parts of a request an entry can come from (RequestEntry.From).
const (
	FromHeader        = "header"         // the value of Header
	FromClientAddress = "client_address" // the client's address (see transport/extract)
	FromMethod        = "method"         // the request method
	FromPath          = "path"           // the URL path, or the first of Paths it matches
	FromValue         = "value"          // Value itself: an endpoint-wide descriptor
)

// RequestEntry is one entry of a RequestDescriptor.
type RequestEntry struct {
	Key  string
	From string
	// Header names the header of From "header".
	Header string
	// Value is the value of From "value".
	Value string
	// Paths, for From "path", are patterns ('*' matches any run of
	// characters): the entry's value is the first one the path matches,
	// which bounds the values a client can make up; none matching, the
	// request has no such descriptor. Without Paths the value is the path
	// itself, one subject per distinct path.
	Paths []string
}

func (d RequestDescriptor) validate() error {
	if len(d) == 0 || len(d) > MaxEntries {
		return fmt.Errorf("%d entries, want 1 to %d", len(d), MaxEntries)
	}
	for i, e := range d {
		at := fmt.Sprintf("entry %d (%s): ", i, e.Key)
		switch {
		case e.Key == "" || checkText(e.Key) != nil:
			return fmt.Errorf("entry %d: want a key of 1 to %d printable bytes", i, MaxEntryLen)
		case e.From == FromHeader && (e.Header == "" || http.CanonicalHeaderKey(e.Header) == "" || strings.ContainsAny(e.Header, " :\t")):
			return errors.New(at + "from header needs a header name")
		case e.From == FromValue && (e.Value == "" || checkText(e.Value) != nil):
			return errors.New(at + "from value needs a value")
		case e.From == FromPath:
			for _, p := range e.Paths {
				if !strings.HasPrefix(p, "/") || checkText(p) != nil {
					return fmt.Errorf("%spath pattern %q does not start with /", at, p)
				}
			}
		case e.From == FromClientAddress, e.From == FromMethod, e.From == FromHeader, e.From == FromValue:
		default:
			return fmt.Errorf("%sfrom %q, want one of header, client_address, method, path, value", at, e.From)
		}
	}
	return nil
}

// MatchPath returns the first of patterns path matches, or "" for none;
// path itself when there are no patterns.
func MatchPath(patterns []string, path string) string {
	if len(patterns) == 0 {
		return path
	}
	for _, p := range patterns {
		if wildMatch(strings.Split(p, "*"), path) {
			return p
		}
	}
	return ""
}
