package devidp

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

func TestPrivateKeyJWT(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	billing := map[string][]string{AudienceBilling: {"billing:read"}}
	allGrants := []string{GrantClientCredentials, GrantTokenExchange, GrantJWTBearer}
	idp := startIdP(t, func(o *Options) {
		o.Clients = append(o.Clients,
			Client{ID: "rsa-client", Grants: allGrants, Entitlements: billing, PublicKey: &rsaKey.PublicKey, KeyID: "rsa-1"},
			Client{ID: "ec-client", Grants: allGrants, Entitlements: billing, PublicKey: &ecKey.PublicKey},
			Client{ID: "ed-client", Grants: allGrants, Entitlements: billing, PublicKey: edPub},
		)
	})

	now := time.Now()
	claims := func(client string, edit ...func(map[string]any)) map[string]any {
		c := map[string]any{
			"iss": client, "sub": client, "aud": idp.TokenEndpoint(),
			"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(), "jti": "a1",
		}
		for _, e := range edit {
			e(c)
		}
		return c
	}
	set := func(name string, v any) func(map[string]any) {
		return func(c map[string]any) {
			if v == nil {
				delete(c, name)
			} else {
				c[name] = v
			}
		}
	}
	rsaAssertion := func(edit ...func(map[string]any)) string {
		return signJWT(t, jwa.RS256, rsaKey, "rsa-1", "", claims("rsa-client", edit...))
	}
	cc := url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}

	tests := []struct {
		name        string
		form        url.Values
		auth        auth
		wantCode    string // "" for success
		wantSubject string
	}{
		{"RS256, aud token endpoint", cc, clientAssertion(rsaAssertion()), "", "rsa-client"},
		{"PS256, aud issuer as array", cc, clientAssertion(signJWT(t, jwa.PS256, rsaKey, "rsa-1", "JWT", claims("rsa-client", set("aud", []string{idp.Issuer()})))), "", "rsa-client"},
		{"ES256 without kid", cc, clientAssertion(signJWT(t, jwa.ES256, ecKey, "", "", claims("ec-client"))), "", "ec-client"},
		{"EdDSA", cc, clientAssertion(signJWT(t, jwa.EdDSA, edKey, "", "", claims("ed-client"))), "", "ed-client"},
		{"with a matching client_id", withValues(cc, "client_id", "rsa-client"), clientAssertion(rsaAssertion()), "", "rsa-client"},
		{"token exchange", exchangeForm(idp.userToken(t, "alice"), AudienceBilling, ""), clientAssertion(rsaAssertion()), "", "alice"},

		{"signed by another key", cc, clientAssertion(signJWT(t, jwa.RS256, otherKey, "rsa-1", "", claims("rsa-client"))), "invalid_client", ""},
		{"wrong kid", cc, clientAssertion(signJWT(t, jwa.RS256, rsaKey, "rsa-2", "", claims("rsa-client"))), "invalid_client", ""},
		{"alg not for the key", cc, clientAssertion(signJWT(t, jwa.HS256, []byte("0123456789abcdef0123456789abcdef"), "rsa-1", "", claims("rsa-client"))), "invalid_client", ""},
		{"expired", cc, clientAssertion(rsaAssertion(set("exp", now.Add(-time.Second).Unix()))), "invalid_client", ""},
		{"no exp", cc, clientAssertion(rsaAssertion(set("exp", nil))), "invalid_client", ""},
		{"not yet valid", cc, clientAssertion(rsaAssertion(set("nbf", now.Add(time.Hour).Unix()))), "invalid_client", ""},
		{"aud another server", cc, clientAssertion(rsaAssertion(set("aud", "https://other.example.com/token"))), "invalid_client", ""},
		{"iss differs from sub", cc, clientAssertion(rsaAssertion(set("iss", "ec-client"))), "invalid_client", ""},
		{"client without a key", cc, clientAssertion(signJWT(t, jwa.RS256, rsaKey, "rsa-1", "", claims("audgate-m2m"))), "invalid_client", ""},
		{"client_id of another client", withValues(cc, "client_id", "ec-client"), clientAssertion(rsaAssertion()), "invalid_client", ""},
		{"garbage assertion", cc, clientAssertion("garbage"), "invalid_client", ""},
		{"wrong assertion type", cc, func(r *http.Request, f url.Values) {
			clientAssertion(rsaAssertion())(r, f)
			f.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:saml2-bearer")
		}, "invalid_client", ""},
		{"assertion and secret", cc, func(r *http.Request, f url.Values) {
			clientAssertion(rsaAssertion())(r, f)
			post("audgate-m2m", "audgate-m2m-dev-secret")(r, f)
		}, "invalid_request", ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := idp.postToken(t, tc.form, tc.auth)
			if tc.wantCode != "" {
				checkRefusal(t, got, tc.wantCode)
				return
			}
			_, claims := idp.verify(t, got.token(t))
			checkClaims(t, claims, map[string]any{"sub": tc.wantSubject})
		})
	}
}
