package main

import (
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	collector "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver collects the spans an OTLP/HTTP exporter posts to it.
type otlpReceiver struct {
	mu       sync.Mutex
	spans    []*tracepb.Span
	services []string
}

func (o *otlpReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	var req collector.ExportTraceServiceRequest
	if err != nil || r.URL.Path != "/v1/traces" || proto.Unmarshal(body, &req) != nil {
		http.Error(w, "bad export", http.StatusBadRequest)
		return
	}
	o.mu.Lock()
	for _, rs := range req.ResourceSpans {
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.Key == "service.name" {
				o.services = append(o.services, kv.GetValue().GetStringValue())
			}
		}
		for _, ss := range rs.ScopeSpans {
			o.spans = append(o.spans, ss.Spans...)
		}
	}
	o.mu.Unlock()
	out, _ := proto.Marshal(&collector.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(out)
}

// With --tracing, a check's spans reach the OTLP endpoint that the
// standard environment names, in the caller's trace (W3C traceparent):
// the HTTP server span, the check, the policy and the store call under it,
// the service named by OTEL_SERVICE_NAME.
func TestTracingExportsACheckInTheCallersTrace(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the server")
	}
	recv := &otlpReceiver{}
	otlp := httptest.NewServer(recv)
	defer otlp.Close()
	bin := buildBinary(t)
	s := startServerEnv(t, bin, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=" + otlp.URL,
		"OTEL_SERVICE_NAME=ratelimiter-under-test",
		"OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--tracing")

	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	req, _ := http.NewRequest(http.MethodPost, "http://"+s.addr+"/v1/check", strings.NewReader(`{"namespace":"orders","subject":"user-42"}`))
	req.Header.Set("traceparent", "00-"+traceID+"-"+parentID+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("check: %d", resp.StatusCode)
	}

	byName := map[string]*tracepb.Span{}
	within(t, 10*time.Second, "the check's spans exported", func() bool {
		recv.mu.Lock()
		defer recv.mu.Unlock()
		for _, sp := range recv.spans {
			if strings.EqualFold(hex.EncodeToString(sp.TraceId), traceID) {
				byName[sp.Name] = sp
			}
		}
		return len(byName) >= 4
	})
	server, check := byName["POST /v1/check"], byName["ratelimiter.check"]
	if server == nil || check == nil || byName["ratelimiter.policy"] == nil || byName["ratelimiter.store"] == nil {
		t.Fatalf("spans of the trace: %v; want POST /v1/check, ratelimiter.check, ratelimiter.policy, ratelimiter.store", keys(byName))
	}
	if hex.EncodeToString(server.ParentSpanId) != parentID {
		t.Errorf("the server span's parent is %s, want the caller's %s", hex.EncodeToString(server.ParentSpanId), parentID)
	}
	if hex.EncodeToString(check.ParentSpanId) != hex.EncodeToString(server.SpanId) {
		t.Errorf("the check span is not a child of the server span")
	}
	for _, name := range []string{"ratelimiter.policy", "ratelimiter.store"} {
		if hex.EncodeToString(byName[name].ParentSpanId) != hex.EncodeToString(check.SpanId) {
			t.Errorf("%s is not a child of the check span", name)
		}
	}
	attrs := map[string]string{}
	for _, kv := range check.Attributes {
		attrs[kv.Key] = kv.GetValue().String()
	}
	if !strings.Contains(attrs["ratelimiter.namespace"], "orders") || !strings.Contains(attrs["ratelimiter.decided_by"], "store") || !strings.Contains(attrs["ratelimiter.allowed"], "true") {
		t.Errorf("check span attributes %v", attrs)
	}
	recv.mu.Lock()
	defer recv.mu.Unlock()
	if len(recv.services) == 0 || recv.services[0] != "ratelimiter-under-test" {
		t.Errorf("service.name %v, want ratelimiter-under-test (OTEL_SERVICE_NAME)", recv.services)
	}
}

func keys(m map[string]*tracepb.Span) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
