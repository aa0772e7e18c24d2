package tokens

import (
	"context"
	"fmt"
	"net/url"

	"github.com/audgate/audgate/internal/oauth"
)

// Token type URIs (RFC 8693 §3).
const (
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	TokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
)

// ExchangeOptions configure a TokenExchange source.
type ExchangeOptions struct {
	IdPOptions
	// SubjectTokenType is the caller's token's type. Default: access_token.
	SubjectTokenType string
	// RequestedTokenType is the type asked for. Default: access_token.
	RequestedTokenType string
	// ActorToken, if set, is sent as actor_token with ActorTokenType
	// (default: access_token), naming audgate as the actor.
	ActorToken     string
	ActorTokenType string
}

// TokenExchange exchanges the caller's token at the identity provider for
// one made for the upstream (RFC 8693 §2).
type TokenExchange struct {
	*idp
	opts ExchangeOptions
}

var _ Source = (*TokenExchange)(nil)

// NewTokenExchange checks opts and loads the client key, if any. It does
// not contact the identity provider.
func NewTokenExchange(opts ExchangeOptions) (*TokenExchange, error) {
	if opts.SubjectTokenType == "" {
		opts.SubjectTokenType = TokenTypeAccessToken
	}
	if opts.RequestedTokenType == "" {
		opts.RequestedTokenType = TokenTypeAccessToken
	}
	if opts.ActorToken != "" && opts.ActorTokenType == "" {
		opts.ActorTokenType = TokenTypeAccessToken
	}
	c, err := newIdP(opts.IdPOptions)
	if err != nil {
		return nil, err
	}
	return &TokenExchange{idp: c, opts: opts}, nil
}

// Token exchanges req.SubjectToken for a token with req's audience and
// scopes.
func (s *TokenExchange) Token(ctx context.Context, req *Request) (Token, error) {
	if req.SubjectToken == "" {
		return Token{}, ErrSubjectExpired
	}
	form := url.Values{
		"grant_type":           {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":        {req.SubjectToken},
		"subject_token_type":   {s.opts.SubjectTokenType},
		"requested_token_type": {s.opts.RequestedTokenType},
	}
	s.setTarget(form, req.Audience, req.Scopes)
	if s.opts.ActorToken != "" {
		form.Set("actor_token", s.opts.ActorToken)
		form.Set("actor_token_type", s.opts.ActorTokenType)
	}
	tok, err := s.request(ctx, form, true)
	if err != nil {
		return Token{}, err
	}
	issued := tok.IssuedTokenType
	// RFC 8693 §2.2.1: issued_token_type is required. A JWT is an access
	// token's usual form, so it is accepted for an access token request.
	switch {
	case issued == s.opts.RequestedTokenType:
	case issued == TokenTypeJWT && s.opts.RequestedTokenType == TokenTypeAccessToken:
	case issued == "":
		return Token{}, &UnavailableError{Source: s.name, Reason: "the answer has no issued_token_type"}
	default:
		return Token{}, &UnavailableError{Source: s.name, Reason: fmt.Sprintf("issued_token_type %q, asked for %q", oauth.LogSafe(issued, 128), s.opts.RequestedTokenType)}
	}
	return token(tok), nil
}
