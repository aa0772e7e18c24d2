package devidp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"
)

// Grant types a Client may be allowed to use.
const (
	GrantClientCredentials = "client_credentials"                              // RFC 6749 §4.4
	GrantTokenExchange     = "urn:ietf:params:oauth:grant-type:token-exchange" // RFC 8693
	GrantJWTBearer         = "urn:ietf:params:oauth:grant-type:jwt-bearer"     // RFC 7523 §2.1
)

// The development data of DefaultOptions, as README's quickstart for
// `audgate dev` names it.
const (
	AudienceGateway = "https://gateway.example.com"
	AudienceOrders  = "https://orders.example.com"
	AudienceBilling = "https://billing.example.com"

	// UserTokenClientID is the client_id claim of the tokens IssueUserToken
	// makes: the login client a user would have used.
	UserTokenClientID = "audgate-cli"
)

// Client is an OAuth client registered at the provider.
type Client struct {
	// ID is the client_id. Required, unique among clients and users.
	ID string
	// Secret allows client_secret_basic and client_secret_post. Empty: the
	// client can only authenticate with private_key_jwt.
	Secret string
	// Grants the client may use: GrantClientCredentials, GrantTokenExchange,
	// GrantJWTBearer. Any other grant answers unauthorized_client.
	Grants []string
	// Entitlements are the scopes the client itself may get per audience
	// (client_credentials, and token exchange of its own tokens).
	Entitlements map[string][]string
	// PublicKey, if set, allows private_key_jwt client authentication
	// (RFC 7523 §2.2 client assertion) signed with the matching private key:
	// *rsa.PublicKey (RS256/384/512, PS256/384/512), *ecdsa.PublicKey
	// (ES256/384/512) or ed25519.PublicKey (EdDSA).
	PublicKey crypto.PublicKey
	// KeyID, if set, must be the assertion's kid. Empty: any kid or none.
	KeyID string
}

// User is an end user whose tokens the provider issues and exchanges.
type User struct {
	// Subject is the sub claim. Required, unique among users and clients.
	Subject string
	// Entitlements are the scopes the user may be given per audience.
	Entitlements map[string][]string
	// Claims are extra claims put in the user's tokens (e.g. "permissions").
	// Registered claims (iss, sub, aud, exp, iat, nbf, jti, scope,
	// client_id, act) are refused by New.
	Claims map[string]any
}

// Options configure a Provider. Read-only once given to New.
type Options struct {
	// Issuer is the iss of every token and the base of every endpoint, e.g.
	// "http://127.0.0.1:9400/". Required. http is allowed: this is a
	// development provider. A path (e.g. "/realms/dev") is served under it.
	Issuer string
	// Clients and Users are the provider's only principals.
	Clients []Client
	Users   []User
	// TokenTTL is the lifetime of issued access tokens. Default: 5m.
	TokenTTL time.Duration
	// Now is the clock for iat, exp and every expiry check. Default: time.Now.
	Now func() time.Time
	// Logger receives one line per token request. Default: discard.
	Logger *slog.Logger
}

// DefaultOptions returns the users and clients of `audgate dev` (README,
// Quickstart):
//
//   - user alice: orders → [orders:read orders:write], billing → [billing:read]
//   - user bob: orders → [orders:read]
//   - client audgate (secret audgate-dev-secret): all three grants;
//     billing → [billing:read billing:write]
//   - client audgate-m2m (secret audgate-m2m-dev-secret): client_credentials;
//     billing → [billing:read]
//
// Users carry "permissions": the union of their entitlement scopes.
func DefaultOptions(issuer string) Options {
	return Options{
		Issuer: issuer,
		Clients: []Client{
			{
				ID:           "audgate",
				Secret:       "audgate-dev-secret",
				Grants:       []string{GrantClientCredentials, GrantTokenExchange, GrantJWTBearer},
				Entitlements: map[string][]string{AudienceBilling: {"billing:read", "billing:write"}},
			},
			{
				ID:           "audgate-m2m",
				Secret:       "audgate-m2m-dev-secret",
				Grants:       []string{GrantClientCredentials},
				Entitlements: map[string][]string{AudienceBilling: {"billing:read"}},
			},
		},
		Users: []User{
			{
				Subject: "alice",
				Entitlements: map[string][]string{
					AudienceOrders:  {"orders:read", "orders:write"},
					AudienceBilling: {"billing:read"},
				},
				Claims: map[string]any{"permissions": []string{"orders:read", "orders:write", "billing:read"}},
			},
			{
				Subject:      "bob",
				Entitlements: map[string][]string{AudienceOrders: {"orders:read"}},
				Claims:       map[string]any{"permissions": []string{"orders:read"}},
			},
		},
	}
}

// registeredClaims are set by the provider; a user's Claims may not hold them.
var registeredClaims = []string{"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope", "client_id", "act"}

var knownGrants = []string{GrantClientCredentials, GrantTokenExchange, GrantJWTBearer}

// withDefaults returns o with its defaults filled in.
func (o Options) withDefaults() Options {
	if o.TokenTTL <= 0 {
		o.TokenTTL = 5 * time.Minute
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate checks the clients and users; the issuer is checked by op.
func (o Options) validate() error {
	names := map[string]bool{}
	for i, c := range o.Clients {
		if err := c.validate(); err != nil {
			return fmt.Errorf("clients[%d]: %w", i, err)
		}
		if names[c.ID] {
			return fmt.Errorf("clients[%d]: id %q is used twice", i, c.ID)
		}
		names[c.ID] = true
	}
	for i, u := range o.Users {
		if u.Subject == "" {
			return fmt.Errorf("users[%d]: subject is required", i)
		}
		// A subject token's sub must name one principal.
		if names[u.Subject] {
			return fmt.Errorf("users[%d]: subject %q is already a client or user", i, u.Subject)
		}
		names[u.Subject] = true
		for name := range u.Claims {
			if slices.Contains(registeredClaims, name) {
				return fmt.Errorf("users[%d]: claim %q is set by the provider", i, name)
			}
		}
	}
	return nil
}

func (c Client) validate() error {
	if c.ID == "" {
		return errors.New("id is required")
	}
	if c.Secret == "" && c.PublicKey == nil {
		return errors.New("a secret or a public key is required")
	}
	for _, g := range c.Grants {
		if !slices.Contains(knownGrants, g) {
			return fmt.Errorf("unknown grant %q", g)
		}
	}
	switch c.PublicKey.(type) {
	case nil, *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("unsupported public key type %T", c.PublicKey)
	}
}
