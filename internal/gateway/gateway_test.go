package gateway

import (
	"bufio"
	"crypto"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// gatewayKeys fetches the gateway's published JWKS over HTTP.
func (e *env) gatewayKeys(t *testing.T) jwk.Set {
	t.Helper()
	resp := e.do(t, "GET", "/.well-known/jwks.json", "", nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("jwks: status %d", resp.StatusCode)
	}
	body, _ := io.ReadAll(resp.Body)
	set, err := jwk.Parse(body)
	if err != nil {
		t.Fatalf("jwks: %v", err)
	}
	return set
}

func TestProxiesWithDownstreamToken(t *testing.T) {
	e := newEnv(t, nil)
	inbound := e.issuer.mint(t, map[string]any{"tenant": "acme"})
	resp := e.do(t, "GET", "/orders/42?expand=items", inbound, http.Header{"Accept": {"application/json"}}, "")
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s\nlogs: %s", resp.StatusCode, body, e.logs.String())
	}
	got := e.upstream.requests()
	if len(got) != 1 {
		t.Fatalf("upstream got %d requests, want 1", len(got))
	}
	r := got[0]
	if r.URI != "/orders/42?expand=items" {
		t.Errorf("upstream URI = %q", r.URI)
	}
	authz := r.Header.Values("Authorization")
	if len(authz) != 1 || !strings.HasPrefix(authz[0], "Bearer ") {
		t.Fatalf("upstream Authorization = %q, want exactly one bearer", authz)
	}
	downstream := strings.TrimPrefix(authz[0], "Bearer ")
	if downstream == inbound {
		t.Fatal("the upstream received the caller's token")
	}
	tok, err := jwt.Parse([]byte(downstream), jwt.WithKeySet(e.gatewayKeys(t)),
		jwt.WithIssuer("https://audgate.test"), jwt.WithAudience("https://orders.test"))
	if err != nil {
		t.Fatalf("downstream token does not verify against the gateway's JWKS: %v", err)
	}
	if tok.Subject() != "alice" {
		t.Errorf("sub = %q, want alice", tok.Subject())
	}
	if scope, _ := tok.Get("scope"); scope != "orders:read" {
		t.Errorf("scope = %v, want orders:read", scope)
	}
	if tenant, _ := tok.Get("tenant"); tenant != "acme" {
		t.Errorf("tenant = %v, want acme (decision claims)", tenant)
	}
	if r.Header.Get("X-User-Id") != "alice" {
		t.Errorf("X-User-Id = %q, want alice", r.Header.Get("X-User-Id"))
	}
	for k, vs := range r.Header {
		for _, v := range vs {
			if strings.Contains(v, inbound) {
				t.Errorf("upstream header %s carries the caller's token", k)
			}
		}
	}
	if id := resp.Header.Get("X-Request-Id"); id == "" || r.Header.Get("X-Request-Id") != id {
		t.Errorf("X-Request-Id: client %q, upstream %q", id, r.Header.Get("X-Request-Id"))
	}
}

func TestStripPrefixAndScopesByMethod(t *testing.T) {
	e := newEnv(t, nil)
	resp := e.do(t, "GET", "/profile/me", e.issuer.mint(t, nil), nil, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if got := e.upstream.requests()[0].URI; got != "/api/me" {
		t.Errorf("upstream URI = %q, want /api/me", got)
	}
	resp = e.do(t, "POST", "/orders", e.issuer.mint(t, nil), http.Header{"Content-Type": {"application/json"}}, `{"item":1}`)
	if resp.StatusCode != 200 {
		t.Fatalf("POST status %d", resp.StatusCode)
	}
	r := e.upstream.requests()[1]
	if r.Body != `{"item":1}` {
		t.Errorf("upstream body = %q", r.Body)
	}
	tok, err := jwt.ParseInsecure([]byte(strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")))
	if err != nil {
		t.Fatal(err)
	}
	if scope, _ := tok.Get("scope"); scope != "orders:write" {
		t.Errorf("POST scope = %v, want orders:write", scope)
	}
}

func TestSpoofedHeadersCannotReachOrRemove(t *testing.T) {
	e := newEnv(t, nil)
	inbound := e.issuer.mint(t, nil)
	hdr := http.Header{
		"X-User-Id":              {"admin"},
		"X-User-Roles":           {"admin"},
		"X-Forwarded-User":       {"admin"},
		"X-Forwarded-For":        {"6.6.6.6"},
		"X-Forwarded-Host":       {"evil.example"},
		"X-Forwarded-Proto":      {"https"},
		"Forwarded":              {"for=6.6.6.6"},
		"X-Real-Ip":              {"6.6.6.6"},
		"X-Original-Url":         {"/admin"},
		"Connection":             {"Authorization, X-User-Id, X-Forwarded-For, X-Request-Id"},
		"Cookie":                 {"session=abc"},
		"X-Http-Method-Override": {"DELETE"},
		"X-Forwarded-Ssl":        {"on"},
		"True-Client-Ip":         {"6.6.6.6"},
	}
	resp := e.do(t, "GET", "/orders/7?keep=1", inbound, hdr, "")
	if resp.StatusCode != 200 {
		body, _ := io.ReadAll(resp.Body)
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	r := e.upstream.requests()[0]
	checks := []struct{ name, got, want string }{
		{"X-User-Id", r.Header.Get("X-User-Id"), "alice"},
		{"X-User-Roles", r.Header.Get("X-User-Roles"), ""},
		{"X-Forwarded-User", r.Header.Get("X-Forwarded-User"), ""},
		{"X-Forwarded-For", r.Header.Get("X-Forwarded-For"), "127.0.0.1"},
		{"X-Forwarded-Host", r.Header.Get("X-Forwarded-Host"), strings.TrimPrefix(e.srv.URL, "http://")},
		{"X-Forwarded-Proto", r.Header.Get("X-Forwarded-Proto"), "http"},
		{"Forwarded", r.Header.Get("Forwarded"), ""},
		{"X-Real-Ip", r.Header.Get("X-Real-Ip"), ""},
		{"X-Original-Url", r.Header.Get("X-Original-Url"), ""},
		{"X-Http-Method-Override", r.Header.Get("X-Http-Method-Override"), ""},
		{"X-Forwarded-Ssl", r.Header.Get("X-Forwarded-Ssl"), ""},
		{"True-Client-Ip", r.Header.Get("True-Client-Ip"), ""},
		{"Cookie", r.Header.Get("Cookie"), "session=abc"},
		{"URI", r.URI, "/orders/7?keep=1"},
	}
	for _, c := range checks {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.name, c.got, c.want)
		}
	}
	if n := len(r.Header.Values("Authorization")); n != 1 {
		t.Errorf("upstream got %d Authorization headers, want 1", n)
	}
	if r.Header.Get("X-Request-Id") == "" {
		t.Error("Connection removed X-Request-Id")
	}
}

// errorCase is one request that must fail without reaching the upstream.
type errorCase struct {
	name      string
	method    string
	path      string
	token     func(e *env) string
	header    http.Header
	body      string
	status    int
	code      string
	challenge string // substring of WWW-Authenticate; "" = must be absent
}

func runErrorCases(t *testing.T, e *env, cases []errorCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.upstream.requests())
			tok := ""
			if tc.token != nil {
				tok = tc.token(e)
			}
			method := tc.method
			if method == "" {
				method = "GET"
			}
			resp := e.do(t, method, tc.path, tok, tc.header, tc.body)
			checkError(t, resp, tc.status, tc.code, tc.challenge)
			if after := len(e.upstream.requests()); after != before {
				t.Errorf("the upstream received %d requests on an error path", after-before)
			}
		})
	}
}

func checkError(t *testing.T, resp *http.Response, status int, code, challenge string) {
	t.Helper()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	var eb struct {
		Error, ErrorDescription, RequestID string
	}
	var raw map[string]string
	if err := json.Unmarshal(body, &raw); err != nil {
		t.Fatalf("body is not JSON: %q", body)
	}
	eb.Error, eb.ErrorDescription, eb.RequestID = raw["error"], raw["error_description"], raw["request_id"]
	if eb.Error != code {
		t.Errorf("error = %q, want %q (body %s)", eb.Error, code, body)
	}
	if eb.RequestID == "" || eb.RequestID != resp.Header.Get("X-Request-Id") {
		t.Errorf("request_id %q vs X-Request-Id %q", eb.RequestID, resp.Header.Get("X-Request-Id"))
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q", ct)
	}
	www := resp.Header.Get("WWW-Authenticate")
	switch {
	case challenge == "" && www != "":
		t.Errorf("unexpected WWW-Authenticate %q", www)
	case challenge != "" && !strings.Contains(www, challenge):
		t.Errorf("WWW-Authenticate = %q, want it to contain %q", www, challenge)
	}
}

func TestErrorPaths(t *testing.T) {
	e := newEnv(t, nil)
	alice := func(e *env) string { return e.issuer.mint(t, nil) }
	bob := func(e *env) string {
		return e.issuer.mint(t, map[string]any{"sub": "bob", "permissions": []string{"orders:read"}})
	}
	with := func(claims map[string]any) func(*env) string {
		return func(e *env) string { return e.issuer.mint(t, claims) }
	}
	invalid := `error="invalid_token"`
	runErrorCases(t, e, []errorCase{
		{name: "no route", path: "/nowhere", token: alice, status: 404, code: "not_found"},
		{name: "method not routed", method: "PATCH", path: "/orders/1", token: alice, status: 405, code: "method_not_allowed"},
		{name: "OPTIONS not routed, no token", method: "OPTIONS", path: "/orders/1", status: 405, code: "method_not_allowed"},
		{name: "signature with unused bits set", path: "/orders/1", token: func(e *env) string {
			tok := e.issuer.mint(t, nil)
			const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
			last := strings.IndexByte(alphabet, tok[len(tok)-1])
			// The same signature bytes to a lenient decoder.
			return tok[:len(tok)-1] + string(alphabet[last|1])
		}, status: 401, code: "invalid_token", challenge: invalid},
		{name: "no token", path: "/orders/1", status: 401, code: "unauthorized", challenge: `Bearer realm="audgate"`},
		{name: "basic scheme", path: "/orders/1", header: http.Header{"Authorization": {"Basic YTpi"}}, status: 401, code: "unauthorized", challenge: `Bearer realm="audgate"`},
		{name: "two authorization headers", path: "/orders/1", header: http.Header{"Authorization": {"Bearer a.b.c", "Bearer d.e.f"}}, status: 401, code: "unauthorized", challenge: `Bearer realm="audgate"`},
		{name: "token in query only", path: "/orders/1?access_token=abc", status: 401, code: "unauthorized", challenge: `Bearer realm="audgate"`},
		{name: "malformed bearer", path: "/orders/1", header: http.Header{"Authorization": {"Bearer a b"}}, status: 401, code: "invalid_token", challenge: invalid},
		{name: "garbage token", path: "/orders/1", token: func(*env) string { return "abc" }, status: 401, code: "invalid_token", challenge: invalid},
		{name: "expired", path: "/orders/1", token: with(map[string]any{"exp": time.Now().Add(-time.Hour).Unix()}), status: 401, code: "invalid_token", challenge: invalid},
		{name: "no exp", path: "/orders/1", token: with(map[string]any{"exp": nil}), status: 401, code: "invalid_token", challenge: invalid},
		{name: "wrong audience", path: "/orders/1", token: with(map[string]any{"aud": "https://other"}), status: 401, code: "invalid_token", challenge: invalid},
		{name: "wrong issuer", path: "/orders/1", token: with(map[string]any{"iss": "https://evil"}), status: 401, code: "invalid_token", challenge: invalid},
		{name: "tampered", path: "/orders/1", token: func(e *env) string {
			parts := strings.Split(e.issuer.mint(t, nil), ".")
			other := strings.Split(e.issuer.mint(t, map[string]any{"sub": "root"}), ".")
			return parts[0] + "." + other[1] + "." + parts[2]
		}, status: 401, code: "invalid_token", challenge: invalid},
		{name: "alg none", path: "/orders/1", token: func(e *env) string {
			parts := strings.Split(e.issuer.mint(t, nil), ".")
			return "eyJhbGciOiJub25lIn0." + parts[1] + "."
		}, status: 401, code: "invalid_token", challenge: invalid},
		{name: "policy denies", method: "DELETE", path: "/orders/1", token: bob, status: 403, code: "insufficient_scope", challenge: `error="insufficient_scope"`},
		{name: "body too large", method: "POST", path: "/orders", token: alice, body: strings.Repeat("x", 2000), status: 413, code: "request_too_large"},
		{name: "headers too large", path: "/orders/1", token: alice, header: http.Header{"X-Big": {strings.Repeat("x", 9000)}}, status: 431, code: "request_too_large"},
	})
}

func TestPolicyOutcomes(t *testing.T) {
	tests := []struct {
		name   string
		rego   string
		status int
		code   string
	}{
		{"deny with 404", `decision := {"allow": false, "status": 404, "reason": "hidden"}`, 404, "not_found"},
		{"deny with 401", `decision := {"allow": false, "status": 401, "reason": "step up"}`, 401, "invalid_token"},
		{"audience outside the allow-list", `decision := {"allow": true, "audience": "https://billing.test"}`, 500, "policy_error"},
		{"scope outside the allow-list", `decision := {"allow": true, "audience": "https://orders.test", "scopes": ["admin"]}`, 500, "policy_error"},
		{"header injection", `decision := {"allow": true, "audience": "https://orders.test", "headers": {"X-A": "a\r\nX-Admin: 1"}}`, 500, "policy_error"},
		{"tab in a header value", `decision := {"allow": true, "audience": "https://orders.test", "headers": {"X-User-Id": "ali\tce"}}`, 500, "policy_error"},
		{"sets Authorization", `decision := {"allow": true, "audience": "https://orders.test", "headers": {"Authorization": "Bearer x"}}`, 500, "policy_error"},
		{"overrides sub", `decision := {"allow": true, "audience": "https://orders.test", "claims": {"sub": "root"}}`, 500, "policy_error"},
		{"evaluation error", `decision := {"allow": true, "audience": to_number("x")}`, 500, "policy_error"},
		{"allow is a string", `decision := {"allow": "true", "audience": "https://orders.test"}`, 403, "insufficient_scope"},
		{"undefined", `decision := 1 if false`, 403, "insufficient_scope"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, withPolicy(t, tc.rego))
			resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, "")
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tc.status || !strings.Contains(string(body), `"error":"`+tc.code+`"`) {
				t.Fatalf("got %d %s, want %d %s", resp.StatusCode, body, tc.status, tc.code)
			}
			if n := len(e.upstream.requests()); n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
			if tc.status == 500 && strings.Contains(string(body), "to_number") {
				t.Errorf("policy internals leaked to the client: %s", body)
			}
		})
	}
}

// rawRequest writes a request target as-is over TCP, so that paths Go's
// client would clean or refuse reach the gateway exactly.
func rawRequest(t *testing.T, addr, target, token string) int {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(conn, "GET %s HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n", target, token)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	defer resp.Body.Close()
	return resp.StatusCode
}

func TestNonCanonicalPaths(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.issuer.mint(t, nil)
	addr := strings.TrimPrefix(e.srv.URL, "http://")
	for _, target := range []string{
		"//orders/1", "/orders//1", "/orders/../orders/1", "/orders/./1", "/orders/1/..",
		"/orders/%2e%2e/orders/1", "/orders/%2E", "/orders/.%2e/x", "/orders/%2F1", "/orders/1%2f",
		"/orders/%5C1", "/orders/1\\x", "/orders/%00", "/orders/%0a1", "/orders/%7F",
		"/orders/..;/1", "/orders/%zz", "/orders/1%", "*", "http://gw/orders/1",
		"/orders/%61dmin", "/orders/%31", "/orders/a%7E", "/orders/%252e%252e", "/orders/..%3B/1",
		"/orders/;/1", "/orders/;x", "/orders/1;x", "/orders/1%3Bx", "/orders/%C0%AE", "/orders/%FF",
	} {
		t.Run(target, func(t *testing.T) {
			if got := rawRequest(t, addr, target, tok); got != 400 {
				t.Errorf("status = %d, want 400", got)
			}
		})
	}
	if n := len(e.upstream.requests()); n != 0 {
		t.Errorf("the upstream received %d requests", n)
	}
	for target, upstream := range map[string]string{
		"/orders/1%20a":     "/orders/1%20a",
		"/orders/a%2Bb":     "/orders/a%2Bb", // reserved: its encoded form is not its raw form
		"/orders/a+b":       "/orders/a+b",
		"/orders/caf%C3%A9": "/orders/caf%C3%A9",
	} {
		if got := rawRequest(t, addr, target, tok); got != 200 {
			t.Errorf("%s: got %d, want 200", target, got)
			continue
		}
		reqs := e.upstream.requests()
		if got := reqs[len(reqs)-1].URI; got != upstream {
			t.Errorf("%s reached the upstream as %s, want %s", target, got, upstream)
		}
	}
}

func TestUpstreamFailures(t *testing.T) {
	t.Run("unreachable", func(t *testing.T) {
		e := newEnv(t, func(doc string) string {
			return strings.Replace(doc, "url: ${UPSTREAM}\n    token_source: self\n    audiences: [https://orders.test]",
				"url: http://127.0.0.1:1\n    token_source: self\n    audiences: [https://orders.test]", 1)
		})
		checkError(t, e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, ""), 502, "bad_gateway", "")
	})
	t.Run("timeout", func(t *testing.T) {
		e := newEnv(t, nil)
		e.upstream.mu.Lock()
		e.upstream.delay = 2 * time.Second
		e.upstream.mu.Unlock()
		checkError(t, e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, ""), 504, "upstream_timeout", "")
	})
}

func TestLogsNeverCarryTokens(t *testing.T) {
	e := newEnv(t, nil)
	inbound := e.issuer.mint(t, nil)
	e.do(t, "GET", "/orders/1", inbound, nil, "")
	e.do(t, "DELETE", "/orders/1", e.issuer.mint(t, map[string]any{"permissions": []string{}}), nil, "")
	e.do(t, "GET", "/orders/1", inbound+"x", nil, "")
	downstream := strings.TrimPrefix(e.upstream.requests()[0].Header.Get("Authorization"), "Bearer ")
	logs := e.logs.String()
	if logs == "" {
		t.Fatal("no logs: the test would prove nothing")
	}
	for _, secret := range []string{inbound, downstream, strings.Split(inbound, ".")[2]} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs carry a token: %s", logs)
		}
	}
}

func TestWellKnown(t *testing.T) {
	e := newEnv(t, nil)
	resp := e.do(t, "GET", "/.well-known/openid-configuration", "", nil, "")
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	if doc["issuer"] != "https://audgate.test" || doc["jwks_uri"] != "https://audgate.test/.well-known/jwks.json" {
		t.Errorf("discovery = %v", doc)
	}
	set := e.gatewayKeys(t)
	if set.Len() != 1 {
		t.Fatalf("jwks has %d keys", set.Len())
	}
	k, _ := set.Key(0)
	var raw any
	_ = k.Raw(&raw)
	if _, isPrivate := raw.(crypto.Signer); isPrivate {
		t.Errorf("jwks publishes a private key: %T", raw)
	}
}

// TestDecisionLog: every decision becomes one OPA decision log event
// (EventV1), with the input masked (configured pointers and, always, the
// cookie), the policy's raw result, the bundles in force, labels and
// audgate's own fields under custom.
func TestDecisionLog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	e := newEnv(t, func(doc string) string {
		return strings.Replace(doc, `decision_log: {output: "off"}`,
			`decision_log: {output: "`+path+`", mask: [/input/token/claims/email]}`, 1)
	})
	inbound := e.issuer.mint(t, map[string]any{"email": "alice@example.com"})
	hdr := http.Header{"Cookie": {"session=secret-cookie"}, "X-Request-Id": {"req-allow"}}
	if resp := e.do(t, "GET", "/orders/1?q=1", inbound, hdr, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	if resp := e.do(t, "DELETE", "/orders/1", e.issuer.mint(t, map[string]any{"permissions": []string{}}), http.Header{"X-Request-Id": {"req-deny"}}, ""); resp.StatusCode != 403 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.gw.Close() // flushes the log
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(raw)), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d decision log lines, want 2:\n%s", len(lines), raw)
	}
	for _, secret := range []string{inbound, "secret-cookie", "alice@example.com"} {
		if strings.Contains(string(raw), secret) {
			t.Errorf("decision log carries %q", secret)
		}
	}
	type event struct {
		DecisionID string                     `json:"decision_id"`
		Path       string                     `json:"path"`
		Labels     map[string]string          `json:"labels"`
		Bundles    map[string]map[string]any  `json:"bundles"`
		Input      map[string]json.RawMessage `json:"input"`
		Result     map[string]any             `json:"result"`
		Erased     []string                   `json:"erased"`
		Metrics    map[string]any             `json:"metrics"`
		Timestamp  string                     `json:"timestamp"`
		Custom     map[string]any             `json:"custom"`
	}
	var allow, deny event
	_ = json.Unmarshal([]byte(lines[0]), &allow)
	_ = json.Unmarshal([]byte(lines[1]), &deny)
	if allow.DecisionID == "" || allow.Path != "audgate/decision" || allow.Result["allow"] != true || allow.Input["request"] == nil ||
		allow.Labels["id"] == "" || allow.Labels["version"] == "" || allow.Timestamp == "" || allow.Metrics["timer_rego_query_eval_ns"] == nil {
		t.Errorf("allow event: %s", lines[0])
	}
	if rev, _ := allow.Bundles["audgate"]["revision"].(string); len(rev) != 64 {
		t.Errorf("bundles: %v, want the local policy's SHA-256 as its revision", allow.Bundles)
	}
	if !slices.Contains(allow.Erased, "/input/token/claims/email") || !slices.Contains(allow.Erased, "/input/request/headers/cookie") {
		t.Errorf("erased: %v", allow.Erased)
	}
	ts, _ := allow.Custom["token_source"].(map[string]any)
	if allow.Custom["request_id"] != "req-allow" || allow.Custom["http_status"] != float64(200) || ts["name"] != "self" || ts["outcome"] != "miss" {
		t.Errorf("allow custom: %v", allow.Custom)
	}
	if !strings.Contains(string(allow.Input["request"]), `"q":["1"]`) {
		t.Errorf("query lost: %s", allow.Input["request"])
	}
	if deny.Result["allow"] != false || deny.Custom["request_id"] != "req-deny" || deny.Custom["http_status"] != float64(403) ||
		!strings.Contains(fmt.Sprint(deny.Custom["reason"]), "needs the permission orders:write") || deny.Custom["token_source"] != nil {
		t.Errorf("deny event: %s", lines[1])
	}
}

// TestTokenOnlyInAuthorization: the caller's token reaches nothing but
// Authorization. A cookie carrying it is removed before the policy runs;
// another header or the query carrying it, or an access_token parameter,
// is refused with nothing decided or proxied. Header names with an
// underscore are dropped.
func TestTokenOnlyInAuthorization(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.issuer.mint(t, nil)
	encoded := "%" + fmt.Sprintf("%02X", tok[0]) + tok[1:]
	refused := []struct {
		name   string
		path   string
		header http.Header
	}{
		{name: "custom header", path: "/orders/1", header: http.Header{"X-Debug-Token": {tok}}},
		{name: "encoded in a header, with a malformed escape", path: "/orders/1", header: http.Header{"X-Debug": {encoded + "%zz"}}},
		{name: "query value", path: "/orders/1?t=" + tok},
		{name: "encoded query value", path: "/orders/1?t=" + encoded},
		{name: "query key", path: "/orders/1?" + tok + "=1"},
		{name: "access_token with a header", path: "/orders/1?access_token=zzz"},
		{name: "encoded access_token key", path: "/orders/1?acc%65ss_token=zzz"},
		{name: "path segment", path: "/orders/" + tok},
		{name: "path segment, with more", path: "/orders/x" + tok},
		{name: "Host", path: "/orders/1", header: http.Header{"Host": {tok}}},
		{name: "Host with a port", path: "/orders/1", header: http.Header{"Host": {tok + ":8080"}}},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			before, logged := len(e.upstream.requests()), len(e.logs.String())
			checkError(t, e.do(t, "GET", tc.path, tok, tc.header, ""), 400, "invalid_request", `error="invalid_request"`)
			if strings.Contains(e.logs.String()[logged:], tok) {
				t.Error("the token reached the logs")
			}
			if n := len(e.upstream.requests()) - before; n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
		})
	}
	kept := []struct {
		name, cookie, want string
		header             http.Header
	}{
		{name: "token cookie removed", cookie: "s=1; at=" + tok + "; theme=dark", want: "s=1; theme=dark"},
		{name: "encoded token cookie removed", cookie: "at=" + encoded + "%zz; s=1", want: "s=1"},
		{name: "only the token cookie", cookie: "at=" + tok, want: ""},
	}
	for _, tc := range kept {
		t.Run(tc.name, func(t *testing.T) {
			resp := e.do(t, "GET", "/orders/1", tok, http.Header{"Cookie": {tc.cookie}, "X_User_Id": {"mallory"}}, "")
			if resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			r := e.upstream.requests()[len(e.upstream.requests())-1]
			if got := r.Header.Get("Cookie"); got != tc.want {
				t.Errorf("upstream Cookie = %q, want %q", got, tc.want)
			}
			for k := range r.Header {
				if strings.Contains(k, "_") || strings.EqualFold(k, "X_user_id") {
					t.Errorf("upstream received %s", k)
				}
			}
		})
	}
}

// TestChunkedBodyOverLimit: a body of unknown length streams through
// (gRPC and uploads need that); once it passes max_body_bytes the client
// gets 413 and the upstream's request is cut off, never complete.
func TestChunkedBodyOverLimit(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.issuer.mint(t, nil)
	var complete atomic.Int64
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, err := io.ReadAll(r.Body); err == nil {
			complete.Add(1)
		}
	})
	send := func(body string) *http.Response {
		req, _ := http.NewRequest("POST", e.srv.URL+"/orders", io.MultiReader(strings.NewReader(body)))
		req.ContentLength = -1 // chunked
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := e.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	checkError(t, send(strings.Repeat("x", 4000)), 413, "request_too_large", "")
	if n := complete.Load(); n != 0 {
		t.Fatalf("the upstream read %d complete oversize bodies", n)
	}
	if resp := send(`{"small":true}`); resp.StatusCode != 200 || complete.Load() != 1 {
		t.Fatalf("small chunked body: status %d, complete %d", resp.StatusCode, complete.Load())
	}
}

// TestOptions: OPTIONS is a 405 with Allow on a route that does not take
// it, and reaches a wildcard route that does, whatever the route order.
func TestOptions(t *testing.T) {
	e := newEnv(t, func(doc string) string {
		return strings.Replace(doc, "  - path: /profile/*\n", "  - path: /profile/items/:id\n    methods: [GET]\n    upstream: profile\n  - path: /profile/*\n", 1)
	})
	tok := e.issuer.mint(t, map[string]any{"permissions": []string{"orders:read", "profile:read"}})
	resp := e.do(t, "OPTIONS", "/orders/1", "", nil, "")
	checkError(t, resp, 405, "method_not_allowed", "")
	if allow := resp.Header.Get("Allow"); !strings.Contains(allow, "GET") || strings.Contains(allow, "OPTIONS") {
		t.Errorf("Allow = %q", allow)
	}
	if resp := e.do(t, "OPTIONS", "/profile/items/1", tok, nil, ""); resp.StatusCode != 200 {
		t.Errorf("OPTIONS on a path the wildcard route takes: %d, want it proxied", resp.StatusCode)
	}
	checkError(t, e.do(t, "OPTIONS", "/nowhere", "", nil, ""), 404, "not_found", "")
}

// TestRefusedTokenInPathNotLogged: a request refused before its token is
// verified (or because it is not valid) must not log a path carrying it.
func TestRefusedTokenInPathNotLogged(t *testing.T) {
	e := newEnv(t, nil)
	tok := e.issuer.mint(t, map[string]any{"aud": "https://elsewhere.test"})
	logged := len(e.logs.String())
	checkError(t, e.do(t, "GET", "/orders/"+tok, tok, nil, ""), 401, "invalid_token", `error="invalid_token"`)
	if strings.Contains(e.logs.String()[logged:], tok) {
		t.Error("the refused token reached the log through the path")
	}
	logged = len(e.logs.String())
	checkError(t, e.do(t, "GET", "/nowhere/"+tok, tok, nil, ""), 404, "not_found", "")
	if strings.Contains(e.logs.String()[logged:], tok) {
		t.Error("the token reached the log through an unrouted path")
	}
}

// TestPolicyPrint: print() in the policy reaches the gateway's log with
// the request's ID.
func TestPolicyPrint(t *testing.T) {
	e := newEnv(t, withPolicy(t, `decision := {"allow": true, "audience": "https://orders.test"} if {
	print("deciding for", input.token.subject)
}`))
	resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), http.Header{"X-Request-Id": {"print-1"}}, "")
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	var found bool
	for _, line := range strings.Split(e.logs.String(), "\n") {
		if strings.Contains(line, `"msg":"policy print"`) && strings.Contains(line, `"request_id":"print-1"`) &&
			strings.Contains(line, `deciding for alice`) && strings.Contains(line, `p.rego:`) {
			found = true
		}
	}
	if !found {
		t.Errorf("no print line with the request ID in the log:\n%s", e.logs.String())
	}
}

// TestDecisionResponseHeaders: response_headers reach the caller on allow
// (over the upstream's) and on deny; a deny's scopes become the
// challenge's scope; a decision may not set Set-Cookie; the caller gets
// one X-Request-Id, the gateway's.
func TestDecisionResponseHeaders(t *testing.T) {
	e := newEnv(t, withPolicy(t, `decision := {"allow": true, "audience": "https://orders.test", "response_headers": {"X-Tier": "gold"}} if {
	input.request.method == "GET"
	not input.request.headers["x-cookie"]
} else := {"allow": true, "audience": "https://orders.test", "response_headers": {"Set-Cookie": "sid=1"}} if {
	input.request.headers["x-cookie"]
} else := {"allow": false, "reason": "needs orders:write", "scopes": ["orders:write"], "response_headers": {"X-Tier": "none"}}`))
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Request-Id", "upstream-chose-this")
		w.Header().Set("X-Tier", "bronze")
		_, _ = w.Write([]byte("ok"))
	})
	tok := e.issuer.mint(t, nil)

	resp := e.do(t, "GET", "/orders/1", tok, http.Header{"X-Request-Id": {"rid-1"}}, "")
	if resp.StatusCode != 200 || fmt.Sprint(resp.Header.Values("X-Tier")) != "[gold]" || fmt.Sprint(resp.Header.Values("X-Request-Id")) != "[rid-1]" {
		t.Errorf("allow: %d, X-Tier %q, X-Request-Id %q", resp.StatusCode, resp.Header.Values("X-Tier"), resp.Header.Values("X-Request-Id"))
	}

	resp = e.do(t, "DELETE", "/orders/1", tok, nil, "")
	checkError(t, resp, 403, "insufficient_scope", `scope="orders:write"`)
	if resp.Header.Get("X-Tier") != "none" {
		t.Errorf("deny: X-Tier %q", resp.Header.Get("X-Tier"))
	}

	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Error("a request reached the upstream on a policy error")
	})
	resp = e.do(t, "GET", "/orders/1", tok, http.Header{"X-Cookie": {"1"}}, "")
	checkError(t, resp, 500, "policy_error", "")
	if resp.Header.Get("Set-Cookie") != "" {
		t.Error("the policy set a cookie")
	}
}
