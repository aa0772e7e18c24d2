package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/audgate/audgate/policies"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
)

func newEngine(t testing.TB, rego string) *Engine {
	t.Helper()
	e, err := startEngine(t, Options{Modules: fstest.MapFS{
		"p.rego": {Data: []byte("package audgate\n\n" + rego)},
	}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return e
}

func sampleInput() *Input {
	return &Input{
		Request: Request{
			Method: "GET", Path: "/orders/42", Segments: []string{"orders", "42"},
			Query:   map[string][]string{"expand": {"items"}},
			Headers: map[string]string{"accept": "application/json"},
			Host:    "api.example.com", RemoteIP: "10.0.3.4", ClientIP: "203.0.113.7",
			Scheme: "https", Protocol: "HTTP/2.0",
			TLS: &TLS{Version: "1.3", ClientCertificate: &Certificate{
				Subject: "CN=billing-worker", Issuer: "CN=acme internal CA", Serial: "1f3a",
				DNSNames: []string{}, URIs: []string{"spiffe://acme.example/ns/billing/sa/worker"}, Emails: nil,
				FingerprintSHA256: "9c0e", NotAfter: 1767225600,
			}},
		},
		Route:    Route{Path: "/orders/:id", Params: map[string]string{"id": "42"}, Upstream: "orders"},
		Upstream: Upstream{Name: "orders", TokenSource: "idp", Audiences: []string{"https://orders.example.com"}},
		Token: Token{
			Issuer: "https://idp.example.com/", Subject: "alice", ClientID: "spa",
			Audience: []string{"https://gateway.example.com"}, Scopes: []string{"orders:read"},
			ExpiresAt: 1767225600,
			Claims:    map[string]any{"sub": "alice", "permissions": []any{"orders:read"}, "n": json.Number("7")},
		},
	}
}

// TestFixtures runs the decision fixtures shared with `opa test` against
// the embedded default policy through the Go Input type: the JSON input is
// decoded into Input, so a field the Go type drops makes the case fail.
func TestFixtures(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "policies", "fixtures", "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Decisions []struct {
			Note  string   `json:"note"`
			Input Input    `json:"input"`
			Want  Decision `json:"want"`
		} `json:"decisions"`
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&fx); err != nil {
		t.Fatalf("decode fixtures: %v", err)
	}
	if len(fx.Decisions) == 0 {
		t.Fatal("no fixtures")
	}
	e, err := startEngine(t, Options{Modules: policies.FS})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range fx.Decisions {
		t.Run(tc.Note, func(t *testing.T) {
			got, err := e.Decide(context.Background(), &tc.Input)
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			// The raw result, as the decision log records it, is the
			// fixture's decision exactly.
			raw, err := ast.JSON(got.Raw)
			if err != nil {
				t.Fatal(err)
			}
			if rawJSON, wantJSON := mustJSON(t, raw), mustJSON(t, tc.Want); rawJSON != wantJSON {
				t.Errorf("raw result %s, want %s", rawJSON, wantJSON)
			}
			got.Raw = nil
			if !reflect.DeepEqual(got, tc.Want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.Want)
			}
		})
	}
}

// TestInputValueMatchesJSON: the input's JSON form (what eval prints and
// the decision log records) is exactly what the policy sees, empty lists
// and maps included.
func TestInputValueMatchesJSON(t *testing.T) {
	sparse := &Input{Request: Request{Method: "GET", Path: "/"}, Route: Route{Path: "/"}, Upstream: Upstream{Name: "u"}}
	for name, in := range map[string]*Input{"full": sampleInput(), "sparse": sparse} {
		t.Run(name, func(t *testing.T) {
			e := newEngine(t, "decision := input")
			rs, err := e.query.Eval(context.Background(), evalInput(t, in))
			if err != nil {
				t.Fatal(err)
			}
			gotJSON, err := ast.JSON(rs[0].Expressions[0].Value.(ast.Value))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := json.Marshal(gotJSON)
			want, _ := json.Marshal(in)
			var g, w any
			_ = json.Unmarshal(got, &g)
			_ = json.Unmarshal(want, &w)
			if !reflect.DeepEqual(g, w) {
				t.Errorf("ast input differs from the JSON form\ngot  %s\nwant %s", got, want)
			}
		})
	}
}

func TestDecide(t *testing.T) {
	tests := []struct {
		name    string
		rego    string
		want    Decision
		wantErr string
	}{
		{name: "allow true", rego: `decision := {"allow": true, "audience": "a", "scopes": ["s"], "headers": {"X-A": "1"}, "claims": {"t": 1}}`,
			want: Decision{Allow: true, Audience: "a", Scopes: []string{"s"}, Headers: HeadersOf(map[string]string{"X-A": "1"}), Claims: map[string]any{"t": json.Number("1")}}},
		{name: "allow string true denies", rego: `decision := {"allow": "true", "audience": "a"}`, want: Decision{Audience: "a"}},
		{name: "allow 1 denies", rego: `decision := {"allow": 1}`, want: Decision{}},
		{name: "deny with status", rego: `decision := {"allow": false, "status": 404, "reason": "hidden"}`, want: Decision{Status: 404, Reason: "hidden"}},
		{name: "undefined denies", rego: `decision := 1 if false`, want: Decision{Reason: "data.audgate.decision is undefined"}},
		{name: "not an object", rego: `decision := true`, wantErr: "must be an object"},
		{name: "audience not a string", rego: `decision := {"allow": true, "audience": 1}`, wantErr: "decision.audience: must be a string, got a number"},
		{name: "scopes not an array", rego: `decision := {"allow": true, "scopes": "a b"}`, wantErr: "decision.scopes: must be an array"},
		{name: "scope not a string", rego: `decision := {"allow": true, "scopes": ["a", 2]}`, wantErr: "decision.scopes[1]"},
		{name: "header not a string", rego: `decision := {"allow": true, "headers": {"X-A": 1}}`, wantErr: "decision.headers.X-A"},
		{name: "claims not an object", rego: `decision := {"allow": true, "claims": []}`, wantErr: "decision.claims"},
		{name: "status not an integer", rego: `decision := {"allow": false, "status": "403"}`, wantErr: "decision.status"},
		{name: "strict builtin error", rego: `decision := {"allow": true, "audience": to_number("x")}`, wantErr: "evaluate"},
		{name: "conflicting outputs", rego: "decision := {\"allow\": true}\n\ndecision := {\"allow\": false} if input.request.method == \"GET\"", wantErr: "evaluate"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEngine(t, tc.rego)
			got, err := e.Decide(context.Background(), sampleInput())
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a policy error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decide: %v", err)
			}
			got.Raw = nil
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestDecideTimeout(t *testing.T) {
	e, err := startEngine(t, Options{Timeout: 20 * time.Millisecond, Modules: fstest.MapFS{
		"p.rego": {Data: []byte("package audgate\n\ndecision := {\"allow\": true, \"n\": count([x | some x in numbers.range(1, 100000000)])}")},
	}})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err = e.Decide(context.Background(), sampleInput())
	if !errors.Is(err, ErrPolicy) {
		t.Fatalf("err = %v, want a policy error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("evaluation was not interrupted (took %v)", d)
	}
}

func TestNewRefusesBrokenPolicy(t *testing.T) {
	tests := []struct {
		name, rego, want string
	}{
		{name: "syntax", rego: "package audgate\n\ndecision := {", want: "p.rego:"},
		{name: "rego v0 syntax", rego: "package audgate\n\ndecision[x] { x := 1 }", want: "p.rego:"},
		{name: "unknown builtin", rego: "package audgate\n\ndecision := nope(1)", want: "undefined function nope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := startEngine(t, Options{Modules: fstest.MapFS{"p.rego": {Data: []byte(tc.rego)}}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestNewFromPath(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("p.rego", "package audgate\n\ndecision := {\"allow\": true, \"audience\": data.aud}")
	write("data.json", `{"aud": "from-data"}`)
	// A broken test file must not stop the policy from loading.
	write("p_test.rego", "package audgate_test\n\ntest_x if {")
	e, err := startEngine(t, Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	got, err := e.Decide(context.Background(), sampleInput())
	if err != nil || got.Audience != "from-data" {
		t.Fatalf("got %+v, %v; want audience from-data", got, err)
	}
}

func TestCheck(t *testing.T) {
	lim := Limits{Audiences: []string{"https://orders"}, Scopes: []string{"orders:read", "orders:write"}}
	allow := func(f func(*Decision)) Decision {
		d := Decision{Allow: true, Audience: "https://orders", Scopes: []string{"orders:read"}}
		f(&d)
		return d
	}
	tests := []struct {
		name       string
		d          Decision
		lim        Limits
		wantErr    string
		wantStatus int
	}{
		{name: "ok", d: allow(func(*Decision) {}), lim: lim},
		{name: "no scope limits", d: allow(func(d *Decision) { d.Scopes = []string{"anything"} }), lim: Limits{Audiences: lim.Audiences}},
		{name: "missing audience", d: allow(func(d *Decision) { d.Audience = "" }), lim: lim, wantErr: "decision.audience: required"},
		{name: "audience outside", d: allow(func(d *Decision) { d.Audience = "https://billing" }), lim: lim, wantErr: "decision.audience"},
		{name: "scope outside", d: allow(func(d *Decision) { d.Scopes = []string{"orders:read", "admin"} }), lim: lim, wantErr: "decision.scopes[1]"},
		{name: "scope with space", d: allow(func(d *Decision) { d.Scopes = []string{"orders:read orders:write"} }), lim: Limits{Audiences: lim.Audiences}, wantErr: "decision.scopes[0]"},
		{name: "empty scope", d: allow(func(d *Decision) { d.Scopes = []string{""} }), lim: Limits{Audiences: lim.Audiences}, wantErr: "decision.scopes[0]"},
		{name: "authorization header", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"authorization": "Bearer x"}) }), lim: lim, wantErr: "decision.headers.authorization"},
		{name: "host header", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"Host": "evil"}) }), lim: lim, wantErr: "decision.headers.Host"},
		{name: "hop-by-hop header", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"Connection": "close"}) }), lim: lim, wantErr: "decision.headers.Connection"},
		{name: "content-length", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"Content-Length": "1"}) }), lim: lim, wantErr: "decision.headers.Content-Length"},
		{name: "x-request-id", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"x-request-id": "forged"}) }), lim: lim, wantErr: "decision.headers.x-request-id"},
		{name: "x-forwarded-for", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-Forwarded-For": "1.2.3.4"}) }), lim: lim, wantErr: "decision.headers.X-Forwarded-For"},
		{name: "TAB in value", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-User-Id": "ali\tce"}) }), lim: lim, wantErr: "TAB"},
		{name: "NUL in value", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-User-Id": "a\x00"}) }), lim: lim, wantErr: "control character"},
		{name: "DEL in value", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-User-Id": "a\x7f"}) }), lim: lim, wantErr: "control character"},
		{name: "UTF-8 in value", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-User-Name": "Zoë"}) }), lim: lim},
		{name: "CRLF in value", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X-User-Id": "a\r\nX-Admin: 1"}) }), lim: lim, wantErr: "CR, LF"},
		{name: "invalid header name", d: allow(func(d *Decision) { d.Headers = HeadersOf(map[string]string{"X User": "a"}) }), lim: lim, wantErr: "not a valid header name"},
		{name: "registered claim", d: allow(func(d *Decision) { d.Claims = map[string]any{"sub": "root"} }), lim: lim, wantErr: "decision.claims.sub"},
		{name: "scp claim", d: allow(func(d *Decision) { d.Claims = map[string]any{"scp": []any{"orders:admin"}} }), lim: lim, wantErr: "decision.claims.scp"},
		{name: "act claim", d: allow(func(d *Decision) { d.Claims = map[string]any{"act": "x"} }), lim: lim, wantErr: "decision.claims.act"},
		{name: "response header Set-Cookie", d: allow(func(d *Decision) { d.ResponseHeaders = HeadersOf(map[string]string{"set-cookie": "a=1"}) }), lim: lim, wantErr: "decision.response_headers.set-cookie"},
		{name: "response header WWW-Authenticate", d: allow(func(d *Decision) { d.ResponseHeaders = HeadersOf(map[string]string{"WWW-Authenticate": "Basic"}) }), lim: lim, wantErr: "decision.response_headers.WWW-Authenticate"},
		{name: "response header X-Request-Id", d: allow(func(d *Decision) { d.ResponseHeaders = HeadersOf(map[string]string{"X-Request-Id": "x"}) }), lim: lim, wantErr: "decision.response_headers.X-Request-Id"},
		{name: "response header TAB", d: allow(func(d *Decision) { d.ResponseHeaders = HeadersOf(map[string]string{"X-Tier": "a\tb"}) }), lim: lim, wantErr: "TAB"},
		{name: "response header on deny checked", d: Decision{ResponseHeaders: HeadersOf(map[string]string{"Set-Cookie": "a=1"})}, lim: lim, wantErr: "decision.response_headers.Set-Cookie"},
		{name: "response header ok", d: allow(func(d *Decision) { d.ResponseHeaders = HeadersOf(map[string]string{"X-Tier": "gold"}) }), lim: lim},
		{name: "deny with a bad scope", d: Decision{Scopes: []string{"a b"}}, lim: lim, wantErr: "decision.scopes[0]"},
		{name: "deny default status", d: Decision{}, lim: lim, wantStatus: 403},
		{name: "deny 401", d: Decision{Status: 401}, lim: lim, wantStatus: 401},
		{name: "deny 404", d: Decision{Status: 404}, lim: lim, wantStatus: 404},
		{name: "deny 200", d: Decision{Status: 200}, lim: lim, wantErr: "decision.status"},
		{name: "deny 500", d: Decision{Status: 500}, lim: lim, wantErr: "decision.status"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.d.Status
			err := tc.d.Check(tc.lim)
			if tc.wantErr != "" {
				if err == nil || !errors.Is(err, ErrPolicy) || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want a policy error containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if tc.wantStatus != 0 && tc.d.DenyStatus() != tc.wantStatus {
				t.Errorf("status = %d, want %d", tc.d.DenyStatus(), tc.wantStatus)
			}
			if tc.d.Status != before {
				t.Errorf("Check changed the decision's status")
			}
		})
	}
}

func TestWorkers(t *testing.T) {
	w := NewWorkers(2)
	e, err := startEngine(t, Options{Modules: policies.FS, Workers: w})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if d, err := e.Decide(context.Background(), sampleInput()); err != nil || !d.Allow {
				t.Errorf("Decide = %+v, %v", d, err)
			}
		}()
	}
	wg.Wait()
	w.Close()
	w.Close()
	if d, err := e.Decide(context.Background(), sampleInput()); err != nil || !d.Allow {
		t.Errorf("after Close, Decide = %+v, %v; want the caller's goroutine to evaluate", d, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.Decide(ctx, sampleInput()); !errors.Is(err, ErrPolicy) {
		t.Errorf("cancelled context: err = %v, want a policy error", err)
	}
}

func BenchmarkDecideDefaultPolicy(b *testing.B) {
	e, err := startEngine(b, Options{Modules: policies.FS})
	if err != nil {
		b.Fatal(err)
	}
	in := sampleInput()
	tok, err := in.Token.Value()
	if err != nil {
		b.Fatal(err)
	}
	in.TokenValue = tok
	in.UpstreamValue = in.Upstream.Value()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		d, err := e.Decide(ctx, in)
		if err != nil || !d.Allow {
			b.Fatalf("got %+v, %v", d, err)
		}
	}
}

func evalInput(t *testing.T, in *Input) rego.EvalOption {
	t.Helper()
	v, err := in.Value()
	if err != nil {
		t.Fatal(err)
	}
	return rego.EvalParsedInput(v)
}

// startEngine starts a Runtime with opts and returns its Engine.
func startEngine(t testing.TB, opts Options) (*Engine, error) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rt, err := Start(context.Background(), opts)
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { rt.Close(context.Background()) })
	return rt.Engine(), nil
}

// mustJSON is v's JSON, with maps' keys sorted.
func mustJSON(t testing.TB, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var generic any
	_ = json.Unmarshal(b, &generic)
	b, _ = json.Marshal(generic)
	return string(b)
}

// evalRaw evaluates e's query for in, given as a JSON tree, and returns
// the raw result as JSON.
func evalRaw(t testing.TB, e *Engine, in map[string]any) any {
	t.Helper()
	v, err := ast.InterfaceToValue(in)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := e.query.Eval(context.Background(), rego.EvalParsedInput(v))
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) == 0 {
		return nil
	}
	out, err := ast.JSON(rs[0].Expressions[0].Value.(ast.Value))
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestHeaders(t *testing.T) {
	h := HeadersOf(map[string]string{"X-B": "2", "X-A": "1", "x-c": "3"})
	if want := (Headers{{"X-A", "1"}, {"X-B", "2"}, {"x-c", "3"}}); !slices.Equal(h, want) {
		t.Fatalf("HeadersOf = %v, want %v", h, want)
	}
	if v, ok := h.Get("X-B"); !ok || v != "2" {
		t.Errorf("Get(X-B) = %q, %v", v, ok)
	}
	if _, ok := h.Get("x-b"); ok {
		t.Error("Get is exact: x-b is not X-B")
	}
	b, err := json.Marshal(Decision{Allow: true, Headers: h})
	if err != nil || !strings.Contains(string(b), `"headers":{"X-A":"1","X-B":"2","x-c":"3"}`) {
		t.Fatalf("JSON %s, %v: headers must be an object", b, err)
	}
	var back Decision
	if err := json.Unmarshal(b, &back); err != nil || !slices.Equal(back.Headers, h) || back.ResponseHeaders != nil {
		t.Fatalf("round trip: %v, %v", back.Headers, err)
	}
}

// TestSameHeaderTwice: names that differ in case alone name one header,
// wherever they sort, with few headers or many.
func TestSameHeaderTwice(t *testing.T) {
	lim := Limits{Audiences: []string{"a"}}
	few := map[string]string{"X-A": "1", "X-B": "2", "x-a": "3"}
	many := map[string]string{"x-tier": "1", "X-TIER": "2"}
	for i := range 20 {
		many[fmt.Sprintf("X-H%d", i)] = "v"
	}
	for _, m := range []map[string]string{few, many} {
		d := Decision{Allow: true, Audience: "a", Headers: HeadersOf(m)}
		if err := d.Check(lim); err == nil || !strings.Contains(err.Error(), "name the same header") {
			t.Errorf("%d headers: %v, want the same header refused", len(m), err)
		}
		d = Decision{ResponseHeaders: HeadersOf(m)}
		if err := d.Check(lim); err == nil || !strings.Contains(err.Error(), "decision.response_headers") {
			t.Errorf("%d response headers: %v, want the same header refused", len(m), err)
		}
	}
	delete(many, "X-TIER")
	if d := (Decision{Allow: true, Audience: "a", Headers: HeadersOf(many)}); d.Check(lim) != nil {
		t.Errorf("distinct headers refused: %v", d.Check(lim))
	}
}
