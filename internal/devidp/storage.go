package devidp

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
)

// storage is what zitadel's op reads: the signing key and JWKS, the
// clients, and which grants to advertise. It is read-only after New.
//
// op lists client_credentials and token exchange in discovery only when the
// storage implements op.ClientCredentialsStorage and op.TokenExchangeStorage,
// so it does; but the three grants are served by Provider.serveToken in
// front of op's token endpoint (see endpoint.go for why), so op never calls
// the grant methods below, and they refuse instead of half-working.
type storage struct {
	signer  *signer
	clients map[string]*Client
	ttl     time.Duration
}

var (
	_ op.Storage                  = (*storage)(nil)
	_ op.ClientCredentialsStorage = (*storage)(nil)
	_ op.TokenExchangeStorage     = (*storage)(nil)
	_ op.Client                   = opClient{}
)

var (
	errNoInteractiveFlows = oidc.ErrUnsupportedGrantType().WithDescription("devidp serves client_credentials, token exchange and jwt-bearer only")
	errServedInFront      = oidc.ErrServerError().WithDescription("this grant is served by devidp's token handler, not op")
	errClientAuth         = errors.New("client authentication failed")
)

// clientBySecret authenticates a client_secret_basic or client_secret_post
// client (RFC 6749 §2.3.1).
func (s *storage) clientBySecret(id, secret string) (*Client, error) {
	c, ok := s.clients[id]
	if !ok || c.Secret == "" || subtle.ConstantTimeCompare([]byte(c.Secret), []byte(secret)) != 1 {
		return nil, errClientAuth
	}
	return c, nil
}

// Keys: op serves the JWKS from KeySet and would sign ID tokens with SigningKey.

func (s *storage) SigningKey(context.Context) (op.SigningKey, error) {
	return signingKey{s.signer}, nil
}

func (s *storage) SignatureAlgorithms(context.Context) ([]jose.SignatureAlgorithm, error) {
	return []jose.SignatureAlgorithm{jose.RS256}, nil
}

func (s *storage) KeySet(context.Context) ([]op.Key, error) {
	return []op.Key{publicKey{s.signer}}, nil
}

type signingKey struct{ s *signer }

func (k signingKey) SignatureAlgorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k signingKey) Key() any                                    { return k.s.key }
func (k signingKey) ID() string                                  { return k.s.kid }

type publicKey struct{ s *signer }

func (k publicKey) ID() string                         { return k.s.kid }
func (k publicKey) Algorithm() jose.SignatureAlgorithm { return jose.RS256 }
func (k publicKey) Use() string                        { return "sig" }
func (k publicKey) Key() any                           { return &k.s.key.PublicKey }

// Clients, as op's other endpoints (introspection, revocation) look them up.

func (s *storage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	c, ok := s.clients[id]
	if !ok {
		return nil, fmt.Errorf("client %q not found", id)
	}
	return opClient{c, s.ttl}, nil
}

func (s *storage) AuthorizeClientIDSecret(_ context.Context, id, secret string) error {
	_, err := s.clientBySecret(id, secret)
	return err
}

func (s *storage) ClientCredentials(_ context.Context, id, secret string) (op.Client, error) {
	c, err := s.clientBySecret(id, secret)
	if err != nil {
		return nil, err
	}
	return opClient{c, s.ttl}, nil
}

func (s *storage) GetKeyByIDAndClientID(_ context.Context, kid, clientID string) (*jose.JSONWebKey, error) {
	c, ok := s.clients[clientID]
	if !ok || c.PublicKey == nil || (c.KeyID != "" && c.KeyID != kid) {
		return nil, fmt.Errorf("no key %q for client %q", kid, clientID)
	}
	return &jose.JSONWebKey{Key: c.PublicKey, KeyID: c.KeyID, Use: "sig"}, nil
}

// The grants: never reached through op (see the type's comment).

func (s *storage) ClientCredentialsTokenRequest(context.Context, string, []string) (op.TokenRequest, error) {
	return nil, errServedInFront
}

func (s *storage) ValidateTokenExchangeRequest(context.Context, op.TokenExchangeRequest) error {
	return errServedInFront
}

func (s *storage) CreateTokenExchangeRequest(context.Context, op.TokenExchangeRequest) error {
	return errServedInFront
}

func (s *storage) GetPrivateClaimsFromTokenExchangeRequest(context.Context, op.TokenExchangeRequest) (map[string]any, error) {
	return nil, errServedInFront
}

func (s *storage) SetUserinfoFromTokenExchangeRequest(context.Context, *oidc.UserInfo, op.TokenExchangeRequest) error {
	return errServedInFront
}

func (s *storage) CreateAccessToken(context.Context, op.TokenRequest) (string, time.Time, error) {
	return "", time.Time{}, errServedInFront
}

func (s *storage) ValidateJWTProfileScopes(context.Context, string, []string) ([]string, error) {
	return nil, errServedInFront
}

// Interactive flows (authorization code, refresh, sessions): not offered.

func (s *storage) CreateAuthRequest(context.Context, *oidc.AuthRequest, string) (op.AuthRequest, error) {
	return nil, errNoInteractiveFlows
}

func (s *storage) AuthRequestByID(context.Context, string) (op.AuthRequest, error) {
	return nil, errNoInteractiveFlows
}

func (s *storage) AuthRequestByCode(context.Context, string) (op.AuthRequest, error) {
	return nil, errNoInteractiveFlows
}

func (s *storage) SaveAuthCode(context.Context, string, string) error { return errNoInteractiveFlows }
func (s *storage) DeleteAuthRequest(context.Context, string) error    { return errNoInteractiveFlows }

func (s *storage) CreateAccessAndRefreshTokens(context.Context, op.TokenRequest, string) (string, string, time.Time, error) {
	return "", "", time.Time{}, errNoInteractiveFlows
}

func (s *storage) TokenRequestByRefreshToken(context.Context, string) (op.RefreshTokenRequest, error) {
	return nil, errNoInteractiveFlows
}

func (s *storage) TerminateSession(context.Context, string, string) error { return nil }

func (s *storage) RevokeToken(context.Context, string, string, string) *oidc.Error {
	return oidc.ErrUnsupportedGrantType().WithDescription("tokens cannot be revoked")
}

func (s *storage) GetRefreshTokenInfo(context.Context, string, string) (string, string, error) {
	return "", "", op.ErrInvalidRefreshToken
}

func (s *storage) SetUserinfoFromScopes(context.Context, *oidc.UserInfo, string, string, []string) error {
	return nil
}

func (s *storage) SetUserinfoFromToken(_ context.Context, info *oidc.UserInfo, _, subject, _ string) error {
	info.Subject = subject
	return nil
}

func (s *storage) SetIntrospectionFromToken(context.Context, *oidc.IntrospectionResponse, string, string, string) error {
	return errNoInteractiveFlows
}

func (s *storage) GetPrivateClaimsFromScopes(context.Context, string, string, []string) (map[string]any, error) {
	return nil, nil
}

func (s *storage) Health(context.Context) error { return nil }

// opClient is a Client as op sees it: confidential, no redirect URIs.
type opClient struct {
	c   *Client
	ttl time.Duration
}

func (o opClient) GetID() string                        { return o.c.ID }
func (o opClient) RedirectURIs() []string               { return nil }
func (o opClient) PostLogoutRedirectURIs() []string     { return nil }
func (o opClient) ApplicationType() op.ApplicationType  { return op.ApplicationTypeWeb }
func (o opClient) ResponseTypes() []oidc.ResponseType   { return nil }
func (o opClient) LoginURL(string) string               { return "" }
func (o opClient) AccessTokenType() op.AccessTokenType  { return op.AccessTokenTypeJWT }
func (o opClient) IDTokenLifetime() time.Duration       { return o.ttl }
func (o opClient) DevMode() bool                        { return true }
func (o opClient) IsScopeAllowed(string) bool           { return false }
func (o opClient) IDTokenUserinfoClaimsAssertion() bool { return false }
func (o opClient) ClockSkew() time.Duration             { return 0 }
func (o opClient) RestrictAdditionalIdTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}
func (o opClient) RestrictAdditionalAccessTokenScopes() func([]string) []string {
	return func(s []string) []string { return s }
}

func (o opClient) AuthMethod() oidc.AuthMethod {
	if o.c.Secret == "" {
		return oidc.AuthMethodPrivateKeyJWT
	}
	return oidc.AuthMethodBasic
}

func (o opClient) GrantTypes() []oidc.GrantType {
	grants := make([]oidc.GrantType, len(o.c.Grants))
	for i, g := range o.c.Grants {
		grants[i] = oidc.GrantType(g)
	}
	return grants
}
