package tokens

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"
)

func writePEM(t *testing.T, path string, key any) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

func writeJWK(t *testing.T, path string, key any, kid string) {
	t.Helper()
	k, err := jwk.FromRaw(key)
	if err != nil {
		t.Fatal(err)
	}
	_ = k.Set(jwk.KeyIDKey, kid)
	b, _ := json.Marshal(k)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestSelfSignedToken(t *testing.T) {
	clock := newClock()
	var logs bytes.Buffer
	s, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://audgate.internal", TTL: 5 * time.Minute,
		Now: clock.Now, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "ephemeral key") {
		t.Errorf("no warning about the ephemeral key; logs: %s", logs.String())
	}
	req := userReq("alice", clock, "orders:read", "orders:write")
	req.ClientID = "spa"
	req.Claims = map[string]any{"tenant": "acme"}
	tok, err := s.Token(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := jws.Parse([]byte(tok.Value))
	if err != nil {
		t.Fatal(err)
	}
	h := msg.Signatures()[0].ProtectedHeaders()
	if h.Type() != "at+jwt" || h.KeyID() == "" || h.Algorithm().String() != "ES256" {
		t.Errorf("header typ=%q kid=%q alg=%q; want at+jwt, a kid, ES256", h.Type(), h.KeyID(), h.Algorithm())
	}
	parsed, err := jwt.Parse([]byte(tok.Value), jwt.WithKeySet(s.PublicKeys()), jwt.WithClock(jwt.ClockFunc(clock.Now)),
		jwt.WithIssuer("https://audgate.internal"), jwt.WithAudience("https://orders"))
	if err != nil {
		t.Fatalf("token does not verify against the published keys: %v", err)
	}
	claims, _ := parsed.AsMap(context.Background())
	for k, want := range map[string]any{"sub": "alice", "scope": "orders:read orders:write", "client_id": "spa", "tenant": "acme"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %v", k, claims[k], want)
		}
	}
	if act, _ := claims["act"].(map[string]any); act["sub"] != "https://audgate.internal" {
		t.Errorf("act = %v, want sub of the gateway", claims["act"])
	}
	if parsed.JwtID() == "" || parsed.IssuedAt().IsZero() {
		t.Error("jti or iat missing")
	}
	if got, want := parsed.Expiration(), clock.Now().Add(5*time.Minute); !got.Equal(want) {
		t.Errorf("exp = %v, want %v", got, want)
	}
	if tok2, _ := s.Token(context.Background(), req); tok2.Value == tok.Value {
		t.Error("two tokens share a jti")
	}
}

func TestSelfSignedExpiry(t *testing.T) {
	clock := newClock()
	s, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://gw", TTL: time.Hour, Now: clock.Now, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	req := userReq("alice", clock)
	req.SubjectExpiry = clock.Now().Add(2 * time.Minute)
	tok, err := s.Token(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	if !tok.Expiry.Equal(req.SubjectExpiry) {
		t.Errorf("exp = %v, want the caller's exp %v", tok.Expiry, req.SubjectExpiry)
	}
	req.SubjectExpiry = clock.Now().Add(-time.Second)
	if _, err := s.Token(context.Background(), req); !errors.Is(err, ErrSubjectExpired) {
		t.Errorf("err = %v, want ErrSubjectExpired", err)
	}
}

func TestSelfSignedKeysFromFiles(t *testing.T) {
	dir := t.TempDir()
	old, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	newer, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	writeJWK(t, filepath.Join(dir, "a-old.json"), old, "old-key")
	writePEM(t, filepath.Join(dir, "b-new.pem"), newer)
	past := time.Now().Add(-time.Hour)
	_ = os.Chtimes(filepath.Join(dir, "a-old.json"), past, past)
	_ = os.WriteFile(filepath.Join(dir, ".hidden"), []byte("not a key"), 0o600)

	s, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://gw", KeysPath: dir})
	if err != nil {
		t.Fatal(err)
	}
	if n := s.PublicKeys().Len(); n != 2 {
		t.Fatalf("published %d keys, want 2", n)
	}
	for i := range 2 {
		k, _ := s.PublicKeys().Key(i)
		var raw any
		_ = k.Raw(&raw)
		if _, ok := raw.(*ecdsa.PublicKey); !ok {
			t.Errorf("published key %d is %T, want a public key only", i, raw)
		}
	}
	tok, err := s.Token(context.Background(), &Request{Audience: "a", Subject: "s"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := jws.Verify([]byte(tok.Value), jws.WithKey(jwa.ES256, &newer.PublicKey)); err != nil {
		t.Errorf("token not signed by the newest key: %v", err)
	}
}

func TestSelfSignedKeyErrors(t *testing.T) {
	dir := t.TempDir()
	rsaSmall, _ := rsa.GenerateKey(rand.Reader, 1024)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	writePEM(t, filepath.Join(dir, "small.pem"), rsaSmall)
	writePEM(t, filepath.Join(dir, "ed.pem"), ed)
	writePEM(t, filepath.Join(dir, "p384.pem"), p384)
	pub, _ := x509.MarshalPKIXPublicKey(&p384.PublicKey)
	_ = os.WriteFile(filepath.Join(dir, "public.pem"), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}), 0o600)
	_ = os.WriteFile(filepath.Join(dir, "garbage.pem"), []byte("hello"), 0o600)
	emptyDir := t.TempDir()
	tests := []struct {
		name, path, alg, want string
	}{
		{"rsa too small", filepath.Join(dir, "small.pem"), "RS256", "too small"},
		{"ed25519 for ES256", filepath.Join(dir, "ed.pem"), "ES256", "does not fit"},
		{"p384 for ES256", filepath.Join(dir, "p384.pem"), "ES256", "does not fit"},
		{"public key only", filepath.Join(dir, "public.pem"), "ES256", "private"},
		{"garbage", filepath.Join(dir, "garbage.pem"), "ES256", "parse key"},
		{"missing", filepath.Join(dir, "nope.pem"), "ES256", "no such file"},
		{"empty directory", emptyDir, "ES256", "no key files"},
		{"unknown algorithm", "", "HS256", "not supported"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://gw", KeysPath: tc.path, Algorithm: tc.alg, Logger: slog.New(slog.DiscardHandler)})
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), `"self"`) {
				t.Fatalf("err = %v, want it to name the source and contain %q", err, tc.want)
			}
		})
	}
	for _, alg := range []string{"ES256", "ES384", "RS256", "PS256", "EdDSA"} {
		t.Run("ephemeral "+alg, func(t *testing.T) {
			s, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://gw", Algorithm: alg, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			tok, err := s.Token(context.Background(), &Request{Audience: "a", Subject: "s"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := jwt.Parse([]byte(tok.Value), jwt.WithKeySet(s.PublicKeys())); err != nil {
				t.Errorf("does not verify: %v", err)
			}
		})
	}
}

func BenchmarkSelfSignedToken(b *testing.B) {
	s, err := NewSelfSigned(SelfSignedOptions{Name: "self", Issuer: "https://gw", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	req := &Request{Audience: "a", Subject: "s", Scopes: []string{"x"}}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := s.Token(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}
