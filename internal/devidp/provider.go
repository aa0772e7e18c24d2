package devidp

import (
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/zitadel/oidc/v3/pkg/op"
)

// Provider is a development OpenID provider. It is read-only after New but
// for SetFault and its request counter, and safe for concurrent use.
type Provider struct {
	issuer     string
	tokenURL   string
	ttl        time.Duration
	now        func() time.Time
	logger     *slog.Logger
	signer     *signer
	store      *storage
	principals map[string]principal // users and clients, by sub
	audiences  map[string]bool      // every audience anyone is entitled to
	handler    http.Handler

	tokenRequests atomic.Int64
	fault         atomic.Pointer[Fault]
}

// New checks opts, generates an RS256 signing key and builds the provider.
func New(opts Options) (*Provider, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	sig, err := newSigner(opts.Issuer)
	if err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	p := &Provider{
		issuer:     opts.Issuer,
		ttl:        opts.TokenTTL,
		now:        opts.Now,
		logger:     opts.Logger,
		signer:     sig,
		store:      &storage{signer: sig, clients: map[string]*Client{}, ttl: opts.TokenTTL},
		principals: map[string]principal{},
		audiences:  map[string]bool{},
	}
	p.fault.Store(&Fault{})
	p.index(opts)
	if err := p.buildHandler(); err != nil {
		return nil, fmt.Errorf("devidp: %w", err)
	}
	return p, nil
}

// index files the clients and users by name, and their audiences.
func (p *Provider) index(opts Options) {
	add := func(pr principal) {
		p.principals[pr.name] = pr
		for aud := range pr.entitlements {
			p.audiences[aud] = true
		}
	}
	for _, c := range opts.Clients {
		p.store.clients[c.ID] = &c
		add(principal{name: c.ID, entitlements: c.Entitlements})
	}
	for _, u := range opts.Users {
		add(principal{name: u.Subject, entitlements: u.Entitlements, claims: u.Claims, user: true})
	}
}

// buildHandler mounts op's provider at the issuer's path, with the token
// endpoint served by p in front of it (endpoint.go says why).
func (p *Provider) buildHandler() error {
	var cryptoKey [32]byte // op's key for opaque tokens, which p never issues
	if _, err := rand.Read(cryptoKey[:]); err != nil {
		return fmt.Errorf("op crypto key: %w", err)
	}
	config := &op.Config{CryptoKey: cryptoKey, AuthMethodPost: true, AuthMethodPrivateKeyJWT: true}
	provider, err := op.NewProvider(config, p.store, op.StaticIssuer(p.issuer), op.WithAllowInsecure())
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	u, err := url.Parse(p.issuer)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	prefix := strings.TrimSuffix(u.Path, "/")
	p.tokenURL = provider.TokenEndpoint().Absolute(p.issuer)
	mux := http.NewServeMux()
	mux.HandleFunc(prefix+provider.TokenEndpoint().Relative(), p.serveToken)
	mux.Handle(prefix+"/", http.StripPrefix(prefix, provider))
	p.handler = mux
	return nil
}

// Handler serves discovery (/.well-known/openid-configuration), the JWKS
// (/keys) and the token endpoint (/oauth/token) under the issuer's path.
// op's interactive endpoints (/authorize, /userinfo, ...) answer but do not
// work.
func (p *Provider) Handler() http.Handler { return p.handler }

// Issuer is Options.Issuer, exactly.
func (p *Provider) Issuer() string { return p.issuer }

// TokenEndpoint is the token endpoint's URL, as discovery publishes it.
func (p *Provider) TokenEndpoint() string { return p.tokenURL }

// TokenRequests counts the requests that reached the token endpoint, faulty
// and refused ones included.
func (p *Provider) TokenRequests() int64 { return p.tokenRequests.Load() }

// SetFault makes the token endpoint misbehave as f says until the next
// SetFault; SetFault(Fault{}) ends it.
func (p *Provider) SetFault(f Fault) { p.fault.Store(&f) }

// IssueUserToken returns an access token for user sub at audience with
// scopes, as the provider would issue it after a login: typ at+jwt, the
// user's extra claims, client_id UserTokenClientID. The scopes are not
// checked against the user's entitlements, so tests can present any.
// ttl 0 means Options.TokenTTL; a negative ttl makes an expired token.
func (p *Provider) IssueUserToken(sub, audience string, scopes []string, ttl time.Duration) (string, error) {
	who, ok := p.principals[sub]
	if !ok || !who.user {
		return "", fmt.Errorf("devidp: unknown user %q", sub)
	}
	if audience == "" {
		return "", errors.New("devidp: audience is required")
	}
	if ttl == 0 {
		ttl = p.ttl
	}
	claims, err := p.signer.newClaims(sub, audience, strings.Join(scopes, " "), UserTokenClientID, p.now(), ttl)
	if err != nil {
		return "", fmt.Errorf("devidp: %w", err)
	}
	raw, err := p.signer.sign(claims, who.claims)
	if err != nil {
		return "", fmt.Errorf("devidp: %w", err)
	}
	return raw, nil
}
