// Package hashcache is a bounded map keyed by SHA-256 sums, for the
// caches on the request path (verified tokens, decisions).
//
// It is split into shards, each a map under its own RWMutex, chosen by the
// key's first byte (uniform, since it is a SHA-256 sum). A hit takes a read
// lock and allocates nothing, and an entry costs its key and value in the
// map and nothing else: no list to keep recency in, since a full shard
// drops its stale entries and then an arbitrary tenth (Go's map order)
// rather than the least recently used.
package hashcache

import "sync"

// Cache is a bounded map from SHA-256 sums to V, safe for concurrent use.
type Cache[V any] struct {
	shards   []shard[V]
	perShard int // bound of each shard; shards × perShard ≤ the size
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[[32]byte]V
	_  [32]byte // keeps neighbouring shards' locks off one cache line
}

// New bounds the cache to size entries (at least 1). It uses up to 16
// shards, but never so many that a shard holds fewer than 64 entries: a
// small cache in few shards evicts close to its bound.
func New[V any](size int) *Cache[V] {
	size = max(size, 1)
	n := 1
	for n < 16 && size/(n*2) >= 64 {
		n *= 2
	}
	c := &Cache[V]{shards: make([]shard[V], n), perShard: max(size/n, 1)}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]V)
	}
	return c
}

func (c *Cache[V]) shard(key *[32]byte) *shard[V] {
	return &c.shards[int(key[0])&(len(c.shards)-1)]
}

// Get returns the value stored under key.
func (c *Cache[V]) Get(key *[32]byte) (V, bool) {
	s := c.shard(key)
	s.mu.RLock()
	v, ok := s.m[*key]
	s.mu.RUnlock()
	return v, ok
}

// Put stores v under key. When key is new and its shard full, the
// entries stale reports go first (stale may be nil), then, if the shard
// is still full, an arbitrary tenth of it, so that the next inserts do
// not each pay for a scan.
func (c *Cache[V]) Put(key *[32]byte, v V, stale func(V) bool) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*key]; !ok && len(s.m) >= c.perShard {
		s.evict(c.perShard, stale)
	}
	s.m[*key] = v
}

func (s *shard[V]) evict(limit int, stale func(V) bool) {
	if stale != nil {
		for k, v := range s.m {
			if stale(v) {
				delete(s.m, k)
			}
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

// Len counts the entries, stale ones included.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.RLock()
		n += len(s.m)
		s.mu.RUnlock()
	}
	return n
}
