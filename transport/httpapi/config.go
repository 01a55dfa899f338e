package httpapi

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/policy"
	"github.com/distributedratelimiter/ratelimiter/transport/headers"
)

// configView is the body of GET /v1/config.
type configView struct {
	Version    string          `json:"version"`
	LoadedAt   time.Time       `json:"loaded_at"`
	Namespaces []namespaceView `json:"namespaces"`
}

type namespaceView struct {
	Name          string         `json:"name"`
	SubjectHeader string         `json:"subject_header"`
	CostHeader    string         `json:"cost_header,omitempty"`
	OnStoreError  string         `json:"on_store_error"`
	Limits        []ruleView     `json:"limits"`
	Overrides     []overrideView `json:"overrides,omitempty"`
	// RuntimeOverrides counts the runtime overrides in force (the admin
	// API lists them).
	RuntimeOverrides int `json:"runtime_overrides"`
}

type ruleView struct {
	Name      string `json:"name"`
	Algorithm string `json:"algorithm"`
	Limit     int64  `json:"limit"`
	PeriodMS  int64  `json:"period_ms"`
	Burst     int64  `json:"burst,omitempty"`
}

// overrideView is an override in JSON answers: the file's in GET
// /v1/config, the runtime ones in the admin API's (statusView). Its limits
// read back as a PUT body.
type overrideView struct {
	Namespace string `json:"namespace,omitempty"`
	Subject   string `json:"subject,omitempty"`
	// Descriptor is the override's descriptor, written key=value,...
	// (an override of a descriptor has no subject).
	Descriptor string                        `json:"descriptor,omitempty"`
	Limits     map[string]policy.PatchFields `json:"limits"`
	ExpiresAt  *time.Time                    `json:"expires_at,omitempty"`
	UpdatedAt  *time.Time                    `json:"updated_at,omitempty"`
	// Active reports whether a runtime override applies now; Problem says
	// why not.
	Active  *bool  `json:"active,omitempty"`
	Problem string `json:"problem,omitempty"`
	// Effective is the subject's limit set while the override is active.
	Effective []ruleView `json:"effective,omitempty"`
}

func viewOfOverride(o policy.Override) overrideView {
	v := overrideView{Namespace: o.Namespace, Subject: o.Subject, Limits: make(map[string]policy.PatchFields, len(o.Limits))}
	if policy.IsDescriptorSubject(o.Subject) {
		v.Subject, v.Descriptor = "", policy.SubjectName(o.Subject)
	}
	for name, p := range o.Limits {
		v.Limits[name] = p.Fields()
	}
	if !o.ExpiresAt.IsZero() {
		t := o.ExpiresAt.UTC()
		v.ExpiresAt = &t
	}
	return v
}

func viewOfRule(r limit.Rule) ruleView {
	return ruleView{Name: r.Name, Algorithm: r.Algorithm.String(), Limit: r.Limit, PeriodMS: headers.CeilMillis(r.Period), Burst: r.Burst}
}

func viewOf(snap *policy.Snapshot) configView {
	cv := configView{Version: snap.Version(), LoadedAt: snap.LoadedAt().UTC(), Namespaces: []namespaceView{}}
	for _, name := range snap.Names() {
		ns, ok := snap.Namespace(name)
		if !ok {
			continue
		}
		nv := namespaceView{Name: ns.Name, SubjectHeader: ns.SubjectHeader, CostHeader: ns.CostHeader, OnStoreError: ns.OnStoreError.String(), Limits: make([]ruleView, len(ns.Rules))}
		for i, r := range ns.Rules {
			nv.Limits[i] = viewOfRule(r)
		}
		nv.RuntimeOverrides = len(snap.RuntimeOverrides(name))
		for _, o := range ns.Overrides {
			nv.Overrides = append(nv.Overrides, viewOfOverride(o))
		}
		sort.Slice(nv.Overrides, func(i, j int) bool { return nv.Overrides[i].Subject < nv.Overrides[j].Subject })
		cv.Namespaces = append(cv.Namespaces, nv)
	}
	return cv
}

// config serves GET /v1/config: the policy checks use now.
func (a *api) config(w http.ResponseWriter, _ *http.Request) {
	body, err := json.Marshal(viewOf(a.svc.Snapshot()))
	if err != nil {
		a.log.Error("httpapi: encoding the config view", "err", err)
		writeError(w, http.StatusInternalServerError, "internal error: encoding the config view")
		return
	}
	w.Header()[hdrContentType] = []string{contentTypeJSON}
	w.Write(append(body, '\n'))
}
