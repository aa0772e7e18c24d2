package tokens

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"golang.org/x/sync/singleflight"
)

// Client authentication methods at the token endpoint (RFC 6749 §2.3,
// RFC 7523 §2.2).
const (
	AuthBasic         = "client_secret_basic"
	AuthPost          = "client_secret_post"
	AuthPrivateKeyJWT = "private_key_jwt"
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
	// ClientAuth is AuthBasic (default), AuthPost or AuthPrivateKeyJWT.
	ClientAuth string
	// PrivateKeyFile is a PEM or JWK private key for AuthPrivateKeyJWT.
	PrivateKeyFile string
	// AssertionAudience is the aud of private_key_jwt client assertions.
	// Default: the token endpoint (RFC 7523 §3); some IdPs (Zitadel) want
	// their issuer.
	AssertionAudience string
	// AudienceParam sends the audience as "audience" (default),
	// "resource" (RFC 8707) or "both".
	AudienceParam string
	// HTTPClient makes the requests. Default: a client with no proxy and
	// a 10s timeout; each request is also bounded by the cache's timeout.
	HTTPClient *http.Client
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
}

// maxBody bounds what is read from an IdP answer.
const maxBody = 1 << 20

// maxExpiresIn caps expires_in: a larger value (or an overflowing one)
// is read as a day.
const maxExpiresIn = 24 * time.Hour

// idp is what the three IdP sources share: the token endpoint (discovered
// once), client authentication, and reading answers.
type idp struct {
	opts   IdPOptions
	client *http.Client
	key    jwk.Key // for private_key_jwt

	discovery singleflight.Group
	mu        sync.Mutex // guards endpoint
	endpoint  string
}

func newIdP(opts IdPOptions) (*idp, error) {
	if opts.ClientAuth == "" {
		opts.ClientAuth = AuthBasic
	}
	if opts.AudienceParam == "" {
		opts.AudienceParam = "audience"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.TokenEndpoint == "" && opts.Issuer == "" {
		return nil, fmt.Errorf("token source %q: set token_endpoint or issuer", opts.Name)
	}
	c := &idp{opts: opts, client: opts.HTTPClient, endpoint: opts.TokenEndpoint}
	if c.client == nil {
		c.client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			Proxy: http.ProxyFromEnvironment, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second,
		}}
	}
	switch opts.ClientAuth {
	case AuthBasic, AuthPost:
	case AuthPrivateKeyJWT:
		k, err := readKey(opts.PrivateKeyFile)
		if err != nil {
			return nil, fmt.Errorf("token source %q: private_key_file: %w", opts.Name, err)
		}
		c.key = k
	default:
		return nil, fmt.Errorf("token source %q: client_auth %q is not one of %s, %s, %s", opts.Name, opts.ClientAuth, AuthBasic, AuthPost, AuthPrivateKeyJWT)
	}
	return c, nil
}

// tokenEndpoint returns the configured or discovered token endpoint.
// Concurrent callers share one discovery request, and a caller whose ctx
// ends stops waiting; a failed discovery is not remembered, so the next
// request tries again.
func (c *idp) tokenEndpoint(ctx context.Context) (string, error) {
	c.mu.Lock()
	ep := c.endpoint
	c.mu.Unlock()
	if ep != "" {
		return ep, nil
	}
	ch := c.discovery.DoChan("", func() (any, error) {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		ep, err := c.discover(dctx)
		if err == nil {
			c.mu.Lock()
			c.endpoint = ep
			c.mu.Unlock()
		}
		return ep, err
	})
	select {
	case <-ctx.Done():
		return "", c.unavailable("discovery", 0, ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return "", r.Err
		}
		return r.Val.(string), nil
	}
}

// discover reads token_endpoint from the issuer's discovery document.
func (c *idp) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(c.opts.Issuer, "/") + "/.well-known/openid-configuration"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return "", c.unavailable("discovery", 0, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", c.unavailable(fmt.Sprintf("discovery answered %d", resp.StatusCode), retryAfter(resp), nil)
	}
	var doc struct {
		Issuer        string `json:"issuer"`
		TokenEndpoint string `json:"token_endpoint"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxBody)).Decode(&doc); err != nil {
		return "", c.unavailable("discovery document is not JSON", 0, err)
	}
	if doc.Issuer != c.opts.Issuer {
		return "", &RefusedError{Source: c.opts.Name, Code: "invalid_client",
			Description: fmt.Sprintf("discovery document names issuer %q, configured %q", logSafe(doc.Issuer, 256), c.opts.Issuer)}
	}
	if _, err := url.ParseRequestURI(doc.TokenEndpoint); err != nil {
		return "", c.unavailable("discovery document has no valid token_endpoint", 0, err)
	}
	return doc.TokenEndpoint, nil
}

// setAudience adds the audience as the source is configured to send it.
func (c *idp) setAudience(form url.Values, audience string) {
	if audience == "" {
		return
	}
	switch c.opts.AudienceParam {
	case "resource":
		form.Set("resource", audience)
	case "both":
		form.Set("audience", audience)
		form.Set("resource", audience)
	default:
		form.Set("audience", audience)
	}
}

// post sends form to the token endpoint with client authentication and
// reads the answer into a Token.
func (c *idp) post(ctx context.Context, form url.Values) (Token, string, error) {
	endpoint, err := c.tokenEndpoint(ctx)
	if err != nil {
		return Token{}, "", err
	}
	req, err := c.newRequest(ctx, endpoint, form)
	if err != nil {
		return Token{}, "", err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return Token{}, "", c.unavailable("token endpoint unreachable", 0, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return Token{}, "", c.unavailable("reading the answer", 0, err)
	}
	if resp.StatusCode != http.StatusOK {
		return Token{}, "", c.failure(resp, body)
	}
	return c.parse(body)
}

func (c *idp) newRequest(ctx context.Context, endpoint string, form url.Values) (*http.Request, error) {
	switch c.opts.ClientAuth {
	case AuthPost:
		form.Set("client_id", c.opts.ClientID)
		form.Set("client_secret", c.opts.ClientSecret)
	case AuthPrivateKeyJWT:
		assertion, err := c.clientAssertion(endpoint)
		if err != nil {
			return nil, err
		}
		form.Set("client_id", c.opts.ClientID)
		form.Set("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer")
		form.Set("client_assertion", assertion)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("token source %q: %w", c.opts.Name, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if c.opts.ClientAuth == AuthBasic {
		// RFC 6749 §2.3.1: both are form-encoded before Basic encoding.
		req.SetBasicAuth(url.QueryEscape(c.opts.ClientID), url.QueryEscape(c.opts.ClientSecret))
	}
	return req, nil
}

// clientAssertion is an RFC 7523 §3 JWT authenticating audgate.
func (c *idp) clientAssertion(endpoint string) (string, error) {
	now := c.opts.Now()
	var jti [16]byte
	if _, err := rand.Read(jti[:]); err != nil {
		return "", err
	}
	aud := c.opts.AssertionAudience
	if aud == "" {
		aud = endpoint
	}
	payload, err := json.Marshal(map[string]any{
		"iss": c.opts.ClientID, "sub": c.opts.ClientID, "aud": aud,
		"iat": now.Unix(), "exp": now.Add(time.Minute).Unix(),
		"jti": base64.RawURLEncoding.EncodeToString(jti[:]),
	})
	if err != nil {
		return "", err
	}
	alg, err := assertionAlg(c.key)
	if err != nil {
		return "", fmt.Errorf("token source %q: %w", c.opts.Name, err)
	}
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.KeyIDKey, c.key.KeyID())
	_ = hdr.Set(jws.TypeKey, "JWT")
	signed, err := jws.Sign(payload, jws.WithKey(alg, c.key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		return "", fmt.Errorf("token source %q: sign client assertion: %w", c.opts.Name, err)
	}
	return string(signed), nil
}

// assertionAlg picks the signing algorithm for a client key: RS256 for
// RSA, ES256/ES384/ES512 by curve, EdDSA for Ed25519.
func assertionAlg(k jwk.Key) (jwa.SignatureAlgorithm, error) {
	var raw any
	if err := k.Raw(&raw); err != nil {
		return "", err
	}
	switch key := raw.(type) {
	case *rsa.PrivateKey:
		return jwa.RS256, nil
	case *ecdsa.PrivateKey:
		switch key.Curve {
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
	return "", fmt.Errorf("private_key_file: unsupported key %T for a client assertion", raw)
}

// tokenResponse is RFC 6749 §5.1 with RFC 8693 §2.2.1's additions.
type tokenResponse struct {
	AccessToken     string          `json:"access_token"`
	TokenType       string          `json:"token_type"`
	ExpiresIn       json.RawMessage `json:"expires_in"`
	Scope           string          `json:"scope"`
	IssuedTokenType string          `json:"issued_token_type"`
}

// parse reads a successful answer. It returns the token and the issued
// token type.
func (c *idp) parse(body []byte) (Token, string, error) {
	var tr tokenResponse
	if err := json.Unmarshal(body, &tr); err != nil {
		return Token{}, "", c.unavailable("the answer is not a JSON token response", 0, err)
	}
	if tr.AccessToken == "" {
		return Token{}, "", c.unavailable("the answer has no access_token", 0, nil)
	}
	if tr.TokenType != "" && !strings.EqualFold(tr.TokenType, "Bearer") && !strings.EqualFold(tr.TokenType, "N_A") {
		return Token{}, "", c.unavailable(fmt.Sprintf("token_type %q is not Bearer", tr.TokenType), 0, nil)
	}
	exp, err := c.expiry(tr.ExpiresIn)
	if err != nil {
		return Token{}, "", err
	}
	return Token{Value: tr.AccessToken, Expiry: exp}, tr.IssuedTokenType, nil
}

// expiry turns expires_in into a time. Absent: zero (the cache applies
// default_ttl). Zero or negative: already expired, so the token serves
// one request and is not cached. Huge: capped at a day.
func (c *idp) expiry(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	s := strings.Trim(string(raw), `"`) // some IdPs send it as a string
	secs, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return time.Time{}, c.unavailable(fmt.Sprintf("expires_in %s is not a number", raw), 0, nil)
	}
	now := c.opts.Now()
	switch {
	case secs <= 0:
		return now, nil
	case secs >= maxExpiresIn.Seconds():
		return now.Add(maxExpiresIn), nil
	}
	return now.Add(time.Duration(secs * float64(time.Second))), nil
}

// failure turns a non-200 answer into a *RefusedError (an OAuth error
// code, RFC 6749 §5.2) or an *UnavailableError.
func (c *idp) failure(resp *http.Response, body []byte) error {
	ra := retryAfter(resp)
	if resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests {
		return c.unavailable(fmt.Sprintf("token endpoint answered %d", resp.StatusCode), ra, nil)
	}
	var oe struct {
		Error            string `json:"error"`
		ErrorDescription string `json:"error_description"`
	}
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if mt == "application/x-www-form-urlencoded" {
		v, _ := url.ParseQuery(string(body))
		oe.Error, oe.ErrorDescription = v.Get("error"), v.Get("error_description")
	} else {
		_ = json.Unmarshal(body, &oe)
	}
	if oe.Error == "" {
		return c.unavailable(fmt.Sprintf("token endpoint answered %d without an OAuth error", resp.StatusCode), ra, nil)
	}
	return &RefusedError{Source: c.opts.Name, Code: logSafe(oe.Error, 64), Description: logSafe(oe.ErrorDescription, 256), Status: resp.StatusCode}
}

// logSafe bounds text from an identity provider that goes to logs: at
// most max bytes, control characters replaced.
func logSafe(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

func (c *idp) unavailable(reason string, after time.Duration, err error) error {
	return &UnavailableError{Source: c.opts.Name, Reason: reason, RetryAfter: after, Err: err}
}

// retryAfterOf is retryAfter for a response that may be nil.
func retryAfterOf(resp *http.Response) time.Duration {
	if resp == nil {
		return 0
	}
	return retryAfter(resp)
}

// retryAfter reads a Retry-After header given in seconds.
func retryAfter(resp *http.Response) time.Duration {
	if s, err := strconv.Atoi(resp.Header.Get("Retry-After")); err == nil && s > 0 && s < 3600 {
		return time.Duration(s) * time.Second
	}
	return 0
}

// RefusedError is an identity provider's OAuth error answer (RFC 6749
// §5.2, RFC 8693 §2.2.2): it understood the request and said no.
type RefusedError struct {
	Source      string
	Code        string // e.g. invalid_grant, invalid_target
	Description string // the IdP's error_description, for logs
	Status      int    // the HTTP status of the answer
}

func (e *RefusedError) Error() string {
	msg := fmt.Sprintf("token source %q: identity provider refused: %s", e.Source, e.Code)
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

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

// IsRefusal reports whether err is an identity provider's refusal.
func IsRefusal(err error) bool {
	var re *RefusedError
	return errors.As(err, &re)
}
