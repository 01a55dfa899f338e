package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// checkResponse is the body of a 200 or 429 from POST /v1/check.
type checkResponse struct {
	Allowed      bool   `json:"allowed"`
	Namespace    string `json:"namespace"`
	Subject      string `json:"subject"`
	RetryAfterMS int64  `json:"retry_after_ms"`
	DelayMS      int64  `json:"delay_ms"`
	Reason       string `json:"reason"`
	Limits       []struct {
		Name         string `json:"name"`
		Limit        int64  `json:"limit"`
		Remaining    int64  `json:"remaining"`
		ResetAfterMS int64  `json:"reset_after_ms"`
		RetryAfterMS int64  `json:"retry_after_ms"`
	} `json:"limits"`
}

// checkCmd asks a server for one decision and prints a summary line and the
// JSON answer. Exit code: 0 allowed, 1 denied, 2 on any error (usage,
// network, a non-200/429 answer).
func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("check", "check [--server URL] --namespace NS --subject S [--cost N]", stderr)
	server := fs.String("server", "http://127.0.0.1:8080", "base `URL` of a ratelimiter server")
	ns := fs.String("namespace", "", "namespace to check (required)")
	subject := fs.String("subject", "", "subject to check (required)")
	cost := fs.Int64("cost", 1, "units to consume; 0 only peeks")
	timeout := fs.Duration("timeout", 5*time.Second, "time allowed for the request")
	if err := parseFlags(fs, args); err != nil {
		return flagExit(err)
	}
	if *ns == "" || *subject == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "ratelimiter check: --namespace and --subject are required, and nothing else")
		fs.Usage()
		return exitErrors
	}
	body, err := json.Marshal(map[string]any{"namespace": *ns, "subject": *subject, "cost": *cost})
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter check: %v\n", err)
		return exitErrors
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	url := strings.TrimSuffix(*server, "/") + "/v1/check"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter check: %v\n", err)
		return exitErrors
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter check: %v\n", err)
		return exitErrors
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		fmt.Fprintf(stderr, "ratelimiter check: reading the answer: %v\n", err)
		return exitErrors
	}
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusTooManyRequests {
		var e struct {
			Error string `json:"error"`
		}
		if json.Unmarshal(raw, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		fmt.Fprintf(stderr, "ratelimiter check: %s: %s\n", resp.Status, e.Error)
		return exitErrors
	}
	var cr checkResponse
	if err := json.Unmarshal(raw, &cr); err != nil {
		fmt.Fprintf(stderr, "ratelimiter check: malformed answer (%s): %v\n", resp.Status, err)
		return exitErrors
	}
	fmt.Fprintln(stdout, summary(&cr, resp.Header.Get("Retry-After")))
	stdout.Write(raw)
	if cr.Allowed {
		return exitOK
	}
	return exitFail
}

// summary describes a decision in one line:
//
//	allowed: orders/user-42 (per-minute: 19 of 100 left, full in 600ms; per-hour: 999 of 1000 left, full in 2h0m0s)
//	denied: orders/user-42, retry in 600ms (Retry-After: 1) (per-minute: ...)
func summary(cr *checkResponse, retryAfter string) string {
	var b strings.Builder
	if cr.Allowed {
		fmt.Fprintf(&b, "allowed: %s/%s", cr.Namespace, cr.Subject)
		if cr.DelayMS > 0 {
			fmt.Fprintf(&b, ", proceed after %v", ms(cr.DelayMS))
		}
	} else {
		fmt.Fprintf(&b, "denied: %s/%s", cr.Namespace, cr.Subject)
		if cr.RetryAfterMS < 0 {
			fmt.Fprintf(&b, ", never passes: %s", cr.Reason)
		} else {
			fmt.Fprintf(&b, ", retry in %v (Retry-After: %s)", ms(cr.RetryAfterMS), retryAfter)
		}
	}
	b.WriteString(" (")
	for i, l := range cr.Limits {
		if i > 0 {
			b.WriteString("; ")
		}
		fmt.Fprintf(&b, "%s: %d of %d left, full in %v", l.Name, l.Remaining, l.Limit, ms(l.ResetAfterMS))
	}
	b.WriteString(")")
	return b.String()
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
