package gateway

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/labstack/echo/v4"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Traces (telemetry.tracing): a server span per request, continuing the
// caller's W3C trace context, with children for authn, policy and the
// token source; the IdP round trip and the upstream call are client spans
// from otelhttp on their transports. Spans carry no token, secret or
// claim value, and the server span neither the caller's path nor its Host
// (client spans carry the upstream's or IdP's URL without its query).
// With tracing off, g.tracing is nil and none of this runs.

// noSpan is what span returns when tracing is off: every method is a
// no-op.
var noSpan = trace.SpanFromContext(context.Background())

// span starts a child span of ctx's, when tracing is on.
func (g *Gateway) span(ctx context.Context, name string) (context.Context, trace.Span) {
	if g.tracing == nil {
		return ctx, noSpan
	}
	return g.tracing.Tracer().Start(ctx, name)
}

// knownMethods are the methods a span names as themselves; any other is
// _OTHER, as HTTP semantic conventions ask.
var knownMethods = map[string]bool{
	http.MethodGet: true, http.MethodHead: true, http.MethodPost: true, http.MethodPut: true, http.MethodPatch: true,
	http.MethodDelete: true, http.MethodOptions: true, http.MethodConnect: true, http.MethodTrace: true,
}

func spanMethod(m string) string {
	if knownMethods[m] {
		return m
	}
	return "_OTHER"
}

// traced runs the request inside its server span.
func (g *Gateway) traced(c echo.Context, next func() error) {
	r := c.Request()
	method := spanMethod(r.Method)
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// No server.address: Host is the caller's to write, and may even
	// carry its token (refused, but only after this).
	ctx := g.tracing.Extract(r.Context(), r.Header)
	ctx, span := g.tracing.Tracer().Start(ctx, method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(method),
			semconv.URLScheme(scheme),
			semconv.NetworkProtocolVersion(strings.TrimPrefix(r.Proto, "HTTP/")),
			semconv.NetworkPeerAddress(peerIP(r)),
		))
	c.SetRequest(r.WithContext(ctx))
	defer func() {
		if p := recover(); p != nil { // http.ErrAbortHandler from the proxy, among others
			span.SetStatus(codes.Error, "aborted")
			span.End()
			panic(p)
		}
	}()
	if err := next(); err != nil {
		c.Error(err) // written now, so that the span has the status
	}
	res := c.Response()
	attrs := []attribute.KeyValue{semconv.HTTPResponseStatusCode(res.Status),
		attribute.String("audgate.request_id", res.Header().Get("X-Request-Id"))}
	if route := c.Path(); route != "" && g.routePaths[route] {
		span.SetName(method + " " + route)
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if cl, ok := c.Get(callerKey).(caller); ok {
		attrs = append(attrs, semconv.ClientAddress(cl.ip))
	} else {
		attrs = append(attrs, semconv.ClientAddress(peerIP(r)))
	}
	span.SetAttributes(attrs...)
	if res.Status >= 500 {
		span.SetStatus(codes.Error, http.StatusText(res.Status))
	}
	span.End()
}

// endSpan ends a stage's span, marking it failed with the error's code
// (never its message, which may quote what the caller sent).
func endSpan(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.SetStatus(codes.Error, errorResponse(err).code)
	}
	span.End()
}

// endPolicySpan ends the policy stage's span with what it came to.
func endPolicySpan(span trace.Span, cached bool, err error) {
	if span.IsRecording() {
		var deny *denyError
		result := "error"
		switch {
		case err == nil:
			result = "allow"
		case errors.As(err, &deny):
			result = "deny"
		}
		span.SetAttributes(attribute.String("audgate.policy.result", result), attribute.Bool("audgate.policy.cached", cached))
		if result == "error" {
			span.SetStatus(codes.Error, "policy_error")
		}
	}
	span.End()
}

// traceIDs are the server span's trace and span IDs, for the decision log.
func (g *Gateway) traceIDs(r *http.Request) (traceID, spanID string) {
	if g.tracing == nil {
		return "", ""
	}
	sc := trace.SpanContextFromContext(r.Context())
	if !sc.IsValid() {
		return "", ""
	}
	return sc.TraceID().String(), sc.SpanID().String()
}
