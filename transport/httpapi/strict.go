package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
)

// shape describes the objects of a JSON document whose member names must be
// written exactly: fields lists an object's names (each with the shape of
// its value, nil for any value), or any gives the shape of every member of
// an object whose names are data (limit names). A nil *shape accepts any
// value.
type shape struct {
	fields map[string]*shape
	any    *shape
	elem   *shape // the shape of each element of a list
}

// putShape is the body of PUT /v1/admin/overrides/{namespace}/{subject}.
var putShape = &shape{fields: map[string]*shape{
	"limits": {any: &shape{fields: map[string]*shape{
		"limit": nil, "period": nil, "burst": nil, "algorithm": nil,
	}}},
	"expires_at": nil,
	"ttl":        nil,
}}

// checkStrict holds an admin body to the strictness of POST /v1/check,
// which encoding/json does not have: no member twice in one object (where
// encoding/json keeps the last), and every field name written exactly as
// documented (where encoding/json matches "LIMITS" or "Limit" too). Other
// errors (syntax, types, unknown fields) are left to the decoder.
func checkStrict(body []byte, s *shape) error {
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	err := strictValue(dec, s, "")
	if errors.Is(err, io.EOF) || errors.As(err, new(*json.SyntaxError)) {
		return nil // the decoder reports it
	}
	return err
}

func strictValue(dec *json.Decoder, s *shape, path string) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		seen := map[string]bool{}
		for dec.More() {
			kt, err := dec.Token()
			if err != nil {
				return err
			}
			key, _ := kt.(string)
			at := key
			if path != "" {
				at = path + "." + key
			}
			if seen[key] {
				return fmt.Errorf("request body: duplicate field %s", strconv.Quote(at))
			}
			seen[key] = true
			var sub *shape
			switch {
			case s == nil:
			case s.fields != nil:
				f, ok := s.fields[key]
				if !ok {
					for name := range s.fields {
						if equalFold(name, key) {
							return fmt.Errorf("request body: field %s must be written %s", strconv.Quote(at), strconv.Quote(name))
						}
					}
				}
				sub = f
			default:
				sub = s.any
			}
			if err := strictValue(dec, sub, at); err != nil {
				return err
			}
		}
		_, err := dec.Token() // '}'
		return err
	case json.Delim('['):
		var elem *shape
		if s != nil {
			elem = s.elem
		}
		for dec.More() {
			if err := strictValue(dec, elem, path+"[]"); err != nil {
				return err
			}
		}
		_, err := dec.Token() // ']'
		return err
	}
	return nil
}

// equalFold is the case folding encoding/json matches field names with
// (ASCII letters here: every documented name is lower-case ASCII).
func equalFold(a, b string) bool { return bytes.EqualFold([]byte(a), []byte(b)) }
