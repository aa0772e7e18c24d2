// Package authn verifies the access tokens that callers present to the
// gateway: JSON Web Tokens (RFC 7519) in JWS compact serialization, checked
// as the JWT Best Current Practices (RFC 8725) ask and as the JWT profile for
// OAuth 2.0 access tokens (RFC 9068) describes.
//
// Every check that decides acceptance is written out here rather than left
// to a library default: compact serialization only, no crit header, an alg
// allow-list per issuer (never none or HS*), keys only from the issuer's
// JWKS (never jku, x5u or an embedded jwk), the exact iss, an accepted aud,
// a required exp, nbf, iat and typ (RFC 8725 §3.11). A verified token is
// cached by its SHA-256 until it expires, or until a key leaves its
// issuer's JWKS (then it is verified again), so a repeat caller costs a
// map lookup instead of a signature check.
package authn

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync/atomic"
	"time"
	"unique"
	"unsafe"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// MaxTokenSize is the largest token Verify accepts, in bytes. Larger ones are
// refused before any decoding, so a caller cannot make the gateway parse
// megabytes of JSON.
const MaxTokenSize = 16 << 10

// Defaults for the zero values of Options, and DefaultLeeway, the leeway
// DefaultIssuerConfig gives.
const (
	DefaultRefreshInterval    = 15 * time.Minute
	DefaultMinRefetchInterval = 10 * time.Second
	DefaultCacheSize          = 100000
	DefaultLeeway             = 30 * time.Second
	MinRefreshInterval        = time.Second // a shorter refresh would hammer the IdP
	defaultHTTPTimeout        = 10 * time.Second
)

// DefaultTyp is the typ allow-list of an issuer that configures none: at+jwt
// (RFC 9068), its long form, JWT, and no typ at all.
func DefaultTyp() []string { return []string{"at+jwt", "application/at+jwt", "JWT", ""} }

// DefaultIssuerConfig returns an IssuerConfig with every optional field at
// its default: DefaultAlgorithms, DefaultLeeway and DefaultTyp. Issuer and
// Audiences are for the caller to set.
func DefaultIssuerConfig() IssuerConfig {
	return IssuerConfig{Algorithms: DefaultAlgorithms(), Leeway: DefaultLeeway, Typ: DefaultTyp()}
}

// b64strict decodes JWS parts strictly: the lenient decoder ignores the unused
// low bits of the last character, so one token could be sent as sixteen
// strings, each missing the verified-token cache.
var b64strict = base64.RawURLEncoding.Strict()

// ErrInvalidToken is wrapped by every *Error that means "the caller's token
// is not acceptable" (HTTP 401).
var ErrInvalidToken = errors.New("invalid token")

// ErrKeysUnavailable is wrapped by every *Error that means "the token might
// be fine, but the issuer's keys could not be fetched" (HTTP 503).
var ErrKeysUnavailable = errors.New("issuer keys unavailable")

// Error is what Verify returns. It wraps ErrInvalidToken or
// ErrKeysUnavailable (use errors.Is).
type Error struct {
	// Reason is short and safe to send to the client: it never holds the
	// token nor any claim value other than iss, and header values other
	// than alg, typ and kid.
	Reason string
	// Err wraps ErrInvalidToken or ErrKeysUnavailable, and possibly the cause.
	Err error
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason
	}
	return e.Err.Error() + ": " + e.Reason
}

func (e *Error) Unwrap() error { return e.Err }

func invalid(reason string) error { return &Error{Reason: reason, Err: ErrInvalidToken} }

func invalidf(format string, args ...any) error { return invalid(fmt.Sprintf(format, args...)) }

// quote shows a caller-supplied header value (alg, typ, kid) in a Reason:
// quoted so control characters are escaped, cut so it stays short.
func quote(s string) string {
	const max = 64
	if len(s) > max {
		s = s[:max] + "…"
	}
	return fmt.Sprintf("%q", s)
}

// IssuerConfig is one trusted issuer.
type IssuerConfig struct {
	// Issuer must equal the token's iss exactly: "https://idp/" and
	// "https://idp" are different issuers. Required.
	Issuer string
	// Audiences: the token's aud must contain at least one. Required.
	Audiences []string
	// JWKSURI is where the issuer's keys are. "" (the default) discovers it
	// from Issuer + "/.well-known/openid-configuration", whose "issuer" must
	// equal Issuer exactly.
	JWKSURI string
	// Algorithms is the allow-list of JWS alg names, each one of
	// Algorithms (so never none or HS*). Required; DefaultIssuerConfig
	// gives DefaultAlgorithms.
	Algorithms []string
	// Leeway is the clock skew tolerated on exp, nbf and iat; 0 tolerates
	// none. DefaultIssuerConfig gives DefaultLeeway.
	Leeway time.Duration
	// Typ lists the accepted typ header values, compared case-insensitively
	// and with the "application/" prefix optional (RFC 8725 §3.11); ""
	// accepts a token without typ (or with an empty one). Empty:
	// DefaultTyp.
	Typ []string
}

// Options configures a Verifier.
type Options struct {
	// Issuers are the trusted issuers. At least one.
	Issuers []IssuerConfig
	// RefreshInterval is how often each JWKS is refetched in the background.
	// Default 15m; at least 1s.
	RefreshInterval time.Duration
	// MinRefetchInterval bounds refetches that an unknown kid triggers: at
	// most one per issuer per interval. Default 10s. (Until an issuer's
	// keys are first fetched, retries start at 500ms and double up to 1m.)
	MinRefetchInterval time.Duration
	// CacheSize bounds the verified-token cache, in tokens. Default
	// DefaultCacheSize.
	CacheSize int
	// HTTPClient fetches discovery documents and JWKS. Default: a client
	// with a 10s timeout.
	HTTPClient *http.Client
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// Now is the clock, for tests. Default time.Now.
	Now func() time.Time
	// OnJWKSFetch, if set, is called after every fetch of an issuer's
	// JWKS with its result, for metrics. It must not block.
	OnJWKSFetch func(issuer string, err error)

	// refreshTick, for tests, replaces the refresh ticker.
	refreshTick <-chan time.Time
}

// Principal is a verified caller. Shared and read-only: never mutate one.
type Principal struct {
	Issuer    string
	Subject   string
	ClientID  string // client_id, else azp
	Audience  []string
	Scopes    []string // from scope, else scp
	ExpiresAt time.Time
	// claims is the payload: every claim, as JSON text (see Claims). A
	// cached token keeps its claims this way, pointer-free and in a third
	// of the memory of the decoded tree.
	claims string
	// TokenHash is the SHA-256 of the raw token: a cache key for other
	// packages, so that they never need to keep the token itself.
	TokenHash [32]byte

	// attached is what another stage derives from this principal once per
	// verified token (see Attachment), so cache hits do not rebuild it.
	attached atomic.Pointer[attached]

	// verifiedBy is the issuer whose keys verified the token, and epoch
	// the key-removal epoch of the set that did (see keySet).
	verifiedBy *issuer
	epoch      uint64
}

// intern is s's canonical copy.
func intern(s string) string { return unique.Make(s).Value() }

// Claims are every claim of the token as encoding/json decodes them with
// UseNumber (numbers are json.Number): a fresh tree each call, which the
// caller may keep or change.
func (p *Principal) Claims() (map[string]any, error) {
	dec := json.NewDecoder(strings.NewReader(p.claims))
	dec.UseNumber()
	var c map[string]any
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	return c, nil
}

// ClaimsJSON is the token's payload: its claims as a JSON object.
func (p *Principal) ClaimsJSON() string { return p.claims }

// Verifier verifies access tokens. It is safe for concurrent use and
// read-only after New; a configuration change builds a new Verifier.
type Verifier struct {
	issuers map[string]*issuer // by exact iss
	order   []*issuer          // config order, for Ready
	cache   *tokenCache
	now     func() time.Time
}

// New validates opts, then starts fetching every issuer's keys in the
// background. It does not wait for them and does not fail when an IdP is
// down: it retries with backoff and Ready reports the state. Background work
// stops when ctx is done.
func New(ctx context.Context, opts Options) (*Verifier, error) {
	v, err := build(opts)
	if err != nil {
		return nil, err
	}
	// Only now, with every option valid, start goroutines: an error above
	// leaves nothing running.
	for _, is := range v.order {
		is.start(ctx)
	}
	return v, nil
}

// Check validates opts as New does, and starts nothing.
func Check(opts Options) error {
	_, err := build(opts)
	return err
}

// build validates opts and builds the Verifier, without starting it.
func build(opts Options) (*Verifier, error) {
	opts, err := withDefaults(opts)
	if err != nil {
		return nil, err
	}
	v := &Verifier{
		issuers: make(map[string]*issuer, len(opts.Issuers)),
		cache:   newTokenCache(opts.CacheSize),
		now:     opts.Now,
	}
	for i, ic := range opts.Issuers {
		is, err := newIssuer(ic, opts)
		if err != nil {
			return nil, fmt.Errorf("authn: issuers[%d]: %w", i, err)
		}
		if _, dup := v.issuers[ic.Issuer]; dup {
			return nil, fmt.Errorf("authn: issuers[%d]: issuer %q is listed twice", i, ic.Issuer)
		}
		v.issuers[ic.Issuer] = is
		v.order = append(v.order, is)
	}
	return v, nil
}

func withDefaults(o Options) (Options, error) {
	if len(o.Issuers) == 0 {
		return o, errors.New("authn: issuers: at least one issuer is required")
	}
	switch {
	case o.RefreshInterval == 0:
		o.RefreshInterval = DefaultRefreshInterval
	case o.RefreshInterval < MinRefreshInterval:
		return o, fmt.Errorf("authn: refresh interval %s: must be at least %s", o.RefreshInterval, MinRefreshInterval)
	}
	switch {
	case o.MinRefetchInterval == 0:
		o.MinRefetchInterval = DefaultMinRefetchInterval
	case o.MinRefetchInterval < 0:
		return o, fmt.Errorf("authn: min refetch interval %s: must not be negative", o.MinRefetchInterval)
	}
	switch {
	case o.CacheSize == 0:
		o.CacheSize = DefaultCacheSize
	case o.CacheSize < 0:
		return o, fmt.Errorf("authn: cache size %d: must not be negative", o.CacheSize)
	}
	if o.HTTPClient == nil {
		o.HTTPClient = &http.Client{Timeout: defaultHTTPTimeout}
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// Ready returns nil once every issuer's JWKS has been fetched at least once,
// else an error naming the issuers still waiting and why.
func (v *Verifier) Ready() error {
	var waiting []string
	for _, is := range v.order {
		if is.keys.Load() != nil {
			continue
		}
		why := "first fetch pending"
		if err := is.fetchErr(); err != nil {
			why = err.Error()
		}
		waiting = append(waiting, fmt.Sprintf("%q (%s)", is.cfg.Issuer, why))
	}
	if len(waiting) > 0 {
		return fmt.Errorf("authn: keys not fetched yet for issuer %s", strings.Join(waiting, ", "))
	}
	return nil
}

// Verify checks raw, a JWS compact serialization, and returns the verified
// caller. Errors are *Error, wrapping ErrInvalidToken or ErrKeysUnavailable.
// ctx bounds only the wait for a key refetch.
func (v *Verifier) Verify(ctx context.Context, raw string) (*Principal, error) {
	p, _, err := v.VerifyCached(ctx, raw)
	return p, err
}

// VerifyCached is Verify, and also reports whether the token came from the
// verified-token cache.
func (v *Verifier) VerifyCached(ctx context.Context, raw string) (*Principal, bool, error) {
	if raw == "" {
		return nil, false, invalid("token missing")
	}
	if len(raw) > MaxTokenSize {
		return nil, false, invalid("token too large")
	}
	// Hash the string's bytes in place: copying them to a []byte would make
	// every cache hit allocate.
	sum := sha256.Sum256(unsafe.Slice(unsafe.StringData(raw), len(raw)))
	now := v.now()
	// A cached token is served only while no key has left its issuer's
	// JWKS since it was verified: one that has may be the key that
	// signed it. Otherwise it is verified again, with the current keys.
	if p, ok := v.cache.get(&sum, now); ok && p.verifiedBy.keysEpoch() == p.epoch {
		return p, true, nil
	}
	p, err := v.verify(ctx, raw, now)
	if err != nil {
		return nil, false, err // failures are never cached
	}
	p.TokenHash = sum
	v.cache.put(p, now)
	return p, false, nil
}

// verify does the uncached work, cheapest checks first: nothing costs a
// signature verification until the header, the issuer and the alg pass.
func (v *Verifier) verify(ctx context.Context, raw string, now time.Time) (*Principal, error) {
	tok, err := parseCompact(raw)
	if err != nil {
		return nil, err
	}
	// iss is read unverified only to choose the issuer's keys and rules;
	// issuer.principal checks it again once the signature holds.
	is := v.issuers[tok.iss]
	if is == nil {
		return nil, invalid("issuer not trusted")
	}
	if err := is.checkHeader(tok); err != nil {
		return nil, err
	}
	ks, err := is.verifySignature(ctx, tok)
	if err != nil {
		return nil, err
	}
	p, err := is.principal(tok.claims, tok.payload, now)
	if err != nil {
		return nil, err
	}
	p.verifiedBy, p.epoch = is, ks.epoch
	return p, nil
}

// token is a parsed, not yet verified, JWS compact serialization.
type token struct {
	alg, kid, typ string
	hasKid        bool
	signingInput  []byte // header.payload exactly as received: what was signed
	signature     []byte
	claims        map[string]any
	payload       string // the claims' JSON text
	iss           string
}

// parseCompact splits and decodes raw. It refuses what RFC 8725 says never
// to accept (alg none, §3.1) and what this package does not implement (crit,
// RFC 7515 §4.1.11) before the payload is even decoded.
func parseCompact(raw string) (*token, error) {
	if raw[0] == '{' {
		return nil, invalid("token must be in JWS compact serialization")
	}
	switch strings.Count(raw, ".") {
	case 2:
	case 4:
		return nil, invalid("token is encrypted (JWE); send a signed JWT")
	default:
		return nil, invalid("token must be in JWS compact serialization")
	}
	h, rest, _ := strings.Cut(raw, ".")
	p, s, _ := strings.Cut(rest, ".")
	tok := &token{signingInput: []byte(raw[:len(h)+1+len(p)])}
	if err := tok.parseHeader(h); err != nil {
		return nil, err
	}
	if err := tok.parsePayload(p); err != nil {
		return nil, err
	}
	sig, err := b64strict.DecodeString(s)
	if err != nil {
		return nil, invalid("token signature is malformed")
	}
	tok.signature = sig
	return tok, nil
}

func (t *token) parseHeader(h string) error {
	b, err := b64strict.DecodeString(h)
	if err != nil {
		return invalid("token header is malformed")
	}
	// A map, not a struct: encoding/json matches struct fields
	// case-insensitively, and "ALG" must not be read as "alg".
	var hdr map[string]any
	if err := json.Unmarshal(b, &hdr); err != nil || hdr == nil {
		return invalid("token header must be a JSON object")
	}
	if _, ok := hdr["crit"]; ok {
		return invalid("token has a crit header")
	}
	var ok bool
	if t.alg, ok = hdr["alg"].(string); !ok {
		return invalid("alg header required")
	}
	if strings.EqualFold(t.alg, "none") {
		return invalidf("alg %s not allowed", quote(t.alg))
	}
	if t.kid, t.hasKid, err = optionalString(hdr, "kid"); err != nil {
		return invalid("kid header must be a string")
	}
	if t.typ, _, err = optionalString(hdr, "typ"); err != nil {
		return invalid("typ header must be a string")
	}
	return nil
}

func (t *token) parsePayload(p string) error {
	b, err := b64strict.DecodeString(p)
	if err != nil {
		return invalid("token payload is malformed")
	}
	// UseNumber keeps numbers as the token wrote them, for the policy.
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&t.claims); err != nil || t.claims == nil {
		return invalid("token payload must be a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("token payload must be a JSON object")
	}
	t.payload = string(b)
	if t.iss, _, err = optionalString(t.claims, "iss"); err != nil || t.iss == "" {
		return invalid("iss claim required")
	}
	return nil
}

var errWrongType = errors.New("wrong type")

// optionalString returns m[name] if it is a string, "" if absent, and an
// error if it is anything else.
func optionalString(m map[string]any, name string) (string, bool, error) {
	v, ok := m[name]
	if !ok {
		return "", false, nil
	}
	s, ok := v.(string)
	if !ok {
		return "", true, errWrongType
	}
	return s, true, nil
}

// algorithms are the asymmetric JWS algorithms (RFC 7518 §3.1) an issuer
// may allow, in order, with the key each needs: "RSA", or the curve's name.
var algorithms = []struct{ name, kind string }{
	{"RS256", "RSA"}, {"RS384", "RSA"}, {"RS512", "RSA"},
	{"PS256", "RSA"}, {"PS384", "RSA"}, {"PS512", "RSA"},
	{"ES256", "P-256"}, {"ES384", "P-384"}, {"ES512", "P-521"},
	{"EdDSA", "Ed25519"},
}

// keyKind returns the key alg needs ("RSA" or a curve), or "" if alg is
// not one of Algorithms.
func keyKind(alg string) string {
	for _, a := range algorithms {
		if a.name == alg {
			return a.kind
		}
	}
	return ""
}

// Algorithms lists the JWS algorithms an issuer's allow-list may hold:
// asymmetric only. With HS*, anyone holding the key (every client of the
// IdP, for a shared secret) could mint tokens.
func Algorithms() []string {
	names := make([]string, len(algorithms))
	for i, a := range algorithms {
		names[i] = a.name
	}
	return names
}

// DefaultAlgorithms is an issuer's allow-list when none is configured.
func DefaultAlgorithms() []string { return []string{"RS256", "ES256", "EdDSA"} }

// CheckAlgorithm says why alg cannot be on an issuer's allow-list, or
// returns nil.
func CheckAlgorithm(alg string) error {
	switch {
	case keyKind(alg) != "":
		return nil
	case strings.EqualFold(alg, "none"):
		return fmt.Errorf("%q allows unsigned tokens, which anyone can forge; remove it", alg)
	case len(alg) >= 2 && strings.EqualFold(alg[:2], "HS"):
		return fmt.Errorf("%q is a symmetric algorithm; audgate accepts only asymmetric algorithms (RS256, ES256, EdDSA, ...)", alg)
	}
	for _, name := range Algorithms() {
		if strings.EqualFold(name, alg) {
			return fmt.Errorf("%q is not a supported algorithm; names are case-sensitive, write %s", alg, name)
		}
	}
	return fmt.Errorf("%q is not a supported algorithm; use one of: %s", alg, strings.Join(Algorithms(), ", "))
}

// newAlgVerifiers checks an allow-list and returns a jws.Verifier per alg.
func newAlgVerifiers(algs []string) (map[string]jws.Verifier, error) {
	if len(algs) == 0 {
		return nil, errors.New("algorithms: at least one is required")
	}
	out := make(map[string]jws.Verifier, len(algs))
	for _, alg := range algs {
		if err := CheckAlgorithm(alg); err != nil {
			return nil, fmt.Errorf("algorithms: %w", err)
		}
		jv, err := jws.NewVerifier(jwa.SignatureAlgorithm(alg))
		if err != nil {
			return nil, fmt.Errorf("algorithms: %q: %w", alg, err)
		}
		out[alg] = jv
	}
	return out, nil
}

// normalizeTyp maps a typ value to the form compared: lower case, without
// the optional "application/" prefix (RFC 7515 §4.1.9, RFC 8725 §3.11).
func normalizeTyp(typ string) string {
	typ = strings.ToLower(typ)
	if rest, ok := strings.CutPrefix(typ, "application/"); ok && !strings.Contains(rest, "/") {
		return rest
	}
	return typ
}

// rules are an issuer's checks on a token, apart from its signature.
type rules struct {
	issuer    string
	audiences []string
	algs      map[string]jws.Verifier // the allow-list
	leeway    time.Duration
	typ       []string // normalized; "" = typ absent
}

func newRules(ic IssuerConfig) (rules, error) {
	r := rules{issuer: ic.Issuer, leeway: ic.Leeway}
	if ic.Issuer == "" {
		return r, errors.New("issuer: required")
	}
	if len(ic.Audiences) == 0 || ic.Audiences[0] == "" {
		return r, errors.New("audiences: at least one non-empty audience is required")
	}
	r.audiences = append([]string(nil), ic.Audiences...)
	if ic.Leeway < 0 {
		return r, fmt.Errorf("leeway %s: must not be negative", ic.Leeway)
	}
	algs, err := newAlgVerifiers(ic.Algorithms)
	if err != nil {
		return r, err
	}
	r.algs = algs
	typ := ic.Typ
	if len(typ) == 0 {
		typ = DefaultTyp()
	}
	for _, t := range typ {
		r.typ = append(r.typ, normalizeTyp(t))
	}
	return r, nil
}

// checkHeader applies the alg allow-list and the typ check (RFC 8725 §3.1,
// §3.11). The allow-list never holds HS*: that stops an attacker who signs
// with HMAC, using the issuer's public key as the secret.
func (r *rules) checkHeader(t *token) error {
	if _, ok := r.algs[t.alg]; !ok {
		return invalidf("alg %s not allowed", quote(t.alg))
	}
	typ := normalizeTyp(t.typ)
	for _, want := range r.typ {
		if typ == want {
			return nil
		}
	}
	if t.typ == "" {
		return invalid("typ header required")
	}
	return invalidf("typ %s not accepted", quote(t.typ))
}

// principal checks the claims of a token whose signature holds (RFC 7519
// §4.1, RFC 9068 §4) and builds the Principal.
func (r *rules) principal(c map[string]any, payload string, now time.Time) (*Principal, error) {
	if iss, _ := c["iss"].(string); iss != r.issuer {
		return nil, invalid("issuer not trusted")
	}
	if _, err := r.checkTimes(c, now); err != nil {
		return nil, err
	}
	p, err := claimsPrincipal(c, payload)
	if err != nil {
		return nil, err
	}
	if !r.acceptsAudience(p.Audience) {
		return nil, invalid("audience not accepted")
	}
	return p, nil
}

// claimsPrincipal maps a token's claims to a Principal: the rules that
// Verify and ParseUnverified share. exp is required; a claim of the wrong
// type refuses the token: the policy must never guess.
func claimsPrincipal(c map[string]any, payload string) (*Principal, error) {
	iss, _, err := optionalString(c, "iss")
	if err != nil {
		return nil, invalid(`claim "iss" has the wrong type`)
	}
	exp, ok, err := numericDate(c, "exp")
	switch {
	case err != nil:
		return nil, invalid("exp claim invalid")
	case !ok:
		return nil, invalid("exp claim required")
	}
	aud, err := stringOrList(c, "aud")
	if err != nil {
		return nil, invalid(`claim "aud" has the wrong type`)
	}
	p := &Principal{Issuer: iss, Audience: aud, ExpiresAt: exp, claims: payload}
	if err := fillIdentity(p, c); err != nil {
		return nil, err
	}
	// Callers of an issuer share these; cached principals keep one copy
	// of each.
	p.Issuer, p.ClientID = intern(p.Issuer), intern(p.ClientID)
	for i, a := range p.Audience {
		p.Audience[i] = intern(a)
	}
	for i, sc := range p.Scopes {
		p.Scopes[i] = intern(sc)
	}
	return p, nil
}

// checkTimes requires exp, because jwx (and RFC 7519) would accept a token
// without one, and a token that never expires must not be cached forever.
func (r *rules) checkTimes(c map[string]any, now time.Time) (time.Time, error) {
	exp, ok, err := numericDate(c, "exp")
	switch {
	case err != nil:
		return exp, invalid("exp claim invalid")
	case !ok:
		return exp, invalid("exp claim required")
	case !now.Before(exp.Add(r.leeway)):
		return exp, invalid("token expired")
	}
	nbf, ok, err := numericDate(c, "nbf")
	switch {
	case err != nil:
		return exp, invalid("nbf claim invalid")
	case ok && nbf.After(now.Add(r.leeway)):
		return exp, invalid("token not yet valid")
	}
	iat, ok, err := numericDate(c, "iat")
	switch {
	case err != nil:
		return exp, invalid("iat claim invalid")
	case ok && iat.After(now.Add(r.leeway)):
		return exp, invalid("token issued in the future")
	}
	return exp, nil
}

func (r *rules) acceptsAudience(aud []string) bool {
	for _, a := range aud {
		for _, want := range r.audiences {
			if a == want {
				return true
			}
		}
	}
	return false
}

// fillIdentity sets who the caller is and what it may do. A claim of the
// wrong type refuses the token: the policy must never guess.
func fillIdentity(p *Principal, c map[string]any) error {
	var err error
	if p.Subject, _, err = optionalString(c, "sub"); err != nil {
		return invalid(`claim "sub" has the wrong type`)
	}
	if p.ClientID, _, err = optionalString(c, "client_id"); err != nil {
		return invalid(`claim "client_id" has the wrong type`)
	}
	if p.ClientID == "" {
		if p.ClientID, _, err = optionalString(c, "azp"); err != nil {
			return invalid(`claim "azp" has the wrong type`)
		}
	}
	scope, ok, err := optionalString(c, "scope")
	if err != nil {
		return invalid(`claim "scope" has the wrong type`)
	}
	if ok {
		p.Scopes = strings.Fields(scope)
		return nil
	}
	scp, err := stringOrList(c, "scp")
	if err != nil {
		return invalid(`claim "scp" has the wrong type`)
	}
	if len(scp) == 1 {
		scp = strings.Fields(scp[0]) // some IdPs send scp as a space-separated string
	}
	p.Scopes = scp
	return nil
}

// stringOrList reads a claim that is a string or an array of strings (aud,
// RFC 7519 §4.1.3; scp). Absent is nil.
func stringOrList(c map[string]any, name string) ([]string, error) {
	switch v := c[name].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, errWrongType
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, errWrongType
	}
}

// maxNumericDate is 9999-12-31T23:59:59Z: later dates are refused, so that
// converting a NumericDate cannot overflow.
const maxNumericDate = 253402300799

// numericDate reads a NumericDate claim (RFC 7519 §2): seconds since the
// epoch, possibly fractional. Absent or 0 is (zero, false, nil): jwx reads 0
// as "no value", and so do we, so "exp": 0 is refused as a missing exp.
// Negative values and non-numbers are errors.
func numericDate(c map[string]any, name string) (time.Time, bool, error) {
	v, ok := c[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, true, errWrongType
	}
	if i, err := n.Int64(); err == nil {
		return unixDate(i, 0)
	}
	f, err := n.Float64()
	if err != nil || f < 0 || f > maxNumericDate {
		return time.Time{}, true, errWrongType
	}
	sec := int64(f)
	return unixDate(sec, int64((f-float64(sec))*1e9))
}

func unixDate(sec, nsec int64) (time.Time, bool, error) {
	switch {
	case sec == 0 && nsec == 0:
		return time.Time{}, false, nil
	case sec < 0 || sec > maxNumericDate:
		return time.Time{}, true, errWrongType
	}
	return time.Unix(sec, nsec), true, nil
}
