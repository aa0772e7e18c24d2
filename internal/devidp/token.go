package devidp

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// accessClaims are the claims of every access token the provider issues
// (RFC 9068 §2.2, with aud a single string).
type accessClaims struct {
	Issuer   string         `json:"iss"`
	Subject  string         `json:"sub"`
	Audience string         `json:"aud"`
	Scope    string         `json:"scope,omitempty"`
	ClientID string         `json:"client_id"`
	IssuedAt int64          `json:"iat"`
	Expiry   int64          `json:"exp"`
	ID       string         `json:"jti"`
	Actor    map[string]any `json:"act,omitempty"` // RFC 8693 §4.1
}

// verifiedToken is an access token this provider issued, checked.
type verifiedToken struct {
	accessClaims
	// All holds every claim, registered or not.
	All map[string]any
}

// signer mints and checks the provider's RS256 access tokens. Read-only
// after newSigner, safe for concurrent use.
type signer struct {
	issuer string
	key    *rsa.PrivateKey
	kid    string // RFC 7638 thumbprint of the public key
}

func newSigner(issuer string) (*signer, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	pub, err := jwk.FromRaw(&key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	thumb, err := pub.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("signing key thumbprint: %w", err)
	}
	return &signer{issuer: issuer, key: key, kid: base64.RawURLEncoding.EncodeToString(thumb)}, nil
}

// sign returns c, with extra claims beneath it, as a compact JWS with
// header typ at+jwt (RFC 9068 §2.1) and the key's kid.
func (s *signer) sign(c accessClaims, extra map[string]any) (string, error) {
	registered, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	all := maps.Clone(extra)
	if all == nil {
		all = map[string]any{}
	}
	// Overlay the registered claims so that no extra claim can replace one.
	if err := json.Unmarshal(registered, &all); err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	payload, err := json.Marshal(all)
	if err != nil {
		return "", fmt.Errorf("token claims: %w", err)
	}
	hdr := jws.NewHeaders()
	for k, v := range map[string]any{jws.TypeKey: "at+jwt", jws.KeyIDKey: s.kid} {
		if err := hdr.Set(k, v); err != nil {
			return "", fmt.Errorf("token header: %w", err)
		}
	}
	raw, err := jws.Sign(payload, jws.WithKey(jwa.RS256, s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	return string(raw), nil
}

// newClaims fills the claims every token has.
func (s *signer) newClaims(sub, aud, scope, clientID string, now time.Time, ttl time.Duration) (accessClaims, error) {
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return accessClaims{}, fmt.Errorf("token id: %w", err)
	}
	return accessClaims{
		Issuer:   s.issuer,
		Subject:  sub,
		Audience: aud,
		Scope:    scope,
		ClientID: clientID,
		IssuedAt: now.Unix(),
		Expiry:   now.Add(ttl).Unix(),
		ID:       base64.RawURLEncoding.EncodeToString(jti),
	}, nil
}

// verify checks that raw is an unexpired access token this provider signed:
// compact serialization, RS256 with its key, typ at+jwt, its issuer.
func (s *signer) verify(raw string, now time.Time) (*verifiedToken, error) {
	msg, err := jws.Parse([]byte(raw), jws.WithCompact())
	if err != nil {
		return nil, fmt.Errorf("not a compact JWS: %w", err)
	}
	if len(msg.Signatures()) != 1 {
		return nil, errors.New("not a single-signature JWS")
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	if hdr.Algorithm() != jwa.RS256 || hdr.KeyID() != s.kid || hdr.Type() != "at+jwt" {
		return nil, errors.New("not an access token of this provider (alg, kid or typ)")
	}
	payload, err := jws.Verify([]byte(raw), jws.WithKey(jwa.RS256, &s.key.PublicKey), jws.WithCompact())
	if err != nil {
		return nil, fmt.Errorf("signature: %w", err)
	}
	var t verifiedToken
	if err := json.Unmarshal(payload, &t.accessClaims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	if err := json.Unmarshal(payload, &t.All); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	switch {
	case t.Issuer != s.issuer:
		return nil, fmt.Errorf("issuer %q is not this provider", t.Issuer)
	case t.Subject == "":
		return nil, errors.New("no sub")
	case t.Expiry <= 0:
		return nil, errors.New("no exp")
	case !now.Before(time.Unix(t.Expiry, 0)):
		return nil, errors.New("expired")
	}
	return &t, nil
}
