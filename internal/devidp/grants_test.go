package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// checkSuccess checks the wire form of a successful token response and
// returns the verified token's claims.
func checkSuccess(t *testing.T, idp *testIdP, got answer, wantBody map[string]any) map[string]any {
	t.Helper()
	raw := got.token(t)
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	if cc := got.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store (RFC 6749 §5.1)", cc)
	}
	checkClaims(t, got.body, wantBody)
	checkClaims(t, got.body, map[string]any{"token_type": "Bearer", "expires_in": 300, "refresh_token": nil})
	_, claims := idp.verify(t, raw)
	if _, ok := claims["aud"].(string); !ok {
		t.Errorf("aud = %#v, want one string", claims["aud"])
	}
	if got := claims["exp"].(float64) - claims["iat"].(float64); got != 300 {
		t.Errorf("exp - iat = %v, want 300", got)
	}
	return claims
}

func TestClientCredentials(t *testing.T) {
	idp := startIdP(t, nil)
	tests := []struct {
		name       string
		form       url.Values
		auth       auth
		wantScope  string
		wantClient string
		wantAud    string
	}{
		{"basic, audience, all entitled scopes", url.Values{"audience": {AudienceBilling}}, m2mClient, "billing:read", "audgate-m2m", AudienceBilling},
		{"post, resource, one scope", url.Values{"resource": {AudienceBilling}, "scope": {"billing:read"}}, post("audgate-m2m", "audgate-m2m-dev-secret"), "billing:read", "audgate-m2m", AudienceBilling},
		{"audience and resource agree", url.Values{"audience": {AudienceBilling}, "resource": {AudienceBilling}, "scope": {"billing:write billing:read"}}, gatewayClient, "billing:write billing:read", "audgate", AudienceBilling},
		{"Entra .default scope", url.Values{"scope": {AudienceBilling + "/.default"}}, gatewayClient, "billing:read billing:write", "audgate", AudienceBilling},
		{"Entra qualified scope", url.Values{"scope": {AudienceBilling + "/billing:write"}}, gatewayClient, "billing:write", "audgate", AudienceBilling},
		{"repeated scope names once", url.Values{"audience": {AudienceBilling}, "scope": {"billing:read billing:read"}}, m2mClient, "billing:read", "audgate-m2m", AudienceBilling},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			form := cloneForm(tc.form)
			form.Set("grant_type", GrantClientCredentials)
			got := idp.postToken(t, form, tc.auth)
			claims := checkSuccess(t, idp, got, map[string]any{"scope": tc.wantScope, "issued_token_type": nil})
			checkClaims(t, claims, map[string]any{
				"sub":         tc.wantClient,
				"client_id":   tc.wantClient,
				"aud":         tc.wantAud,
				"scope":       tc.wantScope,
				"act":         nil,
				"permissions": nil,
			})
		})
	}
}

func TestTokenExchange(t *testing.T) {
	idp := startIdP(t, nil)
	alice := idp.userToken(t, "alice", "orders:read")
	bob := idp.userToken(t, "bob")
	m2m := idp.clientToken(t)
	exchanged := idp.postToken(t, exchangeForm(alice, AudienceOrders, "orders:read"), gatewayClient).token(t)
	alicePerms := []string{"orders:read", "orders:write", "billing:read"}

	tests := []struct {
		name      string
		form      url.Values
		wantScope string
		want      map[string]any
	}{
		{
			"alice for orders:read",
			exchangeForm(alice, AudienceOrders, "orders:read"),
			"orders:read",
			map[string]any{"sub": "alice", "aud": AudienceOrders, "client_id": "audgate", "act": map[string]any{"sub": "audgate"}, "permissions": alicePerms},
		},
		{
			"alice, no scope: every entitled scope",
			exchangeForm(alice, AudienceOrders, ""),
			"orders:read orders:write",
			map[string]any{"sub": "alice", "aud": AudienceOrders},
		},
		{
			"alice for billing by resource, type jwt, requested access_token",
			url.Values{
				"grant_type": {GrantTokenExchange}, "subject_token": {alice}, "subject_token_type": {tokenTypeJWT},
				"resource": {AudienceBilling}, "requested_token_type": {tokenTypeAccessToken},
			},
			"billing:read",
			map[string]any{"sub": "alice", "aud": AudienceBilling},
		},
		{
			"bob for orders:read",
			exchangeForm(bob, AudienceOrders, "orders:read"),
			"orders:read",
			map[string]any{"sub": "bob", "permissions": []string{"orders:read"}},
		},
		{
			"a client_credentials token as subject",
			exchangeForm(m2m, AudienceBilling, "billing:read"),
			"billing:read",
			map[string]any{"sub": "audgate-m2m", "client_id": "audgate", "act": map[string]any{"sub": "audgate"}, "permissions": nil},
		},
		{
			"actor_token names the actor",
			withValues(exchangeForm(alice, AudienceOrders, "orders:read"), "actor_token", m2m, "actor_token_type", tokenTypeAccessToken),
			"orders:read",
			map[string]any{"sub": "alice", "act": map[string]any{"sub": "audgate-m2m"}},
		},
		{
			"an exchanged token nests its act",
			exchangeForm(exchanged, AudienceOrders, "orders:read"),
			"orders:read",
			map[string]any{"sub": "alice", "act": map[string]any{"sub": "audgate", "act": map[string]any{"sub": "audgate"}}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := idp.postToken(t, tc.form, gatewayClient)
			claims := checkSuccess(t, idp, got, map[string]any{"scope": tc.wantScope, "issued_token_type": tokenTypeAccessToken})
			checkClaims(t, claims, tc.want)
			checkClaims(t, claims, map[string]any{"scope": tc.wantScope})
		})
	}
}

func TestJWTBearerOnBehalfOf(t *testing.T) {
	idp := startIdP(t, nil)
	alice := idp.userToken(t, "alice")
	form := func(kv ...string) url.Values {
		return withValues(url.Values{"grant_type": {GrantJWTBearer}, "assertion": {alice}}, kv...)
	}
	tests := []struct {
		name      string
		form      url.Values
		wantScope string
		wantAud   string
	}{
		{"Entra qualified scope", form("requested_token_use", "on_behalf_of", "scope", AudienceOrders+"/orders:read"), "orders:read", AudienceOrders},
		{"Entra .default", form("requested_token_use", "on_behalf_of", "scope", AudienceOrders+"/.default"), "orders:read orders:write", AudienceOrders},
		{"plain scope and audience", form("audience", AudienceBilling, "scope", "billing:read"), "billing:read", AudienceBilling},
		{"resource only", form("resource", AudienceBilling), "billing:read", AudienceBilling},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := idp.postToken(t, tc.form, gatewayClient)
			claims := checkSuccess(t, idp, got, map[string]any{"scope": tc.wantScope, "issued_token_type": nil})
			checkClaims(t, claims, map[string]any{
				"sub":         "alice",
				"aud":         tc.wantAud,
				"scope":       tc.wantScope,
				"client_id":   "audgate",
				"act":         nil,
				"permissions": []string{"orders:read", "orders:write", "billing:read"},
			})
		})
	}
}

// withValues sets name, value pairs on a copy of form.
func withValues(form url.Values, kv ...string) url.Values {
	form = cloneForm(form)
	for i := 0; i+1 < len(kv); i += 2 {
		form.Set(kv[i], kv[i+1])
	}
	return form
}

// without deletes names from a copy of form.
func without(form url.Values, names ...string) url.Values {
	form = cloneForm(form)
	for _, n := range names {
		form.Del(n)
	}
	return form
}

func TestRefusals(t *testing.T) {
	idp := startIdP(t, nil)
	alice := idp.userToken(t, "alice")
	bob := idp.userToken(t, "bob")
	expired, err := idp.IssueUserToken("alice", AudienceGateway, nil, -time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	foreign := foreignToken(t, idp)
	forged := forgedToken(t, idp)

	cc := func(kv ...string) url.Values {
		return withValues(url.Values{"grant_type": {GrantClientCredentials}}, kv...)
	}
	obo := func(assertion string, kv ...string) url.Values {
		return withValues(url.Values{"grant_type": {GrantJWTBearer}, "assertion": {assertion}}, kv...)
	}
	aliceOrders := exchangeForm(alice, AudienceOrders, "orders:read")

	tests := []struct {
		name     string
		form     url.Values
		auth     auth
		wantCode string
	}{
		// Client authentication and grants.
		{"wrong secret, basic", cc("audience", AudienceBilling), basic("audgate-m2m", "wrong"), "invalid_client"},
		{"wrong secret, post", cc("audience", AudienceBilling), post("audgate-m2m", "wrong"), "invalid_client"},
		{"unknown client", cc("audience", AudienceBilling), basic("nobody", "x"), "invalid_client"},
		{"no client authentication", cc("audience", AudienceBilling), noAuth, "invalid_client"},
		{"client_id differs from the Basic one", cc("audience", AudienceBilling, "client_id", "audgate"), m2mClient, "invalid_client"},
		{"two authentication methods", cc("audience", AudienceBilling, "client_secret", "x"), m2mClient, "invalid_request"},
		{"m2m may not exchange", aliceOrders, m2mClient, "unauthorized_client"},
		{"m2m may not use jwt-bearer", obo(alice, "audience", AudienceOrders), m2mClient, "unauthorized_client"},
		{"no grant_type", url.Values{}, m2mClient, "invalid_request"},
		{"unsupported grant_type", url.Values{"grant_type": {"password"}}, m2mClient, "unsupported_grant_type"},
		{"repeated parameter", url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}, "scope": {"billing:read", "billing:read"}}, m2mClient, "invalid_request"},

		// client_credentials targets.
		{"cc: unknown audience", cc("audience", "https://nowhere.example.com"), m2mClient, "invalid_target"},
		{"cc: audience the client is not entitled to", cc("audience", AudienceOrders), m2mClient, "invalid_target"},
		{"cc: scope outside entitlements", cc("audience", AudienceBilling, "scope", "billing:write"), m2mClient, "invalid_scope"},
		{"cc: audience and resource differ", cc("audience", AudienceBilling, "resource", AudienceOrders), gatewayClient, "invalid_target"},
		{"cc: no audience", cc("scope", "billing:read"), m2mClient, "invalid_request"},
		{"cc: qualified scope names another audience", cc("audience", AudienceBilling, "scope", AudienceOrders+"/orders:read"), gatewayClient, "invalid_target"},
		{"cc: qualified and plain scopes mixed", cc("scope", AudienceBilling+"/billing:read billing:write"), gatewayClient, "invalid_scope"},
		{"cc: .default with another scope", cc("scope", AudienceBilling+"/.default "+AudienceBilling+"/billing:read"), gatewayClient, "invalid_scope"},

		// Token exchange.
		{"exchange: unknown audience", exchangeForm(alice, "https://nowhere.example.com", ""), gatewayClient, "invalid_target"},
		{"exchange: audience not entitled", exchangeForm(bob, AudienceBilling, ""), gatewayClient, "invalid_target"},
		{"exchange: the gateway's own audience", exchangeForm(alice, AudienceGateway, ""), gatewayClient, "invalid_target"},
		{"exchange: scope not entitled", exchangeForm(bob, AudienceOrders, "orders:write"), gatewayClient, "access_denied"},
		{"exchange: no audience", without(aliceOrders, "audience"), gatewayClient, "invalid_request"},
		{"exchange: expired subject token", exchangeForm(expired, AudienceOrders, ""), gatewayClient, "invalid_grant"},
		{"exchange: subject token from another provider", exchangeForm(foreign, AudienceOrders, ""), gatewayClient, "invalid_grant"},
		{"exchange: subject token with our kid, another key", exchangeForm(forged, AudienceOrders, ""), gatewayClient, "invalid_grant"},
		{"exchange: garbage subject token", exchangeForm("not-a-token", AudienceOrders, ""), gatewayClient, "invalid_grant"},
		{"exchange: no subject_token", without(aliceOrders, "subject_token"), gatewayClient, "invalid_request"},
		{"exchange: no subject_token_type", without(aliceOrders, "subject_token_type"), gatewayClient, "invalid_request"},
		{"exchange: id_token subject type", withValues(aliceOrders, "subject_token_type", "urn:ietf:params:oauth:token-type:id_token"), gatewayClient, "invalid_request"},
		{"exchange: refresh token requested", withValues(aliceOrders, "requested_token_type", "urn:ietf:params:oauth:token-type:refresh_token"), gatewayClient, "invalid_request"},
		{"exchange: actor_token without type", withValues(aliceOrders, "actor_token", bob), gatewayClient, "invalid_request"},
		{"exchange: garbage actor_token", withValues(aliceOrders, "actor_token", "x.y.z", "actor_token_type", tokenTypeAccessToken), gatewayClient, "invalid_grant"},

		// jwt-bearer.
		{"obo: garbage assertion", obo("garbage", "audience", AudienceOrders), gatewayClient, "invalid_grant"},
		{"obo: expired assertion", obo(expired, "audience", AudienceOrders), gatewayClient, "invalid_grant"},
		{"obo: foreign assertion", obo(foreign, "audience", AudienceOrders), gatewayClient, "invalid_grant"},
		{"obo: no assertion", obo("", "audience", AudienceOrders), gatewayClient, "invalid_request"},
		{"obo: other requested_token_use", obo(alice, "audience", AudienceOrders, "requested_token_use", "impersonate"), gatewayClient, "invalid_request"},
		{"obo: audience not entitled", obo(bob, "scope", AudienceBilling+"/.default"), gatewayClient, "invalid_target"},
		{"obo: scope not entitled", obo(bob, "scope", AudienceOrders+"/orders:write"), gatewayClient, "access_denied"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			checkRefusal(t, idp.postToken(t, tc.form, tc.auth), tc.wantCode)
		})
	}
}

// checkRefusal checks an RFC 6749 §5.2 error answer.
func checkRefusal(t *testing.T, got answer, wantCode string) {
	t.Helper()
	wantStatus := http.StatusBadRequest
	if wantCode == "invalid_client" {
		wantStatus = http.StatusUnauthorized
		if h := got.header.Get("WWW-Authenticate"); h != `Basic realm="devidp"` {
			t.Errorf("WWW-Authenticate = %q, want a Basic challenge", h)
		}
	}
	if got.status != wantStatus || got.body["error"] != wantCode {
		t.Fatalf("got %d %s, want %d error %s", got.status, got.raw, wantStatus, wantCode)
	}
	if d, _ := got.body["error_description"].(string); d == "" {
		t.Error("no error_description")
	}
	if _, ok := got.body["access_token"]; ok {
		t.Error("an error answer carries an access_token")
	}
	if ct := got.header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
}

// foreignToken is alice's token from another provider with the same issuer.
func foreignToken(t *testing.T, idp *testIdP) string {
	t.Helper()
	other, err := New(DefaultOptions(idp.Issuer()))
	if err != nil {
		t.Fatal(err)
	}
	tok, err := other.IssueUserToken("alice", AudienceGateway, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// forgedToken is alice's token with idp's kid, signed by another key.
func forgedToken(t *testing.T, idp *testIdP) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	kid, _ := idp.jwks(t).Key(0)
	now := time.Now()
	return signJWT(t, jwa.RS256, key, kid.KeyID(), "at+jwt", map[string]any{
		"iss": idp.Issuer(), "sub": "alice", "aud": AudienceGateway, "client_id": UserTokenClientID,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "forged",
	})
}

// signJWT signs claims as a compact JWS with the given header values.
func signJWT(t *testing.T, alg jwa.SignatureAlgorithm, key any, kid, typ string, claims map[string]any) string {
	t.Helper()
	payload, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	hdr := jws.NewHeaders()
	if kid != "" {
		_ = hdr.Set(jws.KeyIDKey, kid)
	}
	if typ != "" {
		_ = hdr.Set(jws.TypeKey, typ)
	}
	raw, err := jws.Sign(payload, jws.WithKey(alg, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}
