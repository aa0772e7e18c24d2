package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"golang.org/x/sync/singleflight"

	"github.com/audgate/audgate/internal/oauth"
)

const (
	maxRetryDelay = time.Minute
	fetchTimeout  = 10 * time.Second
	minRSABits    = 2048 // RFC 7518 §3.3
)

// issuer is one trusted issuer: its rules and its keys. One function,
// fetchKeys, fetches the JWKS, for the first fetch and its retries, for
// the periodic refresh and for unknown-kid refetches alike; concurrent
// callers share one fetch. The keys land, ready for verification, in an
// atomic pointer: the hot path never waits on a fetch in progress.
type issuer struct {
	rules
	cfg        IssuerConfig
	client     *http.Client
	discovery  *oauth.Discovery // nil when jwks_uri is configured
	log        *slog.Logger
	now        func() time.Time
	refresh    time.Duration
	minRefetch time.Duration
	onFetch    func(error) // reports each JWKS fetch's result
	tick       <-chan time.Time

	// ctx is the Verifier's lifetime (New's ctx), not a request's: fetches
	// run under it, so that a caller that gives up does not cancel a fetch
	// others wait for. Set by start.
	ctx context.Context

	keys    atomic.Pointer[keySet] // nil until the first successful fetch
	fetches singleflight.Group
	waiting atomic.Int64 // callers waiting for an unknown-kid refetch

	mu      sync.Mutex
	lastErr error        // of the latest fetch; nil after a success
	lastRef time.Time    // start of the latest unknown-kid refetch
	pending *refetchCall // the unknown-kid refetch in flight
}

func newIssuer(ic IssuerConfig, o Options) (*issuer, error) {
	r, err := newRules(ic)
	if err != nil {
		return nil, err
	}
	if err := oauth.CheckURL(ic.Issuer); err != nil {
		return nil, fmt.Errorf("issuer: %w", err)
	}
	is := &issuer{
		rules:      r,
		cfg:        ic,
		client:     o.HTTPClient,
		log:        o.Logger.With("issuer", ic.Issuer),
		now:        o.Now,
		refresh:    o.RefreshInterval,
		minRefetch: o.MinRefetchInterval,
		tick:       o.refreshTick,
		onFetch: func(err error) {
			if o.OnJWKSFetch != nil {
				o.OnJWKSFetch(ic.Issuer, err)
			}
		},
	}
	if ic.JWKSURI == "" {
		is.discovery = oauth.NewDiscovery(ic.Issuer, o.HTTPClient)
	} else if err := oauth.CheckURL(ic.JWKSURI); err != nil {
		return nil, fmt.Errorf("jwks_uri: %w", err)
	}
	return is, nil
}

// start begins fetching the keys in the background, for ctx's lifetime.
func (is *issuer) start(ctx context.Context) {
	is.ctx = ctx
	go is.run(ctx)
}

// run fetches the keys until it succeeds once, then refreshes them every
// refresh interval. First-fetch retries back off from half a second to
// maxRetryDelay, so a gateway that starts before its IdP is ready within a
// second of it, and a down IdP is not hammered. (Only requests are limited
// by minRefetch: this loop is not something a caller can trigger.)
func (is *issuer) run(ctx context.Context) {
	delay := 500 * time.Millisecond
	for {
		err := is.fetchKeys(ctx)
		if err == nil {
			is.log.Info("authn: issuer keys fetched", "keys", is.keys.Load().len())
			break
		}
		if is.keys.Load() != nil {
			break // an unknown-kid refetch got them meanwhile
		}
		is.log.Warn("authn: issuer keys not available yet", "error", err, "retry_in", delay.String())
		if !sleep(ctx, delay) {
			return
		}
		delay = min(delay*2, maxRetryDelay)
	}
	tick := is.tick
	if tick == nil {
		t := time.NewTicker(is.refresh)
		defer t.Stop()
		tick = t.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
		}
		if err := is.fetchKeys(ctx); err != nil {
			is.log.Warn("authn: JWKS refresh failed; keeping the previous keys", "error", err)
		}
	}
}

// sleep waits for d or ctx, and reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// fetchKeys fetches the JWKS (finding its URI by discovery first, if it
// is not configured) and publishes the keys. Concurrent callers share one
// fetch, which runs under the issuer's lifetime and fetchTimeout (a
// discovery fetch in progress may outlive the issuer by its own timeout);
// a caller whose ctx ends stops waiting.
func (is *issuer) fetchKeys(ctx context.Context) error {
	ch := is.fetches.DoChan("", func() (any, error) {
		fctx, cancel := context.WithTimeout(is.ctx, fetchTimeout)
		defer cancel()
		err := is.fetch(fctx)
		is.setErr(err)
		is.onFetch(err)
		return nil, err
	})
	select {
	case <-ctx.Done():
		return ctx.Err()
	case r := <-ch:
		return r.Err
	}
}

func (is *issuer) fetch(ctx context.Context) error {
	uri := is.cfg.JWKSURI
	if is.discovery != nil {
		var err error
		if uri, err = is.discovery.JWKSURI(ctx); err != nil {
			return fmt.Errorf("discovery: %w", err)
		}
	}
	body, err := oauth.GetJSON(ctx, is.client, uri)
	if err != nil {
		return fmt.Errorf("JWKS: %w", err)
	}
	set, err := jwk.Parse(body)
	if err != nil {
		return fmt.Errorf("JWKS %s: %w", uri, err)
	}
	ks := newKeySet(set, is.keys.Load(), is.log)
	is.keys.Store(ks)
	is.log.Debug("authn: JWKS fetched", "keys", ks.len(), "epoch", ks.epoch)
	return nil
}

// keysEpoch returns the current key set's epoch.
func (is *issuer) keysEpoch() uint64 {
	if ks := is.keys.Load(); ks != nil {
		return ks.epoch
	}
	return 0
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
// know may be a rotated key: refetch, then try again once. It returns the
// key set that verified the token.
func (is *issuer) verifySignature(ctx context.Context, t *token) (*keySet, error) {
	ks := is.keys.Load()
	if ks == nil {
		return nil, is.keysUnavailable(is.fetchErr())
	}
	jv := is.algs[t.alg]
	retry, err := ks.verify(jv, t)
	if !retry {
		return ks, err
	}
	if rerr := is.refetch(ctx); rerr != nil && !errors.Is(rerr, errRefetchLimited) {
		return nil, is.keysUnavailable(rerr)
	}
	if fresh := is.keys.Load(); fresh != ks {
		if retry, err = fresh.verify(jv, t); !retry {
			return fresh, err
		}
	}
	if ferr := is.fetchErr(); ferr != nil {
		return nil, is.keysUnavailable(ferr) // not found, maybe only because fetching fails
	}
	return nil, err
}

// refetch refreshes the JWKS for a token whose key we lack. An attacker can
// send endless unknown kids, so at most one refetch starts per minRefetch,
// and callers that arrive while it runs wait for that one. It fetches
// under the issuer's lifetime: a caller that gives up leaves it to the
// others.
func (is *issuer) refetch(ctx context.Context) error {
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
		go is.runRefetch(c)
	}
	is.mu.Unlock()
	is.waiting.Add(1)
	defer is.waiting.Add(-1)
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// refetchCall is one unknown-kid refetch, shared by its waiters.
type refetchCall struct {
	done chan struct{}
	err  error
}

func (is *issuer) runRefetch(c *refetchCall) {
	c.err = is.fetchKeys(is.ctx)
	is.mu.Lock()
	is.pending = nil
	is.mu.Unlock()
	close(c.done)
	if c.err != nil {
		is.log.Warn("authn: JWKS refetch for an unknown kid failed", "error", c.err, "waiters", is.waiting.Load())
		return
	}
	is.log.Info("authn: JWKS refetched for an unknown kid", "waiters", is.waiting.Load(), "keys", is.keys.Load().len())
}

// keySet is a fetched JWKS prepared for verification: public keys in their
// crypto form, so that no JWK conversion happens per token. Read-only.
//
// epoch counts the fetches that removed a key: a token verified with a set
// of an earlier epoch may have been verified with a key the issuer has
// since withdrawn (perhaps because it leaked), so the verified-token cache
// serves it only while the epoch is unchanged.
type keySet struct {
	byKid map[string][]publicKey
	all   []publicKey
	epoch uint64
}

type publicKey struct {
	kid  string
	alg  string // the JWK's alg; "" if it has none
	kind string // "RSA" or a curve name, as keyKind gives
	key  any    // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
}

func (ks *keySet) len() int { return len(ks.all) }

// newKeySet prepares set; prev is the set it replaces, nil for the first.
func newKeySet(set jwk.Set, prev *keySet, log *slog.Logger) *keySet {
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
	if prev != nil {
		ks.epoch = prev.epoch
		for _, old := range prev.all {
			if !ks.has(old) {
				ks.epoch++
				log.Warn("authn: a key was removed from the issuer's JWKS; tokens it verified are checked again", "kid", old.kid)
				break
			}
		}
	}
	return ks
}

// has reports whether ks holds pk: the same kid, alg and public key.
func (ks *keySet) has(pk publicKey) bool {
	for _, k := range ks.all {
		if k.kid == pk.kid && k.alg == pk.alg && k.key.(interface{ Equal(crypto.PublicKey) bool }).Equal(pk.key) {
			return true
		}
	}
	return false
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
	kind := keyKind(t.alg)
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
