package gateway

import (
	"bufio"
	"compress/gzip"
	"context"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	coltrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// otlpReceiver is a loopback OTLP/HTTP collector that decodes what it is
// sent.
type otlpReceiver struct {
	srv   *httptest.Server
	mu    sync.Mutex
	spans []*tracepb.Span
}

func newOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	rc := &otlpReceiver{}
	rc.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/v1/traces" || r.Header.Get("Content-Type") != "application/x-protobuf" {
			t.Errorf("export to %s as %q", r.URL.Path, r.Header.Get("Content-Type"))
			w.WriteHeader(http.StatusNotFound)
			return
		}
		if r.Header.Get("X-Collector-Key") != "k1" {
			t.Errorf("export without the configured header")
		}
		var body io.Reader = r.Body
		if r.Header.Get("Content-Encoding") == "gzip" {
			zr, err := gzip.NewReader(r.Body)
			if err != nil {
				t.Error(err)
				return
			}
			body = zr
		}
		raw, _ := io.ReadAll(body)
		var req coltrace.ExportTraceServiceRequest
		if err := proto.Unmarshal(raw, &req); err != nil {
			t.Errorf("export: %v", err)
			return
		}
		rc.mu.Lock()
		for _, rs := range req.ResourceSpans {
			for _, ss := range rs.ScopeSpans {
				rc.spans = append(rc.spans, ss.Spans...)
			}
		}
		rc.mu.Unlock()
		out, _ := proto.Marshal(&coltrace.ExportTraceServiceResponse{})
		w.Header().Set("Content-Type", "application/x-protobuf")
		_, _ = w.Write(out)
	}))
	t.Cleanup(rc.srv.Close)
	return rc
}

func (rc *otlpReceiver) received() []*tracepb.Span {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]*tracepb.Span(nil), rc.spans...)
}

func attrString(kvs []*commonpb.KeyValue, key string) string {
	for _, kv := range kvs {
		if kv.Key == key {
			switch v := kv.Value.Value.(type) {
			case *commonpb.AnyValue_StringValue:
				return v.StringValue
			case *commonpb.AnyValue_IntValue:
				return strconv.FormatInt(v.IntValue, 10)
			case *commonpb.AnyValue_BoolValue:
				return strconv.FormatBool(v.BoolValue)
			}
		}
	}
	return ""
}

// TestTracing: a sampled caller's trace continues through the gateway to
// the upstream; the collector gets the server span (the caller's span its
// parent) and its children; no span holds a token or a claim value; the
// decision log event and the logs carry the trace ID.
func TestTracing(t *testing.T) {
	rc := newOTLPReceiver(t)
	logPath := filepath.Join(t.TempDir(), "decisions.log")
	e := newEnv(t, func(doc string) string {
		doc = strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "`+logPath+`"}`, 1)
		return doc + "telemetry:\n  tracing:\n    endpoint: " + rc.srv.URL + "\n    sample_ratio: 0\n    headers: {X-Collector-Key: k1}\n"
	})
	const (
		traceID  = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSp = "00f067aa0ba902b7"
	)
	token := e.issuer.mint(t, map[string]any{"email": "alice@example.com"})
	resp := e.do(t, "GET", "/orders/7?expand=items", token, http.Header{"Traceparent": {"00-" + traceID + "-" + callerSp + "-01"}}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	up := e.upstream.requests()[0]
	tp := strings.Split(up.Header.Get("Traceparent"), "-")
	if len(tp) != 4 || tp[1] != traceID || tp[2] == callerSp || tp[3] != "01" {
		t.Fatalf("upstream traceparent %q: want trace %s with a new parent", up.Header.Get("Traceparent"), traceID)
	}
	downstream := strings.TrimPrefix(up.Header.Get("Authorization"), "Bearer ")
	if up.URI != "/orders/7?expand=items" {
		t.Errorf("upstream got %s: the query must reach it", up.URI)
	}

	// Unsampled: a request without a traceparent (sample_ratio 0) and a
	// denied one with an unsampled parent export nothing.
	e.do(t, "GET", "/orders/8", token, nil, "")
	e.do(t, "GET", "/orders/9", "", http.Header{"Traceparent": {"00-" + strings.Repeat("1", 32) + "-" + callerSp + "-00"}}, "")

	e.gw.Close() // flushes the exporter
	spans := rc.received()
	byName := map[string]*tracepb.Span{}
	for _, s := range spans {
		if got := hex.EncodeToString(s.TraceId); got != traceID {
			t.Errorf("span %q of trace %s exported: only the sampled trace should be", s.Name, got)
		}
		byName[s.Name] = s
	}
	server := byName["GET /orders/:id"]
	if server == nil {
		t.Fatalf("no server span among %d spans", len(spans))
	}
	if server.Kind != tracepb.Span_SPAN_KIND_SERVER || hex.EncodeToString(server.ParentSpanId) != callerSp ||
		attrString(server.Attributes, "http.route") != "/orders/:id" || attrString(server.Attributes, "http.response.status_code") != "200" {
		t.Errorf("server span: kind %v parent %x attributes %v", server.Kind, server.ParentSpanId, server.Attributes)
	}
	for _, name := range []string{"authn", "policy", "token", "GET"} {
		s := byName[name]
		if s == nil {
			t.Errorf("no %q span", name)
			continue
		}
		if string(s.ParentSpanId) != string(server.SpanId) {
			t.Errorf("%q span's parent is %x, want the server span %x", name, s.ParentSpanId, server.SpanId)
		}
	}
	if s := byName["GET"]; s != nil && (s.Kind != tracepb.Span_SPAN_KIND_CLIENT || hex.EncodeToString(s.SpanId) != tp[2]) {
		t.Errorf("upstream span: kind %v id %x; the upstream's parent is %s", s.Kind, s.SpanId, tp[2])
	}
	if s := byName["policy"]; s != nil && attrString(s.Attributes, "audgate.policy.result") != "allow" {
		t.Errorf("policy span attributes %v", s.Attributes)
	}
	if s := byName["token"]; s != nil && attrString(s.Attributes, "audgate.token_source.outcome") != "miss" {
		t.Errorf("token span attributes %v", s.Attributes)
	}

	// No token, secret or claim value anywhere in a span.
	raw, _ := json.Marshal(spans)
	for name, secret := range map[string]string{"the caller's token": token, "the downstream token": downstream,
		"a claim value": "alice@example.com", "the subject": "alice", "the query": "expand"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("%s is in a span", name)
		}
	}

	// The decision log event and the request's log lines name the trace.
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	var events []map[string]any
	for sc.Scan() {
		var ev map[string]any
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatal(err)
		}
		events = append(events, ev)
	}
	if len(events) == 0 || events[0]["trace_id"] != traceID || events[0]["span_id"] != hex.EncodeToString(server.SpanId) {
		t.Errorf("decision log event: trace_id %v span_id %v", events[0]["trace_id"], events[0]["span_id"])
	}
	if !strings.Contains(e.logs.String(), `"trace_id":"`+strings.Repeat("1", 32)+`"`) {
		t.Error("the denied request's log line has no trace_id")
	}
}

// TestTracingOffSendsCallerTraceparentThrough: with tracing off the
// gateway starts no spans and passes the caller's trace context on as it
// came.
func TestTracingOffSendsCallerTraceparentThrough(t *testing.T) {
	e := newEnv(t, nil)
	if e.gw.tracing != nil {
		t.Fatal("tracing is on without an endpoint")
	}
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), http.Header{"Traceparent": {tp}}, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := e.upstream.requests()[0].Header.Get("Traceparent"); got != tp {
		t.Errorf("upstream traceparent %q, want %q", got, tp)
	}
}

// TestTracingIdPRoundTrip: a token exchange at the identity provider is a
// client span under the token span, and neither the client secret nor a
// token appears in any span.
func TestTracingIdPRoundTrip(t *testing.T) {
	rc := newOTLPReceiver(t)
	e := newIdPEnv(t, nil, func(doc string) string {
		return doc + "telemetry:\n  tracing:\n    endpoint: " + rc.srv.URL + "\n    sample_ratio: 1\n    headers: {X-Collector-Key: k1}\n"
	})
	alice := e.userToken(t, "alice", time.Hour)
	if resp := e.do(t, "GET", "/orders/1?scope=orders:read", alice, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	downstream := strings.TrimPrefix(e.upstream.requests()[0].Header.Get("Authorization"), "Bearer ")
	e.gw.Close()
	spans := rc.received()
	var token, idp *tracepb.Span
	for _, s := range spans {
		switch {
		case s.Name == "token":
			token = s
		case s.Name == "POST" && s.Kind == tracepb.Span_SPAN_KIND_CLIENT:
			idp = s
		}
	}
	if token == nil || idp == nil {
		t.Fatalf("token span %v, IdP client span %v among %d spans", token != nil, idp != nil, len(spans))
	}
	if string(idp.ParentSpanId) != string(token.SpanId) || attrString(token.Attributes, "audgate.token_source.name") != "exchange" {
		t.Errorf("the IdP span's parent is %x, want the token span %x; token span %v", idp.ParentSpanId, token.SpanId, token.Attributes)
	}
	raw, _ := json.Marshal(spans)
	for name, secret := range map[string]string{"the caller's token": alice, "the exchanged token": downstream, "the client secret": "audgate-dev-secret"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("%s is in a span", name)
		}
	}
}

// grpcCollector is a loopback OTLP/gRPC collector.
type grpcCollector struct {
	coltrace.UnimplementedTraceServiceServer
	mu    sync.Mutex
	spans []*tracepb.Span
}

func (c *grpcCollector) Export(_ context.Context, req *coltrace.ExportTraceServiceRequest) (*coltrace.ExportTraceServiceResponse, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, rs := range req.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			c.spans = append(c.spans, ss.Spans...)
		}
	}
	return &coltrace.ExportTraceServiceResponse{}, nil
}

// TestTracingExporters: protocol grpc exports to an OTLP/gRPC collector,
// and with no endpoint configured the standard OTEL_EXPORTER_OTLP_ENDPOINT
// turns tracing on.
func TestTracingExporters(t *testing.T) {
	t.Run("grpc", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		col := &grpcCollector{}
		srv := grpc.NewServer()
		coltrace.RegisterTraceServiceServer(srv, col)
		go func() { _ = srv.Serve(ln) }()
		defer srv.Stop()
		e := newEnv(t, func(doc string) string {
			return doc + "telemetry:\n  tracing: {endpoint: http://" + ln.Addr().String() + ", protocol: grpc, sample_ratio: 1}\n"
		})
		if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, ""); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e.gw.Close()
		col.mu.Lock()
		defer col.mu.Unlock()
		found := false
		for _, s := range col.spans {
			found = found || s.Name == "GET /orders/:id"
		}
		if !found {
			t.Errorf("the gRPC collector got %d spans, none the server span", len(col.spans))
		}
	})
	t.Run("environment", func(t *testing.T) {
		rc := newOTLPReceiver(t)
		t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", rc.srv.URL)
		t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "X-Collector-Key=k1")
		e := newEnv(t, func(doc string) string { return doc + "telemetry:\n  tracing: {sample_ratio: 1}\n" })
		if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, ""); resp.StatusCode != 200 {
			t.Fatalf("status %d", resp.StatusCode)
		}
		e.gw.Close()
		if len(rc.received()) == 0 {
			t.Error("nothing exported to OTEL_EXPORTER_OTLP_ENDPOINT")
		}
	})
}
