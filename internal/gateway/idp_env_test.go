package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/devidp"
	"github.com/audgate/audgate/policies"
)

// idpEnv is a gateway whose callers' tokens and downstream tokens come
// from the development identity provider, on loopback.
type idpEnv struct {
	*env
	idp      *devidp.Provider
	idpURL   string
	closeIdP func() // stops the IdP's server
	clock    *shiftClock
}

// shiftClock is the real clock, moved forward by Advance: the gateway and
// the IdP share it, so a test can let time pass without waiting.
type shiftClock struct{ offset atomic.Int64 }

func (c *shiftClock) Now() time.Time          { return time.Now().Add(time.Duration(c.offset.Load())) }
func (c *shiftClock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// scopePolicy allows every call and asks for the scopes in the request's
// scope query parameter (space-separated), so that tests choose them.
const scopePolicy = `
default decision := {"allow": false, "reason": "no rule matched"}

decision := {
	"allow": true,
	"audience": input.upstream.audiences[0],
	"scopes": _scopes,
	"headers": {"X-User-Id": input.token.subject},
}

_scopes := split(input.request.query.scope[0], " ") if {
	input.request.query.scope[0] != ""
} else := []
`

const idpConfig = `
server: {listen: "127.0.0.1:0", max_body_bytes: 1024}
inbound:
  issuers:
    - issuer: ${ISSUER}
      audiences: [https://gateway.example.com]
      algorithms: [RS256]
policy:
  path: ${POLICY}
  # Hundreds of concurrent requests under the race detector on two cores:
  # the default 100ms is for production, not for this.
  timeout: 5s
  decision_log: {output: "off"}
token_sources:
  - name: exchange
    type: token_exchange
    issuer: ${ISSUER}
    client_id: audgate
    client_secret: audgate-dev-secret
    timeout: 2s
  - name: m2m
    type: client_credentials
    token_endpoint: ${TOKEN_ENDPOINT}
    client_id: audgate-m2m
    client_secret: audgate-m2m-dev-secret
    client_auth: client_secret_post
    audience_param: resource
  - name: obo
    type: jwt_bearer
    issuer: ${ISSUER}
    client_id: audgate
    client_secret: audgate-dev-secret
    on_behalf_of: true
upstreams:
  - name: orders
    url: ${UPSTREAM}
    token_source: exchange
    audiences: [https://orders.example.com]
    scopes: [orders:read, orders:write]
  - name: billing
    url: ${UPSTREAM}
    token_source: m2m
    audiences: [https://billing.example.com]
  - name: obo
    url: ${UPSTREAM}
    token_source: obo
    audiences: [https://orders.example.com]
routes:
  - {path: /orders/*, upstream: orders}
  - {path: /billing/*, upstream: billing}
  - {path: /obo/*, upstream: obo}
`

func newIdPEnv(t testing.TB, editIdP func(*devidp.Options), editCfg func(string) string) *idpEnv {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	issuer := "http://" + l.Addr().String() + "/"
	clock := &shiftClock{}
	opts := devidp.DefaultOptions(issuer)
	opts.Now = clock.Now
	if editIdP != nil {
		editIdP(&opts)
	}
	p, err := devidp.New(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p.Handler())
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)

	e := &env{upstream: newRecorder(t), logs: &syncBuffer{}}
	doc := idpConfig
	if editCfg != nil {
		doc = editCfg(doc)
	}
	vars := map[string]string{
		"ISSUER": issuer, "TOKEN_ENDPOINT": p.TokenEndpoint(), "UPSTREAM": e.upstream.srv.URL,
		"POLICY": policyDir(t, scopePolicy),
	}
	cfg, err := config.Parse([]byte(doc), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	e.gw, err = New(ctx, cfg, Options{Logger: slog.New(slog.NewJSONHandler(e.logs, nil)), Policies: policies.FS, Now: clock.Now})
	if err != nil {
		t.Fatalf("gateway: %v", err)
	}
	t.Cleanup(e.gw.Close)
	for deadline := time.Now().Add(5 * time.Second); e.gw.Ready() != nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", e.gw.Ready())
		}
	}
	e.srv = httptest.NewServer(e.gw.Handler())
	t.Cleanup(e.srv.Close)
	return &idpEnv{env: e, idp: p, idpURL: issuer, closeIdP: srv.Close, clock: clock}
}

// userToken is a caller's token for the gateway from the IdP.
func (e *idpEnv) userToken(t testing.TB, sub string, ttl time.Duration) string {
	t.Helper()
	tok, err := e.idp.IssueUserToken(sub, devidp.AudienceGateway, []string{"openid"}, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// idpKeys fetches the IdP's JWKS over HTTP, through its discovery document.
func (e *idpEnv) idpKeys(t testing.TB) jwk.Set {
	t.Helper()
	resp, err := http.Get(e.idpURL + ".well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var doc struct {
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	set, err := jwk.Fetch(context.Background(), doc.JWKSURI)
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// downstream verifies the token an upstream request carried against the
// IdP's keys.
func (e *idpEnv) downstream(t testing.TB, keys jwk.Set, r recorded, audience string) jwt.Token {
	t.Helper()
	authz := r.Header.Values("Authorization")
	if len(authz) != 1 || !strings.HasPrefix(authz[0], "Bearer ") {
		t.Fatalf("upstream Authorization = %q", authz)
	}
	tok, err := jwt.Parse([]byte(strings.TrimPrefix(authz[0], "Bearer ")), jwt.WithKeySet(keys),
		jwt.WithIssuer(e.idpURL), jwt.WithAudience(audience))
	if err != nil {
		t.Fatalf("downstream token does not verify against the IdP's JWKS for %s: %v", audience, err)
	}
	return tok
}

func claim(tok jwt.Token, name string) string {
	v, _ := tok.Get(name)
	return fmt.Sprint(v)
}
