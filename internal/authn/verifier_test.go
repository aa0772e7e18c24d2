package authn

import (
	"context"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwe"
)

// verifyCase is one token and what Verify must say about it.
type verifyCase struct {
	name       string
	token      string
	wantReason string // "" = accepted
	wantErr    error  // default ErrInvalidToken when wantReason is set
	check      func(t *testing.T, p *Principal)
}

func TestVerify(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"), key("ec1"), key("ed1"))
	clock := newTestClock()
	v := newTestVerifier(t, testOptions(idp, clock))
	ctx := context.Background()

	var cases []verifyCase
	cases = append(cases, acceptedCases(idp.URL)...)
	cases = append(cases, algCases(idp.URL)...)
	cases = append(cases, signatureCases(idp.URL)...)
	cases = append(cases, claimCases(idp.URL)...)
	cases = append(cases, serializationCases(idp.URL)...)

	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := v.Verify(ctx, tc.token)
			if got := reasonOf(err); got != tc.wantReason {
				t.Fatalf("Verify: got reason %q (err %v), want %q", got, err, tc.wantReason)
			}
			if tc.wantReason == "" {
				if tc.check != nil {
					tc.check(t, p)
				}
				return
			}
			wantErr := tc.wantErr
			if wantErr == nil {
				wantErr = ErrInvalidToken
			}
			if !errors.Is(err, wantErr) {
				t.Errorf("errors.Is(%v, %v) = false", err, wantErr)
			}
			if p != nil {
				t.Errorf("got a Principal with an error")
			}
			// Reasons carry no claim value other than iss.
			if strings.Contains(err.Error(), "alice") || (len(tc.token) > 20 && strings.Contains(err.Error(), tc.token)) {
				t.Errorf("error %q leaks the token or its claims", err)
			}
		})
	}
}

func acceptedCases(iss string) []verifyCase {
	c := claims(iss)
	rs := key("rsa1").sign(nil, c)
	return []verifyCase{
		{name: "RS256 with scope string", token: rs, check: func(t *testing.T, p *Principal) {
			want := &Principal{
				Issuer:    iss,
				Subject:   "alice",
				ClientID:  "spa",
				Audience:  []string{testAudience},
				Scopes:    []string{"orders:read", "orders:write"},
				ExpiresAt: t0.Add(5 * time.Minute),
				TokenHash: sha256.Sum256([]byte(rs)),
			}
			got := &Principal{Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID,
				Audience: p.Audience, Scopes: p.Scopes, ExpiresAt: p.ExpiresAt, TokenHash: p.TokenHash}
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %+v\nwant %+v", got, want)
			}
			claims, err := p.Claims()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := claims["exp"], json.Number("1800000300"); got != want {
				t.Errorf("Claims[exp]: got %#v, want %#v", got, want)
			}
			if got, want := claims["jti"], "jti-1"; got != want {
				t.Errorf("Claims[jti]: got %#v, want %#v", got, want)
			}
		}},
		{name: "ES256 with scp array", token: key("ec1").sign(nil, c.with(fields{"scope": nil, "scp": []string{"a", "b"}})),
			check: wantScopes("a", "b")},
		{name: "EdDSA with scp string and azp", token: key("ed1").sign(nil, c.with(fields{"scope": nil, "scp": "a b", "client_id": nil, "azp": "web"})),
			check: func(t *testing.T, p *Principal) {
				wantScopes("a", "b")(t, p)
				if p.ClientID != "web" {
					t.Errorf("ClientID: got %q, want %q", p.ClientID, "web")
				}
			}},
		{name: "no kid: the key of the alg's type is tried", token: key("rsa1").sign(fields{"kid": nil}, c)},
		{name: "aud array containing an accepted one", token: key("rsa1").sign(nil, c.with(fields{"aud": []string{"https://x", testAudience}})),
			check: func(t *testing.T, p *Principal) {
				if want := []string{"https://x", testAudience}; !reflect.DeepEqual(p.Audience, want) {
					t.Errorf("Audience: got %q, want %q", p.Audience, want)
				}
			}},
		{name: "expired within leeway", token: key("rsa1").sign(nil, c.with(fields{"exp": t0.Add(-10 * time.Second).Unix()}))},
		{name: "nbf within leeway", token: key("rsa1").sign(nil, c.with(fields{"nbf": t0.Add(10 * time.Second).Unix()}))},
		{name: "fractional exp", token: key("rsa1").sign(nil, c.with(fields{"exp": float64(t0.Unix()) + 60.5}))},
		{name: "typ application/at+jwt", token: key("rsa1").sign(fields{"typ": "application/at+jwt"}, c)},
		{name: "typ AT+JWT", token: key("rsa1").sign(fields{"typ": "AT+JWT"}, c)},
		{name: "typ absent", token: key("rsa1").sign(fields{"typ": nil}, c)},
	}
}

func wantScopes(want ...string) func(t *testing.T, p *Principal) {
	return func(t *testing.T, p *Principal) {
		if !reflect.DeepEqual(p.Scopes, want) {
			t.Errorf("Scopes: got %q, want %q", p.Scopes, want)
		}
	}
}

func algCases(iss string) []verifyCase {
	c := claims(iss)
	var cases []verifyCase
	valid := key("rsa1").sign(nil, c)
	_, rest, _ := strings.Cut(valid, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		h := b64(fields{"alg": alg, "typ": "at+jwt"})
		want := `alg "` + alg + `" not allowed`
		cases = append(cases,
			verifyCase{name: "alg " + alg + " empty signature", token: h + "." + payload + ".", wantReason: want},
			verifyCase{name: "alg " + alg + " with signature", token: h + "." + payload + "." + sig, wantReason: want})
	}
	pub := &key("rsa1").priv.(*rsa.PrivateKey).PublicKey
	der, err := x509.MarshalPKIXPublicKey(pub)
	must(err)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkKey, err := json.Marshal(key("rsa1").pub)
	must(err)
	hs := func(secret []byte) string {
		return testKey{alg: jwa.HS256, kid: "rsa1", priv: secret}.sign(nil, c)
	}
	return append(cases, []verifyCase{
		{name: "HS256 keyed with the RSA public key PEM", token: hs(pemKey), wantReason: `alg "HS256" not allowed`},
		{name: "HS256 keyed with the RSA public key JWK", token: hs(jwkKey), wantReason: `alg "HS256" not allowed`},
		{name: "alg not in the issuer's allow-list", token: key("rsa1").sign(fields{"alg": "RS384"}, c), wantReason: `alg "RS384" not allowed`},
		{name: "alg missing", token: b64(fields{"kid": "rsa1"}) + "." + payload + "." + sig, wantReason: "alg header required"},
		{name: "crit header", token: key("rsa1").sign(fields{"crit": []string{"exp"}, "exp": 1}, c), wantReason: "token has a crit header"},
		{name: "crit null", token: key("rsa1").sign(fields{"crit": json.RawMessage("null")}, c), wantReason: "token has a crit header"},
		{name: "typ JWT+foo", token: key("rsa1").sign(fields{"typ": "JWT+foo"}, c), wantReason: `typ "JWT+foo" not accepted`},
		{name: "typ dpop+jwt", token: key("rsa1").sign(fields{"typ": "dpop+jwt"}, c), wantReason: `typ "dpop+jwt" not accepted`},
		{name: "typ JWT not listed", token: key("rsa1").sign(fields{"typ": "JWT"}, c), wantReason: `typ "JWT" not accepted`},
		{name: "kid not a string", token: key("rsa1").sign(fields{"kid": 7}, c), wantReason: "kid header must be a string"},
	}...)
}

func signatureCases(iss string) []verifyCase {
	c := claims(iss)
	valid := key("rsa1").sign(nil, c)
	h, rest, _ := strings.Cut(valid, ".")
	payload, sig, _ := strings.Cut(rest, ".")
	tampered := h + "." + b64(c.with(fields{"sub": "mallory"})) + "." + sig
	evil := key("evil")
	return []verifyCase{
		{name: "tampered payload", token: tampered, wantReason: "signature invalid"},
		{name: "stripped signature", token: h + "." + payload + ".", wantReason: "signature invalid"},
		{name: "another key under the issuer's kid", token: evil.withKid("rsa1").sign(nil, c), wantReason: "signature invalid"},
		{name: "embedded jwk header is not used", token: evil.sign(fields{"kid": nil, "jwk": evil.pub}, c), wantReason: "signature invalid"},
		{name: "jku header is not used", token: evil.sign(fields{"kid": nil, "jku": "https://evil.example/jwks"}, c), wantReason: "signature invalid"},
		{name: "alg other than the JWK's alg", token: key("rsa1").sign(fields{"alg": "PS256"}, c), wantReason: `key "rsa1" does not match alg "PS256"`},
		{name: "alg of another key type", token: key("ec1").withKid("rsa1").sign(nil, c), wantReason: `key "rsa1" does not match alg "ES256"`},
		{name: "unknown kid", token: key("rsa1").sign(fields{"kid": "nope"}, c), wantReason: `unknown kid "nope"`},
	}
}

func claimCases(iss string) []verifyCase {
	c := claims(iss)
	rs := func(over fields) string { return key("rsa1").sign(nil, c.with(over)) }
	return []verifyCase{
		{name: "exp missing", token: rs(fields{"exp": nil}), wantReason: "exp claim required"},
		{name: "exp 0", token: rs(fields{"exp": 0}), wantReason: "exp claim required"},
		{name: "exp negative", token: rs(fields{"exp": -1}), wantReason: "exp claim invalid"},
		{name: "exp a string", token: rs(fields{"exp": "tomorrow"}), wantReason: "exp claim invalid"},
		{name: "exp past beyond leeway", token: rs(fields{"exp": t0.Add(-31 * time.Second).Unix()}), wantReason: "token expired"},
		{name: "nbf in the future", token: rs(fields{"nbf": t0.Add(time.Minute).Unix()}), wantReason: "token not yet valid"},
		{name: "iat in the future", token: rs(fields{"iat": t0.Add(2 * time.Minute).Unix()}), wantReason: "token issued in the future"},
		{name: "iss wrong", token: rs(fields{"iss": "https://evil.example"}), wantReason: "issuer not trusted"},
		{name: "iss with a trailing slash", token: rs(fields{"iss": iss + "/"}), wantReason: "issuer not trusted"},
		{name: "iss missing", token: rs(fields{"iss": nil}), wantReason: "iss claim required"},
		{name: "aud wrong", token: rs(fields{"aud": "https://elsewhere.example"}), wantReason: "audience not accepted"},
		{name: "aud array without an accepted one", token: rs(fields{"aud": []string{"a", "b"}}), wantReason: "audience not accepted"},
		{name: "aud missing", token: rs(fields{"aud": nil}), wantReason: "audience not accepted"},
		{name: "sub not a string", token: rs(fields{"sub": 42}), wantReason: `claim "sub" has the wrong type`},
		{name: "scp with a number", token: rs(fields{"scope": nil, "scp": []any{"a", 1}}), wantReason: `claim "scp" has the wrong type`},
	}
}

func serializationCases(iss string) []verifyCase {
	valid := key("rsa1").sign(nil, claims(iss))
	parts := strings.Split(valid, ".")
	general, err := json.Marshal(fields{"payload": parts[1], "signatures": []fields{{"protected": parts[0], "signature": parts[2]}}})
	must(err)
	flattened, err := json.Marshal(fields{"payload": parts[1], "protected": parts[0], "signature": parts[2]})
	must(err)
	payload, err := json.Marshal(claims(iss))
	must(err)
	encrypted, err := jwe.Encrypt(payload, jwe.WithKey(jwa.RSA_OAEP, &key("rsa1").priv.(*rsa.PrivateKey).PublicKey))
	must(err)
	const compact = "token must be in JWS compact serialization"
	return []verifyCase{
		{name: "JSON serialization, general", token: string(general), wantReason: compact},
		{name: "JSON serialization, flattened", token: string(flattened), wantReason: compact},
		{name: "JWE", token: string(encrypted), wantReason: "token is encrypted (JWE); send a signed JWT"},
		{name: "garbage abc", token: "abc", wantReason: compact},
		{name: "garbage a.b", token: "a.b", wantReason: compact},
		{name: "four parts", token: "a.b.c.d", wantReason: compact},
		{name: "empty", token: "", wantReason: "token missing"},
		{name: "1 MB", token: strings.Repeat("a", 1<<20), wantReason: "token too large"},
		{name: "one byte over 16 KiB", token: valid + "." + strings.Repeat("a", MaxTokenSize-len(valid)), wantReason: "token too large"},
		{name: "header not base64url", token: "a*b." + parts[1] + "." + parts[2], wantReason: "token header is malformed"},
		{name: "padded base64", token: parts[0] + "=." + parts[1] + "." + parts[2], wantReason: "token header is malformed"},
		{name: "header an array", token: b64([]string{"RS256"}) + "." + parts[1] + "." + parts[2], wantReason: "token header must be a JSON object"},
		{name: "header null", token: b64([]byte("null")) + "." + parts[1] + "." + parts[2], wantReason: "token header must be a JSON object"},
		{name: "payload an array", token: parts[0] + "." + b64([]int{1}) + "." + parts[2], wantReason: "token payload must be a JSON object"},
		{name: "payload with trailing data", token: parts[0] + "." + b64([]byte(`{"iss":"x"} {}`)) + "." + parts[2], wantReason: "token payload must be a JSON object"},
		{name: "empty payload", token: parts[0] + ".." + parts[2], wantReason: "token payload must be a JSON object"},
		{name: "signature not base64url", token: parts[0] + "." + parts[1] + ".!!", wantReason: "token signature is malformed"},
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	good := IssuerConfig{Issuer: "https://idp.example", Audiences: []string{"a"}, Algorithms: []string{"RS256"}}
	issuer := func(mod func(*IssuerConfig)) Options {
		ic := good
		mod(&ic)
		return Options{Issuers: []IssuerConfig{ic}}
	}
	tests := []struct {
		name    string
		opts    Options
		wantErr string
	}{
		{name: "no issuers", opts: Options{}, wantErr: "at least one issuer"},
		{name: "alg none", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = []string{"RS256", "none"} }), wantErr: `"none" allows unsigned tokens`},
		{name: "alg HS256", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = []string{"HS256"} }), wantErr: `"HS256" is a symmetric algorithm`},
		{name: "alg hs512", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = []string{"hs512"} }), wantErr: `"hs512" is a symmetric algorithm`},
		{name: "alg unknown", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = []string{"RS1"} }), wantErr: `"RS1" is not a supported algorithm`},
		{name: "alg in the wrong case", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = []string{"rs256"} }), wantErr: "case-sensitive, write RS256"},
		{name: "no algorithms", opts: issuer(func(ic *IssuerConfig) { ic.Algorithms = nil }), wantErr: "algorithms: at least one"},
		{name: "no audience", opts: issuer(func(ic *IssuerConfig) { ic.Audiences = nil }), wantErr: "audiences"},
		{name: "no issuer", opts: issuer(func(ic *IssuerConfig) { ic.Issuer = "" }), wantErr: "issuer: required"},
		{name: "issuer not a URL", opts: issuer(func(ic *IssuerConfig) { ic.Issuer = "idp" }), wantErr: "not an absolute http or https URL"},
		{name: "jwks_uri not a URL", opts: issuer(func(ic *IssuerConfig) { ic.JWKSURI = "file:///etc/keys" }), wantErr: "jwks_uri"},
		{name: "negative leeway", opts: issuer(func(ic *IssuerConfig) { ic.Leeway = -time.Second }), wantErr: "leeway"},
		{name: "duplicate issuer", opts: Options{Issuers: []IssuerConfig{good, good}}, wantErr: "listed twice"},
		{name: "negative cache size", opts: Options{Issuers: []IssuerConfig{good}, CacheSize: -1}, wantErr: "cache size"},
		{name: "refresh interval below 1s", opts: Options{Issuers: []IssuerConfig{good}, RefreshInterval: time.Millisecond}, wantErr: "refresh interval"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := New(context.Background(), tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("New: got (%v, %v), want an error containing %q", v, err, tc.wantErr)
			}
		})
	}
}

func TestNormalizeTyp(t *testing.T) {
	tests := []struct{ name, in, want string }{
		{name: "plain", in: "at+jwt", want: "at+jwt"},
		{name: "prefixed", in: "application/at+jwt", want: "at+jwt"},
		{name: "upper case", in: "Application/AT+JWT", want: "at+jwt"},
		{name: "absent", in: "", want: ""},
		{name: "prefix kept when another slash follows", in: "application/x/y", want: "application/x/y"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := normalizeTyp(tc.in); got != tc.want {
				t.Errorf("normalizeTyp(%q): got %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

// TestParseUnverifiedSharesTheClaimRules: what Verify reads from a token's
// claims, ParseUnverified reads the same way, and what Verify refuses for
// a claim's type, ParseUnverified refuses too.
func TestParseUnverifiedSharesTheClaimRules(t *testing.T) {
	idp := newTestIdP(t, key("rsa1"))
	clock := newTestClock()
	v := newTestVerifier(t, testOptions(idp, clock))
	tests := []struct {
		name   string
		claims fields
	}{
		{name: "plain", claims: fields{}},
		{name: "fractional exp", claims: fields{"exp": json.Number(fmt.Sprintf("%d.75", t0.Add(time.Hour).Unix()))}},
		{name: "scp array", claims: fields{"scope": nil, "scp": []string{"a", "b"}}},
		{name: "scp string", claims: fields{"scope": nil, "scp": "a b"}},
		{name: "azp for client_id", claims: fields{"client_id": nil, "azp": "web"}},
		{name: "aud array", claims: fields{"aud": []string{testAudience, "other"}}},
		{name: "scope an array", claims: fields{"scope": []string{"a"}}},
		{name: "client_id a number", claims: fields{"client_id": 7}},
		{name: "sub an object", claims: fields{"sub": fields{"id": 1}}},
		{name: "exp a string", claims: fields{"exp": "tomorrow"}},
		{name: "exp missing", claims: fields{"exp": nil}},
		{name: "permissions an object", claims: fields{"permissions": fields{"x": "orders:read"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := claims(idp.URL).with(tc.claims)
			tok := key("rsa1").sign(nil, c)
			want, werr := v.Verify(context.Background(), tok)
			got, gerr := ParseUnverified(tok)
			if (werr == nil) != (gerr == nil) || werr != nil && reasonOf(werr) != reasonOf(gerr) {
				t.Fatalf("Verify: %v; ParseUnverified: %v", werr, gerr)
			}
			payload, _ := json.Marshal(c)
			fromClaims, cerr := ClaimsUnverified(payload)
			if (werr == nil) != (cerr == nil) {
				t.Fatalf("Verify: %v; ClaimsUnverified: %v", werr, cerr)
			}
			if werr != nil {
				return
			}
			wantClaims, _ := want.Claims()
			for _, p := range []*Principal{got, fromClaims} {
				claims, err := p.Claims()
				if err != nil {
					t.Fatal(err)
				}
				if p.Issuer != want.Issuer || p.Subject != want.Subject || p.ClientID != want.ClientID ||
					fmt.Sprint(p.Audience) != fmt.Sprint(want.Audience) || fmt.Sprint(p.Scopes) != fmt.Sprint(want.Scopes) ||
					!p.ExpiresAt.Equal(want.ExpiresAt) || fmt.Sprint(claims) != fmt.Sprint(wantClaims) {
					t.Errorf("unverified %+v\nverified %+v", p, want)
				}
			}
		})
	}
}

func TestParseUnverifiedRefusesWhatVerifyRefusesByForm(t *testing.T) {
	for name, raw := range map[string]string{
		"alg none":  b64(fields{"alg": "none"}) + "." + b64(claims("https://idp")) + ".",
		"crit":      b64(fields{"alg": "RS256", "crit": []string{"x"}}) + "." + b64(claims("https://idp")) + ".c2ln",
		"JWE":       "a.b.c.d.e",
		"JSON form": `{"payload":"x"}`,
		"no iss":    b64(fields{"alg": "RS256"}) + "." + b64(claims("https://idp").with(fields{"iss": nil})) + ".c2ln",
	} {
		if _, err := ParseUnverified(raw); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: err = %v, want ErrInvalidToken", name, err)
		}
	}
}
