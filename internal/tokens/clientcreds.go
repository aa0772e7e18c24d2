package tokens

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// ClientCredentials gets tokens for audgate itself (RFC 6749 §4.4): one
// token per (audience, scopes), shared by every caller, for upstreams that
// trust the gateway rather than the user.
type ClientCredentials struct {
	*idp
}

var _ Source = (*ClientCredentials)(nil)

// NewClientCredentials checks opts and loads the client key, if any.
func NewClientCredentials(opts IdPOptions) (*ClientCredentials, error) {
	c, err := newIdP(opts)
	if err != nil {
		return nil, err
	}
	return &ClientCredentials{idp: c}, nil
}

// Token asks for a token with req's audience and scopes; the caller's
// identity is not sent.
func (s *ClientCredentials) Token(ctx context.Context, req *Request) (Token, error) {
	endpoint, err := s.tokenEndpoint(ctx)
	if err != nil {
		return Token{}, err
	}
	params := url.Values{}
	s.setTarget(params, req.Audience, req.Scopes)
	cfg := clientcredentials.Config{
		ClientID:       s.opts.ClientID,
		ClientSecret:   s.opts.ClientSecret,
		TokenURL:       endpoint,
		EndpointParams: url.Values{},
		AuthStyle:      oauth2.AuthStyleInHeader,
	}
	if sc := params.Get("scope"); sc != "" {
		cfg.Scopes = strings.Fields(sc)
		params.Del("scope")
	}
	for k, v := range params {
		cfg.EndpointParams[k] = v
	}
	switch s.opts.ClientAuth {
	case AuthPost:
		cfg.AuthStyle = oauth2.AuthStyleInParams
	case AuthPrivateKeyJWT:
		assertion, err := s.clientAssertion(endpoint)
		if err != nil {
			return Token{}, err
		}
		cfg.AuthStyle, cfg.ClientSecret = oauth2.AuthStyleInParams, ""
		cfg.EndpointParams.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		cfg.EndpointParams.Set("client_assertion", assertion)
	}
	t, err := cfg.Token(context.WithValue(ctx, oauth2.HTTPClient, s.client))
	if err != nil {
		return Token{}, s.mapError(err)
	}
	if t.TokenType != "" && !strings.EqualFold(t.TokenType, "Bearer") {
		return Token{}, s.unavailable(fmt.Sprintf("token_type %q is not Bearer", t.TokenType), 0, nil)
	}
	raw, _ := json.Marshal(t.Extra("expires_in"))
	if t.Extra("expires_in") == nil {
		raw = nil
	}
	exp, err := s.expiry(raw)
	if err != nil {
		return Token{}, err
	}
	return Token{Value: t.AccessToken, Expiry: exp}, nil
}

// mapError turns x/oauth2's errors into ours: an OAuth error code is a
// refusal; anything else means no usable answer.
func (s *ClientCredentials) mapError(err error) error {
	var re *oauth2.RetrieveError
	if !errors.As(err, &re) {
		return s.unavailable("token request failed", 0, err)
	}
	status := 0
	if re.Response != nil {
		status = re.Response.StatusCode
	}
	if status >= 500 || status == http.StatusTooManyRequests || re.ErrorCode == "" {
		var after = retryAfterOf(re.Response)
		return s.unavailable(fmt.Sprintf("token endpoint answered %d", status), after, nil)
	}
	return &RefusedError{Source: s.opts.Name, Code: logSafe(re.ErrorCode, 64), Description: logSafe(re.ErrorDescription, 256), Status: status}
}
