package tokens

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/audgate/audgate/internal/oauth"
)

// IdPOptions configure a source that asks an identity provider.
type IdPOptions struct {
	// Name is the source's name, for errors and logs.
	Name string
	// Issuer is the IdP's issuer; its discovery document gives the token
	// endpoint when TokenEndpoint is empty.
	Issuer string
	// TokenEndpoint overrides discovery.
	TokenEndpoint string
	// ClientID and ClientSecret authenticate audgate at the IdP.
	ClientID     string
	ClientSecret string
	// ClientAuth is one of oauth.AuthMethods. Default: oauth.AuthBasic.
	ClientAuth string
	// PrivateKeyFile is a PEM or JWK private key for oauth.AuthPrivateKeyJWT.
	PrivateKeyFile string
	// CertificateFile, for oauth.AuthPrivateKeyJWT, is the PEM certificate
	// of that key: assertions then carry its x5t#S256 thumbprint and an RSA
	// key signs PS256 (Microsoft Entra ID's certificate credentials).
	// Default: none.
	CertificateFile string
	// AssertionAudience is the aud of private_key_jwt client assertions.
	// Default: the token endpoint (RFC 7523 §3); some IdPs want their
	// issuer.
	AssertionAudience string
	// AudienceParam is how the audience is sent: one of AudienceParams.
	// Default: AudienceParamAudience.
	AudienceParam string
	// ExtraParams are form fields added to every token request; none may
	// be a field the grant or client authentication sets
	// (oauth.ReservedParam). Default: none.
	ExtraParams map[string]string
	// HTTPClient makes the requests. Default: a client with no proxy
	// but the environment's, and a 10s timeout; each request is also
	// bounded by the cache's timeout.
	HTTPClient *http.Client
	// WrapTransport, if set, wraps HTTPClient's transport (tracing).
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
}

// Ways to send the audience (AudienceParam).
const (
	// AudienceParamAudience sends it as "audience" (RFC 8693; Auth0, Okta,
	// Keycloak).
	AudienceParamAudience = "audience"
	// AudienceParamResource sends it as "resource" (RFC 8707).
	AudienceParamResource = "resource"
	// AudienceParamBoth sends both.
	AudienceParamBoth = "both"
	// AudienceParamScope prefixes each scope with it, or sends
	// <audience>/.default without scopes (Microsoft Entra ID).
	AudienceParamScope = "scope"
)

// AudienceParams lists the ways to send the audience, default first.
func AudienceParams() []string {
	return []string{AudienceParamAudience, AudienceParamResource, AudienceParamBoth, AudienceParamScope}
}

// idp is what the three IdP sources share: one OAuth client, and how the
// audience is sent.
type idp struct {
	name          string
	audienceParam string
	client        *oauth.Client
}

func newIdP(opts IdPOptions) (*idp, error) {
	if opts.ClientAuth == "" {
		opts.ClientAuth = oauth.AuthBasic
	}
	if opts.AudienceParam == "" {
		opts.AudienceParam = AudienceParamAudience
	}
	fail := func(err error) (*idp, error) { return nil, fmt.Errorf("token source %q: %w", opts.Name, err) }
	if !slices.Contains(AudienceParams(), opts.AudienceParam) {
		return fail(fmt.Errorf("audience_param %q is not one of %s", opts.AudienceParam, strings.Join(AudienceParams(), ", ")))
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		}}
	}
	if opts.WrapTransport != nil {
		c := *opts.HTTPClient
		base := c.Transport
		if base == nil {
			base = http.DefaultTransport
		}
		c.Transport = opts.WrapTransport(base)
		opts.HTTPClient = &c
	}
	auth := oauth.ClientAuth{Method: opts.ClientAuth, ClientID: opts.ClientID, ClientSecret: opts.ClientSecret,
		AssertionAudience: opts.AssertionAudience}
	if opts.ClientAuth == oauth.AuthPrivateKeyJWT {
		k, err := readKey(opts.PrivateKeyFile)
		if err != nil {
			return fail(fmt.Errorf("private_key_file: %w", err))
		}
		auth.Key = k
		if opts.CertificateFile != "" {
			if auth.Certificate, err = readCertificate(opts.CertificateFile); err != nil {
				return fail(fmt.Errorf("certificate_file: %w", err))
			}
		}
	}
	o := oauth.Options{TokenEndpoint: opts.TokenEndpoint, Auth: auth, ExtraParams: opts.ExtraParams,
		HTTPClient: opts.HTTPClient, Now: opts.Now}
	if opts.TokenEndpoint == "" {
		if opts.Issuer == "" {
			return fail(errors.New("set token_endpoint or issuer"))
		}
		o.Discovery = oauth.NewDiscovery(opts.Issuer, opts.HTTPClient)
	}
	c, err := oauth.NewClient(o)
	if err != nil {
		return fail(err)
	}
	return &idp{name: opts.Name, audienceParam: opts.AudienceParam, client: c}, nil
}

// readCertificate reads the first PEM certificate in file.
func readCertificate(file string) (*x509.Certificate, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block found; give the certificate of the private key, in PEM")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// request posts a grant's form and maps the answer. callerToken says
// whether form carries the caller's token, which decides what a refusal
// of the grant means (see RefusedError).
func (c *idp) request(ctx context.Context, form url.Values, callerToken bool) (*oauth.Token, error) {
	tok, err := c.client.Token(ctx, form)
	if err == nil {
		return tok, nil
	}
	var (
		oe *oauth.Error
		ue *oauth.UnavailableError
		me *oauth.MetadataError
	)
	switch {
	case errors.As(err, &oe):
		return nil, &RefusedError{Source: c.name, Answer: oe, CallerToken: callerToken}
	case errors.As(err, &ue):
		return nil, &UnavailableError{Source: c.name, Reason: ue.Reason, RetryAfter: ue.RetryAfter, Err: ue.Err}
	case errors.As(err, &me):
		return nil, &ConfigError{Source: c.name, Err: me}
	}
	return nil, &UnavailableError{Source: c.name, Reason: "token request failed", Err: err}
}

// setTarget adds the audience and scopes as the source sends them. With
// AudienceParamScope (Microsoft Entra ID), the audience, without a
// trailing slash, prefixes each scope, and stands alone as
// <audience>/.default when there is none.
func (c *idp) setTarget(form url.Values, audience string, scopes []string) {
	if c.audienceParam == AudienceParamScope {
		prefix := strings.TrimSuffix(audience, "/") + "/"
		if len(scopes) == 0 {
			form.Set("scope", prefix+".default")
			return
		}
		qualified := make([]string, len(scopes))
		for i, sc := range scopes {
			qualified[i] = prefix + sc
		}
		form.Set("scope", strings.Join(qualified, " "))
		return
	}
	if audience != "" {
		switch c.audienceParam {
		case AudienceParamResource:
			form.Set("resource", audience)
		case AudienceParamBoth:
			form.Set("audience", audience)
			form.Set("resource", audience)
		default:
			form.Set("audience", audience)
		}
	}
	if len(scopes) > 0 {
		form.Set("scope", strings.Join(scopes, " "))
	}
}

// token turns an answer into a Token.
func token(t *oauth.Token) Token { return Token{Value: t.AccessToken, Expiry: t.Expiry} }

// RefusedError is an identity provider's OAuth error answer (RFC 6749
// §5.2, RFC 8693 §2.2.2): it understood the request and said no.
type RefusedError struct {
	Source string
	// Answer is the IdP's answer: its code (invalid_grant, invalid_target,
	// ...), description and HTTP status.
	Answer *oauth.Error
	// CallerToken says whether the refused request carried the caller's
	// token (token exchange, jwt-bearer). Only then can invalid_grant or
	// invalid_request be about the caller; without it (client
	// credentials), they mean audgate's own request is wrong.
	CallerToken bool
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("token source %q: identity provider %v", e.Source, e.Answer)
}

func (e *RefusedError) Unwrap() error { return e.Answer }

// UnavailableError means no usable answer came from the identity
// provider: unreachable, 5xx, 429, timeout, or a malformed answer.
type UnavailableError struct {
	Source     string
	Reason     string
	RetryAfter time.Duration // from the IdP's Retry-After; 0 if none
	Err        error
}

func (e *UnavailableError) Error() string {
	msg := fmt.Sprintf("token source %q: identity provider unavailable: %s", e.Source, e.Reason)
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// ConfigError means the identity provider's published metadata
// contradicts the source's configuration (another issuer, no token
// endpoint): only the operator can fix it.
type ConfigError struct {
	Source string
	Err    error
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("token source %q: misconfigured: %v", e.Source, e.Err)
}

func (e *ConfigError) Unwrap() error { return e.Err }

// IsRefusal reports whether err is an identity provider's refusal.
func IsRefusal(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}
