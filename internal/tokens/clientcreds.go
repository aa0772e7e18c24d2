package tokens

import (
	"context"
	"net/url"
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
	form := url.Values{"grant_type": {"client_credentials"}}
	s.setTarget(form, req.Audience, req.Scopes)
	tok, err := s.request(ctx, form, false)
	if err != nil {
		return Token{}, err
	}
	return token(tok), nil
}
