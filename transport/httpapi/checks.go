package httpapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/distributedratelimiter/ratelimiter/service"
)

// MaxChecks bounds the checks of one POST /v1/checks.
const MaxChecks = 1000

// DefaultMaxBatchBodyBytes bounds a /v1/checks body unless
// Options.MaxBatchBodyBytes says otherwise: room for MaxChecks checks with
// long subjects, far below what a bad client could make the server hold.
const DefaultMaxBatchBodyBytes = 1 << 20

// checks serves POST /v1/checks: a JSON array of checks, each as /v1/check
// takes it, the checks of one subject decided in the array's order (as if
// sent one after the other; service.CheckMany), answered 200 with an array
// of results in the same order. Each
// result is /v1/check's body with "status", the status /v1/check would have
// answered (200, 429; 400, 404 or 503 with "error" for a check that could
// not be decided). A check's failure is its own: the others are decided.
// The whole request fails (400, 413) only when it is not a JSON array of 1
// to MaxChecks elements within the body bound. No rate limit headers: they
// belong to one decision.
func (a *api) checks(w http.ResponseWriter, r *http.Request) {
	bp := getBuf()
	defer putBuf(bp)
	body, status, msg := readBody(w, r, (*bp)[:0], a.maxBatchBody)
	*bp = body
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	items, err := splitArray(body)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	reqs := make([]service.Request, len(items))
	results, errs := make([]service.Result, len(items)), make([]error, len(items))
	for i, item := range items {
		if reqs[i], errs[i] = decodeCheck(item); errs[i] != nil {
			errs[i] = errBadItem{errs[i]}
		}
	}
	// The well-formed checks are decided together (in order per subject,
	// concurrently across subjects on Redis); the others keep their error.
	a.svc.CheckMany(r.Context(), reqs, results, errs)
	out := getBuf()
	defer putBuf(out)
	b := append((*out)[:0], '[')
	for i := range items {
		if i > 0 {
			b = append(b, ',')
		}
		if bad, ok := errs[i].(errBadItem); ok {
			b = appendItemError(b, http.StatusBadRequest, bad.Error())
			continue
		}
		b = a.appendResult(b, &results[i], errs[i])
	}
	b = append(b, ']')
	*out = b
	h := w.Header()
	h[hdrContentType] = []string{contentTypeJSON}
	h["X-Content-Type-Options"] = []string{"nosniff"}
	w.WriteHeader(http.StatusOK)
	w.Write(b)
}

// errBadItem is an element of a /v1/checks array that did not decode: a
// 400 of its own, whatever its message.
type errBadItem struct{ error }

// appendResult appends one decided element of a /v1/checks array.
func (a *api) appendResult(b []byte, res *service.Result, err error) []byte {
	if err != nil {
		status, msg := checkErrorStatus(err)
		if status == http.StatusInternalServerError {
			a.log.Error("httpapi: check failed", "err", err)
		}
		return appendItemError(b, status, msg)
	}
	b = appendCheckBody(b, res)
	// appendCheckBody ends with "}\n": the status goes in before them.
	b = b[:len(b)-2]
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(verdictStatus(res)), 10)
	return append(b, '}')
}

func appendItemError(b []byte, status int, msg string) []byte {
	b = append(b, `{"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"error":`...)
	b = appendString(b, msg)
	return append(b, '}')
}

// splitArray returns the raw elements of a JSON array of 1 to MaxChecks
// elements; each is decoded by decodeCheck, as strictly as /v1/check's body.
func splitArray(body []byte) ([]json.RawMessage, error) {
	var items []json.RawMessage
	if err := json.Unmarshal(body, &items); err != nil {
		var ute *json.UnmarshalTypeError
		if errors.As(err, &ute) {
			return nil, errors.New("invalid request body: want a JSON array of checks, got " + ute.Value)
		}
		return nil, errors.New("invalid request body: " + err.Error())
	}
	switch {
	case items == nil:
		return nil, errors.New("invalid request body: want a JSON array of checks, got null")
	case len(items) == 0:
		return nil, errors.New("invalid request body: an empty array: want 1 to " + strconv.Itoa(MaxChecks) + " checks")
	case len(items) > MaxChecks:
		return nil, errors.New("invalid request body: " + strconv.Itoa(len(items)) + " checks, want at most " + strconv.Itoa(MaxChecks))
	}
	return items, nil
}
