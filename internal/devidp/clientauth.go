package devidp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/lestrrat-go/jwx/v2/jws"
)

// clientAssertionType is RFC 7523 §2.2's client_assertion_type.
const clientAssertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// authenticate returns the client the request authenticates as, by exactly
// one of client_secret_basic, client_secret_post (RFC 6749 §2.3.1) or
// private_key_jwt (RFC 7523 §2.2, as OpenID Connect Core §9 profiles it).
func (p *Provider) authenticate(r *http.Request, form url.Values) (*Client, error) {
	basicID, basicSecret, basic := r.BasicAuth()
	post := form.Has("client_secret")
	assertion := form.Has("client_assertion") || form.Has("client_assertion_type")
	if count(basic, post, assertion) > 1 {
		// RFC 6749 §2.3: one authentication method per request.
		return nil, refuse("invalid_request", "more than one client authentication method")
	}
	var c *Client
	var err error
	switch {
	case basic:
		c, err = p.clientByBasic(basicID, basicSecret)
	case post:
		c, err = p.store.clientBySecret(form.Get("client_id"), form.Get("client_secret"))
	case assertion:
		c, err = p.clientByAssertion(form.Get("client_assertion_type"), form.Get("client_assertion"))
	default:
		return nil, refuse("invalid_client", "client authentication is required")
	}
	if err != nil {
		return nil, refuse("invalid_client", err.Error())
	}
	if id := form.Get("client_id"); id != "" && id != c.ID {
		return nil, refuse("invalid_client", "client_id does not match the authenticated client")
	}
	return c, nil
}

func count(conds ...bool) int {
	n := 0
	for _, c := range conds {
		if c {
			n++
		}
	}
	return n
}

// clientByBasic undoes the form-encoding RFC 6749 §2.3.1 applies to the
// id and secret before they are put in the Basic header.
func (p *Provider) clientByBasic(id, secret string) (*Client, error) {
	id, err1 := url.QueryUnescape(id)
	secret, err2 := url.QueryUnescape(secret)
	if err1 != nil || err2 != nil {
		return nil, errClientAuth
	}
	return p.store.clientBySecret(id, secret)
}

// assertionClaims are the claims RFC 7523 §3 requires of a client assertion.
type assertionClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"`
	Audience  audience `json:"aud"`
	Expiry    int64    `json:"exp"`
	NotBefore int64    `json:"nbf"`
}

// audience is aud as a string or an array of strings.
type audience []string

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	return json.Unmarshal(b, (*[]string)(a))
}

// clientByAssertion verifies a private_key_jwt client assertion: signed by
// the client's key, iss = sub = the client, aud naming this provider (its
// issuer or its token endpoint), unexpired. jti replay is not checked.
func (p *Provider) clientByAssertion(typ, raw string) (*Client, error) {
	if typ != clientAssertionType {
		return nil, fmt.Errorf("client_assertion_type must be %s", clientAssertionType)
	}
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil || len(msg.Signatures()) != 1 {
		return nil, fmt.Errorf("client_assertion is not a compact JWS")
	}
	var claims assertionClaims
	if err := json.Unmarshal(msg.Payload(), &claims); err != nil {
		return nil, fmt.Errorf("client_assertion claims: %w", err)
	}
	c, ok := p.store.clients[claims.Subject]
	if !ok || c.PublicKey == nil || claims.Issuer != claims.Subject {
		return nil, fmt.Errorf("client_assertion: no client %q with a public key (iss must equal sub)", claims.Subject)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if c.KeyID != "" && hdr.KeyID() != c.KeyID {
		return nil, fmt.Errorf("client_assertion: kid %q is not the client's", hdr.KeyID())
	}
	// jwx's own table of the algorithms a key type signs with: a curve
	// that does not fit the ES* alg fails the signature check below.
	if algs, _ := jws.AlgorithmsForKey(c.PublicKey); !slices.Contains(algs, hdr.Algorithm()) {
		return nil, fmt.Errorf("client_assertion: alg %s does not fit the client's key", hdr.Algorithm())
	}
	if _, err := jws.Verify([]byte(raw), jws.WithKey(hdr.Algorithm(), c.PublicKey), jws.WithCompact()); err != nil {
		return nil, fmt.Errorf("client_assertion signature: %w", err)
	}
	return c, p.checkAssertionClaims(claims)
}

func (p *Provider) checkAssertionClaims(c assertionClaims) error {
	now := p.now()
	switch {
	case !slices.Contains(c.Audience, p.Issuer()) && !slices.Contains(c.Audience, p.tokenURL):
		return fmt.Errorf("client_assertion aud must be %s or %s", p.Issuer(), p.tokenURL)
	case c.Expiry == 0:
		return fmt.Errorf("client_assertion has no exp")
	case !now.Before(time.Unix(c.Expiry, 0)):
		return fmt.Errorf("client_assertion expired")
	case c.NotBefore != 0 && now.Before(time.Unix(c.NotBefore, 0)):
		return fmt.Errorf("client_assertion not valid yet (nbf)")
	}
	return nil
}
