package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// A check with descriptors: the body of POST /v1/check may add
//
//	"descriptors": [{"entries": [{"key": "remote_address", "value": "10.0.0.7"}], "cost": 1}, ...]
//
// to (or instead of) its subject. Each descriptor is checked against the
// namespace's descriptor tree, all-or-nothing with the subject; its cost
// defaults to the request's. Such a body is decoded by encoding/json, held
// to the same strictness as the fast decoder's (checkStrict): the common
// check of one subject keeps the fast path.

var checkShape = &shape{fields: map[string]*shape{
	"namespace": nil, "subject": nil, "cost": nil,
	"descriptors": {elem: &shape{fields: map[string]*shape{
		"entries": {elem: &shape{fields: map[string]*shape{"key": nil, "value": nil}}},
		"cost":    nil,
	}}},
}}

type descriptorsBody struct {
	Namespace   *string `json:"namespace"`
	Subject     *string `json:"subject"`
	Cost        *int64  `json:"cost"`
	Descriptors []struct {
		Entries []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"entries"`
		Cost *int64 `json:"cost"`
	} `json:"descriptors"`
}

// decodeDescriptors decodes a check body with descriptors.
func decodeDescriptors(body []byte) (service.Request, error) {
	if !utf8.Valid(body) {
		return service.Request{}, errors.New("invalid request body: not valid UTF-8")
	}
	if err := checkStrict(body, checkShape); err != nil {
		return service.Request{}, fmt.Errorf("invalid %w", err)
	}
	var b descriptorsBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return service.Request{}, fmt.Errorf("invalid request body: %w", err)
	}
	if dec.More() {
		return service.Request{}, errTrailing
	}
	req := service.Request{Cost: 1}
	if b.Namespace != nil {
		req.Namespace = *b.Namespace
	}
	if b.Subject != nil {
		req.Subject = *b.Subject
	}
	if b.Cost != nil {
		req.Cost = *b.Cost
	}
	if req.Namespace == "" {
		return req, errors.New("namespace is required")
	}
	req.Descriptors = make([]service.Descriptor, len(b.Descriptors))
	for i, d := range b.Descriptors {
		sd := &req.Descriptors[i]
		sd.Cost = req.Cost
		if d.Cost != nil {
			sd.Cost = *d.Cost
		}
		sd.Entries = make([]policy.Entry, len(d.Entries))
		for j, e := range d.Entries {
			sd.Entries[j] = policy.Entry{Key: e.Key, Value: e.Value}
		}
	}
	if len(req.Descriptors) == 0 && req.Subject == "" {
		return req, errors.New("subject is required when there are no descriptors")
	}
	return req, nil
}

// appendDescriptors appends the "descriptors" member of a check response:
// per descriptor, in order, whether a limit applied ("limited"), whether
// it is unlimited, whether it passed, and its limits' decisions.
func appendDescriptors(b []byte, res *service.Result) []byte {
	b = append(b, `,"descriptors":[`...)
	for i := range res.Descriptors {
		d := &res.Descriptors[i]
		if i > 0 {
			b = append(b, ',')
		}
		v := &d.Verdict
		b = append(b, `{"limited":`...)
		b = strconv.AppendBool(b, d.Match.Limited)
		b = append(b, `,"unlimited":`...)
		b = strconv.AppendBool(b, d.Match.Unlimited)
		b = append(b, `,"allowed":`...)
		b = strconv.AppendBool(b, !d.Match.Limited || v.N == 0 || v.Allowed)
		b = append(b, `,"limits":[`...)
		for j, dec := range v.Decisions() {
			if j > 0 {
				b = append(b, ',')
			}
			name := "blocked" // a blocked descriptor: no rule, a limit of 0
			if j < len(d.Match.Rules) {
				name = d.Match.Rules[j].Name
			}
			b = append(b, `{"name":`...)
			b = appendString(b, name)
			b = append(b, `,"limit":`...)
			b = strconv.AppendInt(b, dec.Limit, 10)
			b = append(b, `,"remaining":`...)
			b = strconv.AppendInt(b, dec.Remaining, 10)
			b = append(b, `,"reset_after_ms":`...)
			b = strconv.AppendInt(b, headers.CeilMillis(dec.ResetAfter), 10)
			b = append(b, `,"retry_after_ms":`...)
			b = strconv.AppendInt(b, headers.CeilMillis(dec.RetryAfter), 10)
			if dec.Shadow {
				b = append(b, `,"shadow":true`...)
			}
			b = append(b, '}')
		}
		b = append(b, "]}"...)
	}
	return append(b, ']')
}
