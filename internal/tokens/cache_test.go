package tokens

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// countingSource hands out numbered tokens and counts calls.
type countingSource struct {
	calls  atomic.Int64
	expiry func(now time.Time) time.Time
	err    error
	delay  time.Duration
	now    func() time.Time
}

func (s *countingSource) Token(ctx context.Context, req *Request) (Token, error) {
	n := s.calls.Add(1)
	if s.delay > 0 {
		select {
		case <-time.After(s.delay):
		case <-ctx.Done():
			return Token{}, ctx.Err()
		}
	}
	if s.err != nil {
		return Token{}, s.err
	}
	var exp time.Time
	if s.expiry != nil {
		exp = s.expiry(s.now())
	}
	return Token{Value: fmt.Sprintf("tok-%d-%s-%s-%v", n, req.Subject, req.Audience, req.Scopes), Expiry: exp}, nil
}

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{t: time.Unix(1_800_000_000, 0)} }

func userReq(sub string, clock *fakeClock, scopes ...string) *Request {
	tok := "inbound-" + sub
	return &Request{Audience: "https://orders", Scopes: scopes, Subject: sub, SubjectToken: tok,
		SubjectTokenHash: sha256.Sum256([]byte(tok)), SubjectExpiry: clock.Now().Add(time.Hour)}
}

func TestCacheKeyDistinct(t *testing.T) {
	c := NewCache(CacheOptions{})
	per := &Binding{Name: "idp", PerCaller: true}
	shared := &Binding{Name: "m2m"}
	clock := newClock()
	base := func() *Request { return userReq("alice", clock, "read") }
	tests := []struct {
		name string
		e1   *Binding
		r1   *Request
		e2   *Binding
		r2   *Request
		same bool
	}{
		{"scope order", per, userReq("alice", clock, "write", "read"), per, userReq("alice", clock, "read", "write"), true},
		{"scope duplicates", per, userReq("alice", clock, "read", "read"), per, userReq("alice", clock, "read"), true},
		{"read vs read+write", per, userReq("alice", clock, "read"), per, userReq("alice", clock, "read", "write"), false},
		{"different callers", per, userReq("alice", clock, "read"), per, userReq("bob", clock, "read"), false},
		{"shared source ignores the caller", shared, userReq("alice", clock, "read"), shared, userReq("bob", clock, "read"), true},
		{"source name", per, base(), &Binding{Name: "idp2", PerCaller: true}, base(), false},
		{"audience vs scope boundary", per, &Request{Audience: "a|b", Scopes: []string{"c"}}, per, &Request{Audience: "a", Scopes: []string{"b|c"}}, false},
		{"name vs audience boundary", &Binding{Name: "ab"}, &Request{Audience: "c"}, &Binding{Name: "a"}, &Request{Audience: "bc"}, false},
		{"scope split", per, &Request{Audience: "a", Scopes: []string{"b c"}}, per, &Request{Audience: "a", Scopes: []string{"b", "c"}}, false},
		{"claims differ", per, &Request{Audience: "a", Claims: map[string]any{"t": "x"}}, per, &Request{Audience: "a", Claims: map[string]any{"t": "y"}}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			k1, err1 := c.key(tc.e1, tc.r1)
			k2, err2 := c.key(tc.e2, tc.r2)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if got := k1 == k2; got != tc.same {
				t.Errorf("same key = %v, want %v", got, tc.same)
			}
		})
	}
}

func TestCacheKeyHasNoSecretOrToken(t *testing.T) {
	c := NewCache(CacheOptions{})
	req := &Request{Audience: "aud", SubjectToken: "eyJraw.token.value"}
	k, _ := c.key(&Binding{Name: "idp", PerCaller: true}, req)
	if len(k) != sha256.Size || strings.Contains(string(k[:]), "eyJ") {
		t.Fatalf("key %x is not a bare SHA-256", k)
	}
}

func TestCacheLifetime(t *testing.T) {
	tests := []struct {
		name      string
		expiresIn time.Duration // 0: no expiry
		subject   time.Duration // the caller's token lives this long
		advance   time.Duration
		wantCalls int64
	}{
		{name: "fresh hit", expiresIn: 5 * time.Minute, subject: time.Hour, advance: time.Minute, wantCalls: 1},
		{name: "within refresh window", expiresIn: 5 * time.Minute, subject: time.Hour, advance: 4*time.Minute + 31*time.Second, wantCalls: 2},
		{name: "caller's exp caps", expiresIn: time.Hour, subject: 2 * time.Minute, advance: 2*time.Minute + time.Second, wantCalls: 2},
		{name: "expiry unknown: default ttl", expiresIn: 0, subject: time.Hour, advance: 29 * time.Second, wantCalls: 1},
		{name: "expiry unknown: past default ttl", expiresIn: 0, subject: time.Hour, advance: 31 * time.Second, wantCalls: 2},
		{name: "shorter than refresh window: never cached", expiresIn: 10 * time.Second, subject: time.Hour, advance: 0, wantCalls: 2},
		{name: "already expired: never cached", expiresIn: -time.Minute, subject: time.Hour, advance: 0, wantCalls: 2},
		{name: "very long", expiresIn: 100000 * time.Hour, subject: time.Hour, advance: 59 * time.Minute, wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clock := newClock()
			src := &countingSource{now: clock.Now}
			if tc.expiresIn != 0 {
				src.expiry = func(now time.Time) time.Time { return now.Add(tc.expiresIn) }
			}
			c := NewCache(CacheOptions{RefreshBeforeExpiry: 30 * time.Second, DefaultTTL: 60 * time.Second, Now: clock.Now})
			e := &Binding{Name: "idp", Source: src, PerCaller: true}
			req := userReq("alice", clock, "read")
			req.SubjectExpiry = clock.Now().Add(tc.subject)
			if _, _, err := c.Token(context.Background(), e, req); err != nil {
				t.Fatal(err)
			}
			clock.Add(tc.advance)
			if _, _, err := c.Token(context.Background(), e, req); err != nil {
				t.Fatal(err)
			}
			if got := src.calls.Load(); got != tc.wantCalls {
				t.Errorf("source calls = %d, want %d", got, tc.wantCalls)
			}
		})
	}
}

func TestCacheCoalesces(t *testing.T) {
	clock := newClock()
	src := &countingSource{now: clock.Now, delay: 50 * time.Millisecond, expiry: func(n time.Time) time.Time { return n.Add(time.Hour) }}
	c := NewCache(CacheOptions{Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	var alice sync.Map
	for i := range 500 {
		wg.Add(2)
		go func() {
			defer wg.Done()
			tok, _, err := c.Token(context.Background(), e, userReq("alice", clock, "read"))
			if err == nil && !containsSub(tok.Value, "alice") {
				err = fmt.Errorf("caller %d got %q", i, tok.Value)
			}
			alice.Store(tok.Value, true)
			errs <- err
		}()
		go func() {
			defer wg.Done()
			sub := fmt.Sprintf("user%d", i%10)
			tok, _, err := c.Token(context.Background(), e, userReq(sub, clock, "read"))
			if err == nil && !containsSub(tok.Value, sub) {
				err = fmt.Errorf("caller %s got %q", sub, tok.Value)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	n := 0
	alice.Range(func(any, any) bool { n++; return true })
	if n != 1 {
		t.Errorf("alice's callers received %d different tokens, want 1", n)
	}
	if got := src.calls.Load(); got != 11 {
		t.Errorf("source calls = %d, want 11 (one per key)", got)
	}
}

// containsSub reports whether a countingSource token was made for sub.
func containsSub(v, sub string) bool {
	var n int
	var rest string
	if _, err := fmt.Sscanf(v, "tok-%d-%s", &n, &rest); err != nil {
		return false
	}
	return len(rest) > len(sub) && rest[:len(sub)+1] == sub+"-"
}

func TestCacheErrorsAreNotCached(t *testing.T) {
	clock := newClock()
	src := &countingSource{now: clock.Now, err: errors.New("idp down")}
	c := NewCache(CacheOptions{Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	for range 3 {
		if _, _, err := c.Token(context.Background(), e, userReq("alice", clock)); err == nil {
			t.Fatal("want an error")
		}
	}
	if got := src.calls.Load(); got != 3 {
		t.Errorf("source calls = %d, want 3", got)
	}
	if c.Len() != 0 {
		t.Errorf("cache holds %d entries after failures", c.Len())
	}
}

// gatedSource answers once its gate opens, and reports each answer on
// done.
type gatedSource struct {
	gate, done chan struct{}
	calls      atomic.Int64
	now        func() time.Time
}

func (s *gatedSource) Token(ctx context.Context, _ *Request) (Token, error) {
	s.calls.Add(1)
	defer func() { s.done <- struct{}{} }()
	select {
	case <-s.gate:
		return Token{Value: "late", Expiry: s.now().Add(time.Hour)}, nil
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

func TestCacheSharedFetchOutlivesCaller(t *testing.T) {
	clock := newClock()
	src := &gatedSource{gate: make(chan struct{}), done: make(chan struct{}, 1), now: clock.Now}
	c := NewCache(CacheOptions{Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller has given up
	if _, _, err := c.Token(ctx, e, userReq("alice", clock)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want the caller's cancellation", err)
	}
	// The fetch goes on under its own timeout and fills the cache: the
	// next caller shares it or, once it is stored, hits.
	close(src.gate)
	<-src.done
	if tok, out, err := c.Token(context.Background(), e, userReq("alice", clock)); err != nil || (out != OutcomeHit && out != OutcomeShared) || tok.Value != "late" {
		t.Fatalf("token %q, outcome %s, err %v; want the fetch's token", tok.Value, out, err)
	}
	if _, out, err := c.Token(context.Background(), e, userReq("alice", clock)); err != nil || out != OutcomeHit {
		t.Fatalf("outcome %s, err %v; want a hit", out, err)
	}
	if n := src.calls.Load(); n != 1 {
		t.Errorf("the source was asked %d times, want once", n)
	}
}

func TestCacheBounded(t *testing.T) {
	clock := newClock()
	src := &countingSource{now: clock.Now, expiry: func(n time.Time) time.Time { return n.Add(time.Hour) }}
	c := NewCache(CacheOptions{MaxEntries: 100, Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	for i := range 1000 {
		if _, _, err := c.Token(context.Background(), e, userReq(fmt.Sprint("u", i), clock)); err != nil {
			t.Fatal(err)
		}
		if c.Len() > 100 {
			t.Fatalf("cache holds %d entries, bound is 100", c.Len())
		}
	}
}

func TestCacheDrop(t *testing.T) {
	clock := newClock()
	src := &countingSource{now: clock.Now, expiry: func(n time.Time) time.Time { return n.Add(time.Hour) }}
	c := NewCache(CacheOptions{Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	req := userReq("alice", clock)
	first, _, _ := c.Token(context.Background(), e, req)
	if !c.Drop(e, req, "an older token") {
		t.Error("a request refused with an older token may retry: the cache holds a newer one")
	}
	if _, out, _ := c.Token(context.Background(), e, req); out != OutcomeHit {
		t.Fatalf("Drop of an older token dropped the current one (outcome %s)", out)
	}
	if !c.Drop(e, req, first.Value) {
		t.Fatal("did not drop the refused token")
	}
	second, out, _ := c.Token(context.Background(), e, req)
	if out != OutcomeMiss || second.Value == first.Value {
		t.Fatalf("after Drop: %s %q, want a miss and a new token", out, second.Value)
	}
	if c.Drop(e, req, second.Value) {
		t.Error("dropped the same key twice within the minimum interval")
	}
	if _, out, _ := c.Token(context.Background(), e, req); out != OutcomeHit {
		t.Error("a declined Drop removed the token")
	}
	clock.Add(minDropInterval)
	if !c.Drop(e, req, second.Value) {
		t.Error("did not drop after the minimum interval")
	}
}

// warmCache returns a cache holding one token, with the entry and request
// that hit it.
func warmCache(tb testing.TB) (*Cache, *Binding, *Request) {
	tb.Helper()
	clock := newClock()
	src := &countingSource{now: clock.Now, expiry: func(n time.Time) time.Time { return n.Add(time.Hour) }}
	c := NewCache(CacheOptions{Now: clock.Now})
	e := &Binding{Name: "idp", Source: src, PerCaller: true}
	req := userReq("alice", clock, "orders:read", "orders:write")
	if _, _, err := c.Token(context.Background(), e, req); err != nil {
		tb.Fatal(err)
	}
	return c, e, req
}

func TestCacheHitAllocatesNothing(t *testing.T) {
	c, e, req := warmCache(t)
	ctx := context.Background()
	if n := testing.AllocsPerRun(100, func() { _, _, _ = c.Token(ctx, e, req) }); n != 0 {
		t.Errorf("a cache hit allocates %v times, want 0", n)
	}
}

func BenchmarkCacheHit(b *testing.B) {
	c, e, req := warmCache(b)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, out, _ := c.Token(ctx, e, req); out != OutcomeHit {
			b.Fatal(out)
		}
	}
}
