package authn

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

const (
	maxDocumentSize = 1 << 20 // discovery document or JWKS, in bytes
	maxRetryDelay   = time.Minute
	fetchTimeout    = 10 * time.Second
	minRSABits      = 2048 // RFC 7518 §3.3
)

// issuer is one trusted issuer: its rules and its keys. A jwk.Cache, one
// per issuer so that its errors are known to be this issuer's, refreshes the
// JWKS in the background; retries of the first fetch and unknown-kid
// refetches fetch directly (see firstFetch). Either way the keys land,
// ready for verification, in an atomic pointer: the hot path never waits
// on a fetch in progress.
type issuer struct {
	rules
	cfg        IssuerConfig
	client     *http.Client
	log        *slog.Logger
	now        func() time.Time
	refresh    time.Duration
	minRefetch time.Duration
	onFetch    func(error) // reports each JWKS fetch's result

	// Set by start, then read-only. ctx is the Verifier's lifetime (New's
	// ctx), not a request's: fetches run under it so that a caller that
	// gives up does not cancel a fetch other callers wait for.
	ctx   context.Context
	cache *jwk.Cache

	jwksURI atomic.Pointer[string] // nil until known (configured or discovered)
	keys    atomic.Pointer[keySet] // nil until the first successful fetch

	mu      sync.Mutex
	lastErr error        // of the latest fetch; nil after a success
	lastRef time.Time    // start of the latest unknown-kid refetch
	pending *refetchCall // the refetch in flight, shared by its waiters
}

type refetchCall struct {
	done    chan struct{}
	err     error
	waiters int // callers waiting for it, under issuer.mu; for the log
}

func newIssuer(ic IssuerConfig, o Options) (*issuer, error) {
	r, err := newRules(ic)
	if err != nil {
		return nil, err
	}
	if err := checkURL(ic.Issuer); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	if ic.JWKSURI != "" {
		if err := checkURL(ic.JWKSURI); err != nil {
			return nil, fmt.Errorf("jwks_uri: %w", err)
		}
	}
	return &issuer{
		rules:      r,
		cfg:        ic,
		client:     o.HTTPClient,
		log:        o.Logger.With("issuer", ic.Issuer),
		now:        o.Now,
		refresh:    o.RefreshInterval,
		minRefetch: o.MinRefetchInterval,
		onFetch: func(err error) {
			if o.OnJWKSFetch != nil {
				o.OnJWKSFetch(ic.Issuer, err)
			}
		},
	}, nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("%q is not an absolute http(s) URL", s)
	}
	return nil
}

// start creates the issuer's jwk.Cache and begins the first fetch in the
// background.
func (is *issuer) start(ctx context.Context) {
	is.ctx = ctx
	// httprc checks for due refreshes once per window and refuses a refresh
	// interval shorter than the window.
	window := min(is.refresh, time.Minute)
	is.cache = jwk.NewCache(ctx, jwk.WithRefreshWindow(window), jwk.WithErrSink(errSink(is.backgroundError)))
	go is.bootstrap(ctx)
}

// bootstrap fetches the keys until it succeeds once; from then on jwk.Cache
// refreshes them. Retries back off from half a second to maxRetryDelay, so
// a gateway that starts before its IdP is ready within a second of it, and
// a down IdP is not hammered. (Only requests are limited by minRefetch:
// this loop is not something a caller can trigger.)
func (is *issuer) bootstrap(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		err := is.firstFetch(ctx)
		if err == nil {
			is.log.Info("authn: issuer keys fetched", "keys", is.keys.Load().len())
			return
		}
		is.setErr(err)
		is.log.Warn("authn: issuer keys not available yet", "error", err, "retry_in", delay.String())
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		delay = min(delay*2, maxRetryDelay)
	}
}

// firstFetch finds the JWKS URI (discovery), registers it with jwk.Cache
// and fetches the keys. Only the first fetch goes through jwk.Cache: its
// refresh cycle starts with a fetch of its own, but every fetch it makes
// (Refresh included) schedules one more perpetual cycle. So retries, like
// refetches, fetch directly.
func (is *issuer) firstFetch(ctx context.Context) error {
	if u := is.jwksURI.Load(); u != nil {
		return is.fetchKeys(ctx, *u)
	}
	uri := is.cfg.JWKSURI
	if uri == "" {
		var err error
		if uri, err = is.discover(ctx); err != nil {
			return err
		}
	}
	if err := is.register(uri); err != nil {
		return err
	}
	_, err := is.cache.Get(ctx, uri)
	return err
}

// fetchKeys fetches and publishes the JWKS, outside jwk.Cache.
func (is *issuer) fetchKeys(ctx context.Context, uri string) error {
	body, err := is.get(ctx, uri)
	if err != nil {
		is.onFetch(err)
		return err
	}
	set, err := jwk.Parse(body)
	if err != nil {
		err = fmt.Errorf("JWKS %s: %w", uri, err)
		is.onFetch(err)
		return err
	}
	_, err = is.postFetch(uri, set)
	return err
}

func (is *issuer) register(uri string) error {
	err := is.cache.Register(uri,
		jwk.WithRefreshInterval(is.refresh),
		jwk.WithHTTPClient(getter{is}),
		jwk.WithPostFetcher(jwk.PostFetchFunc(is.postFetch)))
	if err != nil {
		return fmt.Errorf("jwks_uri %q: %w", uri, err)
	}
	is.jwksURI.Store(&uri)
	return nil
}

// discover reads jwks_uri from the OpenID Connect discovery document
// (OpenID Connect Discovery 1.0 §4; RFC 8414 §3 for OAuth servers), whose
// issuer must be ours exactly (§4.3): else a document could redirect us to
// someone else's keys.
func (is *issuer) discover(ctx context.Context) (string, error) {
	u := strings.TrimSuffix(is.cfg.Issuer, "/") + "/.well-known/openid-configuration"
	body, err := is.get(ctx, u)
	if err != nil {
		return "", fmt.Errorf("discovery: %w", err)
	}
	var doc struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := json.Unmarshal(body, &doc); err != nil {
		return "", fmt.Errorf("discovery: %s: %w", u, err)
	}
	if doc.Issuer != is.cfg.Issuer {
		return "", fmt.Errorf("discovery: %s: issuer %q does not equal the configured issuer %q", u, doc.Issuer, is.cfg.Issuer)
	}
	if err := checkURL(doc.JWKSURI); err != nil {
		return "", fmt.Errorf("discovery: %s: jwks_uri: %w", u, err)
	}
	return doc.JWKSURI, nil
}

// get fetches a small JSON document: 200 only, at most maxDocumentSize,
// within fetchTimeout even if the HTTPClient has no timeout, since callers
// with an unknown kid may be waiting for it.
func (is *issuer) get(ctx context.Context, u string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, fetchTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	res, err := is.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", u, res.Status)
	}
	body, err := io.ReadAll(io.LimitReader(res.Body, maxDocumentSize+1))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", u, err)
	}
	if len(body) > maxDocumentSize {
		return nil, fmt.Errorf("GET %s: larger than %d bytes", u, maxDocumentSize)
	}
	return body, nil
}

// getter is jwk.Cache's HTTP client: it applies get's limits and the
// Verifier's lifetime context, which httprc's Get(url) cannot carry.
type getter struct{ is *issuer }

func (g getter) Get(u string) (*http.Response, error) {
	body, err := g.is.get(g.is.ctx, u)
	if err != nil {
		return nil, err
	}
	return &http.Response{
		StatusCode: http.StatusOK,
		Status:     "200 OK",
		Header:     http.Header{},
		Body:       io.NopCloser(bytes.NewReader(body)),
	}, nil
}

// errSink receives jwk.Cache's background refresh errors.
type errSink func(error)

func (f errSink) Error(err error) { f(err) }

func (is *issuer) backgroundError(err error) {
	is.onFetch(err)
	is.setErr(err)
	is.log.Warn("authn: JWKS refresh failed; keeping the previous keys", "error", err)
}

// postFetch runs after every successful fetch and parse of the JWKS, by
// jwk.Cache or by fetchKeys: it publishes the new keys.
func (is *issuer) postFetch(_ string, set jwk.Set) (jwk.Set, error) {
	ks := newKeySet(set, is.log)
	is.keys.Store(ks)
	is.setErr(nil)
	is.onFetch(nil)
	is.log.Debug("authn: JWKS fetched", "keys", ks.len())
	return set, nil
}

func (is *issuer) setErr(err error) {
	is.mu.Lock()
	is.lastErr = err
	is.mu.Unlock()
}

func (is *issuer) fetchErr() error {
	is.mu.Lock()
	defer is.mu.Unlock()
	return is.lastErr
}

// keysUnavailable is the answer when the key a token needs may exist but
// could not be fetched: the gateway answers 503, not 401.
func (is *issuer) keysUnavailable(cause error) error {
	err := ErrKeysUnavailable
	if cause != nil {
		err = fmt.Errorf("%w: %w", ErrKeysUnavailable, cause)
	}
	return &Error{Reason: "issuer keys unavailable; try again later", Err: err}
}

// errRefetchLimited: an unknown kid came too soon after the last refetch.
var errRefetchLimited = errors.New("refetch rate-limited")

// verifySignature checks the token's signature with the issuer's key for its
// kid, or without a kid with each key that fits the alg. A kid we do not
// know may be a rotated key: refetch, then try again once.
func (is *issuer) verifySignature(ctx context.Context, t *token) error {
	ks := is.keys.Load()
	if ks == nil {
		return is.keysUnavailable(is.fetchErr())
	}
	jv := is.algs[t.alg]
	retry, err := ks.verify(jv, t)
	if !retry {
		return err
	}
	if rerr := is.refetch(ctx); rerr != nil && !errors.Is(rerr, errRefetchLimited) {
		return is.keysUnavailable(rerr)
	}
	if fresh := is.keys.Load(); fresh != ks {
		if retry, err = fresh.verify(jv, t); !retry {
			return err
		}
	}
	if ferr := is.fetchErr(); ferr != nil {
		return is.keysUnavailable(ferr) // not found, maybe only because fetching fails
	}
	return err
}

// refetch refreshes the JWKS for a token whose key we lack. An attacker can
// send endless unknown kids, so at most one refetch starts per minRefetch,
// and callers that arrive while it runs wait for that one. It runs under
// the Verifier's context: a caller that gives up leaves it to the others.
func (is *issuer) refetch(ctx context.Context) error {
	uri := is.jwksURI.Load()
	if uri == nil {
		return errRefetchLimited
	}
	is.mu.Lock()
	c := is.pending
	if c == nil {
		now := is.now()
		if !is.lastRef.IsZero() && now.Sub(is.lastRef) < is.minRefetch {
			is.mu.Unlock()
			return errRefetchLimited
		}
		is.lastRef = now
		c = &refetchCall{done: make(chan struct{})}
		is.pending = c
		go is.runRefetch(c, *uri)
	}
	c.waiters++
	is.mu.Unlock()
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (is *issuer) runRefetch(c *refetchCall, uri string) {
	err := is.fetchKeys(is.ctx, uri)
	if err != nil {
		is.setErr(err)
	}
	is.mu.Lock()
	is.pending = nil
	c.err = err
	waiters := c.waiters
	is.mu.Unlock()
	close(c.done)
	if err != nil {
		is.log.Warn("authn: JWKS refetch for an unknown kid failed", "error", err, "waiters", waiters)
		return
	}
	is.log.Info("authn: JWKS refetched for an unknown kid", "waiters", waiters, "keys", is.keys.Load().len())
}

// keySet is a fetched JWKS prepared for verification: public keys in their
// crypto form, so that no JWK conversion happens per token. Read-only.
type keySet struct {
	byKid map[string][]publicKey
	all   []publicKey
}

type publicKey struct {
	kid  string
	alg  string // the JWK's alg; "" if it has none
	kind string // "RSA" or a curve name, as in supportedAlgs
	key  any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

func (ks *keySet) len() int { return len(ks.all) }

func newKeySet(set jwk.Set, log *slog.Logger) *keySet {
	ks := &keySet{byKid: make(map[string][]publicKey, set.Len())}
	for i := range set.Len() {
		k, _ := set.Key(i)
		pk, err := preparePublicKey(k)
		if err != nil {
			log.Warn("authn: JWKS key ignored", "kid", k.KeyID(), "reason", err)
			continue
		}
		ks.all = append(ks.all, pk)
		if pk.kid != "" {
			ks.byKid[pk.kid] = append(ks.byKid[pk.kid], pk)
		}
	}
	return ks
}

// preparePublicKey keeps only public signature keys of a supported type:
// a symmetric ("oct") key is never used, whatever the token's alg says.
func preparePublicKey(k jwk.Key) (publicKey, error) {
	pk := publicKey{kid: k.KeyID(), alg: k.Algorithm().String()}
	if use := k.KeyUsage(); use != "" && use != "sig" {
		return pk, fmt.Errorf("use is %q", use)
	}
	if ops := k.KeyOps(); len(ops) > 0 && !containsOp(ops, jwk.KeyOpVerify) {
		return pk, errors.New(`key_ops lacks "verify"`)
	}
	raw, err := jwk.PublicRawKeyOf(k)
	if err != nil {
		return pk, err
	}
	switch raw := raw.(type) {
	case *rsa.PublicKey:
		if raw.N.BitLen() < minRSABits {
			return pk, fmt.Errorf("RSA key of %d bits is too small", raw.N.BitLen())
		}
		pk.kind = "RSA"
	case *ecdsa.PublicKey:
		pk.kind = raw.Curve.Params().Name
	case ed25519.PublicKey:
		pk.kind = "Ed25519"
	default:
		return pk, fmt.Errorf("unsupported key type %T", raw)
	}
	pk.key = raw
	return pk, nil
}

func containsOp(ops jwk.KeyOperationList, op jwk.KeyOperation) bool {
	for _, o := range ops {
		if o == op {
			return true
		}
	}
	return false
}

// verify checks t's signature. retry reports that the key may simply be
// newer than this set (unknown kid; or no kid and no key that verifies).
func (ks *keySet) verify(jv jws.Verifier, t *token) (retry bool, err error) {
	candidates := ks.all
	if t.hasKid {
		candidates = ks.byKid[t.kid]
		if len(candidates) == 0 {
			return true, invalidf("unknown kid %s", quote(t.kid))
		}
	}
	kind := supportedAlgs[t.alg]
	tried := 0
	for _, pk := range candidates {
		// The JWK's own alg, when it has one, must be the token's (RFC
		// 8725 §3.1): a key is used with one algorithm only.
		if pk.kind != kind || (pk.alg != "" && pk.alg != t.alg) {
			continue
		}
		tried++
		if jv.Verify(t.signingInput, t.signature, pk.key) == nil {
			return false, nil
		}
	}
	switch {
	case tried > 0:
		return !t.hasKid, invalid("signature invalid")
	case t.hasKid:
		return false, invalidf("key %s does not match alg %s", quote(t.kid), quote(t.alg))
	default:
		return true, invalidf("no key for alg %s", quote(t.alg))
	}
}
