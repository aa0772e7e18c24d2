package tokens

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

// wireIdP is a token endpoint that records each request and answers with
// a fixed status, content type and body.
type wireIdP struct {
	srv    *httptest.Server
	mu     sync.Mutex
	forms  []url.Values
	authz  []string
	status int
	body   string
	header http.Header
}

func newWireIdP(t *testing.T, status int, body string) *wireIdP {
	t.Helper()
	w := &wireIdP{status: status, body: body, header: http.Header{"Content-Type": {"application/json"}}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /token", func(rw http.ResponseWriter, r *http.Request) {
		if err := r.ParseForm(); err != nil {
			t.Errorf("token request form: %v", err)
		}
		w.mu.Lock()
		w.forms = append(w.forms, r.PostForm)
		w.authz = append(w.authz, r.Header.Get("Authorization"))
		status, body, header := w.status, w.body, w.header
		w.mu.Unlock()
		for k, v := range header {
			rw.Header()[k] = v
		}
		rw.WriteHeader(status)
		_, _ = rw.Write([]byte(body))
	})
	mux.HandleFunc("GET /.well-known/openid-configuration", func(rw http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(rw).Encode(map[string]string{"issuer": w.srv.URL + "/", "token_endpoint": w.srv.URL + "/token"})
	})
	w.srv = httptest.NewServer(mux)
	t.Cleanup(w.srv.Close)
	return w
}

func (w *wireIdP) last(t *testing.T) (url.Values, string) {
	t.Helper()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.forms) == 0 {
		t.Fatal("the token endpoint received nothing")
	}
	return w.forms[len(w.forms)-1], w.authz[len(w.authz)-1]
}

const okBody = `{"access_token":"downstream","token_type":"Bearer","expires_in":300,"issued_token_type":"urn:ietf:params:oauth:token-type:access_token"}`

func exchangeReq() *Request {
	return &Request{Audience: "https://orders", Scopes: []string{"orders:read", "orders:write"}, Subject: "alice", SubjectToken: "inbound.jwt.value"}
}

func TestExchangeWire(t *testing.T) {
	tests := []struct {
		name      string
		opts      func(o *ExchangeOptions)
		wantForm  url.Values
		wantAuthz string
	}{
		{
			name: "basic auth, audience",
			wantForm: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {"inbound.jwt.value"},
				"subject_token_type":   {TokenTypeAccessToken},
				"requested_token_type": {TokenTypeAccessToken},
				"audience":             {"https://orders"},
				"scope":                {"orders:read orders:write"},
			},
			// RFC 6749 §2.3.1: form-encode, then Basic.
			wantAuthz: "Basic " + basic("audgate%3Aprod", "s%26cret+%2F"),
		},
		{
			name: "post auth, resource, actor",
			opts: func(o *ExchangeOptions) {
				o.ClientAuth, o.AudienceParam = AuthPost, "resource"
				o.ActorToken = "actor.jwt"
			},
			wantForm: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {"inbound.jwt.value"},
				"subject_token_type":   {TokenTypeAccessToken},
				"requested_token_type": {TokenTypeAccessToken},
				"resource":             {"https://orders"},
				"scope":                {"orders:read orders:write"},
				"actor_token":          {"actor.jwt"},
				"actor_token_type":     {TokenTypeAccessToken},
				"client_id":            {"audgate:prod"},
				"client_secret":        {"s&cret /"},
			},
		},
		{
			name: "both, custom types",
			opts: func(o *ExchangeOptions) {
				o.AudienceParam = "both"
				o.SubjectTokenType, o.RequestedTokenType = TokenTypeJWT, TokenTypeJWT
			},
			wantForm: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {"inbound.jwt.value"},
				"subject_token_type":   {TokenTypeJWT},
				"requested_token_type": {TokenTypeJWT},
				"audience":             {"https://orders"},
				"resource":             {"https://orders"},
				"scope":                {"orders:read orders:write"},
			},
			wantAuthz: "Basic " + basic("audgate%3Aprod", "s%26cret+%2F"),
		},
		{
			name: "entra scope style",
			opts: func(o *ExchangeOptions) { o.AudienceParam = "scope" },
			wantForm: url.Values{
				"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
				"subject_token":        {"inbound.jwt.value"},
				"subject_token_type":   {TokenTypeAccessToken},
				"requested_token_type": {TokenTypeAccessToken},
				"scope":                {"https://orders/orders:read https://orders/orders:write"},
			},
			wantAuthz: "Basic " + basic("audgate%3Aprod", "s%26cret+%2F"),
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp := newWireIdP(t, 200, okBody)
			opts := ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", TokenEndpoint: idp.srv.URL + "/token", ClientID: "audgate:prod", ClientSecret: "s&cret /"}}
			if tc.opts != nil {
				tc.opts(&opts)
			}
			if opts.RequestedTokenType == TokenTypeJWT {
				idp.body = strings.Replace(okBody, TokenTypeAccessToken, TokenTypeJWT, 1)
			}
			src, err := NewTokenExchange(opts)
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Token(context.Background(), exchangeReq())
			if err != nil || tok.Value != "downstream" {
				t.Fatalf("Token = %+v, %v", tok, err)
			}
			form, authz := idp.last(t)
			if fmt.Sprint(form) != fmt.Sprint(tc.wantForm) {
				t.Errorf("form\n got %v\nwant %v", form, tc.wantForm)
			}
			if authz != tc.wantAuthz {
				t.Errorf("Authorization = %q, want %q", authz, tc.wantAuthz)
			}
		})
	}
}

func basic(id, secret string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(id, secret)
	return strings.TrimPrefix(r.Header.Get("Authorization"), "Basic ")
}

func TestPrivateKeyJWT(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := filepath.Join(t.TempDir(), "client.pem")
	writePEM(t, path, key)
	idp := newWireIdP(t, 200, okBody)
	clock := newClock()
	src, err := NewTokenExchange(ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", TokenEndpoint: idp.srv.URL + "/token",
		ClientID: "audgate", ClientAuth: AuthPrivateKeyJWT, PrivateKeyFile: path, Now: clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background(), exchangeReq()); err != nil {
		t.Fatal(err)
	}
	form, authz := idp.last(t)
	if authz != "" || form.Get("client_secret") != "" || form.Get("client_id") != "audgate" ||
		form.Get("client_assertion_type") != "urn:ietf:params:oauth:client-assertion-type:jwt-bearer" {
		t.Fatalf("client authentication on the wire: authz %q, form %v", authz, form)
	}
	a, err := jwt.Parse([]byte(form.Get("client_assertion")), jwt.WithKey(jwa.ES256, &key.PublicKey),
		jwt.WithClock(jwt.ClockFunc(clock.Now)), jwt.WithAudience(idp.srv.URL+"/token"), jwt.WithIssuer("audgate"), jwt.WithSubject("audgate"))
	if err != nil {
		t.Fatalf("client assertion: %v", err)
	}
	if a.JwtID() == "" || a.Expiration().Sub(clock.Now()) > 5*time.Minute {
		t.Errorf("assertion jti %q exp %v", a.JwtID(), a.Expiration())
	}
}

func TestTokenEndpointDiscovery(t *testing.T) {
	idp := newWireIdP(t, 200, okBody)
	src, err := NewTokenExchange(ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", Issuer: idp.srv.URL + "/", ClientID: "c", ClientSecret: "s"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background(), exchangeReq()); err != nil {
		t.Fatalf("with discovery: %v", err)
	}
	idp.last(t)
	bad, _ := NewTokenExchange(ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", Issuer: idp.srv.URL, ClientID: "c", ClientSecret: "s"}})
	if _, err := bad.Token(context.Background(), exchangeReq()); err == nil || !strings.Contains(err.Error(), "names issuer") {
		t.Errorf("issuer mismatch: err = %v", err)
	}
}

func TestAnswers(t *testing.T) {
	now := newClock()
	tests := []struct {
		name        string
		status      int
		body        string
		header      http.Header
		wantExpiry  time.Duration // from now; -1: zero time
		wantCode    string        // a *RefusedError's code
		wantUnavail string        // substring of an *UnavailableError
		wantAfter   time.Duration
	}{
		{name: "expires_in 300", status: 200, body: okBody, wantExpiry: 300 * time.Second},
		{name: "expires_in absent", status: 200, body: `{"access_token":"a","token_type":"Bearer","issued_token_type":"` + TokenTypeAccessToken + `"}`, wantExpiry: -1},
		{name: "expires_in 0", status: 200, body: `{"access_token":"a","token_type":"bearer","expires_in":0,"issued_token_type":"` + TokenTypeAccessToken + `"}`, wantExpiry: 0},
		{name: "expires_in negative", status: 200, body: `{"access_token":"a","expires_in":-30,"issued_token_type":"` + TokenTypeAccessToken + `"}`, wantExpiry: 0},
		{name: "expires_in as a string", status: 200, body: `{"access_token":"a","expires_in":"120","issued_token_type":"` + TokenTypeAccessToken + `"}`, wantExpiry: 120 * time.Second},
		{name: "expires_in 1e10", status: 200, body: `{"access_token":"a","expires_in":1e10,"issued_token_type":"` + TokenTypeAccessToken + `"}`, wantExpiry: 24 * time.Hour},
		{name: "expires_in not a number", status: 200, body: `{"access_token":"a","expires_in":"soon","issued_token_type":"` + TokenTypeAccessToken + `"}`, wantUnavail: "not a number"},
		{name: "no access_token", status: 200, body: `{"token_type":"Bearer"}`, wantUnavail: "no access_token"},
		{name: "malformed JSON", status: 200, body: `{"access_token":`, wantUnavail: "not a JSON"},
		{name: "DPoP token type", status: 200, body: `{"access_token":"a","token_type":"DPoP","issued_token_type":"` + TokenTypeAccessToken + `"}`, wantUnavail: "not Bearer"},
		{name: "no issued_token_type", status: 200, body: `{"access_token":"a","token_type":"Bearer"}`, wantUnavail: "issued_token_type"},
		{name: "refresh token issued", status: 200, body: `{"access_token":"a","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token"}`, wantUnavail: "issued_token_type"},
		{name: "invalid_grant", status: 400, body: `{"error":"invalid_grant","error_description":"subject token expired"}`, wantCode: "invalid_grant"},
		{name: "invalid_target", status: 400, body: `{"error":"invalid_target"}`, wantCode: "invalid_target"},
		{name: "invalid_client", status: 401, body: `{"error":"invalid_client"}`, wantCode: "invalid_client"},
		{name: "form-encoded error", status: 400, body: `error=access_denied`, header: http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}, wantCode: "access_denied"},
		{name: "400 without an OAuth error", status: 400, body: `<html>bad</html>`, wantUnavail: "without an OAuth error"},
		{name: "500", status: 500, body: `{"error":"server_error"}`, wantUnavail: "answered 500"},
		{name: "429 with Retry-After", status: 429, body: ``, header: http.Header{"Retry-After": {"7"}}, wantUnavail: "answered 429", wantAfter: 7 * time.Second},
		{name: "huge body", status: 200, body: `{"access_token":"` + strings.Repeat("a", 2<<20) + `"}`, wantUnavail: "not a JSON"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp := newWireIdP(t, tc.status, tc.body)
			for k, v := range tc.header {
				idp.header[k] = v
			}
			src, _ := NewTokenExchange(ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", TokenEndpoint: idp.srv.URL + "/token", ClientID: "c", ClientSecret: "s", Now: now.Now}})
			tok, err := src.Token(context.Background(), exchangeReq())
			var re *RefusedError
			var ue *UnavailableError
			switch {
			case tc.wantCode != "":
				if !errors.As(err, &re) || re.Code != tc.wantCode {
					t.Fatalf("err = %v, want refusal %s", err, tc.wantCode)
				}
			case tc.wantUnavail != "":
				if !errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantUnavail) || ue.RetryAfter != tc.wantAfter {
					t.Fatalf("err = %v, want unavailable %q (retry after %v)", err, tc.wantUnavail, tc.wantAfter)
				}
			default:
				if err != nil {
					t.Fatal(err)
				}
				want := now.Now().Add(tc.wantExpiry)
				if tc.wantExpiry < 0 {
					want = time.Time{}
				}
				if !tok.Expiry.Equal(want) {
					t.Errorf("expiry = %v, want %v", tok.Expiry, want)
				}
			}
		})
	}
}

func TestJWTBearerWire(t *testing.T) {
	idp := newWireIdP(t, 200, `{"access_token":"obo","token_type":"Bearer","expires_in":60}`)
	src, err := NewJWTBearer(JWTBearerOptions{IdPOptions: IdPOptions{Name: "entra", TokenEndpoint: idp.srv.URL + "/token",
		ClientID: "c", ClientSecret: "s", ClientAuth: AuthPost, AudienceParam: "scope"}, OnBehalfOf: true})
	if err != nil {
		t.Fatal(err)
	}
	req := exchangeReq()
	req.Scopes = nil
	if tok, err := src.Token(context.Background(), req); err != nil || tok.Value != "obo" {
		t.Fatalf("Token = %+v, %v", tok, err)
	}
	form, _ := idp.last(t)
	want := url.Values{
		"grant_type":          {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":           {"inbound.jwt.value"},
		"requested_token_use": {"on_behalf_of"},
		"scope":               {"https://orders/.default"},
		"client_id":           {"c"},
		"client_secret":       {"s"},
	}
	if fmt.Sprint(form) != fmt.Sprint(want) {
		t.Errorf("form\n got %v\nwant %v", form, want)
	}
}

func TestClientCredentialsWire(t *testing.T) {
	tests := []struct {
		name     string
		status   int
		body     string
		auth     string
		wantForm url.Values
		wantErr  string
	}{
		{name: "basic", status: 200, body: `{"access_token":"m2m","token_type":"Bearer","expires_in":3600}`, auth: AuthBasic,
			wantForm: url.Values{"grant_type": {"client_credentials"}, "audience": {"https://orders"}, "scope": {"orders:read orders:write"}}},
		{name: "post", status: 200, body: `{"access_token":"m2m","token_type":"Bearer"}`, auth: AuthPost,
			wantForm: url.Values{"grant_type": {"client_credentials"}, "audience": {"https://orders"}, "scope": {"orders:read orders:write"},
				"client_id": {"m2m"}, "client_secret": {"secret"}}},
		{name: "refused", status: 400, body: `{"error":"invalid_scope"}`, auth: AuthBasic, wantErr: "refused: invalid_scope"},
		{name: "unavailable", status: 503, body: `{}`, auth: AuthBasic, wantErr: "answered 503"},
		{name: "no access_token", status: 200, body: `{"token_type":"Bearer"}`, auth: AuthBasic, wantErr: "unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp := newWireIdP(t, tc.status, tc.body)
			src, err := NewClientCredentials(IdPOptions{Name: "m2m", TokenEndpoint: idp.srv.URL + "/token", ClientID: "m2m", ClientSecret: "secret", ClientAuth: tc.auth})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := src.Token(context.Background(), exchangeReq())
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || tok.Value != "m2m" {
				t.Fatalf("Token = %+v, %v", tok, err)
			}
			form, authz := idp.last(t)
			if fmt.Sprint(form) != fmt.Sprint(tc.wantForm) {
				t.Errorf("form\n got %v\nwant %v", form, tc.wantForm)
			}
			if strings.Contains(fmt.Sprint(form), "inbound.jwt.value") {
				t.Error("client credentials sent the caller's token")
			}
			if (tc.auth == AuthBasic) != (authz == "Basic "+basic("m2m", "secret")) {
				t.Errorf("Authorization = %q", authz)
			}
		})
	}
}

func TestNegativeCache(t *testing.T) {
	clock := newClock()
	idp := newWireIdP(t, 400, `{"error":"invalid_target"}`)
	src, _ := NewTokenExchange(ExchangeOptions{IdPOptions: IdPOptions{Name: "idp", TokenEndpoint: idp.srv.URL + "/token", ClientID: "c", ClientSecret: "s"}})
	c := NewCache(CacheOptions{NegativeTTL: 5 * time.Second, Now: clock.Now})
	e := &Entry{Name: "idp", Source: src, PerCaller: true}
	req := userReq("bob", clock, "orders:write")
	for i := range 3 {
		_, out, err := c.Token(context.Background(), e, req)
		if !IsRefusal(err) || out != OutcomeRefused {
			t.Fatalf("call %d: %s, %v; want a refusal", i, out, err)
		}
	}
	if n := len(idp.forms); n != 1 {
		t.Errorf("IdP asked %d times within negative_ttl, want 1", n)
	}
	clock.Add(6 * time.Second)
	_, _, _ = c.Token(context.Background(), e, req)
	if n := len(idp.forms); n != 2 {
		t.Errorf("IdP asked %d times after negative_ttl, want 2", n)
	}
	// An unavailable IdP is never remembered.
	idp.mu.Lock()
	idp.status, idp.body = 503, ""
	idp.mu.Unlock()
	other := userReq("carol", clock)
	_, _, _ = c.Token(context.Background(), e, other)
	_, _, _ = c.Token(context.Background(), e, other)
	if n := len(idp.forms); n != 4 {
		t.Errorf("IdP asked %d times, want 4: unavailability must not be cached", n)
	}
}

func TestPrivateKeyJWTCurveAndAudience(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	path := filepath.Join(t.TempDir(), "client.pem")
	writePEM(t, path, key)
	idp := newWireIdP(t, 200, `{"access_token":"m2m","token_type":"Bearer"}`)
	src, err := NewClientCredentials(IdPOptions{Name: "zitadel", TokenEndpoint: idp.srv.URL + "/token", ClientID: "audgate",
		ClientAuth: AuthPrivateKeyJWT, PrivateKeyFile: path, AssertionAudience: "https://zitadel.example.com"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background(), exchangeReq()); err != nil {
		t.Fatal(err)
	}
	form, authz := idp.last(t)
	if authz != "" || form.Get("client_secret") != "" {
		t.Errorf("a secret went on the wire: %q %v", authz, form)
	}
	if _, err := jwt.Parse([]byte(form.Get("client_assertion")), jwt.WithKey(jwa.ES384, &key.PublicKey),
		jwt.WithAudience("https://zitadel.example.com")); err != nil {
		t.Errorf("assertion with a P-384 key and the configured audience: %v", err)
	}
}
