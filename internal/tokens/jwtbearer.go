package tokens

import (
	"context"
	"net/url"
)

// JWTBearerOptions configure a JWTBearer source.
type JWTBearerOptions struct {
	IdPOptions
	// OnBehalfOf sends requested_token_use=on_behalf_of, as Microsoft Entra
	// ID's On-Behalf-Of flow requires.
	OnBehalfOf bool
}

// JWTBearer presents the caller's token as an RFC 7523 §2.1 authorization
// grant and gets a token for the upstream on the caller's behalf, as
// Microsoft Entra ID's On-Behalf-Of flow does. (Not every server that
// implements this grant can do that: Ory Hydra accepts only assertions
// from an issuer registered as trusted, with its token URL as aud and a
// single-use jti, which a caller's access token is not.)
type JWTBearer struct {
	*idp
	opts JWTBearerOptions
}

var _ Source = (*JWTBearer)(nil)

// NewJWTBearer checks opts and loads the client key, if any.
func NewJWTBearer(opts JWTBearerOptions) (*JWTBearer, error) {
	c, err := newIdP(opts.IdPOptions)
	if err != nil {
		return nil, err
	}
	return &JWTBearer{idp: c, opts: opts}, nil
}

// Token asks for a token with req's audience and scopes, asserting the
// caller's token.
func (s *JWTBearer) Token(ctx context.Context, req *Request) (Token, error) {
	if req.SubjectToken == "" {
		return Token{}, ErrSubjectExpired
	}
	form := url.Values{
		"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"assertion":  {req.SubjectToken},
	}
	if s.opts.OnBehalfOf {
		form.Set("requested_token_use", "on_behalf_of")
	}
	s.setTarget(form, req.Audience, req.Scopes)
	tok, err := s.request(ctx, form, true)
	if err != nil {
		return Token{}, err
	}
	return token(tok), nil
}
