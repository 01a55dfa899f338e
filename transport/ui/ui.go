// Package ui serves the live page at /ui/: the service seen from its own
// metrics, updated every second, with no build step and nothing fetched
// from elsewhere (the page, its script and its style are embedded).
//
// The page polls GET /ui/data, a JSON document of the instance's
// cumulative counts read from its Prometheus registry at the request
// (decisions and check durations per namespace, who decided, the accuracy
// audit, the store's state, the configuration and build in force) and the most denied
// subjects of each namespace (the top-K tracker); the page turns the
// differences between two polls into rates and quantiles. Nothing is
// added to the check path: the counts are those /metrics serves.
//
// The page itself holds no data and is served to anyone who reaches the
// listener; /ui/data is behind the admin token when one is set (Options.
// Guard): the page asks for the token and sends it as a bearer token.
package ui

import (
	"embed"
	"encoding/json"
	"io/fs"
	"math"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/distributedratelimiter/ratelimiter/clock"
	"github.com/distributedratelimiter/ratelimiter/topk"
)

//go:embed static
var static embed.FS

// TopSource is the top-K tracker of denied subjects.
type TopSource interface {
	Top(ns string, n int) []topk.Entry
	Window() time.Duration
}

// Options configure the handler. Gatherer is required.
type Options struct {
	// Gatherer is the registry /metrics serves.
	Gatherer prometheus.Gatherer
	// Top, when not nil, lists the most denied subjects.
	Top TopSource
	// Guard, when not nil, wraps /ui/data (the admin token's check).
	Guard func(http.Handler) http.Handler
	// Clock stamps each document. Default clock.System.
	Clock clock.Clock
}

// TopN is how many subjects per namespace /ui/data lists.
const TopN = 10

// Handler returns the handler of /ui/ (the page) and /ui/data. Mount it at
// /ui/.
func Handler(o Options) http.Handler {
	if o.Clock == nil {
		o.Clock = clock.System
	}
	files, _ := fs.Sub(static, "static") // a constant path of the embedded tree
	mux := http.NewServeMux()
	var data http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		doc, err := collect(o)
		if err != nil {
			http.Error(w, `{"error":"gathering the metrics failed"}`, http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		json.NewEncoder(w).Encode(doc)
	})
	if o.Guard != nil {
		data = o.Guard(data)
	}
	mux.Handle("GET /ui/data", data)
	mux.Handle("GET /ui/", http.StripPrefix("/ui/", securePage(http.FileServerFS(files))))
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
	})
	return mux
}

// securePage sets the headers of the page's files: no framing, scripts and
// connections to this origin only.
func securePage(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Cache-Control", "no-cache")
		next.ServeHTTP(w, r)
	})
}

// Doc is the document of /ui/data: cumulative counts at Time.
type Doc struct {
	Time       int64       `json:"time"` // Unix milliseconds
	Config     string      `json:"config_version"`
	Build      string      `json:"build"`
	Store      StoreState  `json:"store"`
	Namespaces []Namespace `json:"namespaces"`
	TopWindow  string      `json:"top_window,omitempty"`
}

// StoreState is the shared store's state, as the metrics say; a field is
// null when the backend has no such metric (the memory store).
type StoreState struct {
	Connected    *float64 `json:"connected"`
	BreakersOpen *float64 `json:"breakers_open"`
	Instances    *float64 `json:"instances"`
}

// Namespace holds one namespace's cumulative counts.
type Namespace struct {
	Name      string           `json:"name"`
	Allowed   float64          `json:"allowed"`
	Denied    float64          `json:"denied"`
	DecidedBy map[string]int64 `json:"decided_by"`
	// Buckets are the check-duration histogram's cumulative counts, by
	// upper bound in seconds (the last is +Inf, as null bound).
	Buckets []Bucket     `json:"buckets"`
	Top     []topk.Entry `json:"top"`
	// Audit holds the accuracy audit's counts; nil when it is off.
	Audit *Audit `json:"audit"`
}

// Audit is a namespace's accuracy audit so far (package audit).
type Audit struct {
	Checks float64 `json:"checks"`
	Over   float64 `json:"over"`
	Under  float64 `json:"under"`
}

// Bucket is one cumulative histogram bucket; Le is null for +Inf.
type Bucket struct {
	Le    *float64 `json:"le"`
	Count uint64   `json:"count"`
}

func collect(o Options) (Doc, error) {
	mfs, err := o.Gatherer.Gather()
	if err != nil {
		return Doc{}, err
	}
	doc := Doc{Time: o.Clock.Now().UnixMilli()}
	nss := map[string]*Namespace{}
	ns := func(name string) *Namespace {
		n := nss[name]
		if n == nil {
			n = &Namespace{Name: name, DecidedBy: map[string]int64{}, Top: []topk.Entry{}}
			nss[name] = n
		}
		return n
	}
	for _, mf := range mfs {
		for _, m := range mf.Metric {
			l := labels(m)
			switch mf.GetName() {
			case "ratelimiter_decisions_total":
				if l["outcome"] == "denied" {
					ns(l["namespace"]).Denied += m.GetCounter().GetValue()
				} else {
					ns(l["namespace"]).Allowed += m.GetCounter().GetValue()
				}
			case "ratelimiter_decided_by_total":
				ns(l["namespace"]).DecidedBy[l["decided_by"]] += int64(m.GetCounter().GetValue())
			case "ratelimiter_check_duration_seconds":
				n := ns(l["namespace"])
				for _, b := range m.GetHistogram().GetBucket() {
					le := b.GetUpperBound()
					n.Buckets = append(n.Buckets, Bucket{Le: &le, Count: b.GetCumulativeCount()})
				}
				n.Buckets = append(n.Buckets, Bucket{Count: m.GetHistogram().GetSampleCount()})
			case "ratelimiter_audit_checks_total", "ratelimiter_audit_over_admissions_total", "ratelimiter_audit_under_admissions_total":
				n := ns(l["namespace"])
				if n.Audit == nil {
					n.Audit = &Audit{}
				}
				v := m.GetCounter().GetValue()
				switch mf.GetName() {
				case "ratelimiter_audit_checks_total":
					n.Audit.Checks += v
				case "ratelimiter_audit_over_admissions_total":
					n.Audit.Over += v
				default:
					n.Audit.Under += v
				}
			case "ratelimiter_store_connected":
				doc.Store.Connected = value(m)
			case "ratelimiter_store_breakers_open":
				doc.Store.BreakersOpen = value(m)
			case "ratelimiter_instances":
				doc.Store.Instances = value(m)
			case "ratelimiter_config_info":
				doc.Config = l["version"]
			case "ratelimiter_build_info":
				doc.Build = l["version"] + " " + l["revision"]
			}
		}
	}
	for name, n := range nss {
		if name == "_unknown" && n.Allowed+n.Denied == 0 {
			continue // the series of checks naming no namespace, when there were none
		}
		if o.Top != nil {
			n.Top = o.Top.Top(name, TopN)
		}
		doc.Namespaces = append(doc.Namespaces, *n)
	}
	slices.SortFunc(doc.Namespaces, func(a, b Namespace) int {
		switch {
		case a.Name < b.Name:
			return -1
		case a.Name > b.Name:
			return 1
		}
		return 0
	})
	if o.Top != nil {
		doc.TopWindow = o.Top.Window().String()
	}
	return doc, nil
}

func labels(m *dto.Metric) map[string]string {
	l := make(map[string]string, len(m.Label))
	for _, p := range m.Label {
		l[p.GetName()] = p.GetValue()
	}
	return l
}

func value(m *dto.Metric) *float64 {
	var v float64
	switch {
	case m.Gauge != nil:
		v = m.GetGauge().GetValue()
	case m.Counter != nil:
		v = m.GetCounter().GetValue()
	default:
		return nil
	}
	if math.IsNaN(v) {
		return nil
	}
	return &v
}
