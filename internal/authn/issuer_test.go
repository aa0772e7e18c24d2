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
func waiters(v *Verifier) int {
	is := v.order[0]
	is.mu.Lock()
	defer is.mu.Unlock()
	if is.pending == nil {
		return 0
	}
	return is.pending.waiters
}

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

// jwk.Cache (httprc v1) schedules a new, perpetual refresh cycle after every
// fetch it makes, Refresh included: refetches must not multiply the
// background refreshes.
func TestRefetchesDoNotMultiplyBackgroundRefreshes(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for background refreshes")
	}
	idp := newTestIdP(t, key("rsa1"))
	clock := newTestClock()
	opts := testOptions(idp, clock)
	opts.RefreshInterval = time.Second
	v := newTestVerifier(t, opts)
	for i := range 5 {
		clock.Add(opts.MinRefetchInterval)
		_, _ = v.Verify(context.Background(), unknownKidToken(idp.URL, i))
	}
	start := idp.jwksHits.Load()
	time.Sleep(3500 * time.Millisecond)
	// One cycle refreshes every 1–2s (httprc checks once per second).
	if got := idp.jwksHits.Load() - start; got < 1 || got > 3 {
		t.Errorf("background JWKS requests in 3.5s: got %d, want 1 to 3", got)
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
			ks := newKeySet(set, discardLogger())
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
	if testing.Short() {
		t.Skip("waits for a background refresh")
	}
	idp := newTestIdP(t, key("rsa1"))
	opts := testOptions(idp, newTestClock())
	opts.RefreshInterval = time.Second
	v := newTestVerifier(t, opts)

	idp.down.Store(true)
	waitFor(t, "a failed background refresh", func() bool { return v.order[0].fetchErr() != nil })
	if err := v.Ready(); err != nil {
		t.Errorf("Ready after a failed refresh: got %v, want nil (keys were fetched once)", err)
	}
	if _, err := v.Verify(context.Background(), key("rsa1").sign(nil, claims(idp.URL))); err != nil {
		t.Errorf("Verify with the previous keys: %v", err)
	}
}
