package gateway

import (
	"errors"
	"net/http"
	"slices"
	"strings"
)

// headerMatcher matches header names against strip_inbound_headers globs.
// Names are compared case-insensitively; '*' matches any run of characters.
type headerMatcher struct {
	exact    map[string]bool // canonical names
	patterns []string        // lower-case globs
}

func newHeaderMatcher(globs []string) *headerMatcher {
	m := &headerMatcher{exact: map[string]bool{}}
	for _, g := range globs {
		if strings.Contains(g, "*") {
			m.patterns = append(m.patterns, strings.ToLower(g))
		} else {
			m.exact[http.CanonicalHeaderKey(g)] = true
		}
	}
	return m
}

// strip deletes matching headers from h.
func (m *headerMatcher) strip(h http.Header) {
	for name := range h {
		if m.exact[name] || m.matchPattern(name) {
			delete(h, name)
		}
	}
}

func (m *headerMatcher) matchPattern(name string) bool {
	for _, p := range m.patterns {
		if globFold(p, name) {
			return true
		}
	}
	return false
}

// globFold matches s case-insensitively against a lower-case pattern whose
// only metacharacter is '*'. Header names are ASCII, so EqualFold on
// slices is exact, and the common prefix/suffix patterns allocate nothing.
func globFold(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	first, last := parts[0], parts[len(parts)-1]
	if len(s) < len(first)+len(last) || !strings.EqualFold(s[:len(first)], first) ||
		!strings.EqualFold(s[len(s)-len(last):], last) {
		return false
	}
	s = strings.ToLower(s[len(first) : len(s)-len(last)])
	for _, part := range parts[1 : len(parts)-1] {
		idx := strings.Index(s, part)
		if idx < 0 {
			return false
		}
		s = s[idx+len(part):]
	}
	return true
}

var (
	errNoToken       = errors.New("no bearer token")
	errTwoAuthz      = errors.New("more than one Authorization header")
	errWrongScheme   = errors.New("the Authorization scheme must be Bearer")
	errMalformedAuth = errors.New("the bearer token is malformed")
	errTokenInQuery  = errors.New("send the token in the Authorization header only, not in the access_token query parameter")
)

// bearer returns the token of the request's single Authorization: Bearer
// header (RFC 6750 §2.1).
func bearer(r *http.Request) (string, error) {
	vals := r.Header["Authorization"]
	switch {
	case len(vals) == 0:
		if r.URL.Query().Has("access_token") {
			return "", errTokenInQuery
		}
		return "", errNoToken
	case len(vals) > 1:
		return "", errTwoAuthz
	}
	scheme, token, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", errWrongScheme
	}
	if !isB64Token(token) {
		return "", errMalformedAuth
	}
	return token, nil
}

// isB64Token reports whether s is an RFC 6750 b64token.
func isB64Token(s string) bool {
	if s == "" {
		return false
	}
	i := 0
	for ; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/') {
			break
		}
	}
	if i == 0 {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] != '=' {
			return false
		}
	}
	return true
}

// inputHeaders returns the request headers as the policy sees them:
// lower-case names, repeated values joined with ", ", no Authorization,
// and no header that carries the caller's token (it would reach the
// decision log).
func inputHeaders(h http.Header, token string) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if k == "Authorization" {
			continue
		}
		v := strings.Join(vs, ", ")
		if strings.Contains(v, token) {
			continue
		}
		out[strings.ToLower(k)] = v
	}
	return out
}

// inputQuery returns the query as the policy sees it: without
// access_token and without any parameter that carries the caller's token.
func inputQuery(r *http.Request, token string) map[string][]string {
	if r.URL.RawQuery == "" {
		return map[string][]string{}
	}
	q := r.URL.Query()
	for k, vs := range q {
		if k == "access_token" || slices.ContainsFunc(vs, func(v string) bool { return strings.Contains(v, token) }) {
			delete(q, k)
		}
	}
	return q
}

// headerBytes approximates the size of a request's header block as it was
// sent.
func headerBytes(r *http.Request) int {
	n := len(r.Method) + len(r.RequestURI) + len(r.Proto) + 4 + len(r.Host) + 8
	for k, vs := range r.Header {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	return n
}
