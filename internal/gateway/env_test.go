package gateway

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/policies"
)

// testIssuer is a loopback OpenID issuer: discovery and JWKS over HTTP,
// and a key to mint callers' tokens with.
type testIssuer struct {
	srv *httptest.Server
	key jwk.Key
}

func newTestIssuer(t testing.TB) *testIssuer {
	t.Helper()
	raw, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := jwk.FromRaw(raw)
	_ = key.Set(jwk.KeyIDKey, "test-key")
	_ = key.Set(jwk.AlgorithmKey, jwa.ES256)
	pub, _ := key.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	is := &testIssuer{key: key}
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(map[string]string{"issuer": is.srv.URL, "jwks_uri": is.srv.URL + "/jwks"})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) { _ = json.NewEncoder(w).Encode(set) })
	is.srv = httptest.NewServer(mux)
	t.Cleanup(is.srv.Close)
	return is
}

// mint signs a caller's token; claims override the defaults, and a nil
// value removes a claim.
func (is *testIssuer) mint(t testing.TB, claims map[string]any) string {
	t.Helper()
	c := map[string]any{
		"iss": is.srv.URL, "aud": "https://gateway.test", "sub": "alice", "client_id": "spa",
		"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(),
		"permissions": []string{"orders:read", "orders:write", "profile:read"},
	}
	for k, v := range claims {
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
	}
	payload, _ := json.Marshal(c)
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "at+jwt")
	signed, err := jws.Sign(payload, jws.WithKey(jwa.ES256, is.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(signed)
}

// recorded is one request as the upstream received it.
type recorded struct {
	Method, URI, Host string
	Header            http.Header
	Body              string
}

// recorder is an upstream that records what reaches it.
type recorder struct {
	srv   *httptest.Server
	mu    sync.Mutex
	got   []recorded
	delay time.Duration
}

func newRecorder(t testing.TB) *recorder {
	t.Helper()
	rec := &recorder{}
	rec.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec.mu.Lock()
		rec.got = append(rec.got, recorded{Method: r.Method, URI: r.RequestURI, Host: r.Host, Header: r.Header.Clone(), Body: string(body)})
		delay := rec.delay
		rec.mu.Unlock()
		select { // an upstream that takes delay to answer, unless the gateway gives up first
		case <-time.After(delay):
		case <-r.Context().Done():
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	t.Cleanup(rec.srv.Close)
	return rec
}

func (rec *recorder) requests() []recorded {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return append([]recorded(nil), rec.got...)
}

// env is a gateway on loopback with its issuer and upstream.
type env struct {
	cfg      *config.Config
	issuer   *testIssuer
	upstream *recorder
	gw       *Gateway
	srv      *httptest.Server
	logs     *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

const baseConfig = `
server:
  listen: 127.0.0.1:0
  max_header_bytes: 8192
  max_body_bytes: 1024
inbound:
  issuers:
    - issuer: ${ISSUER}
      audiences: [https://gateway.test]
      algorithms: [ES256]
policy:
  decision_log: {output: "off"}
token_sources:
  - name: self
    type: self_signed
    issuer: https://audgate.test
upstreams:
  - name: orders
    url: ${UPSTREAM}
    token_source: self
    audiences: [https://orders.test]
    scopes: [orders:read, orders:write]
    timeout: 500ms
  - name: profile
    url: ${UPSTREAM}/api
    token_source: self
    audiences: [https://profile.test]
routes:
  - path: /orders
    methods: [GET, POST]
    upstream: orders
  - path: /orders/:id
    methods: [GET, PUT, DELETE]
    upstream: orders
  - path: /profile/*
    upstream: profile
    strip_prefix: /profile
`

// newEnv starts an issuer, an upstream and a gateway. edit may change the
// config YAML before it is parsed.
func newEnv(t testing.TB, edit func(yaml string) string) *env {
	t.Helper()
	return newEnvWith(t, edit, Options{})
}

// newEnvWith is newEnv with gateway options; Logger is always the env's.
func newEnvWith(t testing.TB, edit func(yaml string) string, opts Options) *env {
	t.Helper()
	e := &env{issuer: newTestIssuer(t), upstream: newRecorder(t), logs: &syncBuffer{}}
	doc := baseConfig
	if edit != nil {
		doc = edit(doc)
	}
	vars := map[string]string{"ISSUER": e.issuer.srv.URL, "UPSTREAM": e.upstream.srv.URL}
	cfg, err := config.Parse([]byte(doc), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	log := slog.New(slog.NewJSONHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Logger = log
	opts.Policies = policies.FS
	e.cfg = cfg
	e.gw, err = New(ctx, cfg, opts)
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !opts.EvalOnly && !noWait[t] && e.gw.Ready() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready: %v", e.gw.Ready())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if e.gw.tlsConfig == nil {
		// The server run serves with: its header limit and timeouts.
		e.srv = httptest.NewUnstartedServer(nil)
		e.srv.Config = e.gw.Server()
		e.srv.Start()
		t.Cleanup(e.srv.Close)
	}
	t.Cleanup(e.gw.Close)
	return e
}

// noWait lists the tests whose env does not wait to be ready (bundles
// that are not served yet).
var noWait = map[testing.TB]bool{}

// newEnvNotReady is newEnv without waiting for readiness.
func newEnvNotReady(t testing.TB, edit func(yaml string) string) *env {
	t.Helper()
	noWait[t] = true
	defer delete(noWait, t)
	return newEnvWith(t, edit, Options{})
}

// policyDir writes a policy module into a directory for policy.path.
func policyDir(t testing.TB, rego string) string {
	t.Helper()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package audgate\n\n"+rego), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

func withPolicy(t testing.TB, rego string) func(string) string {
	dir := policyDir(t, rego)
	return func(doc string) string {
		return strings.Replace(doc, "policy:\n", fmt.Sprintf("policy:\n  path: %s\n", dir), 1)
	}
}

// do sends a request through the gateway.
func (e *env) do(t testing.TB, method, path, token string, hdr http.Header, body string) *http.Response {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range hdr {
		if k == "Host" {
			req.Host = vs[0] // the client sends req.Host, not Header["Host"]
			continue
		}
		req.Header[k] = vs
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return resp
}
