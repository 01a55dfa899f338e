// Package tracing sets up OpenTelemetry traces for serve --tracing: a
// tracer provider that batches spans to an OTLP/HTTP exporter, configured
// by the standard OTEL_* environment variables (OTEL_EXPORTER_OTLP_ENDPOINT
// or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, _HEADERS, _TIMEOUT;
// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES; OTEL_TRACES_SAMPLER and
// _ARG, default parentbased_always_on; OTEL_BSP_*), and W3C trace context
// propagation, so that a check's spans join the caller's trace.
//
// Tracing is off unless asked for: without it no provider exists and the
// service's check path runs no tracing code at all.
package tracing

import (
	"context"
	"fmt"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// ServiceName is the default service.name (OTEL_SERVICE_NAME overrides it).
const ServiceName = "ratelimiter"

// Start returns a tracer provider exporting to the OTLP/HTTP endpoint the
// environment names, installs it and the W3C propagators as OpenTelemetry's
// globals (for the HTTP and gRPC instrumentation), and returns its shutdown,
// which flushes the spans still buffered. It fails on a protocol other than
// http/protobuf, and when OTEL_SDK_DISABLED is true.
func Start(ctx context.Context, version string) (*sdktrace.TracerProvider, func(context.Context) error, error) {
	if strings.EqualFold(os.Getenv("OTEL_SDK_DISABLED"), "true") {
		return nil, nil, fmt.Errorf("tracing: --tracing with OTEL_SDK_DISABLED=true")
	}
	for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
		if p := os.Getenv(name); p != "" {
			if p != "http/protobuf" {
				return nil, nil, fmt.Errorf("tracing: %s=%s: only http/protobuf is exported", name, p)
			}
			break
		}
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: OTLP exporter: %w", err)
	}
	res, err := resource.New(ctx,
		resource.WithAttributes(attribute.String("service.name", ServiceName), attribute.String("service.version", version)),
		resource.WithFromEnv(), // OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES: last, so that they win
	)
	if err != nil {
		return nil, nil, fmt.Errorf("tracing: resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}))
	return tp, tp.Shutdown, nil
}
