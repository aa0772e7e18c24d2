package gateway

import (
	"math/rand/v2"
	"net/http"
	"regexp"
	"testing"
)

func TestGlobMatchFold(t *testing.T) {
	tests := []struct {
		pattern, name string
		want          bool
	}{
		{"x-user-*", "X-User-Id", true},
		{"x-user-*", "X-User-", true},
		{"x-user-*", "X-Userid", false},
		{"x-user-*", "X-Use", false},
		{"*-token", "X-Debug-Token", true},
		{"*-token", "Token", false},
		{"x-*-id", "X-User-Id", true},
		{"x-*-id", "X-Id", false},
		{"x-*-*-id", "X-A-B-Id", true},
		{"x-*-*-id", "X-A-Id", false},
		{"*", "Anything", true},
		{"x-*-ID-*", "x-a-id-b", true},
		{"x-*-id-*", "X-A-B", false},
		{"x-*-*-id", "X-AB-Id", false},
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.name, func(t *testing.T) {
			g := newGlob(tc.pattern)
			if got := g.matchFold(tc.name); got != tc.want {
				t.Errorf("%q matches %q: %v, want %v", tc.pattern, tc.name, got, tc.want)
			}
			if n := testing.AllocsPerRun(10, func() { g.matchFold(tc.name) }); n != 0 {
				t.Errorf("%q against %q: %v allocations", tc.pattern, tc.name, n)
			}
		})
	}
}

func TestHeaderMatcherStrip(t *testing.T) {
	m := newHeaderMatcher([]string{"X-User-*", "x-forwarded-user", "X-HTTP-Method-Override"})
	h := http.Header{
		"X-User-Id": {"a"}, "X-User-Roles": {"b"}, "X-Forwarded-User": {"c"},
		"X-Http-Method-Override": {"DELETE"}, "X-Userland": {"keep"}, "Accept": {"keep"},
	}
	m.strip(h)
	if len(h) != 2 || h.Get("X-Userland") != "keep" || h.Get("Accept") != "keep" {
		t.Errorf("after strip: %v", h)
	}
}

func TestBearer(t *testing.T) {
	tests := []struct {
		name    string
		authz   []string
		want    string
		wantErr error
	}{
		{"ok", []string{"Bearer abc.def-_~+/="}, "abc.def-_~+/=", nil},
		{"scheme case-insensitive", []string{"bearer abc"}, "abc", nil},
		{"none", nil, "", errNoToken},
		{"two", []string{"Bearer a", "Bearer b"}, "", errTwoAuthz},
		{"basic", []string{"Basic YTpi"}, "", errWrongScheme},
		{"no space", []string{"Bearerabc"}, "", errWrongScheme},
		{"empty token", []string{"Bearer "}, "", errMalformedAuth},
		{"two spaces", []string{"Bearer  abc"}, "", errMalformedAuth},
		{"space inside", []string{"Bearer a b"}, "", errMalformedAuth},
		{"padding then text", []string{"Bearer a=b"}, "", errMalformedAuth},
		{"only padding", []string{"Bearer ="}, "", errMalformedAuth},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := http.NewRequest("GET", "http://gw/x", nil)
			if tc.authz != nil {
				r.Header["Authorization"] = tc.authz
			}
			got, err := bearer(r)
			if err != tc.wantErr || got != tc.want {
				t.Errorf("bearer = %q, %v; want %q, %v", got, err, tc.want, tc.wantErr)
			}
		})
	}
}

// TestRepeatedHeadersOneLine: the upstream receives a repeated header as
// the one line the policy saw.
func TestRepeatedHeadersOneLine(t *testing.T) {
	e := newEnv(t, withPolicy(t, `decision := {
	"allow": true,
	"audience": "https://orders.test",
	"headers": {"X-Seen-Tenant": input.request.headers["x-tenant"], "X-Seen-Cookie": input.request.headers.cookie},
}`))
	hdr := http.Header{"X-Tenant": {"a", "b"}, "Cookie": {"s=1", "t=2"}}
	if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), hdr, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	got := e.upstream.requests()[0].Header
	if v := got.Values("X-Tenant"); len(v) != 1 || v[0] != "a, b" || got.Get("X-Seen-Tenant") != "a, b" {
		t.Errorf("X-Tenant: upstream %q, policy saw %q", v, got.Get("X-Seen-Tenant"))
	}
	if v := got.Values("Cookie"); len(v) != 1 || v[0] != "s=1; t=2" || got.Get("X-Seen-Cookie") != "s=1; t=2" {
		t.Errorf("Cookie: upstream %q, policy saw %q", v, got.Get("X-Seen-Cookie"))
	}
}

// TestIsB64Token checks the table against RFC 6750's grammar, written as
// a regular expression, over fixed and random strings.
func TestIsB64Token(t *testing.T) {
	grammar := regexp.MustCompile(`^[A-Za-z0-9\-._~+/]+=*$`)
	cases := []string{"", "=", "abc", "abc=", "abc==", "abc=d", "a b", "ä", "-._~+/", "a.b.c", "a,b", "a\x00"}
	rng := rand.New(rand.NewPCG(1, 2))
	alphabet := "aZ09-._~+/= ,;\"\\\x00\x7f\xff"
	for range 5000 {
		b := make([]byte, rng.IntN(6))
		for i := range b {
			b[i] = alphabet[rng.IntN(len(alphabet))]
		}
		cases = append(cases, string(b))
	}
	for _, s := range cases {
		if got, want := isB64Token(s), grammar.MatchString(s); got != want {
			t.Errorf("isB64Token(%q) = %v, want %v", s, got, want)
		}
	}
}
