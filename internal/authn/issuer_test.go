package authn

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"
)

func TestRotatedKeyAcceptedAfterOneRefetch(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	v := newTestVerifier(t, testOptions(idp, newTestClock()))
	before := idp.jwksHits.Load()

	idp.publish(key("rsa1"), key("rsa2"))
	p, err := v.Verify(context.Background(), key("rsa2").sign(nil, claims(idp.URL)))
	if err != nil {
		t.Fatalf("Verify with the rotated key: %v", err)
	}
	if p.Subject != "alice" {
		t.Errorf("Subject: got %q, want %q", p.Subject, "alice")
	}
	if got, want := idp.jwksHits.Load()-before, int64(1); got != want {
		t.Errorf("JWKS requests: got %d, want %d", got, want)
	}
}

// unknownKidToken has a random kid; its signature is never checked, since
// no key has that kid, so any bytes do.
func unknownKidToken(iss string, i int) string {
	return b64(fields{"alg": "RS256", "kid": fmt.Sprintf("random-%d", i), "typ": "at+jwt"}) +
		"." + b64(claims(iss)) + "." + b64([]byte("not a signature"))
}

func TestUnknownKidsRefetchAtMostOncePerInterval(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	clock := newTestClock()
	opts := testOptions(idp, clock)
	v := newTestVerifier(t, opts)
	start := idp.jwksHits.Load()

	// 1000 unknown kids from 8 goroutines at once.
	var wg sync.WaitGroup
	errs := make(chan error, 1000)
	for g := range 8 {
		wg.Go(func() {
			for i := g; i < 1000; i += 8 {
				_, err := v.Verify(context.Background(), unknownKidToken(idp.URL, i))
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if !errors.Is(err, ErrInvalidToken) || !strings.HasPrefix(reasonOf(err), "unknown kid") {
			t.Fatalf("Verify: got %v, want an unknown kid error", err)
		}
	}

	steps := []struct {
		name    string
		advance time.Duration
		want    int64 // JWKS requests since the start
	}{
		{name: "1000 random kids", advance: 0, want: 1},
		{name: "one more within the interval", advance: opts.MinRefetchInterval - time.Second, want: 1},
		{name: "one more after the interval", advance: time.Second, want: 2},
		{name: "yet another right after", advance: time.Millisecond, want: 2},
	}
	for i, st := range steps {
		t.Run(st.name, func(t *testing.T) {
			clock.Add(st.advance)
			if i > 0 {
				_, _ = v.Verify(context.Background(), unknownKidToken(idp.URL, 1000+i))
			}
			if got := idp.jwksHits.Load() - start; got != st.want {
				t.Errorf("JWKS requests: got %d, want %d", got, st.want)
			}
		})
	}
}

func TestConcurrentUnknownKidCallersShareOneRefetch(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	v := newTestVerifier(t, testOptions(idp, newTestClock()))
	start := idp.jwksHits.Load()

	const callers = 20
	tokens := make([]string, callers)
	for i := range tokens {
		tokens[i] = key("rsa2").sign(nil, claims(idp.URL).with(fields{"jti": fmt.Sprint(i)}))
	}
	// Hold the refetch at the IdP until every caller is waiting for it.
	gate := make(chan struct{})
	idp.setGate(gate)
	idp.publish(key("rsa1"), key("rsa2"))

	var wg sync.WaitGroup
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() { _, errs[i] = v.Verify(context.Background(), tokens[i]) })
	}
	waitFor(t, "the refetch to reach the IdP", func() bool { return idp.jwksHits.Load() > start })
	waitFor(t, "all callers to wait", func() bool { return waiters(v) == callers })
	close(gate)
	wg.Wait()

	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if got, want := idp.jwksHits.Load()-start, int64(1); got != want {
		t.Errorf("JWKS requests: got %d, want %d", got, want)
	}
}

// waiters counts the goroutines blocked in a refetch of v's only issuer,
// as counted by refetch.
func waiters(v *Verifier) int { return int(v.order[0].waiting.Load()) }

func TestKeysUnavailable(t *testing.T) {
	t.Run("never fetched", func(t *testing.T) {
		idp := newTestIdP(t, key("rsa1"))
		idp.down.Store(true)
		v := newVerifierNoWait(t, testOptions(idp, newTestClock()))
		waitFor(t, "a failed fetch", func() bool { return idp.jwksHits.Load() > 0 })

		_, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL)))
		if !errors.Is(err, ErrKeysUnavailable) || errors.Is(err, ErrInvalidToken) {
			t.Fatalf("Verify: got %v, want ErrKeysUnavailable only", err)
		}
		if got, want := reasonOf(err), "issuer keys unavailable; try again later"; got != want {
			t.Errorf("Reason: got %q, want %q", got, want)
		}
	})
	t.Run("fetch failing and kid unknown", func(t *testing.T) {
		idp := newTestIdP(t, key("rsa1"))
		v := newTestVerifier(t, testOptions(idp, newTestClock()))
		idp.down.Store(true)

		_, err := v.Verify(context.Background(), key("rsa2").sign(nil, claims(idp.URL)))
		if !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("Verify with an unknown kid: got %v, want ErrKeysUnavailable", err)
		}
		// A rate-limited retry still knows why the kid is unknown.
		_, err = v.Verify(context.Background(), key("rsa2").sign(nil, claims(idp.URL).with(fields{"jti": "2"})))
		if !errors.Is(err, ErrKeysUnavailable) {
			t.Fatalf("Verify again: got %v, want ErrKeysUnavailable", err)
		}
		// Keys fetched before the outage still verify.
		if _, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL))); err != nil {
			t.Errorf("Verify with a known key: %v", err)
		}
	})
}

func TestReadyFollowsTheIdP(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	idp.down.Store(true)
	opts := testOptions(idp, newTestClock())
	opts.MinRefetchInterval = 50 * time.Millisecond
	v := newVerifierNoWait(t, opts)

	if err := v.Ready(); err == nil || !strings.Contains(err.Error(), idp.URL) {
		t.Fatalf("Ready at start: got %v, want an error naming %s", err, idp.URL)
	}
	waitFor(t, "Ready to report the 503", func() bool {
		err := v.Ready()
		return err != nil && strings.Contains(err.Error(), idp.URL) && strings.Contains(err.Error(), "503")
	})
	if got := idp.jwksHits.Load(); got > 3 {
		t.Errorf("JWKS requests while down: got %d, want a few (backoff)", got)
	}

	idp.down.Store(false)
	waitFor(t, "Ready", func() bool { return v.Ready() == nil })
	if _, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL))); err != nil {
		t.Errorf("Verify once ready: %v", err)
	}
}

func TestDiscovery(t *testing.T) {
	tests := []struct {
		name   string
		suffix string // appended to the server's URL to make the issuer
	}{
		{name: "issuer without trailing slash", suffix: ""},
		{name: "issuer with trailing slash", suffix: "/"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp := newTestIdP(t, key("rsa1"))
			iss := idp.URL + tc.suffix
			idp.setDocIssuer(iss)
			opts := testOptions(idp, newTestClock())
			opts.Issuers[0].Issuer = iss
			opts.Issuers[0].JWKSURI = ""
			v := newTestVerifier(t, opts)

			if _, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(iss))); err != nil {
				t.Errorf("Verify: %v", err)
			}
			if got, want := idp.discoveryHits.Load(), int64(1); got != want {
				t.Errorf("discovery requests: got %d, want %d", got, want)
			}
			if got := idp.otherHits.Load(); got != 0 {
				t.Errorf("requests to other paths (a doubled slash?): got %d, want 0", got)
			}
		})
	}
}

func TestDiscoveryIssuerMismatch(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	idp.setDocIssuer(idp.URL + "/") // the config says idp.URL
	opts := testOptions(idp, newTestClock())
	opts.Issuers[0].JWKSURI = ""
	v := newVerifierNoWait(t, opts)
	waitFor(t, "discovery", func() bool { return v.Ready() != nil && strings.Contains(v.Ready().Error(), "does not equal") })

	_, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL)))
	if !errors.Is(err, ErrKeysUnavailable) {
		t.Errorf("Verify: got %v, want ErrKeysUnavailable", err)
	}
	if got := idp.jwksHits.Load(); got != 0 {
		t.Errorf("JWKS requests: got %d, want 0 (the document's jwks_uri must not be trusted)", got)
	}
}

// tickedOptions replaces the refresh ticker with a channel the test
// drives, and reports each fetch's result on fetched.
func tickedOptions(opts Options) (o Options, tick chan time.Time, fetched chan error) {
	tick, fetched = make(chan time.Time), make(chan error, 100)
	opts.refreshTick = tick
	opts.OnJWKSFetch = func(_ string, err error) { fetched <- err }
	return opts, tick, fetched
}

// refresh makes the background loop refresh once and waits for the result.
// Results of earlier fetches (unknown-kid refetches) are dropped first.
func refresh(tick chan time.Time, fetched chan error) error {
	for len(fetched) > 0 {
		<-fetched
	}
	tick <- time.Now()
	return <-fetched
}

// TestBackgroundRefresh: one fetch per refresh, and unknown-kid refetches
// do not add refreshes of their own.
func TestBackgroundRefresh(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	clock := newTestClock()
	opts, tick, fetched := tickedOptions(testOptions(idp, clock))
	v := newTestVerifier(t, opts)
	<-fetched // the first fetch
	for i := range 3 {
		clock.Add(opts.MinRefetchInterval)
		_, _ = v.Verify(context.Background(), unknownKidToken(idp.URL, i))
		<-fetched
	}
	start := idp.jwksHits.Load()
	for range 3 {
		if err := refresh(tick, fetched); err != nil {
			t.Fatal(err)
		}
	}
	if got := idp.jwksHits.Load() - start; got != 3 {
		t.Errorf("JWKS requests for 3 refreshes: got %d, want 3", got)
	}
	select {
	case err := <-fetched:
		t.Errorf("a fetch nobody asked for (%v)", err)
	default:
	}
}

// TestRemovedKeyRevokesCachedTokens: a token verified with a key the
// issuer later withdraws (a leaked key, say) is refused on its next use,
// whatever exp it claims; tokens of the keys that remain keep working.
func TestRemovedKeyRevokesCachedTokens(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"), key("rsa2"))
	opts, tick, fetched := tickedOptions(testOptions(idp, newTestClock()))
	v := newTestVerifier(t, opts)
	<-fetched
	far := fields{"exp": 4102444800} // 2100
	compromised := key("rsa2").sign(nil, claims(idp.URL).with(far))
	kept := key("rsa1").sign(nil, claims(idp.URL).with(far))
	ctx := context.Background()
	for _, tok := range []string{compromised, kept} {
		if _, err := v.Verify(ctx, tok); err != nil {
			t.Fatalf("Verify before the removal: %v", err)
		}
	}
	before, _ := v.Verify(ctx, kept)

	// A refresh that only adds a key keeps what is cached.
	idp.publish(key("rsa1"), key("rsa2"), key("ec1"))
	if err := refresh(tick, fetched); err != nil {
		t.Fatal(err)
	}
	if p, err := v.Verify(ctx, kept); err != nil || p != before {
		t.Fatalf("after a key was added: %v; served from the cache: %v", err, p == before)
	}

	idp.publish(key("rsa1"), key("ec1"))
	if err := refresh(tick, fetched); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, compromised); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("the token of the removed key: got %v, want ErrInvalidToken", err)
	}
	if p, err := v.Verify(ctx, kept); err != nil || p == before {
		t.Errorf("the token of a remaining key: %v; verified again: %v", err, p != before)
	}
	if _, err := v.Verify(ctx, compromised); !errors.Is(err, ErrInvalidToken) {
		t.Errorf("the token of the removed key, again: got %v, want ErrInvalidToken", err)
	}

	// Another key published under a kept kid replaces it: the old key is
	// gone as much as if its kid had gone.
	idp.publish(key("evil").withKid("rsa1"), key("ec1"))
	if err := refresh(tick, fetched); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(ctx, kept); reasonOf(err) != "signature invalid" {
		t.Errorf("the token of a replaced key: got %v, want signature invalid", err)
	}
}

func TestKeySetKeepsOnlyPublicSignatureKeys(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	must(err)
	withField := func(k jwk.Key, name string, value any) jwk.Key {
		c, err := k.Clone()
		must(err)
		must(c.Set(name, value))
		return c
	}
	fromRaw := func(raw any, kid string) jwk.Key {
		k, err := jwk.FromRaw(raw)
		must(err)
		must(k.Set(jwk.KeyIDKey, kid))
		return k
	}
	tests := []struct {
		name string
		key  jwk.Key
		keep bool
	}{
		{name: "RSA signature key", key: key("rsa1").pub, keep: true},
		{name: "RSA private key, kept as its public half", key: fromRaw(key("rsa2").priv, "priv"), keep: true},
		{name: "use enc", key: withField(key("rsa1").pub, jwk.KeyUsageKey, "enc")},
		{name: "key_ops without verify", key: withField(key("ec1").pub, jwk.KeyOpsKey, jwk.KeyOperationList{jwk.KeyOpEncrypt})},
		{name: "key_ops with verify", key: withField(key("ec1").pub, jwk.KeyOpsKey, jwk.KeyOperationList{jwk.KeyOpVerify}), keep: true},
		{name: "symmetric key", key: fromRaw([]byte("a shared secret of 32 bytes....."), "oct")},
		{name: "RSA 1024", key: fromRaw(&small.PublicKey, "small")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			set := jwk.NewSet()
			must(set.AddKey(tc.key))
			ks := newKeySet(set, nil, discardLogger())
			if got := ks.len() == 1; got != tc.keep {
				t.Errorf("kept: got %v, want %v", got, tc.keep)
			}
			if tc.keep {
				if _, isPriv := ks.all[0].key.(*rsa.PrivateKey); isPriv {
					t.Errorf("kept a private key")
				}
			}
		})
	}
}

func TestBackgroundRefreshFailureKeepsKeys(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	opts, tick, fetched := tickedOptions(testOptions(idp, newTestClock()))
	v := newTestVerifier(t, opts)
	<-fetched

	idp.down.Store(true)
	if err := refresh(tick, fetched); err == nil {
		t.Fatal("a refresh from a down IdP succeeded")
	}
	if err := v.Ready(); err != nil {
		t.Errorf("Ready after a failed refresh: got %v, want nil (keys were fetched once)", err)
	}
	if _, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL))); err != nil {
		t.Errorf("Verify with the previous keys: %v", err)
	}
}
