package httpapi

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
)

type batchItem struct {
	Status     int    `json:"status"`
	Allowed    bool   `json:"allowed"`
	Subject    string `json:"subject"`
	Error      string `json:"error"`
	RetryAfter int64  `json:"retry_after_ms"`
	Limits     []struct {
		Name      string `json:"name"`
		Remaining int64  `json:"remaining"`
	} `json:"limits"`
}

func (f *fixture) checks(t *testing.T, body string) []batchItem {
	t.Helper()
	w := f.do(http.MethodPost, "/v1/checks", body)
	if w.Code != http.StatusOK {
		t.Fatalf("POST /v1/checks: %d %s", w.Code, w.Body)
	}
	if ct := w.Header().Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type %q", ct)
	}
	var items []batchItem
	if err := json.Unmarshal(w.Body.Bytes(), &items); err != nil {
		t.Fatalf("%v: %s", err, w.Body)
	}
	return items
}

// A batch is decided in order, each check as /v1/check would decide it,
// its failure its own.
func TestChecksInOrder(t *testing.T) {
	f := newFixture(t)
	var b strings.Builder
	b.WriteString("[")
	for i := range 7 {
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString(`{"namespace":"tiny","subject":"u"}`) // 5 per 10h
	}
	b.WriteString(`,{"namespace":"nope","subject":"u"},{"namespace":"tiny","subject":"u","cost":-1},{"namespace":"tiny"},` +
		`{"namespace":"tiny","subject":"other","extra":1},{"namespace":"orders","subject":"user-42","cost":3}]`)
	items := f.checks(t, b.String())
	if len(items) != 12 {
		t.Fatalf("%d results for 12 checks", len(items))
	}
	for i := range 7 {
		wantStatus, wantAllowed, wantRemaining := 200, true, int64(4-i)
		if i >= 5 {
			wantStatus, wantAllowed, wantRemaining = 429, false, 0
		}
		it := items[i]
		if it.Status != wantStatus || it.Allowed != wantAllowed || it.Subject != "u" || len(it.Limits) != 1 || it.Limits[0].Remaining != wantRemaining {
			t.Errorf("check %d: %+v, want status %d, allowed %v, remaining %d", i, it, wantStatus, wantAllowed, wantRemaining)
		}
		if i >= 5 && it.RetryAfter <= 0 {
			t.Errorf("check %d denied with retry_after_ms %d", i, it.RetryAfter)
		}
	}
	for i, want := range []struct {
		status int
		err    string
	}{{404, "unknown namespace"}, {400, "cost"}, {400, ""}, {400, "unknown field"}} {
		it := items[7+i]
		if it.Status != want.status || it.Error == "" || !strings.Contains(it.Error, want.err) {
			t.Errorf("check %d: %+v, want status %d and an error naming %q", 7+i, it, want.status, want.err)
		}
	}
	if it := items[11]; it.Status != 200 || !it.Allowed || it.Limits[0].Remaining != 17 {
		t.Errorf("the check after the failures: %+v, want allowed with 17 of 20 left", it)
	}
	// The same budget as /v1/check's: the batch consumed it.
	if w := f.check(`{"namespace":"tiny","subject":"u"}`); w.Code != http.StatusTooManyRequests {
		t.Errorf("after the batch, /v1/check of u: %d, want 429", w.Code)
	}
}

// What is not a batch is refused whole, with nothing consumed.
func TestChecksRefused(t *testing.T) {
	f := newFixture(t)
	big := "[" + strings.Repeat(`{"namespace":"tiny","subject":"u"},`, MaxChecks) + `{"namespace":"tiny","subject":"u"}]`
	for _, tc := range []struct {
		name, body string
		status     int
		err        string
	}{
		{"an object", `{"namespace":"tiny","subject":"u"}`, 400, "want a JSON array"},
		{"empty", `[]`, 400, "empty array"},
		{"null", `null`, 400, "null"},
		{"malformed", `[{"namespace":"tiny"`, 400, "invalid request body"},
		{"too many", big, 400, "at most 1000"},
		{"too large", "[" + strings.Repeat(" ", DefaultMaxBatchBodyBytes) + "]", 413, "larger than"},
	} {
		w := f.do(http.MethodPost, "/v1/checks", tc.body)
		if w.Code != tc.status || !strings.Contains(w.Body.String(), tc.err) {
			t.Errorf("%s: %d %s, want %d naming %q", tc.name, w.Code, w.Body, tc.status, tc.err)
		}
	}
	if w := f.do(http.MethodGet, "/v1/checks", ""); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("GET /v1/checks: %d", w.Code)
	}
	if w := f.check(`{"namespace":"tiny","subject":"u","cost":5}`); w.Code != http.StatusOK {
		t.Errorf("the refused batches consumed budget: %d %s", w.Code, w.Body)
	}
}
