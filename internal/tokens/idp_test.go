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

	"github.com/audgate/audgate/internal/oauth"
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
				o.ClientAuth, o.AudienceParam = oauth.AuthPost, "resource"
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
		ClientID: "audgate", ClientAuth: oauth.AuthPrivateKeyJWT, PrivateKeyFile: path, Now: clock.Now}})
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
	var ce *ConfigError
	if _, err := bad.Token(context.Background(), exchangeReq()); !errors.As(err, &ce) || !strings.Contains(err.Error(), "does not equal the configured issuer") {
		t.Errorf("issuer mismatch: err = %v", err)
	}
}

// grants are the three IdP grants, and jwt-bearer in its On-Behalf-Of
// form, built against one token endpoint: every answer must mean the same
// to each of them.
func grants(t *testing.T, endpoint string, now func() time.Time) map[string]Source {
	t.Helper()
	idp := IdPOptions{Name: "idp", TokenEndpoint: endpoint, ClientID: "c", ClientSecret: "s", Now: now}
	ex, err1 := NewTokenExchange(ExchangeOptions{IdPOptions: idp})
	jb, err2 := NewJWTBearer(JWTBearerOptions{IdPOptions: idp})
	obo, err3 := NewJWTBearer(JWTBearerOptions{IdPOptions: idp, OnBehalfOf: true})
	cc, err4 := NewClientCredentials(idp)
	if err := errors.Join(err1, err2, err3, err4); err != nil {
		t.Fatal(err)
	}
	return map[string]Source{"token_exchange": ex, "jwt_bearer": jb, "on_behalf_of": obo, "client_credentials": cc}
}

// callerTokenGrants are the grants whose request carries the caller's token.
var callerTokenGrants = map[string]bool{"token_exchange": true, "jwt_bearer": true, "on_behalf_of": true}

func TestAnswers(t *testing.T) {
	now := newClock()
	const itt = `"issued_token_type":"` + TokenTypeAccessToken + `"`
	form := http.Header{"Content-Type": {"application/x-www-form-urlencoded"}}
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
		{name: "expires_in absent", status: 200, body: `{"access_token":"a","token_type":"Bearer",` + itt + `}`, wantExpiry: -1},
		{name: "expires_in 0", status: 200, body: `{"access_token":"a","token_type":"bearer","expires_in":0,` + itt + `}`, wantExpiry: 0},
		{name: "expires_in negative", status: 200, body: `{"access_token":"a","expires_in":-30,` + itt + `}`, wantExpiry: 0},
		{name: "expires_in as a string", status: 200, body: `{"access_token":"a","expires_in":"120",` + itt + `}`, wantExpiry: 120 * time.Second},
		{name: "expires_in 1e10", status: 200, body: `{"access_token":"a","expires_in":1e10,` + itt + `}`, wantExpiry: 24 * time.Hour},
		{name: "expires_in not a number", status: 200, body: `{"access_token":"a","expires_in":"soon",` + itt + `}`, wantUnavail: "not a number"},
		{name: "token_type N_A", status: 200, body: `{"access_token":"a","token_type":"N_A","expires_in":60,` + itt + `}`, wantExpiry: 60 * time.Second},
		{name: "DPoP token type", status: 200, body: `{"access_token":"a","token_type":"DPoP",` + itt + `}`, wantUnavail: "neither Bearer nor N_A"},
		{name: "form-encoded success", status: 200, header: form, wantExpiry: 90 * time.Second,
			body: "access_token=a&token_type=bearer&expires_in=90&issued_token_type=" + url.QueryEscape(TokenTypeAccessToken)},
		{name: "JSON sent as text/plain", status: 200, header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}}, body: okBody, wantExpiry: 300 * time.Second},
		{name: "no access_token", status: 200, body: `{"token_type":"Bearer"}`, wantUnavail: "no access_token"},
		{name: "malformed JSON", status: 200, body: `{"access_token":`, wantUnavail: "not a JSON"},
		{name: "access_token not a string", status: 200, body: `{"access_token":7}`, wantUnavail: "not a JSON"},
		{name: "200 carrying an error", status: 200, body: `{"error":"invalid_scope","error_description":"no"}`, wantCode: "invalid_scope"},
		{name: "form-encoded 200 carrying an error", status: 200, header: form, body: `error=access_denied`, wantCode: "access_denied"},
		{name: "invalid_grant", status: 400, body: `{"error":"invalid_grant","error_description":"subject token expired"}`, wantCode: "invalid_grant"},
		{name: "invalid_request", status: 400, body: `{"error":"invalid_request"}`, wantCode: "invalid_request"},
		{name: "error with an odd description", status: 400, body: `{"error":"invalid_grant","error_description":{"en":"expired"},"scope":["a"]}`, wantCode: "invalid_grant"},
		{name: "invalid_target", status: 400, body: `{"error":"invalid_target"}`, wantCode: "invalid_target"},
		{name: "invalid_client", status: 401, body: `{"error":"invalid_client"}`, wantCode: "invalid_client"},
		{name: "form-encoded error", status: 400, header: form, body: `error=access_denied`, wantCode: "access_denied"},
		{name: "temporarily_unavailable", status: 400, body: `{"error":"temporarily_unavailable"}`, wantUnavail: "temporarily_unavailable"},
		{name: "400 without an OAuth error", status: 400, body: `<html>bad</html>`, wantUnavail: "without an OAuth error"},
		{name: "302", status: 302, body: ``, header: http.Header{"Location": {"/login"}}, wantUnavail: "answered 302"},
		{name: "500", status: 500, body: `{"error":"server_error"}`, wantUnavail: "answered 500"},
		{name: "429 with Retry-After", status: 429, body: ``, header: http.Header{"Retry-After": {"7"}}, wantUnavail: "answered 429", wantAfter: 7 * time.Second},
		{name: "503 with a Retry-After date", status: 503, body: ``, wantUnavail: "answered 503", wantAfter: 30 * time.Second,
			header: http.Header{"Retry-After": {now.Now().Add(30 * time.Second).UTC().Format(http.TimeFormat)}}},
		{name: "huge body", status: 200, body: `{"access_token":"` + strings.Repeat("a", 2<<20) + `"}`, wantUnavail: "larger than"},
	}
	for _, tc := range tests {
		idp := newWireIdP(t, tc.status, tc.body)
		for k, v := range tc.header {
			idp.header[k] = v
		}
		for grant, src := range grants(t, idp.srv.URL+"/token", now.Now) {
			t.Run(tc.name+"/"+grant, func(t *testing.T) {
				tok, err := src.Token(context.Background(), exchangeReq())
				var re *RefusedError
				var ue *UnavailableError
				switch {
				case tc.wantCode != "":
					if !errors.As(err, &re) || re.Answer.Code != tc.wantCode {
						t.Fatalf("err = %v, want refusal %s", err, tc.wantCode)
					}
					if re.CallerToken != callerTokenGrants[grant] {
						t.Errorf("CallerToken = %v for %s", re.CallerToken, grant)
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
					if tok.Value != "a" && tok.Value != "downstream" || !tok.Expiry.Equal(want) {
						t.Errorf("token %q expiry %v, want expiry %v", tok.Value, tok.Expiry, want)
					}
				}
			})
		}
	}
}

// TestExchangeIssuedTokenType: RFC 8693 §2.2.1 requires issued_token_type,
// and it must be what was asked for (a JWT counts as an access token).
func TestExchangeIssuedTokenType(t *testing.T) {
	tests := []struct{ name, body, wantErr string }{
		{name: "access token", body: `{"access_token":"a","issued_token_type":"` + TokenTypeAccessToken + `"}`},
		{name: "a JWT", body: `{"access_token":"a","issued_token_type":"` + TokenTypeJWT + `"}`},
		{name: "absent", body: `{"access_token":"a","token_type":"Bearer"}`, wantErr: "no issued_token_type"},
		{name: "refresh token", body: `{"access_token":"a","issued_token_type":"urn:ietf:params:oauth:token-type:refresh_token"}`, wantErr: "issued_token_type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp := newWireIdP(t, 200, tc.body)
			src := grants(t, idp.srv.URL+"/token", time.Now)["token_exchange"]
			_, err := src.Token(context.Background(), exchangeReq())
			var ue *UnavailableError
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (!errors.As(err, &ue) || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
		})
	}
}

func TestJWTBearerWire(t *testing.T) {
	idp := newWireIdP(t, 200, `{"access_token":"obo","token_type":"Bearer","expires_in":60}`)
	src, err := NewJWTBearer(JWTBearerOptions{IdPOptions: IdPOptions{Name: "entra", TokenEndpoint: idp.srv.URL + "/token",
		ClientID: "c", ClientSecret: "s", ClientAuth: oauth.AuthPost, AudienceParam: "scope"}, OnBehalfOf: true})
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
		{name: "basic", status: 200, body: `{"access_token":"m2m","token_type":"Bearer","expires_in":3600}`, auth: oauth.AuthBasic,
			wantForm: url.Values{"grant_type": {"client_credentials"}, "audience": {"https://orders"}, "scope": {"orders:read orders:write"}}},
		{name: "post", status: 200, body: `{"access_token":"m2m","token_type":"Bearer"}`, auth: oauth.AuthPost,
			wantForm: url.Values{"grant_type": {"client_credentials"}, "audience": {"https://orders"}, "scope": {"orders:read orders:write"},
				"client_id": {"m2m"}, "client_secret": {"secret"}}},
		{name: "refused", status: 400, body: `{"error":"invalid_scope"}`, auth: oauth.AuthBasic, wantErr: "refused: invalid_scope"},
		{name: "unavailable", status: 503, body: `{}`, auth: oauth.AuthBasic, wantErr: "answered 503"},
		{name: "no access_token", status: 200, body: `{"token_type":"Bearer"}`, auth: oauth.AuthBasic, wantErr: "unavailable"},
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
			if (tc.auth == oauth.AuthBasic) != (authz == "Basic "+basic("m2m", "secret")) {
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
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
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
		ClientAuth: oauth.AuthPrivateKeyJWT, PrivateKeyFile: path, AssertionAudience: "https://zitadel.example.com"})
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
