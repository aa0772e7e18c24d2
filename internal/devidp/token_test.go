package devidp

import (
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
)

// verify is the gate of every presented token; each way a token can be
// unusable must be refused, for the reason given.
func TestSignerVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	s, err := newSigner("http://127.0.0.1:9400/")
	if err != nil {
		t.Fatal(err)
	}
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	claims := func(edit func(*accessClaims)) accessClaims {
		c, err := s.newClaims("alice", AudienceGateway, "orders:read", UserTokenClientID, now, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			edit(&c)
		}
		return c
	}
	sign := func(c accessClaims) string {
		raw, err := s.sign(c, map[string]any{"permissions": []string{"orders:read"}, "sub": "mallory"})
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	asMap := func(c accessClaims) map[string]any {
		return map[string]any{"iss": c.Issuer, "sub": c.Subject, "aud": c.Audience, "iat": c.IssuedAt, "exp": c.Expiry, "jti": c.ID}
	}
	valid := sign(claims(nil))
	parts := strings.Split(valid, ".")

	tests := []struct {
		name    string
		raw     string
		at      time.Time
		wantErr string // "" for valid
	}{
		{"valid", valid, now, ""},
		{"valid until exp", valid, now.Add(time.Minute - time.Second), ""},
		{"at exp", valid, now.Add(time.Minute), "expired"},
		{"no exp", sign(claims(func(c *accessClaims) { c.Expiry = 0 })), now, "no exp"},
		{"other issuer", sign(claims(func(c *accessClaims) { c.Issuer = "http://127.0.0.1:9401/" })), now, "issuer"},
		{"no sub", sign(claims(func(c *accessClaims) { c.Subject = "" })), now, "no sub"},
		{"another key, our kid", signJWT(t, jwa.RS256, other, s.kid, "at+jwt", asMap(claims(nil))), now, "signature"},
		{"typ JWT", signJWT(t, jwa.RS256, s.key, s.kid, "JWT", asMap(claims(nil))), now, "typ"},
		{"no kid", signJWT(t, jwa.RS256, s.key, "", "at+jwt", asMap(claims(nil))), now, "kid"},
		{"PS256 with our key", signJWT(t, jwa.PS256, s.key, s.kid, "at+jwt", asMap(claims(nil))), now, "alg"},
		{"alg none", base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt","kid":"`+s.kid+`"}`)) + "." + parts[1] + ".", now, "alg"},
		{"payload swapped", parts[0] + "." + strings.Split(sign(claims(func(c *accessClaims) { c.Subject = "bob" })), ".")[1] + "." + parts[2], now, "signature"},
		{"JSON serialization", `{"payload":"` + parts[1] + `","protected":"` + parts[0] + `","signature":"` + parts[2] + `"}`, now, "compact"},
		{"garbage", "garbage", now, "compact"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := s.verify(tc.raw, tc.at)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("verify: %v", err)
				}
				if got.Subject != "alice" || got.All["permissions"] == nil {
					t.Errorf("claims %+v: want sub alice (not overridable by extra claims) and permissions", got.All)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("verify: %v, want an error about %q", err, tc.wantErr)
			}
		})
	}
}
