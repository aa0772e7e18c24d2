package devidp

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// This file holds the fixtures: a provider on a real loopback server, a
// client that posts to its token endpoint, and a verifier that checks
// tokens against the JWKS fetched over HTTP with jwx.

// testIdP is a Provider served on loopback.
type testIdP struct {
	*Provider
	srv *httptest.Server
}

// startIdP serves New(DefaultOptions(issuer)), edited by edit, on a
// loopback port chosen before New so that the issuer names it.
func startIdP(t *testing.T, edit func(*Options)) *testIdP {
	t.Helper()
	return startIdPAt(t, "/", edit)
}

func startIdPAt(t *testing.T, path string, edit func(*Options)) *testIdP {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	opts := DefaultOptions("http://" + l.Addr().String() + path)
	if edit != nil {
		edit(&opts)
	}
	p, err := New(opts)
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(p.Handler())
	srv.Listener.Close()
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return &testIdP{Provider: p, srv: srv}
}

// getJSON fetches u and decodes its JSON body.
func getJSON(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("GET %s: %d %s", u, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	return doc
}

// discovery fetches the provider's discovery document.
func (idp *testIdP) discovery(t *testing.T) map[string]any {
	t.Helper()
	return getJSON(t, strings.TrimSuffix(idp.Issuer(), "/")+"/.well-known/openid-configuration")
}

// jwks fetches the key set that discovery names, with jwx.
func (idp *testIdP) jwks(t *testing.T) jwk.Set {
	t.Helper()
	set, err := jwk.Fetch(context.Background(), idp.discovery(t)["jwks_uri"].(string))
	if err != nil {
		t.Fatal(err)
	}
	return set
}

// auth sets a test request's client authentication.
type auth func(r *http.Request, form url.Values)

func basic(id, secret string) auth {
	return func(r *http.Request, _ url.Values) {
		r.SetBasicAuth(url.QueryEscape(id), url.QueryEscape(secret))
	}
}

func post(id, secret string) auth {
	return func(_ *http.Request, form url.Values) {
		form.Set("client_id", id)
		form.Set("client_secret", secret)
	}
}

func clientAssertion(raw string) auth {
	return func(_ *http.Request, form url.Values) {
		form.Set("client_assertion_type", clientAssertionType)
		form.Set("client_assertion", raw)
	}
}

func noAuth(*http.Request, url.Values) {}

var (
	gatewayClient = basic("audgate", "audgate-dev-secret")
	m2mClient     = basic("audgate-m2m", "audgate-m2m-dev-secret")
)

// answer is what the token endpoint sent back.
type answer struct {
	status int
	header http.Header
	raw    string
	body   map[string]any // nil if raw is not a JSON object
}

// postToken posts form, authenticated by a, to the token endpoint that
// discovery names.
func (idp *testIdP) postToken(t *testing.T, form url.Values, a auth) answer {
	t.Helper()
	form = cloneForm(form)
	req, err := http.NewRequest(http.MethodPost, idp.TokenEndpoint(), nil)
	if err != nil {
		t.Fatal(err)
	}
	a(req, form)
	req.Body = io.NopCloser(strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	ans := answer{status: resp.StatusCode, header: resp.Header, raw: string(raw)}
	if json.Unmarshal(raw, &ans.body) != nil {
		ans.body = nil
	}
	return ans
}

func cloneForm(form url.Values) url.Values {
	out := url.Values{}
	for k, v := range form {
		out[k] = slices.Clone(v)
	}
	return out
}

// token returns the access token of a successful answer, failing otherwise.
func (a answer) token(t *testing.T) string {
	t.Helper()
	tok, _ := a.body["access_token"].(string)
	if a.status != http.StatusOK || tok == "" {
		t.Fatalf("token request: %d %s", a.status, a.raw)
	}
	return tok
}

// verify checks raw against the JWKS fetched over HTTP, as a resource
// server would: compact RS256 JWS by the published key, typ at+jwt, iss,
// unexpired. It returns the header and claims.
func (idp *testIdP) verify(t *testing.T, raw string) (jws.Headers, map[string]any) {
	t.Helper()
	payload, err := jws.Verify([]byte(raw), jws.WithKeySet(idp.jwks(t), jws.WithRequireKid(true)), jws.WithCompact())
	if err != nil {
		t.Fatalf("verify against JWKS: %v", err)
	}
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil {
		t.Fatal(err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Algorithm() != jwa.RS256 || hdr.Type() != "at+jwt" || hdr.KeyID() == "" {
		t.Errorf("header alg=%s typ=%q kid=%q, want RS256 at+jwt and a kid", hdr.Algorithm(), hdr.Type(), hdr.KeyID())
	}
	var claims map[string]any
	if err := json.Unmarshal(payload, &claims); err != nil {
		t.Fatal(err)
	}
	if claims["iss"] != idp.Issuer() {
		t.Errorf("iss = %v, want %s", claims["iss"], idp.Issuer())
	}
	exp, _ := claims["exp"].(float64)
	if !time.Now().Before(time.Unix(int64(exp), 0)) {
		t.Errorf("exp = %v: expired or missing", claims["exp"])
	}
	if jti, _ := claims["jti"].(string); jti == "" {
		t.Error("no jti")
	}
	return hdr, claims
}

// userToken is IssueUserToken for the gateway audience, failing the test on
// error.
func (idp *testIdP) userToken(t *testing.T, sub string, scopes ...string) string {
	t.Helper()
	tok, err := idp.IssueUserToken(sub, AudienceGateway, scopes, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// clientToken gets a client_credentials token for the m2m client.
func (idp *testIdP) clientToken(t *testing.T) string {
	t.Helper()
	return idp.postToken(t, url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}, m2mClient).token(t)
}

// exchangeForm is a token-exchange request for subjectToken at audience.
func exchangeForm(subjectToken, audience, scope string) url.Values {
	f := url.Values{
		"grant_type":         {GrantTokenExchange},
		"subject_token":      {subjectToken},
		"subject_token_type": {tokenTypeAccessToken},
		"audience":           {audience},
	}
	if scope != "" {
		f.Set("scope", scope)
	}
	return f
}

// checkClaims compares the named claims with want, in JSON's terms; a nil
// want means absent.
func checkClaims(t *testing.T, claims, want map[string]any) {
	t.Helper()
	for name, w := range want {
		got, _ := json.Marshal(claims[name])
		wantJSON, _ := json.Marshal(w)
		if w == nil {
			if _, ok := claims[name]; ok {
				t.Errorf("claim %s = %s, want absent", name, got)
			}
			continue
		}
		if string(got) != string(wantJSON) {
			t.Errorf("claim %s = %s, want %s", name, got, wantJSON)
		}
	}
}
