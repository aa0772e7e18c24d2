package authn

import (
	"sync"
	"time"
)

// tokenCache holds verified tokens by the SHA-256 of the raw token until
// their exp. It never extends a token's life: an entry is served only while
// now < exp, checked on every hit, and a token accepted only thanks to the
// leeway is not cached at all.
//
// It is split into shards, each a map under its own RWMutex, chosen by the
// hash's first byte (uniform, since it is SHA-256). A hit takes a read lock
// and allocates nothing.
type tokenCache struct {
	shards   []cacheShard
	perShard int // bound of each shard; shards × perShard ≤ the cache size
}

type cacheShard struct {
	mu sync.RWMutex
	m  map[[32]byte]*Principal
	_  [32]byte // keeps neighbouring shards' locks off one cache line
}

// newTokenCache bounds the cache to size entries. It uses up to 16 shards,
// but never so many that a shard holds fewer than 64 entries: a small cache
// in few shards evicts close to its bound.
func newTokenCache(size int) *tokenCache {
	n := 1
	for n < 16 && size/(n*2) >= 64 {
		n *= 2
	}
	c := &tokenCache{shards: make([]cacheShard, n), perShard: size / n}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]*Principal)
	}
	return c
}

func (c *tokenCache) shard(sum *[32]byte) *cacheShard {
	return &c.shards[int(sum[0])&(len(c.shards)-1)]
}

// get returns the Principal cached for sum if it has not expired at now.
func (c *tokenCache) get(sum *[32]byte, now time.Time) (*Principal, bool) {
	s := c.shard(sum)
	s.mu.RLock()
	p, ok := s.m[*sum]
	s.mu.RUnlock()
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
	s := c.shard(&p.TokenHash)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[p.TokenHash]; !ok && len(s.m) >= c.perShard {
		s.evict(now, c.perShard)
	}
	s.m[p.TokenHash] = p
}

// evict makes room in a full shard: first the expired entries, then, if it
// is still full, an arbitrary tenth (Go's map order), so that the next
// inserts do not each pay for a scan.
func (s *cacheShard) evict(now time.Time, limit int) {
	for k, p := range s.m {
		if !now.Before(p.ExpiresAt) {
			delete(s.m, k)
		}
	}
	if len(s.m) < limit {
		return
	}
	drop := max(1, limit/10)
	for k := range s.m {
		if drop == 0 {
			break
		}
		delete(s.m, k)
		drop--
	}
}

// len counts the entries, expired ones included.
func (c *tokenCache) len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
