package tokens

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	gocache "github.com/patrickmn/go-cache"
	"golang.org/x/sync/singleflight"
)

// DefaultCacheOptions are the cache's defaults: 100000 entries, tokens
// refreshed 30s before they expire, 60s for a token without expires_in,
// and refusals remembered 5s.
func DefaultCacheOptions() CacheOptions {
	return CacheOptions{MaxEntries: 100000, RefreshBeforeExpiry: 30 * time.Second, DefaultTTL: 60 * time.Second, NegativeTTL: 5 * time.Second}
}

// DefaultTimeout bounds one shared token request when a Binding sets none.
const DefaultTimeout = 5 * time.Second

// CacheOptions configure a Cache; start from DefaultCacheOptions.
type CacheOptions struct {
	// MaxEntries bounds the number of cached tokens; 0 or less means the
	// default.
	MaxEntries int
	// RefreshBeforeExpiry: a token is not served from cache in its last
	// this-long; 0 serves it until it expires (DefaultCacheOptions: 30s).
	RefreshBeforeExpiry time.Duration
	// DefaultTTL is used for a token whose expiry is unknown; 0 or less
	// means the default (60s).
	DefaultTTL time.Duration
	// NegativeTTL: an identity provider's refusal (or a *ConfigError) is
	// remembered this long per key, so a caller who is refused cannot make
	// audgate ask again on every request. 0 turns it off
	// (DefaultCacheOptions: 5s).
	NegativeTTL time.Duration
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
}

// Cache holds downstream tokens by key and coalesces concurrent misses for
// one key into one source request. It is safe for concurrent use.
type Cache struct {
	opts  CacheOptions
	items *gocache.Cache
	group singleflight.Group

	dropMu  sync.Mutex
	dropped map[string]time.Time // when each key's token was last dropped
}

// NewCache returns an empty cache.
func NewCache(opts CacheOptions) *Cache {
	def := DefaultCacheOptions()
	if opts.MaxEntries <= 0 {
		opts.MaxEntries = def.MaxEntries
	}
	if opts.RefreshBeforeExpiry < 0 {
		opts.RefreshBeforeExpiry = 0
	}
	if opts.DefaultTTL <= 0 {
		opts.DefaultTTL = def.DefaultTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Cache{opts: opts, items: gocache.New(gocache.NoExpiration, time.Minute), dropped: map[string]time.Time{}}
}

// Binding binds a token source to its name and says how its tokens are
// cached.
type Binding struct {
	// Name is the source's name; it is part of every key.
	Name string
	// Source fills misses.
	Source Source
	// PerCaller: tokens depend on the caller's token (token exchange,
	// jwt-bearer, self-signed), so the key includes its hash.
	PerCaller bool
	// Timeout bounds one shared source request. Default: DefaultTimeout.
	Timeout time.Duration
}

// Outcome says how a token was obtained, for logs and metrics.
type Outcome string

// Outcomes of Cache.Token.
const (
	OutcomeHit     Outcome = "hit"
	OutcomeMiss    Outcome = "miss"
	OutcomeShared  Outcome = "shared"  // waited for another caller's miss
	OutcomeRefused Outcome = "refused" // the IdP refused, now or within negative_ttl
	OutcomeError   Outcome = "error"
)

// cached is a token, or a remembered refusal, with the time until which
// it may be served.
type cached struct {
	tok     Token
	refusal error
	until   time.Time
}

// Token returns a token for req from the cache or, on a miss, from the
// entry's source. Concurrent misses for one key share one source request,
// which runs under the entry's timeout rather than any one caller's
// context; a caller whose ctx ends stops waiting.
func (c *Cache) Token(ctx context.Context, sb *Binding, req *Request) (Token, Outcome, error) {
	sum, err := c.key(sb, req)
	if err != nil {
		return Token{}, OutcomeError, err
	}
	// A 32-byte string that does not escape costs no allocation: a hit
	// allocates nothing.
	if ent := c.lookup(string(sum[:])); ent != nil {
		if ent.refusal != nil {
			return Token{}, OutcomeRefused, ent.refusal
		}
		return ent.tok, OutcomeHit, nil
	}
	key := string(sum[:])
	ch := c.group.DoChan(key, func() (any, error) {
		// A caller that missed just before another's fetch finished must
		// not fetch again.
		if ent := c.lookup(key); ent != nil {
			if ent.refusal != nil {
				return nil, ent.refusal
			}
			return ent.tok, nil
		}
		timeout := sb.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
		defer cancel()
		tok, err := sb.Source.Token(fctx, req)
		if err != nil {
			if remembered(err) && c.opts.NegativeTTL > 0 {
				c.remember(key, err)
			}
			return nil, err
		}
		c.store(key, tok, sb.PerCaller, req)
		return tok, nil
	})
	select {
	case <-ctx.Done():
		return Token{}, OutcomeError, ctx.Err()
	case r := <-ch:
		if r.Err != nil {
			if IsRefusal(r.Err) {
				return Token{}, OutcomeRefused, r.Err
			}
			return Token{}, OutcomeError, r.Err
		}
		if r.Shared {
			return r.Val.(Token), OutcomeShared, nil
		}
		return r.Val.(Token), OutcomeMiss, nil
	}
}

// lookup returns the live entry for key, or nil.
func (c *Cache) lookup(key string) *cached {
	if v, ok := c.items.Get(key); ok {
		if ent := v.(*cached); c.opts.Now().Before(ent.until) {
			return ent
		}
	}
	return nil
}

// remembered reports whether err is kept for negative_ttl: an IdP's
// refusal, or metadata that contradicts the configuration. An unavailable
// IdP is never remembered: it may answer the next request.
func remembered(err error) bool {
	var ce *ConfigError
	return IsRefusal(err) || errors.As(err, &ce)
}

// remember keeps a refusal for negative_ttl.
func (c *Cache) remember(key string, refusal error) {
	if c.items.ItemCount() >= c.opts.MaxEntries {
		c.evict()
	}
	c.items.Set(key, &cached{refusal: refusal, until: c.opts.Now().Add(c.opts.NegativeTTL)}, c.opts.NegativeTTL)
}

// minDropInterval is the shortest time between two drops of one key's
// token: an upstream that refuses every token must not turn each request
// into an IdP request (for a shared client-credentials token, each
// caller's request would replace everyone's).
const minDropInterval = 5 * time.Second

// Drop forgets the cached token for req because the upstream refused
// value, and reports whether the request may be retried with a fresh
// token:
//   - the cache no longer holds value (another request replaced it, or it
//     expired): retry; the fresh token is there or on its way, and nothing
//     is dropped;
//   - the key's token was dropped in the last few seconds: do not retry,
//     the upstream refuses fresh tokens too;
//   - otherwise value is dropped: retry.
func (c *Cache) Drop(sb *Binding, req *Request, value string) bool {
	sum, err := c.key(sb, req)
	if err != nil {
		return false
	}
	key := string(sum[:])
	c.dropMu.Lock()
	defer c.dropMu.Unlock()
	if ent := c.lookup(key); ent == nil || ent.tok.Value != value {
		return true
	}
	now := c.opts.Now()
	if last, ok := c.dropped[key]; ok && now.Sub(last) < minDropInterval {
		return false
	}
	if len(c.dropped) >= c.opts.MaxEntries {
		clear(c.dropped)
	}
	c.dropped[key] = now
	c.items.Delete(key)
	return true
}

// Len returns the number of cached tokens, expired ones included until the
// janitor removes them.
func (c *Cache) Len() int { return c.items.ItemCount() }

// usableUntil is min(expiry − refresh_before_expiry, the caller's exp);
// the caller's exp counts only for tokens made for that caller.
func (c *Cache) usableUntil(now time.Time, tok Token, perCaller bool, req *Request) time.Time {
	exp := tok.Expiry
	if exp.IsZero() {
		exp = now.Add(c.opts.DefaultTTL)
	}
	until := exp.Add(-c.opts.RefreshBeforeExpiry)
	if perCaller && !req.SubjectExpiry.IsZero() && req.SubjectExpiry.Before(until) {
		until = req.SubjectExpiry
	}
	return until
}

func (c *Cache) store(key string, tok Token, perCaller bool, req *Request) {
	now := c.opts.Now()
	until := c.usableUntil(now, tok, perCaller, req)
	ttl := until.Sub(now)
	if ttl <= 0 {
		// Already past its usable life: use it for this request only. A
		// zero or negative TTL must never reach go-cache (negative means
		// forever there).
		return
	}
	if c.items.ItemCount() >= c.opts.MaxEntries {
		c.evict()
	}
	// Token rechecks until on every hit against the injected clock; the
	// go-cache TTL only frees the memory.
	c.items.Set(key, &cached{tok: tok, until: until}, ttl)
}

// evict makes room: expired entries first, then about a tenth of the rest.
func (c *Cache) evict() {
	c.items.DeleteExpired()
	n := c.items.ItemCount() - c.opts.MaxEntries + 1
	if n <= 0 {
		return
	}
	n += c.opts.MaxEntries / 10
	for k := range c.items.Items() {
		if n <= 0 {
			return
		}
		c.items.Delete(k)
		n--
	}
}

// key is SHA-256 over length-prefixed fields, so no choice of names,
// audiences or scopes can collide with another, and no secret or raw
// token is part of it.
func (c *Cache) key(sb *Binding, req *Request) ([sha256.Size]byte, error) {
	var buf [512]byte
	b := buf[:0]
	b = appendField(b, sb.Name)
	b = appendField(b, req.Audience)
	scopes := NormalizeScopes(req.Scopes)
	b = binary.BigEndian.AppendUint32(b, uint32(len(scopes)))
	for _, s := range scopes {
		b = appendField(b, s)
	}
	if sb.PerCaller {
		b = append(b, req.SubjectTokenHash[:]...)
		if len(req.Claims) > 0 {
			claims, err := json.Marshal(req.Claims) // map keys are sorted
			if err != nil {
				return [sha256.Size]byte{}, fmt.Errorf("tokens: claims: %w", err)
			}
			b = appendField(b, string(claims))
		}
	}
	return sha256.Sum256(b), nil
}

func appendField(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}
