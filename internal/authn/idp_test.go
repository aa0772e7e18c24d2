package authn

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
)

// This file holds the test fixtures: signing keys made in the test, a
// loopback IdP that serves discovery and JWKS and counts requests, a token
// builder and a settable clock.

const testAudience = "https://gateway.example.com"

// t0 is the tests' "now": tokens are made relative to it, and the
// Verifier's clock starts there.
var t0 = time.Unix(1_800_000_000, 0)

// testKey is a signing key; pub is its public JWK as the IdP publishes it.
type testKey struct {
	alg  jwa.SignatureAlgorithm
	kid  string
	priv any // a crypto.Signer, or []byte for HMAC
	pub  jwk.Key
}

func newTestKey(alg jwa.SignatureAlgorithm, kid string, withAlg bool) testKey {
	var priv crypto.Signer
	var err error
	switch alg {
	case jwa.RS256:
		priv, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.ES256:
		priv, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.EdDSA:
		_, priv, err = ed25519.GenerateKey(rand.Reader)
	}
	if err != nil {
		panic(err)
	}
	pub, err := jwk.FromRaw(priv.Public())
	if err != nil {
		panic(err)
	}
	must(pub.Set(jwk.KeyIDKey, kid))
	must(pub.Set(jwk.KeyUsageKey, "sig"))
	if withAlg {
		must(pub.Set(jwk.AlgorithmKey, alg))
	}
	return testKey{alg: alg, kid: kid, priv: priv, pub: pub}
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// The keys are made once per test binary: RSA key generation is slow,
// more so under the race detector.
var testKeys = sync.OnceValue(func() map[string]testKey {
	return map[string]testKey{
		"rsa1": newTestKey(jwa.RS256, "rsa1", true), // its JWK says alg RS256
		"rsa2": newTestKey(jwa.RS256, "rsa2", true), // the key after a rotation
		"evil": newTestKey(jwa.RS256, "evil", true), // never published by the IdP as itself
		"ec1":  newTestKey(jwa.ES256, "ec1", false), // its JWK has no alg
		"ed1":  newTestKey(jwa.EdDSA, "ed1", true),
	}
})

func key(name string) testKey { return testKeys()[name] }

// withKid returns k's private key under another kid, and its JWK likewise.
func (k testKey) withKid(kid string) testKey {
	pub, err := k.pub.Clone()
	must(err)
	must(pub.Set(jwk.KeyIDKey, kid))
	k.kid, k.pub = kid, pub
	return k
}

// fields are a JSON object to build a header or a claim set from; a nil
// value removes the field.
type fields map[string]any

func (f fields) with(over fields) fields {
	out := fields{}
	for k, v := range f {
		out[k] = v
	}
	for k, v := range over {
		if v == nil {
			delete(out, k)
			continue
		}
		out[k] = v
	}
	return out
}

func b64(v any) string {
	b, ok := v.([]byte)
	if !ok {
		var err error
		b, err = json.Marshal(v)
		must(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// claims are a valid access token's claims for issuer iss.
func claims(iss string) fields {
	return fields{
		"iss":       iss,
		"sub":       "alice",
		"aud":       testAudience,
		"client_id": "spa",
		"scope":     "orders:read orders:write",
		"iat":       t0.Unix(),
		"exp":       t0.Add(5 * time.Minute).Unix(),
		"jti":       "jti-1",
	}
}

// sign builds a JWS compact serialization with jwx's signer; hdr overrides
// the default header (alg and kid of k, typ at+jwt).
func (k testKey) sign(hdr, payload fields) string {
	h := fields{"alg": k.alg.String(), "kid": k.kid, "typ": "at+jwt"}.with(hdr)
	input := b64(h) + "." + b64(payload)
	alg, _ := h["alg"].(string)
	signer, err := jws.NewSigner(jwa.SignatureAlgorithm(alg))
	must(err)
	sig, err := signer.Sign([]byte(input), k.priv)
	must(err)
	return input + "." + b64(sig)
}

// testIdP is an identity provider on loopback: discovery document, JWKS,
// request counters, and switches to make it fail.
type testIdP struct {
	*httptest.Server
	jwksHits      atomic.Int64
	discoveryHits atomic.Int64
	otherHits     atomic.Int64 // requests to any other path
	down          atomic.Bool  // answer 503 to everything

	mu        sync.Mutex
	jwks      []byte
	docIssuer string        // the discovery document's issuer; default the server's URL
	gate      chan struct{} // when set, JWKS requests wait until it is closed
}

func newTestIdP(t testing.TB, keys ...testKey) *testIdP {
	t.Helper()
	p := &testIdP{}
	p.Server = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.Close)
	p.docIssuer = p.URL
	p.publish(keys...)
	return p
}

func (p *testIdP) publish(keys ...testKey) {
	set := jwk.NewSet()
	for _, k := range keys {
		must(set.AddKey(k.pub))
	}
	b, err := json.Marshal(set)
	must(err)
	p.mu.Lock()
	p.jwks = b
	p.mu.Unlock()
}

func (p *testIdP) setDocIssuer(iss string) {
	p.mu.Lock()
	p.docIssuer = iss
	p.mu.Unlock()
}

func (p *testIdP) setGate(g chan struct{}) {
	p.mu.Lock()
	p.gate = g
	p.mu.Unlock()
}

func (p *testIdP) serve(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Path {
	case "/.well-known/openid-configuration":
		p.discoveryHits.Add(1)
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		p.mu.Lock()
		doc := fields{"issuer": p.docIssuer, "jwks_uri": p.URL + "/jwks"}
		p.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		must(json.NewEncoder(w).Encode(doc))
	case "/jwks":
		p.jwksHits.Add(1)
		p.mu.Lock()
		gate, body := p.gate, p.jwks
		p.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if p.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(body)
	default:
		p.otherHits.Add(1)
		http.NotFound(w, r)
	}
}

// testClock is a settable clock, safe for concurrent use.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *testClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func (c *testClock) Set(t time.Time)     { c.ns.Store(t.UnixNano()) }

func discardLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// waitFor polls cond for up to 10s.

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testOptions trusts idp as one issuer with a fixed JWKS URI, on clock.
func testOptions(idp *testIdP, clock *testClock) Options {
	return Options{
		Issuers: []IssuerConfig{{
			Issuer:     idp.URL,
			Audiences:  []string{"https://other.example.com", testAudience},
			JWKSURI:    idp.URL + "/jwks",
			Algorithms: []string{"RS256", "PS256", "ES256", "EdDSA"},
			Leeway:     30 * time.Second,
			Typ:        []string{"at+jwt", ""},
		}},
		MinRefetchInterval: time.Minute,
		HTTPClient:         idp.Client(),
		Logger:             discardLogger(),
		Now:                clock.Now,
	}
}

// newTestVerifier builds a Verifier whose background work ends with the
// test, and waits until its keys are fetched.
func newTestVerifier(t testing.TB, opts Options) *Verifier {
	t.Helper()
	v := newVerifierNoWait(t, opts)
	waitFor(t, "Ready", func() bool { return v.Ready() == nil })
	return v
}

func newVerifierNoWait(t testing.TB, opts Options) *Verifier {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	v, err := New(ctx, opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return v
}

// reasonOf returns the Reason of an *Error, or a description of what err is.
func reasonOf(err error) string {
	if err == nil {
		return ""
	}
	e, ok := err.(*Error)
	if !ok {
		return fmt.Sprintf("not an *Error: %T %v", err, err)
	}
	return e.Reason
}
