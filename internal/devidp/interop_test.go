package devidp

import (
	"context"
	"net/url"
	"strings"
	"testing"

	"github.com/zitadel/oidc/v3/pkg/client/tokenexchange"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"golang.org/x/oauth2/clientcredentials"
)

// The clients audgate's token sources are built on must work against the
// provider unchanged.

func TestOAuth2ClientCredentialsClient(t *testing.T) {
	idp := startIdP(t, nil)
	tests := []struct {
		name   string
		params url.Values
		scopes []string
	}{
		{"audience (Auth0, Okta)", url.Values{"audience": {AudienceBilling}}, []string{"billing:read"}},
		{"resource (RFC 8707)", url.Values{"resource": {AudienceBilling}}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			conf := clientcredentials.Config{
				ClientID:       "audgate-m2m",
				ClientSecret:   "audgate-m2m-dev-secret",
				TokenURL:       idp.discovery(t)["token_endpoint"].(string),
				Scopes:         tc.scopes,
				EndpointParams: tc.params,
			}
			tok, err := conf.Token(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if tok.TokenType != "Bearer" || tok.Expiry.IsZero() {
				t.Errorf("token_type %q, expiry %v", tok.TokenType, tok.Expiry)
			}
			_, claims := idp.verify(t, tok.AccessToken)
			checkClaims(t, claims, map[string]any{"sub": "audgate-m2m", "aud": AudienceBilling, "scope": "billing:read"})
		})
	}
}

func TestZitadelTokenExchangeClient(t *testing.T) {
	idp := startIdP(t, nil)
	ctx := context.Background()
	te, err := tokenexchange.NewTokenExchangerClientCredentials(ctx, idp.Issuer(), "audgate", "audgate-dev-secret")
	if err != nil {
		t.Fatal(err)
	}
	alice := idp.userToken(t, "alice")
	exchange := func(audience, scope string) (*oidc.TokenExchangeResponse, error) {
		return tokenexchange.ExchangeToken(ctx, te, alice, oidc.AccessTokenType, "", "", nil,
			[]string{audience}, []string{scope}, oidc.AccessTokenType)
	}

	resp, err := exchange(AudienceOrders, "orders:write")
	if err != nil {
		t.Fatal(err)
	}
	if resp.IssuedTokenType != oidc.AccessTokenType || resp.TokenType != "Bearer" || resp.ExpiresIn != 300 {
		t.Errorf("issued_token_type %q, token_type %q, expires_in %d", resp.IssuedTokenType, resp.TokenType, resp.ExpiresIn)
	}
	_, claims := idp.verify(t, resp.AccessToken)
	checkClaims(t, claims, map[string]any{"sub": "alice", "aud": AudienceOrders, "scope": "orders:write", "act": map[string]any{"sub": "audgate"}})

	// The OAuth error code reaches the client.
	if _, err := exchange(AudienceBilling, "billing:write"); err == nil || !strings.Contains(err.Error(), "access_denied") {
		t.Errorf("exchange beyond entitlements: %v, want access_denied", err)
	}
}
