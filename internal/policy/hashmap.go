package policy

import (
	"sync"
	"sync/atomic"
)

// hashMap is the decision cache's store: a bounded map from SHA-256 sums
// (decision keys) to V, safe for concurrent use.
//
// It is split into shards, each a map under its own RWMutex, chosen by the
// key's first byte (uniform, since it is a SHA-256 sum). A hit takes a read
// lock and allocates nothing, and an entry costs its key and value in the
// map and nothing else: there is no recency list, since a full map makes
// room by dropping an arbitrary hundredth (Go's map order) of the shard
// of the key being added. The bound is on the whole map, not on each
// shard, so that as many keys as the bound all fit.
type hashMap[V any] struct {
	shards []shard[V]
	size   int
	n      atomic.Int64 // entries in all shards
}

type shard[V any] struct {
	mu sync.RWMutex
	m  map[[32]byte]V
	_  [32]byte // keeps neighbouring shards' locks off one cache line
}

// newHashMap bounds the cache to size entries (at least 1). It uses up to 16
// shards, but never so many that a shard would hold fewer than 64 of them.
func newHashMap[V any](size int) *hashMap[V] {
	size = max(size, 1)
	n := 1
	for n < 16 && size/(n*2) >= 64 {
		n *= 2
	}
	c := &hashMap[V]{shards: make([]shard[V], n), size: size}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]V)
	}
	return c
}

func (c *hashMap[V]) shard(key *[32]byte) *shard[V] {
	return &c.shards[int(key[0])&(len(c.shards)-1)]
}

// Get returns the value stored under key.
func (c *hashMap[V]) Get(key *[32]byte) (V, bool) {
	s := c.shard(key)
	s.mu.RLock()
	v, ok := s.m[*key]
	s.mu.RUnlock()
	return v, ok
}

// Put stores v under key. When key is new and the map full, an arbitrary
// hundredth of its shard goes, so that the next inserts do not each pay
// for a scan. If the shard has nothing to drop, v is not stored.
func (c *hashMap[V]) Put(key *[32]byte, v V) {
	s := c.shard(key)
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.m[*key]; ok {
		s.m[*key] = v
		return
	}
	if !c.reserve() {
		c.n.Add(-int64(s.evict()))
		if !c.reserve() {
			return
		}
	}
	s.m[*key] = v
}

// reserve counts one more entry if the cache has room for it.
func (c *hashMap[V]) reserve() bool {
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

// evict drops an arbitrary hundredth of s, at least one entry, and
// returns how many it dropped.
func (s *shard[V]) evict() int {
	drop := max(1, len(s.m)/100)
	n := 0
	for k := range s.m {
		if n == drop {
			break
		}
		delete(s.m, k)
		n++
	}
	return n
}

// Len counts the entries.
func (c *hashMap[V]) Len() int { return int(c.n.Load()) }
