package hashcache

import (
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
)

func key(i int) [32]byte { return sha256.Sum256(fmt.Append(nil, i)) }

// TestNeverAWrongValue: against a plain map, random puts and gets over
// more keys than fit; a hit is always the value last put under its key.
func TestNeverAWrongValue(t *testing.T) {
	for _, size := range []int{1, 10, 127, 1000, 10000} {
		c := New[int](size)
		model := map[[32]byte]int{}
		rng := rand.New(rand.NewPCG(uint64(size), 1))
		hits := 0
		for i := range 20 * size {
			k := key(rng.IntN(3 * size))
			if rng.IntN(2) == 0 {
				c.Put(&k, i, nil)
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
func TestAsManyKeysAsTheBoundAllFit(t *testing.T) {
	for _, size := range []int{64, 1000, 100000} {
		c := New[int](size)
		for i := range size {
			k := key(i)
			c.Put(&k, i, nil)
		}
		for i := range size {
			k := key(i)
			if v, ok := c.Get(&k); !ok || v != i {
				t.Fatalf("size %d: key %d: %d, %v", size, i, v, ok)
			}
		}
	}
}

// TestBoundUnderConcurrentPuts: concurrent inserts into different shards
// never take the cache past its bound.
func TestBoundUnderConcurrentPuts(t *testing.T) {
	c := New[int](1024)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 4000 {
				k := key(g*100000 + i)
				c.Put(&k, i, nil)
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

func TestStaleGoFirst(t *testing.T) {
	c := New[int](100)
	for i := range 100 {
		k := key(i)
		c.Put(&k, i, nil)
	}
	k := key(1000)
	c.Put(&k, 1000, func(v int) bool { return v%2 == 1 }) // the odd ones are stale
	if n := c.Len(); n != 51 {
		t.Fatalf("%d entries, want the 50 even ones and the new one", n)
	}
	for i := range 100 {
		k := key(i)
		if _, ok := c.Get(&k); ok != (i%2 == 0) {
			t.Errorf("entry %d: present %v", i, ok)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	c := New[int](256)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 5000 {
				k := key((g*7 + i) % 1000)
				if i%3 == 0 {
					c.Put(&k, (g*7+i)%1000, nil)
				} else if v, ok := c.Get(&k); ok && v != (g*7+i)%1000 {
					t.Errorf("got %d under the key of %d", v, (g*7+i)%1000)
				}
			}
		}()
	}
	wg.Wait()
}

func BenchmarkGet(b *testing.B) {
	c := New[[4]int](100000)
	keys := make([][32]byte, 1000)
	for i := range keys {
		keys[i] = key(i)
		c.Put(&keys[i], [4]int{i}, nil)
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
