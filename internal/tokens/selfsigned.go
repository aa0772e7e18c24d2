package tokens

import (
	"context"
	"crypto"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const cryptoSHA256 = crypto.SHA256

// DefaultSelfSignedTTL is a self-signed token's lifetime when none is set.
const DefaultSelfSignedTTL = 5 * time.Minute

// SelfSignedOptions configure a SelfSigned source.
type SelfSignedOptions struct {
	// Name is the source's name, for messages.
	Name string
	// Issuer is the iss of every token. Required.
	Issuer string
	// Algorithm signs: one of SigningAlgorithms. Default:
	// DefaultSigningAlgorithm.
	Algorithm string
	// TTL is the tokens' lifetime, never past the caller's exp. Default:
	// DefaultSelfSignedTTL.
	TTL time.Duration
	// KeysPath is a PEM or JWK private key file, or a directory of them;
	// the newest (by modification time, then name) signs and all are
	// published. Empty: an ephemeral key, with a warning.
	KeysPath string
	// Logger receives the ephemeral-key warning. Default: slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
}

// SelfSigned issues RFC 9068 JWT access tokens signed by audgate itself,
// for upstreams that trust the gateway rather than the identity provider.
type SelfSigned struct {
	issuer string
	alg    jwa.SignatureAlgorithm
	ttl    time.Duration
	signer jwk.Key
	public jwk.Set
	now    func() time.Time
}

var _ Source = (*SelfSigned)(nil)

// NewSelfSigned loads or generates the signing keys.
func NewSelfSigned(opts SelfSignedOptions) (*SelfSigned, error) {
	if opts.Issuer == "" {
		return nil, fmt.Errorf("token source %q: issuer is required", opts.Name)
	}
	if opts.Algorithm == "" {
		opts.Algorithm = DefaultSigningAlgorithm
	}
	if opts.TTL <= 0 {
		opts.TTL = DefaultSelfSignedTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	alg := jwa.SignatureAlgorithm(opts.Algorithm)
	var keys []jwk.Key
	if opts.KeysPath == "" {
		k, err := generateKey(alg)
		if err != nil {
			return nil, fmt.Errorf("token source %q: %w", opts.Name, err)
		}
		opts.Logger.Warn("self-signed token source has no signing_keys: signing with an ephemeral key that changes on every restart; upstreams will reject tokens signed before a restart and replicas will not share keys. Set signing_keys for production.",
			"token_source", opts.Name, "kid", k.KeyID())
		keys = []jwk.Key{k}
	} else {
		loaded, err := loadKeys(opts.KeysPath)
		if err != nil {
			return nil, fmt.Errorf("token source %q: signing_keys: %w", opts.Name, err)
		}
		for _, sk := range loaded {
			keys = append(keys, sk.key)
		}
	}
	signer := keys[len(keys)-1]
	if err := checkKeyFits(signer, alg); err != nil {
		return nil, fmt.Errorf("token source %q: signing_keys: %w", opts.Name, err)
	}
	if err := signer.Set(jwk.AlgorithmKey, alg); err != nil {
		return nil, err
	}
	public, err := publicSet(keys, signer, alg)
	if err != nil {
		return nil, fmt.Errorf("token source %q: %w", opts.Name, err)
	}
	return &SelfSigned{issuer: opts.Issuer, alg: alg, ttl: opts.TTL, signer: signer, public: public, now: opts.Now}, nil
}

func publicSet(keys []jwk.Key, signer jwk.Key, alg jwa.SignatureAlgorithm) (jwk.Set, error) {
	set := jwk.NewSet()
	for _, k := range keys {
		pub, err := k.PublicKey()
		if err != nil {
			return nil, fmt.Errorf("public key %s: %w", k.KeyID(), err)
		}
		if err := pub.Set(jwk.KeyUsageKey, jwk.ForSignature); err != nil {
			return nil, err
		}
		if k == signer {
			if err := pub.Set(jwk.AlgorithmKey, alg); err != nil {
				return nil, err
			}
		}
		if err := set.AddKey(pub); err != nil {
			return nil, err
		}
	}
	return set, nil
}

// Issuer returns the iss of the tokens this source signs.
func (s *SelfSigned) Issuer() string { return s.issuer }

// Algorithm returns the signing algorithm.
func (s *SelfSigned) Algorithm() string { return s.alg.String() }

// PublicKeys returns the JWKS that verifies this source's tokens: the
// signing key and every older key, so tokens signed before a rotation stay
// verifiable.
func (s *SelfSigned) PublicKeys() jwk.Set { return s.public }

// Token signs an RFC 9068 access token for req: typ at+jwt, the caller's
// sub and client_id, the decision's aud and scope, exp no later than the
// caller's, and act naming the gateway.
func (s *SelfSigned) Token(_ context.Context, req *Request) (Token, error) {
	now := s.now()
	exp := now.Add(s.ttl)
	if !req.SubjectExpiry.IsZero() && req.SubjectExpiry.Before(exp) {
		exp = req.SubjectExpiry
	}
	if !exp.After(now) {
		return Token{}, ErrSubjectExpired
	}
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return Token{}, err
	}
	claims := make(map[string]any, len(req.Claims)+10)
	for k, v := range req.Claims {
		claims[k] = v
	}
	clientID := req.ClientID
	if clientID == "" {
		clientID = s.issuer
	}
	claims["iss"] = s.issuer
	claims["sub"] = req.Subject
	claims["aud"] = req.Audience
	claims["client_id"] = clientID
	claims["iat"] = now.Unix()
	claims["exp"] = exp.Unix()
	claims["jti"] = base64.RawURLEncoding.EncodeToString(jti[:])
	claims["act"] = map[string]any{"sub": s.issuer}
	if len(req.Scopes) > 0 {
		claims["scope"] = strings.Join(req.Scopes, " ")
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return Token{}, fmt.Errorf("self-signed token: claims: %w", err)
	}
	hdr := jws.NewHeaders()
	if err := hdr.Set(jws.TypeKey, "at+jwt"); err != nil {
		return Token{}, err
	}
	if err := hdr.Set(jws.KeyIDKey, s.signer.KeyID()); err != nil {
		return Token{}, err
	}
	signed, err := jws.Sign(payload, jws.WithKey(s.alg, s.signer, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return Token{}, fmt.Errorf("self-signed token: sign: %w", err)
	}
	return Token{Value: string(signed), Expiry: time.Unix(exp.Unix(), 0)}, nil
}
