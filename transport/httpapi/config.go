package httpapi

import (
	"encoding/json"
	"net/http"
	"sort"
	"time"

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

type overrideView struct {
	Subjects []string             `json:"subjects"`
	Limits   map[string]patchView `json:"limits"`
}

type patchView struct {
	Algorithm string `json:"algorithm,omitempty"`
	Limit     int64  `json:"limit,omitempty"`
	PeriodMS  int64  `json:"period_ms,omitempty"`
	Burst     int64  `json:"burst,omitempty"`
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
			nv.Limits[i] = ruleView{Name: r.Name, Algorithm: r.Algorithm.String(), Limit: r.Limit, PeriodMS: headers.CeilMillis(r.Period), Burst: r.Burst}
		}
		nv.RuntimeOverrides = len(snap.RuntimeOverrides(name))
		for _, o := range ns.Overrides {
			ov := overrideView{Subjects: append([]string(nil), o.Subjects...), Limits: make(map[string]patchView, len(o.Limits))}
			sort.Strings(ov.Subjects)
			for rule, p := range o.Limits {
				pv := patchView{Limit: p.Limit, PeriodMS: headers.CeilMillis(p.Period), Burst: p.Burst}
				if p.Algorithm != 0 {
					pv.Algorithm = p.Algorithm.String()
				}
				ov.Limits[rule] = pv
			}
			nv.Overrides = append(nv.Overrides, ov)
		}
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
