package service_test

import (
	"context"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/distributedratelimiter/ratelimiter/clock/clocktest"
	"github.com/distributedratelimiter/ratelimiter/limit"
	"github.com/distributedratelimiter/ratelimiter/service"
	"github.com/distributedratelimiter/ratelimiter/store/memstore"
)

func spanAttrs(s sdktrace.ReadOnlySpan) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range s.Attributes() {
		m[kv.Key] = kv.Value
	}
	return m
}

// With a Tracer, a check is a ratelimiter.check span with the policy and
// store spans under it, and a failure policy's answer a
// ratelimiter.fallback span; the subject is never an attribute.
func TestCheckSpans(t *testing.T) {
	clk := clocktest.New(epoch)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	snap := policySnapshot(t, "v1", tokenBucket("per-second", 1, time.Second))
	f := &flaky{st: newMemstore(t, clk)}
	g := service.Guard{Fallback: newFallback(t)}
	svc, err := service.New(f, snap, service.Options{Clock: clk, Guard: &g, Tracer: tp.Tracer("test")})
	if err != nil {
		t.Fatal(err)
	}
	defer svc.Close()

	check(t, svc, "local", "user-1", 1) // allowed by the store
	check(t, svc, "local", "user-1", 1) // denied by the store
	f.mode.Store(modeFail)
	check(t, svc, "local", "user-2", 1) // the local policy answers
	if _, err := svc.Check(context.Background(), service.Request{Namespace: "nope", Subject: "user-3", Cost: 1}); err == nil {
		t.Fatal("an unknown namespace was checked")
	}

	spans := rec.Ended()
	byName := map[string][]sdktrace.ReadOnlySpan{}
	for _, s := range spans {
		byName[s.Name()] = append(byName[s.Name()], s)
		for _, kv := range s.Attributes() {
			if kv.Value.Emit() == "user-1" || kv.Value.Emit() == "user-2" {
				t.Errorf("span %s carries the subject as %s", s.Name(), kv.Key)
			}
		}
	}
	if n := len(byName["ratelimiter.check"]); n != 4 {
		t.Fatalf("%d check spans, want 4 (spans: %d)", n, len(spans))
	}
	// 3 resolved policies; the unknown namespace fails in its policy span.
	if len(byName["ratelimiter.policy"]) != 4 || len(byName["ratelimiter.store"]) != 3 || len(byName["ratelimiter.fallback"]) != 1 {
		t.Errorf("policy %d, store %d, fallback %d spans: want 4, 3 (one failed) and 1",
			len(byName["ratelimiter.policy"]), len(byName["ratelimiter.store"]), len(byName["ratelimiter.fallback"]))
	}
	checks := byName["ratelimiter.check"]
	want := []struct {
		allowed bool
		by      string
		status  codes.Code
	}{{true, "store", codes.Unset}, {false, "store", codes.Unset}, {true, "local", codes.Unset}, {false, "", codes.Error}}
	for i, w := range want {
		a := spanAttrs(checks[i])
		if a["ratelimiter.allowed"].AsBool() != w.allowed || (w.by != "" && a["ratelimiter.decided_by"].AsString() != w.by) || checks[i].Status().Code != w.status {
			t.Errorf("check %d: attributes %v, status %v: want allowed %v, decided by %q, status %v", i, a, checks[i].Status(), w.allowed, w.by, w.status)
		}
		if a["ratelimiter.namespace"].AsString() == "" {
			t.Errorf("check %d has no namespace", i)
		}
	}
	if spanAttrs(checks[1])["ratelimiter.limit"].AsString() != "per-second" {
		t.Errorf("the denied check names limit %v, want per-second", spanAttrs(checks[1])["ratelimiter.limit"])
	}
	// Every child span is a child of its check's span.
	parents := map[string]bool{}
	for _, c := range checks {
		parents[c.SpanContext().SpanID().String()] = true
	}
	for _, name := range []string{"ratelimiter.policy", "ratelimiter.store", "ratelimiter.fallback"} {
		for _, s := range byName[name] {
			if !parents[s.Parent().SpanID().String()] {
				t.Errorf("a %s span is not a child of a check span", name)
			}
		}
	}
	fb := spanAttrs(byName["ratelimiter.fallback"][0])
	if fb["ratelimiter.on_store_error"].AsString() != "local" || fb["ratelimiter.store_error"].AsString() == "" {
		t.Errorf("fallback span attributes %v", fb)
	}
	failed := byName["ratelimiter.store"][2]
	if failed.Status().Code != codes.Error {
		t.Errorf("the failed store call's span has status %v", failed.Status())
	}
}

// BenchmarkCheckTracing is BenchmarkCheck with tracing off (no Tracer:
// what serve runs without --tracing), with a Tracer whose sampler drops
// every trace (the unsampled checks of a sampled deployment), and with
// every check recorded (spans made, then dropped: no exporter):
//
//	go test -run='^$' -bench=CheckTracing -benchmem -count=3 ./service/
func BenchmarkCheckTracing(b *testing.B) {
	for _, tc := range []struct {
		name   string
		tracer func() *sdktrace.TracerProvider
	}{
		{"off", nil},
		{"unsampled", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.NeverSample()))
		}},
		{"sampled", func() *sdktrace.TracerProvider {
			return sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
		}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			opts := service.Options{Observer: nopObserver{}}
			if tc.tracer != nil {
				opts.Tracer = tc.tracer().Tracer("bench")
			}
			svc, err := service.New(memstore.New(memstore.Options{}), snapshot(b, "v1", tokenBucket("per-minute", limit.MaxLimit/1000, time.Minute)), opts)
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			req := service.Request{Namespace: "orders", Subject: "user-42", Cost: 1}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := svc.Check(ctx, req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
