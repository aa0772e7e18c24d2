package devidp

import (
	"net/url"
	"strings"
)

// clientCredentials is RFC 6749 §4.4: a token for the client itself.
func (p *Provider) clientCredentials(c *Client, form url.Values, req *tokenRequest) (*tokenResponse, error) {
	t, err := parseTarget(form)
	if err != nil {
		return nil, err
	}
	req.subject, req.audience = c.ID, t.audience
	scopes, err := p.entitle(p.principals[c.ID], t, "invalid_scope")
	if err != nil {
		return nil, err
	}
	claims, err := p.signer.newClaims(c.ID, t.audience, strings.Join(scopes, " "), c.ID, p.now(), p.ttl)
	if err != nil {
		return nil, err
	}
	return p.issue(claims, nil, "")
}

// tokenExchange is RFC 8693 §2: a token for the subject_token's subject,
// with act naming the actor (§4.1): the actor_token's subject if one is
// sent, else the client; a subject token's own act nests beneath it.
func (p *Provider) tokenExchange(c *Client, form url.Values, req *tokenRequest) (*tokenResponse, error) {
	subject, err := p.verifyPresented(form, "subject_token")
	if err != nil {
		return nil, err
	}
	req.subject = subject.Subject
	actor := c.ID
	if form.Has("actor_token") {
		a, err := p.verifyPresented(form, "actor_token")
		if err != nil {
			return nil, err
		}
		actor = a.Subject
	}
	switch form.Get("requested_token_type") {
	case "", tokenTypeAccessToken:
	default:
		return nil, refuse("invalid_request", "requested_token_type must be "+tokenTypeAccessToken)
	}
	claims, extra, err := p.delegated(c, subject, form, req)
	if err != nil {
		return nil, err
	}
	claims.Actor = map[string]any{"sub": actor}
	if prior := subject.Actor; prior != nil {
		claims.Actor["act"] = prior
	}
	return p.issue(claims, extra, tokenTypeAccessToken)
}

// jwtBearer is RFC 7523 §2.1 as Microsoft Entra's on-behalf-of flow uses
// it: the assertion is a user's access token from this provider, and the
// new token is the user's, for the client (client_id), without act, as
// Entra issues it.
func (p *Provider) jwtBearer(c *Client, form url.Values, req *tokenRequest) (*tokenResponse, error) {
	if use := form.Get("requested_token_use"); use != "" && use != "on_behalf_of" {
		return nil, refuse("invalid_request", "requested_token_use must be on_behalf_of")
	}
	raw := form.Get("assertion")
	if raw == "" {
		return nil, refuse("invalid_request", "assertion is required")
	}
	subject, err := p.signer.verify(raw, p.now())
	if err != nil {
		// RFC 7523 §3.1: an unusable assertion is invalid_grant.
		return nil, refuse("invalid_grant", "assertion: "+err.Error())
	}
	req.subject = subject.Subject
	claims, extra, err := p.delegated(c, subject, form, req)
	if err != nil {
		return nil, err
	}
	return p.issue(claims, extra, "")
}

// verifyPresented checks the token a request presents as name
// ("subject_token" or "actor_token") and its name_type.
func (p *Provider) verifyPresented(form url.Values, name string) (*verifiedToken, error) {
	raw, typ := form.Get(name), form.Get(name+"_type")
	switch {
	case raw == "":
		return nil, refuse("invalid_request", name+" is required")
	case typ == "":
		return nil, refuse("invalid_request", name+"_type is required")
	case typ != tokenTypeAccessToken && typ != tokenTypeJWT:
		return nil, refuse("invalid_request", name+"_type must be "+tokenTypeAccessToken+" or "+tokenTypeJWT)
	}
	t, err := p.signer.verify(raw, p.now())
	if err != nil {
		// RFC 8693 §2.2.2 says invalid_request; Okta says invalid_grant,
		// which tells a client the token, not the request, is at fault.
		return nil, refuse("invalid_grant", name+": "+err.Error())
	}
	return t, nil
}

// delegated makes the claims of a token for subject's principal at the
// request's target, within its entitlements, issued to client c.
func (p *Provider) delegated(c *Client, subject *verifiedToken, form url.Values, req *tokenRequest) (accessClaims, map[string]any, error) {
	t, err := parseTarget(form)
	if err != nil {
		return accessClaims{}, nil, err
	}
	req.audience = t.audience
	who, ok := p.principals[subject.Subject]
	if !ok {
		return accessClaims{}, nil, refuse("invalid_grant", "unknown subject "+subject.Subject)
	}
	scopes, err := p.entitle(who, t, "access_denied")
	if err != nil {
		return accessClaims{}, nil, err
	}
	claims, err := p.signer.newClaims(who.name, t.audience, strings.Join(scopes, " "), c.ID, p.now(), p.ttl)
	return claims, who.claims, err
}
