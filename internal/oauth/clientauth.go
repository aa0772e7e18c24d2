package oauth

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// Client authentication methods at a token endpoint.
const (
	// AuthBasic sends the client ID and secret in HTTP Basic
	// authentication, each form-encoded first (RFC 6749 §2.3.1).
	AuthBasic = "client_secret_basic"
	// AuthPost sends them as client_id and client_secret form fields
	// (RFC 6749 §2.3.1).
	AuthPost = "client_secret_post"
	// AuthPrivateKeyJWT sends a JWT signed with the client's private key
	// (RFC 7523 §2.2, OpenID Connect Core §9).
	AuthPrivateKeyJWT = "private_key_jwt"
)

// AuthMethods lists the client authentication methods, default first.
func AuthMethods() []string { return []string{AuthBasic, AuthPost, AuthPrivateKeyJWT} }

// assertionType is RFC 7523 §2.2's client_assertion_type.
const assertionType = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"

// assertionLifetime is how long a client assertion is valid.
const assertionLifetime = time.Minute

// ClientAuth is how the client authenticates at the token endpoint.
type ClientAuth struct {
	// Method is AuthBasic, AuthPost or AuthPrivateKeyJWT. Required.
	Method string
	// ClientID is the client's identifier. Required.
	ClientID string
	// ClientSecret is the secret for AuthBasic and AuthPost.
	ClientSecret string
	// Key is the private key (RSA, EC P-256/384/521 or Ed25519) that signs
	// AuthPrivateKeyJWT assertions. Its kid, if any, goes in the header.
	Key jwk.Key
	// Certificate, if set, is Key's X.509 certificate: assertions then
	// carry its SHA-256 thumbprint as x5t#S256 instead of a kid, and an
	// RSA key signs with PS256, as Microsoft Entra ID's certificate
	// credentials require. Default: none.
	Certificate *x509.Certificate
	// AssertionAudience is the assertions' aud. Default: the token
	// endpoint (RFC 7523 §3); some servers want their issuer.
	AssertionAudience string
}

// signer is a checked AuthPrivateKeyJWT key with its algorithm and the
// header field that names the key.
type signer struct {
	key              any // the raw private key: a jwk.Key would add its own kid
	alg              jwa.SignatureAlgorithm
	keyName, keyHint string // e.g. "kid", "k1"; "" for none
}

// newSigner checks a's fields for its method and, for AuthPrivateKeyJWT,
// prepares the signing key.
func (a *ClientAuth) newSigner() (*signer, error) {
	if a.ClientID == "" {
		return nil, errors.New("client authentication: client ID required")
	}
	switch a.Method {
	case AuthBasic, AuthPost:
		if a.ClientSecret == "" {
			return nil, fmt.Errorf("client authentication: %s needs a client secret", a.Method)
		}
		return nil, nil
	case AuthPrivateKeyJWT:
	default:
		return nil, fmt.Errorf("client authentication: %q is not one of %v", a.Method, AuthMethods())
	}
	if a.Key == nil {
		return nil, errors.New("client authentication: private_key_jwt needs a private key")
	}
	var raw any
	if err := a.Key.Raw(&raw); err != nil {
		return nil, fmt.Errorf("client authentication: private key: %w", err)
	}
	alg, err := assertionAlg(raw, a.Certificate != nil)
	if err != nil {
		return nil, err
	}
	s := &signer{key: raw, alg: alg}
	if a.Certificate != nil {
		if err := certificateFits(a.Certificate, raw); err != nil {
			return nil, err
		}
		sum := sha256.Sum256(a.Certificate.Raw)
		s.keyName, s.keyHint = jws.X509CertThumbprintS256Key, base64.RawURLEncoding.EncodeToString(sum[:])
	} else if kid := a.Key.KeyID(); kid != "" {
		s.keyName, s.keyHint = jws.KeyIDKey, kid
	}
	return s, nil
}

// assertionAlg chooses the signature algorithm for a private key: RS256
// for RSA (PS256 with a certificate, as Entra ID documents), ES256/384/512
// by curve, EdDSA for Ed25519.
func assertionAlg(raw any, withCertificate bool) (jwa.SignatureAlgorithm, error) {
	switch k := raw.(type) {
	case *rsa.PrivateKey:
		if k.N.BitLen() < 2048 {
			return "", fmt.Errorf("client authentication: RSA key of %d bits is too small; use at least 2048", k.N.BitLen())
		}
		if withCertificate {
			return jwa.PS256, nil
		}
		return jwa.RS256, nil
	case *ecdsa.PrivateKey:
		switch k.Curve {
		case elliptic.P256():
			return jwa.ES256, nil
		case elliptic.P384():
			return jwa.ES384, nil
		case elliptic.P521():
			return jwa.ES512, nil
		}
	case ed25519.PrivateKey:
		return jwa.EdDSA, nil
	}
	return "", fmt.Errorf("client authentication: a %T cannot sign a client assertion; use an RSA, EC (P-256, P-384, P-521) or Ed25519 private key", raw)
}

// certificateFits checks that cert holds the public half of key.
func certificateFits(cert *x509.Certificate, key any) error {
	s, ok := key.(crypto.Signer)
	if !ok {
		return fmt.Errorf("client authentication: a %T has no public key", key)
	}
	pub, ok := s.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return fmt.Errorf("client authentication: the certificate (subject %q) is not for the private key; give the certificate of that key", cert.Subject.String())
	}
	return nil
}

// apply authenticates a token request to endpoint: it adds form fields or
// sets req's Authorization.
func (a *ClientAuth) apply(s *signer, form url.Values, endpoint string, now time.Time) error {
	switch a.Method {
	case AuthPost:
		form.Set("client_id", a.ClientID)
		form.Set("client_secret", a.ClientSecret)
	case AuthPrivateKeyJWT:
		assertion, err := a.assertion(s, endpoint, now)
		if err != nil {
			return err
		}
		form.Set("client_id", a.ClientID)
		form.Set("client_assertion_type", assertionType)
		form.Set("client_assertion", assertion)
	}
	return nil
}

// setBasic sets Basic authentication on req for AuthBasic.
func (a *ClientAuth) setBasic(req *http.Request) {
	if a.Method == AuthBasic {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(a.ClientID), url.QueryEscape(a.ClientSecret))
	}
}

// assertion is an RFC 7523 §3 client assertion: iss and sub the client,
// aud the endpoint (or AssertionAudience), a minute of life, a random jti.
func (a *ClientAuth) assertion(s *signer, endpoint string, now time.Time) (string, error) {
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	aud := a.AssertionAudience
	if aud == "" {
		aud = endpoint
	}
	payload, err := json.Marshal(map[string]any{
		"iss": a.ClientID, "sub": a.ClientID, "aud": aud,
		"iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(assertionLifetime).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", err
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "JWT")
	if s.keyName != "" {
		_ = hdr.Set(s.keyName, s.keyHint)
	}
	signed, err := jws.Sign(payload, jws.WithKey(s.alg, s.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("client authentication: sign the client assertion: %w", err)
	}
	return string(signed), nil
}
