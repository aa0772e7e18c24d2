package policy

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func hashKey(i int) [32]byte { return sha256.Sum256(fmt.Append(nil, i)) }

// TestNeverAWrongValue: against a plain map, random puts and gets over
// more keys than fit; a hit is always the value last put under its key.
func TestHashMapNeverAWrongValue(t *testing.T) {
	for _, size := range []int{1, 10, 127, 1000, 10000} {
		c := newHashMap[int](size)
		model := map[[32]byte]int{}
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		hits := 0
		for i := range 20 * size {
			k := hashKey(rng.IntN(3 * size))
			if rng.IntN(2) == 0 {
				c.Put(&k, i)
				model[k] = i
			} else if v, ok := c.Get(&k); ok {
				hits++
				if want, put := model[k]; !put || v != want {
					t.Fatalf("size %d: got %d, last put %d (%v)", size, v, want, put)
				}
			}
			if n := c.Len(); n > size {
				t.Fatalf("size %d: %d entries", size, n)
			}
		}
		if hits == 0 {
			t.Errorf("size %d: no hit", size)
		}
		if n := c.Len(); n < size*8/10 {
			t.Errorf("size %d: %d entries after filling", size, n)
		}
	}
}

// TestAsManyKeysAsTheBoundAllFit: the bound is the whole cache's, so an
// uneven spread over the shards loses nothing.
func TestHashMapFitsItsBound(t *testing.T) {
	for _, size := range []int{64, 1000, 100000} {
		c := newHashMap[int](size)
		for i := range size {
			k := hashKey(i)
			c.Put(&k, i)
		}
		for i := range size {
			k := hashKey(i)
			if v, ok := c.Get(&k); !ok || v != i {
				t.Fatalf("size %d: key %d: %d, %v", size, i, v, ok)
			}
		}
	}
}

// TestBoundUnderConcurrentPuts: concurrent inserts into different shards
// never take the cache past its bound.
func TestHashMapBoundUnderConcurrentPuts(t *testing.T) {
	c := newHashMap[int](1024)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4000 {
				k := hashKey(g*100000 + i)
				c.Put(&k, i)
				if n := c.Len(); n > 1024 {
					t.Errorf("%d entries", n)
					return
				}
			}
		}()
	}
	wg.Wait()
	n := 0
	for i := range c.shards {
		n += len(c.shards[i].m)
	}
	if n != c.Len() || n > 1024 {
		t.Fatalf("%d entries in the shards, Len %d", n, c.Len())
	}
}

func TestHashMapConcurrentUse(t *testing.T) {
	c := newHashMap[int](256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				k := hashKey((g*7 + i) % 1000)
				if i%3 == 0 {
					c.Put(&k, (g*7+i)%1000)
				} else if v, ok := c.Get(&k); ok && v != (g*7+i)%1000 {
					t.Errorf("got %d under the key of %d", v, (g*7+i)%1000)
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkHashMapGet(b *testing.B) {
	c := newHashMap[[4]int](100000)
	keys := make([][32]byte, 1000)
	for i := range keys {
		keys[i] = hashKey(i)
		c.Put(&keys[i], [4]int{i})
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			c.Get(&keys[i%len(keys)])
			i++
		}
	})
}
