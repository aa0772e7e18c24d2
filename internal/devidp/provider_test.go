package devidp

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

func TestDiscoveryAndJWKS(t *testing.T) {
	for _, path := range []string{"/", "/realms/dev"} {
		t.Run(path, func(t *testing.T) {
			idp := startIdPAt(t, path, nil)
			doc := idp.discovery(t)
			base := strings.TrimSuffix(idp.Issuer(), "/")
			checkClaims(t, doc, map[string]any{
				"issuer":         idp.Issuer(),
				"token_endpoint": base + "/oauth/token",
				"jwks_uri":       base + "/keys",
			})
			for member, want := range map[string][]string{
				"grant_types_supported":                 {GrantClientCredentials, GrantTokenExchange, GrantJWTBearer},
				"token_endpoint_auth_methods_supported": {"client_secret_basic", "client_secret_post", "private_key_jwt"},
			} {
				for _, w := range want {
					if !slices.Contains(stringsOf(doc[member]), w) {
						t.Errorf("%s = %v, missing %s", member, doc[member], w)
					}
				}
			}

			set := idp.jwks(t)
			if set.Len() != 1 {
				t.Fatalf("JWKS has %d keys, want 1", set.Len())
			}
			key, _ := set.Key(0)
			if key.Algorithm() != jwa.RS256 || key.KeyID() == "" || key.KeyUsage() != "sig" {
				t.Errorf("JWKS key alg=%s kid=%q use=%q, want RS256, a kid, sig", key.Algorithm(), key.KeyID(), key.KeyUsage())
			}
			var pub rsa.PublicKey
			if err := key.Raw(&pub); err != nil {
				t.Errorf("JWKS key is not RSA: %v", err)
			}

			// The token endpoint under the issuer's path works.
			got := idp.postToken(t, url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}, m2mClient)
			idp.verify(t, got.token(t))
		})
	}
}

// stringsOf converts a decoded JSON array of strings.
func stringsOf(v any) []string {
	arr, _ := v.([]any)
	out := make([]string, 0, len(arr))
	for _, s := range arr {
		str, _ := s.(string)
		out = append(out, str)
	}
	return out
}

func TestTokenEndpointTakesPOSTOnly(t *testing.T) {
	idp := startIdP(t, nil)
	resp, err := http.Get(idp.TokenEndpoint() + "?grant_type=client_credentials")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed || resp.Header.Get("Allow") != http.MethodPost {
		t.Errorf("GET: %d Allow=%q, want 405 Allow=POST", resp.StatusCode, resp.Header.Get("Allow"))
	}
}

func TestNewRefusesBadOptions(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"no issuer", func(o *Options) { o.Issuer = "" }, "issuer"},
		{"issuer with query", func(o *Options) { o.Issuer = "http://127.0.0.1:9400/?x=1" }, "issuer"},
		{"client without id", func(o *Options) { o.Clients[0].ID = "" }, "clients[0]: id is required"},
		{"client without credentials", func(o *Options) { o.Clients[1].Secret = "" }, "clients[1]: a secret or a public key"},
		{"unknown grant", func(o *Options) { o.Clients[0].Grants = []string{"password"} }, `unknown grant "password"`},
		{"private key instead of public", func(o *Options) { o.Clients[0].PublicKey = ecKey }, "unsupported public key type"},
		{"duplicate client", func(o *Options) { o.Clients[1].ID = "audgate" }, `clients[1]: id "audgate" is used twice`},
		{"user named like a client", func(o *Options) { o.Users[0].Subject = "audgate-m2m" }, "users[0]: subject \"audgate-m2m\""},
		{"duplicate user", func(o *Options) { o.Users[1].Subject = "alice" }, "users[1]: subject \"alice\""},
		{"registered claim", func(o *Options) { o.Users[0].Claims = map[string]any{"act": "x"} }, `claim "act" is set by the provider`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			opts := DefaultOptions("http://127.0.0.1:9400/")
			tc.edit(&opts)
			_, err := New(opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestIssueUserToken(t *testing.T) {
	idp := startIdP(t, nil)
	t.Run("alice", func(t *testing.T) {
		raw, err := idp.IssueUserToken("alice", AudienceGateway, []string{"orders:read", "billing:read"}, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, claims := idp.verify(t, raw)
		checkClaims(t, claims, map[string]any{
			"sub":         "alice",
			"aud":         AudienceGateway,
			"scope":       "orders:read billing:read",
			"client_id":   UserTokenClientID,
			"permissions": []string{"orders:read", "orders:write", "billing:read"},
			"act":         nil,
		})
		if got := claims["exp"].(float64) - claims["iat"].(float64); got != 300 {
			t.Errorf("exp - iat = %v, want 300 (TokenTTL default)", got)
		}
	})
	refusals := []struct {
		name, sub, aud string
	}{
		{"unknown user", "mallory", AudienceGateway},
		{"a client is not a user", "audgate", AudienceGateway},
		{"no audience", "alice", ""},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := idp.IssueUserToken(tc.sub, tc.aud, nil, time.Minute); err == nil {
				t.Error("IssueUserToken succeeded, want an error")
			}
		})
	}
}

func TestTokenRequestsCountsEveryTokenRequest(t *testing.T) {
	idp := startIdP(t, nil)
	idp.discovery(t)
	idp.jwks(t)
	if got := idp.TokenRequests(); got != 0 {
		t.Fatalf("after discovery and JWKS: %d token requests, want 0", got)
	}
	cc := url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}
	idp.postToken(t, cc, m2mClient)                                     // issued
	idp.postToken(t, cc, basic("audgate-m2m", "wrong"))                 // refused
	idp.postToken(t, url.Values{"grant_type": {"password"}}, m2mClient) // unsupported
	idp.SetFault(Fault{Kind: FaultServerError})
	idp.postToken(t, cc, m2mClient) // faulty
	if got := idp.TokenRequests(); got != 4 {
		t.Errorf("TokenRequests = %d, want 4", got)
	}
}
