package authn

import (
	"time"

	"github.com/audgate/audgate/internal/hashcache"
)

// tokenCache holds verified tokens by the SHA-256 of the raw token until
// their exp. It never extends a token's life: an entry is served only while
// now < exp, checked on every hit, and a token accepted only thanks to the
// leeway is not cached at all. A full cache makes room in the shard of
// the token being added, dropping that shard's expired tokens first.
type tokenCache struct {
	c *hashcache.Cache[*Principal]
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{c: hashcache.New[*Principal](size)}
}

// get returns the Principal cached for sum if it has not expired at now.
func (c *tokenCache) get(sum *[32]byte, now time.Time) (*Principal, bool) {
	p, ok := c.c.Get(sum)
	if !ok || !now.Before(p.ExpiresAt) {
		return nil, false
	}
	return p, true
}

// put caches p, keyed by p.TokenHash, unless it has already expired.
func (c *tokenCache) put(p *Principal, now time.Time) {
	if !now.Before(p.ExpiresAt) {
		return
	}
	c.c.Put(&p.TokenHash, p, func(q *Principal) bool { return !now.Before(q.ExpiresAt) })
}

// len counts the entries, expired ones included.
func (c *tokenCache) len() int { return c.c.Len() }
