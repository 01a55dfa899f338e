// Package client checks rate limits against a ratelimiter service over
// HTTP, many decisions per request: concurrent Check calls from any number
// of goroutines coalesce into one POST /v1/checks. A lone call is sent at
// once; while MaxInFlight requests are out, the calls that arrive queue and
// go together in the next one (at most MaxBatch), so under load an
// application pays one request, and one round of syscalls, for many
// decisions, and when idle it adds no wait.
//
// Each call keeps its own deadline: a call whose context ends before its
// request is sent is not sent; one whose request is already out returns
// at its deadline (the others in the request are unaffected, and the check
// may still be decided and charged by the server). The package depends on
// the standard library only.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Defaults of Options.
const (
	DefaultMaxBatch    = 256
	DefaultMaxInFlight = 2
	DefaultTimeout     = 5 * time.Second
)

// MaxBatch is the most checks the server takes in one request
// (httpapi.MaxChecks).
const MaxBatch = 1000

// Options tune a Client. The zero value is usable.
type Options struct {
	// HTTPClient sends the requests. Default: a client of its own whose
	// transport keeps MaxInFlight connections to the server alive.
	HTTPClient *http.Client
	// MaxBatch bounds the checks of one request, 1 to MaxBatch. Default
	// DefaultMaxBatch.
	MaxBatch int
	// MaxInFlight bounds the requests out at once. Default
	// DefaultMaxInFlight.
	MaxInFlight int
	// Timeout bounds one request. Default DefaultTimeout.
	Timeout time.Duration
}

// Request is one check, as POST /v1/check takes it.
type Request struct {
	Namespace string
	Subject   string
	// Cost is the units to consume; 0 means 1.
	Cost int64
	// Peek asks whether a check of cost 1 would pass, consuming nothing.
	Peek bool
}

// wire is a Request as the server reads it.
type wire struct {
	Namespace string `json:"namespace"`
	Subject   string `json:"subject"`
	Cost      int64  `json:"cost"`
}

// Result is the server's decision, as /v1/check answers it.
type Result struct {
	// Status is the status /v1/check would have answered: 200 or 429.
	Status       int    `json:"status"`
	Allowed      bool   `json:"allowed"`
	Namespace    string `json:"namespace"`
	Subject      string `json:"subject"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	DelayMs      int64  `json:"delay_ms"`
	ShadowDenied bool   `json:"shadow_denied"`
	// DecidedBy names who answered: store, deny-cache, local, open or
	// closed (the server's failure policy).
	DecidedBy string  `json:"decided_by"`
	Limits    []Limit `json:"limits"`
}

// RetryAfter is how long to wait before a denied check may pass.
func (r Result) RetryAfter() time.Duration { return time.Duration(r.RetryAfterMs) * time.Millisecond }

// Limit is one limit's part of a decision.
type Limit struct {
	Name         string `json:"name"`
	Limit        int64  `json:"limit"`
	Remaining    int64  `json:"remaining"`
	ResetAfterMs int64  `json:"reset_after_ms"`
	RetryAfterMs int64  `json:"retry_after_ms"`
	// PeriodMs is the limit's period.
	PeriodMs int64 `json:"period_ms"`
	// Shadow marks a limit in shadow mode: what enforcing it would have
	// decided; it never denies.
	Shadow bool `json:"shadow"`
}

// Error is a check the server could not decide (a bad request, an unknown
// namespace, its store unavailable), or a request it refused.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("ratelimiter: %d: %s", e.Status, e.Message) }

// ErrClosed is returned by Check after Close.
var ErrClosed = errors.New("ratelimiter client: closed")

// Client is safe for concurrent use. Create it with New.
type Client struct {
	url      string
	http     *http.Client
	maxBatch int
	maxIn    int
	timeout  time.Duration

	mu       sync.Mutex
	pending  []*call
	inflight int
	closed   bool
	wg       sync.WaitGroup
}

type call struct {
	ctx  context.Context
	req  Request
	res  Result
	err  error
	done chan struct{}
}

// New returns a client of the service at baseURL ("http://127.0.0.1:8080").
func New(baseURL string, o Options) (*Client, error) {
	if !strings.HasPrefix(baseURL, "http://") && !strings.HasPrefix(baseURL, "https://") {
		return nil, fmt.Errorf("ratelimiter client: base URL %q: want http:// or https://", baseURL)
	}
	if o.MaxBatch <= 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.MaxBatch > MaxBatch {
		return nil, fmt.Errorf("ratelimiter client: MaxBatch %d is more than the server takes (%d)", o.MaxBatch, MaxBatch)
	}
	if o.MaxInFlight <= 0 {
		o.MaxInFlight = DefaultMaxInFlight
	}
	if o.Timeout <= 0 {
		o.Timeout = DefaultTimeout
	}
	if o.HTTPClient == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.MaxIdleConnsPerHost = o.MaxInFlight
		o.HTTPClient = &http.Client{Transport: t}
	}
	return &Client{url: strings.TrimSuffix(baseURL, "/") + "/v1/checks", http: o.HTTPClient,
		maxBatch: o.MaxBatch, maxIn: o.MaxInFlight, timeout: o.Timeout}, nil
}

// Check asks the server to decide req, in a request shared with the
// concurrent calls. A denial is a Result, not an error; an error is an
// *Error from the server, a transport failure, ctx's, or ErrClosed.
func (c *Client) Check(ctx context.Context, req Request) (Result, error) {
	if err := ctx.Err(); err != nil {
		return Result{}, err
	}
	cl := &call{ctx: ctx, req: req, done: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return Result{}, ErrClosed
	}
	c.pending = append(c.pending, cl)
	if c.inflight < c.maxIn {
		c.inflight++
		c.wg.Add(1)
		go c.flush()
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.res, cl.err
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
}

// flush sends what is queued, MaxBatch at a time, until nothing is.
func (c *Client) flush() {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		n := min(len(c.pending), c.maxBatch)
		if n == 0 {
			c.inflight--
			c.mu.Unlock()
			return
		}
		batch := append([]*call(nil), c.pending[:n]...)
		c.pending = append(c.pending[:0], c.pending[n:]...)
		c.mu.Unlock()
		c.send(batch)
	}
}

// send posts the calls still wanted and completes every one.
func (c *Client) send(batch []*call) {
	live := batch[:0]
	for _, cl := range batch {
		if err := cl.ctx.Err(); err != nil {
			cl.err = err
			close(cl.done)
			continue
		}
		live = append(live, cl)
	}
	if len(live) == 0 {
		return
	}
	fail := func(err error) {
		for _, cl := range live {
			cl.err = err
			close(cl.done)
		}
	}
	reqs := make([]wire, len(live))
	for i, cl := range live {
		reqs[i] = wire{Namespace: cl.req.Namespace, Subject: cl.req.Subject, Cost: cl.req.Cost}
		switch {
		case cl.req.Peek:
			reqs[i].Cost = 0
		case cl.req.Cost == 0:
			reqs[i].Cost = 1
		}
	}
	body, err := json.Marshal(reqs)
	if err != nil {
		fail(fmt.Errorf("ratelimiter client: %w", err))
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url, bytes.NewReader(body))
	if err != nil {
		fail(fmt.Errorf("ratelimiter client: %w", err))
		return
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := c.http.Do(hr)
	if err != nil {
		fail(fmt.Errorf("ratelimiter client: %w", err))
		return
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		fail(fmt.Errorf("ratelimiter client: reading the answer: %w", err))
		return
	}
	if resp.StatusCode != http.StatusOK {
		var e struct {
			Error string `json:"error"`
		}
		json.Unmarshal(raw, &e)
		if e.Error == "" {
			e.Error = strings.TrimSpace(string(raw))
		}
		fail(&Error{Status: resp.StatusCode, Message: e.Error})
		return
	}
	var items []struct {
		Result
		Error string `json:"error"`
	}
	if err := json.Unmarshal(raw, &items); err != nil || len(items) != len(live) {
		fail(fmt.Errorf("ratelimiter client: %d answers for %d checks (%v)", len(items), len(live), err))
		return
	}
	for i, cl := range live {
		if it := items[i]; it.Error != "" {
			cl.err = &Error{Status: it.Status, Message: it.Error}
		} else {
			cl.res = it.Result
		}
		close(cl.done)
	}
}

// Close waits for the requests in flight; later calls get ErrClosed.
func (c *Client) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.wg.Wait()
	return nil
}
