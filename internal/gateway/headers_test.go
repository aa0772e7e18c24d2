package gateway

import (
	"net/http"
	"testing"
)

func TestGlobFold(t *testing.T) {
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
	}
	for _, tc := range tests {
		t.Run(tc.pattern+" "+tc.name, func(t *testing.T) {
			if got := globFold(tc.pattern, tc.name); got != tc.want {
				t.Errorf("globFold(%q, %q) = %v, want %v", tc.pattern, tc.name, got, tc.want)
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
