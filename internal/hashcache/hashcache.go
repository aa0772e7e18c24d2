// Package hashcache is a bounded map keyed by SHA-256 sums, for the
// caches on the request path (verified tokens, decisions).
//
// It is split into shards, each a map under its own RWMutex, chosen by the
// key's first byte (uniform, since it is a SHA-256 sum). A hit takes a read
// lock and allocates nothing, and an entry costs its key and value in the
// map and nothing else: no list to keep recency in, since a full cache
// makes room in the shard of the key being added, dropping its stale
// entries and then an arbitrary hundredth of it (Go's map order) rather
// than the least recently used. The bound is on the whole cache, not on
// each shard, so that as many keys as the bound all fit.
package hashcache

import (
	"sync"
	"sync/atomic"
)

// Cache is a bounded map from SHA-256 sums to V, safe for concurrent use.
type Cache[V any] struct {
	shards []shard[V]
	size   int
	n      atomic.Int64 // entries in all shards
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[[32]byte]V
	_  [32]byte // keeps neighbouring shards' locks off one cache line
}

// New bounds the cache to size entries (at least 1). It uses up to 16
// shards, but never so many that a shard would hold fewer than 64 of them.
func New[V any](size int) *Cache[V] {
	size = max(size, 1)
	n := 1
	for n < 16 && size/(n*2) >= 64 {
		n *= 2
	}
	c := &Cache[V]{shards: make([]shard[V], n), size: size}
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

// Put stores v under key. When key is new and the cache full, its shard
// drops the entries stale reports (stale may be nil), then, if the cache
// is still full, an arbitrary hundredth of the shard, so that the next
// inserts do not each pay for a scan. If the shard has nothing to drop,
// v is not stored.
func (c *Cache[V]) Put(key *[32]byte, v V, stale func(V) bool) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*key]; ok {
		s.m[*key] = v
		return
	}
	if !c.reserve() {
		c.n.Add(-int64(s.evict(c, stale)))
		if !c.reserve() {
			return
		}
	}
	s.m[*key] = v
}

// reserve counts one more entry if the cache has room for it.
func (c *Cache[V]) reserve() bool {
	for {
		n := c.n.Load()
		if n >= int64(c.size) {
			return false
		}
		if c.n.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// evict drops entries from s for c, and returns how many.
func (s *shard[V]) evict(c *Cache[V], stale func(V) bool) int {
	before := len(s.m)
	if stale != nil {
		for k, v := range s.m {
			if stale(v) {
				delete(s.m, k)
			}
		}
	}
	if c.n.Load()-int64(before-len(s.m)) < int64(c.size) {
		return before - len(s.m)
	}
	drop := max(1, len(s.m)/100)
	for k := range s.m {
		if drop == 0 {
			break
		}
		delete(s.m, k)
		drop--
	}
	return before - len(s.m)
}

// Delete removes the value stored under key, if any.
func (c *Cache[V]) Delete(key *[32]byte) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*key]; ok {
		delete(s.m, *key)
		c.n.Add(-1)
	}
}

// Sweep removes every entry stale reports, one shard at a time.
func (c *Cache[V]) Sweep(stale func(V) bool) {
	for i := range c.shards {
		s := &c.shards[i]
		s.mu.Lock()
		for k, v := range s.m {
			if stale(v) {
				delete(s.m, k)
				c.n.Add(-1)
			}
		}
		s.mu.Unlock()
	}
}

// Len counts the entries, stale ones included.
func (c *Cache[V]) Len() int { return int(c.n.Load()) }
