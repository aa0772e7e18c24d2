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
	patterns []glob
}

// glob is a pattern whose only metacharacter is '*', split at each '*'
// once, lower-case.
type glob []string

func newGlob(pattern string) glob { return strings.Split(strings.ToLower(pattern), "*") }

func newHeaderMatcher(globs []string) *headerMatcher {
	m := &headerMatcher{exact: map[string]bool{}}
	for _, g := range globs {
		if strings.Contains(g, "*") {
			m.patterns = append(m.patterns, newGlob(g))
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
		if p.matchFold(name) {
			return true
		}
	}
	return false
}

// matchFold matches s case-insensitively. Header names are ASCII, so
// EqualFold on slices is exact, and nothing is allocated.
func (g glob) matchFold(s string) bool {
	first, last := g[0], g[len(g)-1]
	if len(g) == 1 {
		return strings.EqualFold(s, first)
	}
	if len(s) < len(first)+len(last) || !strings.EqualFold(s[:len(first)], first) ||
		!strings.EqualFold(s[len(s)-len(last):], last) {
		return false
	}
	s = s[len(first) : len(s)-len(last)]
	for _, part := range g[1 : len(g)-1] {
		idx := indexFold(s, part)
		if idx < 0 {
			return false
		}
		s = s[idx+len(part):]
	}
	return true
}

// indexFold is strings.Index, case-insensitive for ASCII.
func indexFold(s, sub string) int {
	for i := 0; i+len(sub) <= len(s); i++ {
		if strings.EqualFold(s[i:i+len(sub)], sub) {
			return i
		}
	}
	return -1
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
	i := 0
	for i < len(s) && b64tokenChar[s[i]] {
		i++
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

// b64tokenChar holds the characters of a b64token before its '='s.
var b64tokenChar = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '-' || c == '.' || c == '_' || c == '~' || c == '+' || c == '/'
	}
	return t
}()

// inputHeaders returns the request headers as the policy sees them:
// lower-case names, repeated values joined with ", ", and neither
// Authorization nor Proxy-Authorization. placeToken has already
// refused a request that carries the caller's token anywhere else, so the
// policy sees exactly what the upstream receives.
func inputHeaders(h http.Header) map[string]string {
	out := make(map[string]string, len(h))
	for k, vs := range h {
		if k == "Authorization" || k == "Proxy-Authorization" {
			continue
		}
		out[strings.ToLower(k)] = strings.Join(vs, ", ")
	}
	return out
}

var (
	errTokenElsewhere   = errors.New("the access token may only be sent in the Authorization header")
	errAccessTokenParam = errors.New("the access_token query parameter is not accepted; send the token in the Authorization header")
)

// placeToken makes sure the caller's token reaches nothing but this
// request's Authorization header: a cookie that carries it (as an SPA
// may keep it) is removed from the request itself, before the policy sees
// it, and a request that carries it in another header, Host, the path or
// the query, raw or percent-encoded, or has an access_token parameter
// (RFC 6750 §2: one method only), is refused: Host becomes the upstream's
// X-Forwarded-Host, and the path its request URI and the logs' path. The
// policy and the upstream see the same request. token is verified, so it
// is long enough not to match by chance.
func placeToken(r *http.Request, token string) error {
	if carries(r.Host, token) || carries(r.URL.Path, token) || carries(requestPath(r.RequestURI), token) {
		return errTokenElsewhere
	}
	for k, vs := range r.Header {
		if k == "Authorization" || k == "Cookie" {
			continue
		}
		for _, v := range vs {
			if carries(v, token) {
				return errTokenElsewhere
			}
		}
	}
	dropTokenCookies(r, token)
	if r.URL.RawQuery == "" {
		return nil
	}
	if carries(r.URL.RawQuery, token) {
		return errTokenElsewhere
	}
	for k := range r.URL.Query() {
		if k == "access_token" {
			return errAccessTokenParam
		}
	}
	return nil
}

// dropTokenCookies removes the cookies whose name or value carries token.
func dropTokenCookies(r *http.Request, token string) {
	lines := r.Header["Cookie"]
	if len(lines) == 0 || !slices.ContainsFunc(lines, func(l string) bool { return carries(l, token) }) {
		return
	}
	var kept []string
	for _, line := range lines {
		for _, pair := range strings.Split(line, ";") {
			if pair = strings.TrimSpace(pair); pair != "" && !carries(pair, token) {
				kept = append(kept, pair)
			}
		}
	}
	r.Header.Del("Cookie")
	if len(kept) > 0 {
		r.Header.Set("Cookie", strings.Join(kept, "; "))
	}
}

// carries reports whether s holds token as is or percent-encoded (a
// malformed escape elsewhere in s does not hide it).
func carries(s, token string) bool {
	if strings.Contains(s, token) {
		return true
	}
	return strings.IndexByte(s, '%') >= 0 && strings.Contains(lenientUnescape(s), token)
}

// lenientUnescape decodes every valid %XX in s and keeps the rest as is.
func lenientUnescape(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
			i += 2
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// dropUnderscoreHeaders removes header names with an underscore, as nginx
// does by default: servers that map headers to variables (CGI, FastCGI,
// WSGI, Rack) read X_User_Id as X-User-Id, so such a name could pose as a
// header the gateway sets or strips.
func dropUnderscoreHeaders(h http.Header) {
	for k := range h {
		if strings.IndexByte(k, '_') >= 0 {
			delete(h, k)
		}
	}
}

// joinRepeated makes each repeated request header one line holding the
// value the policy sees: values joined with ", " (RFC 9110 §5.3), or "; "
// for Cookie (RFC 6265 §5.4). Upstreams that read only a header's first
// line (most frameworks do) then read what the policy decided on.
// Authorization is left alone: two of them are refused (RFC 6750).
func joinRepeated(h http.Header) {
	for k, vs := range h {
		if len(vs) < 2 || k == "Authorization" {
			continue
		}
		sep := ", "
		if k == "Cookie" {
			sep = "; "
		}
		h[k] = []string{strings.Join(vs, sep)}
	}
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
