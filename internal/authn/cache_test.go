package authn

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"testing"
	"time"
)

func TestCacheHitDoesNoSignatureWork(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	clock := newTestClock()
	opts := testOptions(idp, clock)
	opts.Issuers[0].Leeway = 0
	v := newTestVerifier(t, opts)
	ctx := context.Background()

	tok := key("rsa1").sign(nil, claims(idp.URL).with(fields{"exp": t0.Add(time.Minute).Unix()}))
	first, err := v.Verify(ctx, tok)
	if err != nil {
		t.Fatalf("first Verify: %v", err)
	}

	// A hit returns the Principal the first Verify built: no parsing, no
	// signature check (a new verification would build a new one).
	steps := []struct {
		name    string
		at      time.Time
		wantErr bool
	}{
		{name: "cached: no signature check", at: t0.Add(59 * time.Second)},
		{name: "at exp: refused", at: t0.Add(time.Minute), wantErr: true},
	}
	for _, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Set(st.at)
			p, err := v.Verify(ctx, tok)
			if gotErr := err != nil; gotErr != st.wantErr {
				t.Fatalf("Verify: got err %v, want error %v", err, st.wantErr)
			}
			if err == nil && p != first {
				t.Errorf("got a new Principal, want the cached one")
			}
			if err != nil && !errors.Is(err, ErrInvalidToken) {
				t.Errorf("got %v, want ErrInvalidToken", err)
			}
		})
	}
}

func TestCacheDoesNotKeepFailuresOrLeewayTokens(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	v := newTestVerifier(t, testOptions(idp, newTestClock()))
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{name: "failed verification", token: key("evil").withKid("rsa1").sign(nil, claims(idp.URL))},
		{name: "accepted within leeway after exp", ok: true,
			token: key("rsa1").sign(nil, claims(idp.URL).with(fields{"exp": t0.Add(-time.Second).Unix()}))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tc.token)
			if got := err == nil; got != tc.ok {
				t.Fatalf("Verify: got %v, want ok=%v", err, tc.ok)
			}
			if got := v.cache.len(); got != 0 {
				t.Errorf("cache entries: got %d, want 0", got)
			}
		})
	}
}

func TestCacheStaysWithinSize(t *testing.T) {
	tests := []struct {
		name string
		size int
	}{
		{name: "1", size: 1},
		{name: "10", size: 10},
		{name: "127 (one shard)", size: 127},
		{name: "1000 (sharded)", size: 1000},
		{name: "10000 (16 shards)", size: 10000},
	}
	now := t0
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := newTokenCache(tc.size)
			for range 3 * tc.size {
				c.put(randomPrincipal(now.Add(time.Hour)), now)
				if got := c.len(); got > tc.size {
					t.Fatalf("entries: got %d, want at most %d", got, tc.size)
				}
			}
			if got := c.len(); got < tc.size*8/10 {
				t.Errorf("entries after filling: got %d, want close to %d", got, tc.size)
			}
		})
	}
}

func TestCacheEvictsExpiredFirst(t *testing.T) {
	c := newTokenCache(100)
	now := t0
	live := randomPrincipal(now.Add(time.Hour))
	c.put(live, now)
	for range 99 {
		c.put(randomPrincipal(now.Add(time.Second)), now)
	}
	now = now.Add(time.Minute) // the 99 have expired
	next := randomPrincipal(now.Add(time.Hour))
	c.put(next, now)

	if got, want := c.len(), 2; got != want {
		t.Errorf("entries: got %d, want %d", got, want)
	}
	for _, p := range []*Principal{live, next} {
		if got, ok := c.get(&p.TokenHash, now); !ok || got != p {
			t.Errorf("get: got (%v, %v), want the live entry", got, ok)
		}
	}
}

func TestVerifierCacheBound(t *testing.T) {
	idp := newTestIdP(t, key("ec1"))
	opts := testOptions(idp, newTestClock())
	opts.CacheSize = 8
	v := newTestVerifier(t, opts)
	for i := range 30 {
		tok := key("ec1").sign(nil, claims(idp.URL).with(fields{"jti": fmt.Sprint(i)}))
		if _, err := v.Verify(context.Background(), tok); err != nil {
			t.Fatalf("Verify %d: %v", i, err)
		}
		if got := v.cache.len(); got > opts.CacheSize {
			t.Fatalf("after %d tokens: cache entries %d, want at most %d", i+1, got, opts.CacheSize)
		}
	}
}

func TestCacheHitAllocatesNothing(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	v := newTestVerifier(t, testOptions(idp, newTestClock()))
	ctx := context.Background()
	tok := key("rsa1").sign(nil, claims(idp.URL))
	if _, err := v.Verify(ctx, tok); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	allocs := testing.AllocsPerRun(1000, func() {
		if _, err := v.Verify(ctx, tok); err != nil {
			panic(err)
		}
	})
	if allocs != 0 {
		t.Errorf("allocations per cache hit: got %v, want 0", allocs)
	}
}

func randomPrincipal(exp time.Time) *Principal {
	p := &Principal{ExpiresAt: exp}
	_, _ = rand.Read(p.TokenHash[:])
	return p
}

func BenchmarkVerifyCacheHit(b *testing.B) {
	idp := newTestIdP(b, key("rsa1"))
	v := newTestVerifier(b, testOptions(idp, newTestClock()))
	ctx := context.Background()
	tok := key("rsa1").sign(nil, claims(idp.URL))
	if _, err := v.Verify(ctx, tok); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyCacheMiss verifies a token the cache has not seen on every
// iteration: tokens differ by jti, and the cache is emptied (timer stopped)
// each time the pre-signed pool wraps around.
func BenchmarkVerifyCacheMiss(b *testing.B) {
	idp := newTestIdP(b, key("rsa1"))
	v := newTestVerifier(b, testOptions(idp, newTestClock()))
	ctx := context.Background()
	tokens := make([]string, 512)
	for i := range tokens {
		tokens[i] = key("rsa1").sign(nil, claims(idp.URL).with(fields{"jti": fmt.Sprintf("jti-%d", i)}))
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if i == len(tokens) {
			b.StopTimer()
			v.cache = newTokenCache(DefaultCacheSize)
			i = 0
			b.StartTimer()
		}
		if _, err := v.Verify(ctx, tokens[i]); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func TestAttachment(t *testing.T) {
	p := &Principal{Subject: "alice"}
	var builds int
	view := NewAttachment(func(p *Principal) string { builds++; return "view of " + p.Subject })
	for range 3 {
		if got := view.Get(p); got != "view of alice" {
			t.Fatalf("Get = %v", got)
		}
	}
	if builds != 1 {
		t.Errorf("built %d times, want once", builds)
	}
	// A second Attachment never sees the first one's value.
	other := NewAttachment(func(p *Principal) int { return len(p.Subject) })
	if got := other.Get(p); got != 5 {
		t.Errorf("another Attachment: Get = %v, want 5", got)
	}
}
