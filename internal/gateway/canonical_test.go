package gateway

import (
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzCheckCanonical: whatever checkCanonical accepts decodes to a path
// with no empty or dot segment, backslash, control character or invalid
// UTF-8, so router, policy and upstream cannot read it differently.
func FuzzCheckCanonical(f *testing.F) {
	for _, seed := range []string{"/orders/1", "/a%20b", "/a/../b", "/%2e%2e/x", "//x", "/a;b/c", "/%C3%A9", "/a%3Bb", "/..%3B/x"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, p string) {
		if checkCanonical(p) != nil {
			return
		}
		dec, err := url.PathUnescape(p)
		if err != nil {
			t.Fatalf("accepted %q, which does not decode: %v", p, err)
		}
		if !utf8.ValidString(dec) || strings.ContainsAny(dec, "\\\x00\r\n\t") || strings.Contains(dec, "//") {
			t.Fatalf("accepted %q, decoded %q", p, dec)
		}
		if strings.Contains(dec, ";") {
			t.Fatalf("accepted %q with a semicolon", p)
		}
		for _, seg := range strings.Split(dec, "/") {
			if seg == "." || seg == ".." {
				t.Fatalf("accepted %q with a dot segment (%q)", p, dec)
			}
		}
		for i := 0; i+2 < len(p); i++ {
			if p[i] == '%' && isUnreserved(unhex(p[i+1])<<4|unhex(p[i+2])) {
				t.Fatalf("accepted needless encoding in %q", p)
			}
		}
	})
}
