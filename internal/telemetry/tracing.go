package telemetry

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracing defaults and choices.
const (
	DefaultSampleRatio   = 0.05
	ProtocolHTTPProtobuf = "http/protobuf"
	ProtocolGRPC         = "grpc"
)

// TracingProtocols are the OTLP protocols audgate exports with.
func TracingProtocols() []string { return []string{ProtocolHTTPProtobuf, ProtocolGRPC} }

// TracingOptions configure OpenTelemetry tracing.
type TracingOptions struct {
	// Endpoint is the collector's OTLP base URL, as
	// OTEL_EXPORTER_OTLP_ENDPOINT: http/protobuf posts to
	// <Endpoint>/v1/traces. Empty: the OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
	// or OTEL_EXPORTER_OTLP_ENDPOINT environment variable, and without
	// either, tracing is off.
	Endpoint string
	// Protocol is http/protobuf or grpc.
	Protocol string
	// SampleRatio is the share of new traces sampled; a caller's sampled
	// traceparent is always followed (parent-based sampling).
	SampleRatio float64
	// Headers are sent to the collector with every export.
	Headers map[string]string
	// Version and InstanceID name this replica in the traces' resource.
	Version, InstanceID string
}

// Tracing creates audgate's spans and exports them. A nil *Tracing is
// tracing off: callers check for nil and do nothing, at no cost.
type Tracing struct {
	provider *sdktrace.TracerProvider
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
}

// tracingEnabled reports whether opts or the environment name a
// collector.
func tracingEnabled(opts TracingOptions) bool {
	return opts.Endpoint != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// NewTracing starts the exporter and the tracer provider; it returns nil
// when no collector is configured. The exporter connects lazily: an
// unreachable collector loses spans, never requests.
func NewTracing(ctx context.Context, opts TracingOptions) (*Tracing, error) {
	if !tracingEnabled(opts) {
		return nil, nil
	}
	if opts.Endpoint == "" {
		// The collector comes from the environment: so does its protocol.
		for _, k := range []string{"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"} {
			if p := os.Getenv(k); p != "" {
				opts.Protocol = p
				break
			}
		}
	}
	exp, err := newExporter(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("telemetry.tracing: %w", err)
	}
	res, err := resource.New(ctx, resource.WithFromEnv(), resource.WithAttributes(
		semconv.ServiceName("audgate"), semconv.ServiceVersion(opts.Version), semconv.ServiceInstanceID(opts.InstanceID)))
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("telemetry.tracing: resource: %w", err)
	}
	provider := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp, sdktrace.WithBatchTimeout(time.Second)),
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(opts.SampleRatio))),
		sdktrace.WithResource(res),
	)
	return &Tracing{
		provider: provider,
		tracer:   provider.Tracer("github.com/audgate/audgate"),
		// W3C trace context only: baggage would let callers put anything
		// into every span and upstream request.
		prop: propagation.TraceContext{},
	}, nil
}

func newExporter(ctx context.Context, opts TracingOptions) (*otlptrace.Exporter, error) {
	switch opts.Protocol {
	case ProtocolGRPC:
		var o []otlptracegrpc.Option
		if opts.Endpoint != "" {
			o = append(o, otlptracegrpc.WithEndpointURL(opts.Endpoint))
		}
		if len(opts.Headers) > 0 {
			o = append(o, otlptracegrpc.WithHeaders(opts.Headers))
		}
		return otlptracegrpc.New(ctx, o...)
	case ProtocolHTTPProtobuf, "":
		var o []otlptracehttp.Option
		if opts.Endpoint != "" {
			o = append(o, otlptracehttp.WithEndpointURL(strings.TrimSuffix(opts.Endpoint, "/")+"/v1/traces"))
		}
		if len(opts.Headers) > 0 {
			o = append(o, otlptracehttp.WithHeaders(opts.Headers))
		}
		return otlptracehttp.New(ctx, o...)
	}
	return nil, fmt.Errorf("protocol %q: audgate exports with http/protobuf or grpc", opts.Protocol)
}

// Shutdown exports what is buffered and stops the exporter.
func (t *Tracing) Shutdown(ctx context.Context) error {
	if t == nil {
		return nil
	}
	return t.provider.Shutdown(ctx)
}

// Tracer is audgate's tracer.
func (t *Tracing) Tracer() trace.Tracer { return t.tracer }

// Extract continues the caller's W3C trace context, if any.
func (t *Tracing) Extract(ctx context.Context, h http.Header) context.Context {
	return t.prop.Extract(ctx, propagation.HeaderCarrier(h))
}

// Transport wraps an outbound transport: each request is a client span,
// and carries the span's traceparent. The span's url.full has no query:
// the upstream's is the caller's, which a trace has no need of. Without
// tracing, rt is returned.
func (t *Tracing) Transport(rt http.RoundTripper) http.RoundTripper {
	if t == nil {
		return rt
	}
	return withoutQuery{otelhttp.NewTransport(restoreQuery{rt}, otelhttp.WithTracerProvider(t.provider),
		otelhttp.WithPropagators(t.prop),
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method }))}
}

// fullURLKey holds a request's URL, query included, while otelhttp sees
// the request without it.
type fullURLKey struct{}

// withoutQuery shows otelhttp the request without its query.
type withoutQuery struct{ next http.RoundTripper }

func (w withoutQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.RawQuery == "" && !r.URL.ForceQuery {
		return w.next.RoundTrip(r)
	}
	u := *r.URL
	u.RawQuery, u.ForceQuery = "", false
	shown := r.WithContext(context.WithValue(r.Context(), fullURLKey{}, r.URL))
	shown.URL = &u
	return w.next.RoundTrip(shown)
}

// restoreQuery sends the request with its query again.
type restoreQuery struct{ base http.RoundTripper }

func (rq restoreQuery) RoundTrip(r *http.Request) (*http.Response, error) {
	if u, ok := r.Context().Value(fullURLKey{}).(*url.URL); ok {
		r = r.WithContext(r.Context())
		r.URL = u
	}
	return rq.base.RoundTrip(r)
}

// LogHandler adds trace_id and span_id to every record logged with a
// context that holds a span.
func LogHandler(h slog.Handler) slog.Handler { return traceHandler{h} }

type traceHandler struct{ slog.Handler }

func (h traceHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h traceHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return traceHandler{h.Handler.WithAttrs(as)}
}

func (h traceHandler) WithGroup(name string) slog.Handler {
	return traceHandler{h.Handler.WithGroup(name)}
}
