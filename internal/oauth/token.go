package oauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// MaxExpiresIn caps expires_in: a larger value (or an overflowing one) is
// read as a day, so a mistaken answer cannot pin a token for years.
const MaxExpiresIn = 24 * time.Hour

// reservedParams are the form fields that grants and client
// authentication set: ExtraParams may not name them.
var reservedParams = []string{
	"grant_type", "client_id", "client_secret", "client_assertion", "client_assertion_type",
	"scope", "audience", "resource", "subject_token", "subject_token_type",
	"requested_token_type", "actor_token", "actor_token_type", "assertion",
	"requested_token_use", "code", "code_verifier", "redirect_uri", "refresh_token",
	"username", "password",
}

// ReservedParam reports whether name is a form field that a grant or
// client authentication sets, and so cannot be an extra parameter.
func ReservedParam(name string) bool { return slices.Contains(reservedParams, name) }

// Options configure a Client.
type Options struct {
	// TokenEndpoint is the token endpoint's URL. Default: from Discovery.
	TokenEndpoint string
	// Discovery finds the token endpoint when TokenEndpoint is empty.
	Discovery *Discovery
	// Auth authenticates the client. Required.
	Auth ClientAuth
	// ExtraParams are form fields added to every token request (e.g.
	// Auth0's organization). None may be a ReservedParam. Default: none.
	ExtraParams map[string]string
	// HTTPClient makes the requests; redirects are never followed.
	// Default: http.DefaultClient; a request is bounded by its ctx.
	HTTPClient *http.Client
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
}

// Client makes token requests to one token endpoint. It is safe for
// concurrent use and read-only after NewClient.
type Client struct {
	opts   Options
	signer *signer // for AuthPrivateKeyJWT
}

// NewClient checks opts and prepares client authentication. It makes no
// request.
func NewClient(opts Options) (*Client, error) {
	switch {
	case opts.TokenEndpoint != "":
		if err := CheckURL(opts.TokenEndpoint); err != nil {
			return nil, fmt.Errorf("token endpoint: %w", err)
		}
	case opts.Discovery == nil:
		return nil, errors.New("token endpoint: give one, or an issuer to discover it from")
	}
	for name := range opts.ExtraParams {
		if ReservedParam(name) {
			return nil, fmt.Errorf("extra parameter %q: the grant or client authentication sets it; remove it", name)
		}
	}
	s, err := opts.Auth.newSigner()
	if err != nil {
		return nil, err
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = http.DefaultClient
	}
	// A token endpoint that redirects is misconfigured: following would
	// turn the POST into a GET without the grant, or carry credentials to
	// another address. Its 3xx is the answer.
	hc := *opts.HTTPClient
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	opts.HTTPClient = &hc
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Client{opts: opts, signer: s}, nil
}

// Token is a successful token response (RFC 6749 §5.1, RFC 8693 §2.2.1).
type Token struct {
	// AccessToken is the issued token.
	AccessToken string
	// TokenType is Bearer, N_A (RFC 8693 §2.2.1) or "" when not sent.
	TokenType string
	// Expiry is when the token expires: zero when expires_in is absent,
	// the time of the answer when it is 0 or negative, at most
	// MaxExpiresIn ahead.
	Expiry time.Time
	// Scope is the granted scope, when the server says.
	Scope string
	// IssuedTokenType is RFC 8693's issued_token_type, when sent.
	IssuedTokenType string
}

// Endpoint returns the token endpoint: configured, or discovered.
func (c *Client) Endpoint(ctx context.Context) (string, error) {
	if c.opts.TokenEndpoint != "" {
		return c.opts.TokenEndpoint, nil
	}
	return c.opts.Discovery.TokenEndpoint(ctx)
}

// Token posts form, the grant's fields, to the token endpoint with the
// extra parameters and client authentication added, and reads the answer.
// form is not modified. Every grant gets the same reading of answers: a
// JSON or form-encoded body, an OAuth error whatever the status, Bearer or
// N_A as the token type. Errors are *Error, *UnavailableError or
// *MetadataError.
func (c *Client) Token(ctx context.Context, form url.Values) (*Token, error) {
	endpoint, err := c.Endpoint(ctx)
	if err != nil {
		return nil, err
	}
	body := make(url.Values, len(form)+len(c.opts.ExtraParams)+3)
	for k, v := range form {
		body[k] = v
	}
	for k, v := range c.opts.ExtraParams {
		body.Set(k, v)
	}
	now := c.opts.Now()
	if err := c.opts.Auth.apply(c.signer, body, endpoint, now); err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(body.Encode()))
	if err != nil {
		return nil, unavailable("token request", err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	c.opts.Auth.setBasic(req)
	resp, err := c.opts.HTTPClient.Do(req)
	if err != nil {
		return nil, unavailable("token endpoint unreachable", stripURLError(err))
	}
	defer resp.Body.Close()
	raw, err := readBody(resp.Body)
	if err != nil {
		return nil, &UnavailableError{Reason: "reading the token endpoint's answer", Status: resp.StatusCode, Err: err}
	}
	return readAnswer(resp, raw, c.opts.Now())
}

// answer holds the fields of a token endpoint's answer, from JSON or a
// form-encoded body.
type answer struct {
	AccessToken      string          `json:"access_token"`
	TokenType        string          `json:"token_type"`
	ExpiresIn        json.RawMessage `json:"expires_in"`
	Scope            string          `json:"scope"`
	IssuedTokenType  string          `json:"issued_token_type"`
	Error            string          `json:"error"`
	ErrorDescription string          `json:"error_description"`
}

// codesUnavailable are OAuth error codes that mean "not now" rather than
// "no": the request may well succeed later.
var codesUnavailable = []string{"server_error", "temporarily_unavailable"}

// readAnswer turns a token endpoint's answer into a *Token or an error.
func readAnswer(resp *http.Response, raw []byte, now time.Time) (*Token, error) {
	status := resp.StatusCode
	fail := func(reason string, err error) error {
		return &UnavailableError{Reason: reason, Status: status, RetryAfter: RetryAfter(resp.Header, now), Err: err}
	}
	if status >= 500 || status == http.StatusTooManyRequests {
		return nil, fail(fmt.Sprintf("token endpoint answered %d", status), nil)
	}
	a, perr := parseAnswer(resp.Header.Get("Content-Type"), raw)
	if perr != nil {
		// A field of the wrong type elsewhere must not hide an OAuth error.
		a.Error, a.ErrorDescription = errorFields(raw)
	}
	switch {
	case perr != nil && a.Error != "" && !slices.Contains(codesUnavailable, a.Error):
		return nil, &Error{Code: LogSafe(a.Error, 64), Description: LogSafe(a.ErrorDescription, 256), Status: status}
	case perr == nil && a.Error != "" && slices.Contains(codesUnavailable, a.Error):
		return nil, fail(fmt.Sprintf("token endpoint answered %d with %s", status, LogSafe(a.Error, 64)), nil)
	case perr == nil && a.Error != "":
		// An error code is a refusal, whatever the status: some servers
		// answer 200 with one.
		return nil, &Error{Code: LogSafe(a.Error, 64), Description: LogSafe(a.ErrorDescription, 256), Status: status}
	case status != http.StatusOK:
		return nil, fail(fmt.Sprintf("token endpoint answered %d without an OAuth error", status), nil)
	case perr != nil:
		return nil, fail("the answer is not a JSON or form-encoded token response", perr)
	case a.AccessToken == "":
		return nil, fail("the answer has no access_token", nil)
	}
	switch {
	case a.TokenType == "", strings.EqualFold(a.TokenType, "Bearer"), a.TokenType == "N_A":
	default:
		// A DPoP- or MAC-bound token cannot be sent as a bearer token.
		return nil, fail(fmt.Sprintf("token_type %q is neither Bearer nor N_A", LogSafe(a.TokenType, 32)), nil)
	}
	exp, err := expiry(a.ExpiresIn, now)
	if err != nil {
		return nil, fail(err.Error(), nil)
	}
	return &Token{AccessToken: a.AccessToken, TokenType: a.TokenType, Expiry: exp, Scope: a.Scope, IssuedTokenType: a.IssuedTokenType}, nil
}

// errorFields reads error and error_description from a JSON body, each
// only if it is a string.
func errorFields(raw []byte) (code, desc string) {
	var fields map[string]json.RawMessage
	if json.Unmarshal(raw, &fields) != nil {
		return "", ""
	}
	_ = json.Unmarshal(fields["error"], &code)
	_ = json.Unmarshal(fields["error_description"], &desc)
	return code, desc
}

// parseAnswer reads a body as JSON, or as a form when the content type
// says so (as GitHub and some older servers answer). A text/plain body is
// read as JSON when it looks like JSON.
func parseAnswer(contentType string, raw []byte) (answer, error) {
	var a answer
	mt, _, _ := mime.ParseMediaType(contentType)
	trimmed := bytes.TrimSpace(raw)
	form := mt == "application/x-www-form-urlencoded" || (mt == "text/plain" && !bytes.HasPrefix(trimmed, []byte("{")))
	if !form {
		if err := json.Unmarshal(trimmed, &a); err != nil {
			return a, err
		}
		return a, nil
	}
	v, err := url.ParseQuery(string(trimmed))
	if err != nil {
		return a, err
	}
	a.AccessToken, a.TokenType, a.Scope = v.Get("access_token"), v.Get("token_type"), v.Get("scope")
	a.IssuedTokenType, a.Error, a.ErrorDescription = v.Get("issued_token_type"), v.Get("error"), v.Get("error_description")
	if e := v.Get("expires_in"); e != "" {
		a.ExpiresIn = json.RawMessage(strconv.Quote(e))
	}
	return a, nil
}

// expiry turns expires_in (a number, or a number in a string as some
// servers send it) into a time.
func expiry(raw json.RawMessage, now time.Time) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, nil
	}
	s := string(raw)
	if unq, err := strconv.Unquote(s); err == nil {
		s = unq
	}
	secs, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || math.IsNaN(secs) || math.IsInf(secs, 0) {
		return time.Time{}, fmt.Errorf("expires_in %s is not a number", LogSafe(string(raw), 32))
	}
	switch {
	case secs <= 0:
		return now, nil
	case secs >= MaxExpiresIn.Seconds():
		return now.Add(MaxExpiresIn), nil
	}
	return now.Add(time.Duration(secs * float64(time.Second))), nil
}
