package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/overrides"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/reload"
	"github.com/distributedratelimiter/ratelimiter/topk"
)

// The admin API manages runtime per-subject overrides. Every route needs
// "Authorization: Bearer <token>"; anything else is answered 401 before the
// route is even looked at.
//
//	PUT    /v1/admin/overrides/{namespace}/{subject}   set (replace) the subject's override
//	       {"limits":{"per-minute":{"limit":1000,"burst":200}},"ttl":"24h"}
//	       limits: limit name -> any of limit, period ("1m"), burst, algorithm;
//	       optional expiry: "expires_at" (RFC 3339) or "ttl" (a Go duration)
//	       200 with the override as stored and the limit set now in force
//	GET    /v1/admin/overrides/{namespace}/{subject}   one override, 404 if none
//	DELETE /v1/admin/overrides/{namespace}/{subject}   204, 404 if none
//	GET    /v1/admin/overrides/{namespace}             {"namespace":..,"overrides":[..]}, by subject
//	GET    /v1/admin/top/{namespace}?n=10              the subjects denied most often lately:
//	       {"namespace":..,"window":"1m0s","subjects":[{"subject":..,"denied":N,"error":E},..]}
//	       (package topk: counts over the last one to two windows, each at most
//	       error above the truth); 404 when top-K tracking is off
//
// Overrides are validated like the file's (policy.Snapshot.CheckOverride):
// 400 for a bad body, an unknown limit name, a zero or negative field, a
// burst on a window algorithm or an expiry in the past; 404 for a namespace
// the file does not define; 409 when the namespace holds
// overrides.DefaultMaxPerNamespace (or the configured maximum) already; 413
// for a body over AdminOptions.MaxBodyBytes; 503 when the override store
// fails. A subject with '/' or other reserved characters is written
// percent-encoded in the path (user%2F42).

// MinAdminTokenLen is the shortest admin token NewAdmin accepts, in bytes.
const MinAdminTokenLen = 16

// DefaultAdminMaxBodyBytes bounds an admin request body unless
// AdminOptions.MaxBodyBytes says otherwise.
const DefaultAdminMaxBodyBytes = 64 << 10

// ErrWeakToken is returned by NewAdmin for a token shorter than
// MinAdminTokenLen.
var ErrWeakToken = fmt.Errorf("admin token shorter than %d bytes", MinAdminTokenLen)

// Overrides is what the admin API manages: *reload.Controller.
type Overrides interface {
	Put(ctx context.Context, o policy.Override) (reload.Status, error)
	Get(ns, subject string) (reload.Status, error)
	Delete(ctx context.Context, ns, subject string) error
	List(ns string) ([]reload.Status, error)
}

// AdminOptions configure the admin handler.
type AdminOptions struct {
	// Auth authenticates every request (NewAuth); when nil, one is made
	// from Token.
	Auth *Auth
	// Token is the bearer token every request must carry when Auth is nil:
	// at least MinAdminTokenLen bytes.
	Token string
	// Logger receives recovered panics and failed authentications.
	// Default: discard.
	Logger *slog.Logger
	// MaxBodyBytes bounds a request body. Default DefaultAdminMaxBodyBytes.
	MaxBodyBytes int64
	// Clock turns a ttl into an expiry. Default clock.System.
	Clock clock.Clock
	// Top, when set, serves GET /v1/admin/top/{namespace}: *topk.Tracker.
	Top TopSource
}

// TopSource reports the subjects denied most often: *topk.Tracker.
type TopSource interface {
	Top(ns string, n int) []topk.Entry
	Window() time.Duration
}

// MaxTop bounds the n of GET /v1/admin/top.
const MaxTop = 1000

type admin struct {
	ov      Overrides
	log     *slog.Logger
	maxBody int64
	clock   clock.Clock
	top     TopSource
}

// NewAdmin returns the handler of the admin routes above, behind bearer
// token authentication and panic recovery. Mount it at /v1/admin/ (see
// Options.Admin), or serve it on its own listener.
func NewAdmin(ov Overrides, opts AdminOptions) (http.Handler, error) {
	if ov == nil {
		return nil, errors.New("httpapi: NewAdmin with nil Overrides")
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Auth == nil {
		if opts.Token == "" {
			return nil, errNoAuth
		}
		auth, err := NewAuth(opts.Token, AuthOptions{Logger: opts.Logger, Clock: opts.Clock})
		if err != nil {
			return nil, err
		}
		opts.Auth = auth
	}
	if opts.MaxBodyBytes <= 0 {
		opts.MaxBodyBytes = DefaultAdminMaxBodyBytes
	}
	if opts.Clock == nil {
		opts.Clock = clock.System
	}
	a := &admin{ov: ov, log: opts.Logger, maxBody: opts.MaxBodyBytes, clock: opts.Clock, top: opts.Top}
	mux := http.NewServeMux()
	const one = "/v1/admin/overrides/{namespace}/{subject}"
	mux.HandleFunc("PUT "+one, a.put)
	mux.HandleFunc("GET "+one, a.get)
	mux.HandleFunc("DELETE "+one, a.delete)
	mux.HandleFunc(one, methodNotAllowed("GET, PUT, DELETE"))
	// An override of a descriptor: {descriptor} is key=value,key=value,
	// each key and value query-escaped (policy.ParseDescriptorSubject),
	// the whole path-escaped as one segment.
	const desc = "/v1/admin/overrides/{namespace}/descriptor/{descriptor}"
	mux.HandleFunc("PUT "+desc, a.put)
	mux.HandleFunc("GET "+desc, a.get)
	mux.HandleFunc("DELETE "+desc, a.delete)
	mux.HandleFunc(desc, methodNotAllowed("GET, PUT, DELETE"))
	const list = "/v1/admin/overrides/{namespace}"
	mux.HandleFunc("GET "+list, a.list)
	mux.HandleFunc(list, methodNotAllowed("GET, HEAD"))
	const top = "/v1/admin/top/{namespace}"
	mux.HandleFunc("GET "+top, a.topSubjects)
	mux.HandleFunc(top, methodNotAllowed("GET, HEAD"))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, "no admin route for "+r.Method+" "+r.URL.Path)
	})
	return (&api{log: opts.Logger}).recoverer(opts.Auth.Wrap(mux)), nil
}

// putBody is the body of PUT. Pointers tell an absent field from a zero.
// putBody is the body of PUT, as written; policy judges what it says.
type putBody struct {
	Limits    map[string]*policy.PatchFields `json:"limits"`
	ExpiresAt *string                        `json:"expires_at"`
	TTL       *string                        `json:"ttl"`
}

// decodePut turns a PUT body into an override of ns and subject. It checks
// the body's shape: JSON with no unknown field, no member twice and every
// name written exactly (checkStrict, as POST /v1/check), each patch a
// mapping of the documented fields, one of expires_at (RFC 3339) or ttl (a
// positive duration). What the patches say is judged by policy: each by
// policy.NewPatch here (written zeros, at least one field), the override
// by the controller's Put (policy.Snapshot.CheckOverride: the limits, their
// count, the patched limits, the expiry).
func decodePut(body []byte, ns, subject string, now time.Time) (policy.Override, error) {
	o := policy.Override{Namespace: ns, Subject: subject}
	if err := checkStrict(body, putShape); err != nil {
		return o, err
	}
	var b putBody
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&b); err != nil {
		return o, fmt.Errorf("request body: %w", err)
	}
	if dec.More() {
		return o, errors.New("request body: more than one JSON value")
	}
	o.Limits = make(map[string]policy.Patch, len(b.Limits))
	for name, pf := range b.Limits {
		if pf == nil {
			pf = &policy.PatchFields{}
		}
		p, err := policy.NewPatch(*pf)
		if err != nil {
			var fe *policy.FieldError
			if errors.As(err, &fe) {
				fe.Path = append([]string{"limits", policy.Elem(name)}, fe.Path...)
			}
			return o, err
		}
		o.Limits[name] = p
	}
	switch {
	case b.ExpiresAt != nil && b.TTL != nil:
		return o, errors.New("give expires_at or ttl, not both")
	case b.ExpiresAt != nil:
		t, err := time.Parse(time.RFC3339Nano, *b.ExpiresAt)
		if err != nil {
			return o, fmt.Errorf("expires_at: %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", *b.ExpiresAt)
		}
		o.ExpiresAt = t.UTC()
	case b.TTL != nil:
		d, err := time.ParseDuration(*b.TTL)
		if err != nil || d <= 0 {
			return o, fmt.Errorf("ttl: %q is not a positive duration such as 30m or 24h", *b.TTL)
		}
		o.ExpiresAt = now.Add(d).UTC()
	}
	return o, nil
}

// target is the subject of an override route: {subject}, or the
// DescriptorSubject of {descriptor}.
func target(r *http.Request) (string, error) {
	d := r.PathValue("descriptor")
	if d == "" {
		return r.PathValue("subject"), nil
	}
	entries, err := policy.ParseDescriptorSubject(d)
	if err != nil {
		return "", err
	}
	return policy.DescriptorSubject(entries, nil), nil
}

func (a *admin) put(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	subject, err := target(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	body, status, msg := readBody(w, r, nil, a.maxBody)
	if status != 0 {
		writeError(w, status, msg)
		return
	}
	o, err := decodePut(body, ns, subject, a.clock.Now())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := a.ov.Put(r.Context(), o)
	if err != nil {
		a.writeAdminError(w, err)
		return
	}
	a.writeJSON(w, http.StatusOK, statusView(st))
}

func (a *admin) get(w http.ResponseWriter, r *http.Request) {
	subject, err := target(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	st, err := a.ov.Get(r.PathValue("namespace"), subject)
	if err != nil {
		a.writeAdminError(w, err)
		return
	}
	a.writeJSON(w, http.StatusOK, statusView(st))
}

func (a *admin) delete(w http.ResponseWriter, r *http.Request) {
	subject, err := target(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if err := a.ov.Delete(r.Context(), r.PathValue("namespace"), subject); err != nil {
		a.writeAdminError(w, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

type listView struct {
	Namespace string         `json:"namespace"`
	Overrides []overrideView `json:"overrides"`
}

func (a *admin) list(w http.ResponseWriter, r *http.Request) {
	ns := r.PathValue("namespace")
	sts, err := a.ov.List(ns)
	if err != nil {
		a.writeAdminError(w, err)
		return
	}
	v := listView{Namespace: ns, Overrides: make([]overrideView, len(sts))}
	for i, st := range sts {
		v.Overrides[i] = statusView(st)
	}
	a.writeJSON(w, http.StatusOK, v)
}

type topView struct {
	Namespace string       `json:"namespace"`
	Window    string       `json:"window"`
	Subjects  []topk.Entry `json:"subjects"`
}

func (a *admin) topSubjects(w http.ResponseWriter, r *http.Request) {
	if a.top == nil {
		writeError(w, http.StatusNotFound, "top-K tracking is off")
		return
	}
	ns := r.PathValue("namespace")
	if _, err := a.ov.List(ns); errors.Is(err, policy.ErrUnknownNamespace) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	n := 10
	if q := r.URL.Query().Get("n"); q != "" {
		v, err := strconv.Atoi(q)
		if err != nil || v < 1 || v > MaxTop {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("n must be an integer from 1 to %d, got %q", MaxTop, q))
			return
		}
		n = v
	}
	a.writeJSON(w, http.StatusOK, topView{Namespace: ns, Window: a.top.Window().String(), Subjects: a.top.Top(ns, n)})
}

// writeAdminError maps the controller's errors to statuses.
func (a *admin) writeAdminError(w http.ResponseWriter, err error) {
	switch {
	case errors.Is(err, policy.ErrUnknownNamespace), errors.Is(err, overrides.ErrNotFound):
		writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, policy.ErrInvalid):
		writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, overrides.ErrTooMany):
		writeError(w, http.StatusConflict, err.Error())
	case errors.Is(err, overrides.ErrUnavailable), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		writeError(w, http.StatusServiceUnavailable, "override store unavailable: "+err.Error())
	default:
		a.log.Error("admin API: unexpected error", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: "+err.Error())
	}
}

func (a *admin) writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		a.log.Error("admin API: encoding a response", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: encoding the response")
		return
	}
	w.Header()[hdrContentType] = []string{contentTypeJSON}
	w.WriteHeader(status)
	w.Write(append(body, '\n'))
}

// statusView is a runtime override in admin answers: with its expiry, when
// it was set, whether it applies and the limit set it gives.
func statusView(st reload.Status) overrideView {
	v := viewOfOverride(st.Override)
	updated := st.UpdatedAt.UTC()
	v.UpdatedAt, v.Active, v.Problem = &updated, &st.Active, st.Problem
	for _, r := range st.Rules {
		v.Effective = append(v.Effective, viewOfRule(r))
	}
	return v
}

// adminDisabled answers the admin routes of a server without an admin API.
func adminDisabled(msg string) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		writeError(w, http.StatusNotFound, msg)
	}
}
