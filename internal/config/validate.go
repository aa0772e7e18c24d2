package config

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"net"
	"net/netip"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"

	"golang.org/x/net/http/httpguts"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/oauth"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// ValidationError lists every problem found in a config file at once.
type ValidationError struct {
	// File is the config file's path; Load sets it and Error then starts
	// every line with it. Empty for Parse and Validate.
	File string
	// Problems are "field.path: what is wrong; what to do", in the order
	// their fields appear in the file.
	Problems []string
}

// Error returns the problems, one per line.
func (e *ValidationError) Error() string {
	if e.File == "" {
		return strings.Join(e.Problems, "\n")
	}
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = e.File + ": " + p
	}
	return strings.Join(lines, "\n")
}

// problem is one entry of a ValidationError before it is sorted.
type problem struct{ path, msg string }

func (p problem) String() string {
	if p.path == "" {
		return p.msg
	}
	return p.path + ": " + p.msg
}

// newValidationError sorts problems by where their fields are written in the
// file. A problem about a field the file leaves out sorts at its nearest
// written ancestor, and one with none (a whole section missing) at the end.
// Problems at the same place keep the order they were found in.
func newValidationError(problems []problem, pos map[string]position) *ValidationError {
	at := func(path string) position {
		for p := path; p != ""; p = parentPath(p) {
			if where, ok := pos[p]; ok {
				return where
			}
		}
		return position{math.MaxInt, 0}
	}
	slices.SortStableFunc(problems, func(a, b problem) int {
		pa, pb := at(a.path), at(b.path)
		return cmp.Or(cmp.Compare(pa.line, pb.line), cmp.Compare(pa.col, pb.col))
	})
	e := &ValidationError{Problems: make([]string, len(problems))}
	for i, p := range problems {
		e.Problems[i] = p.String()
	}
	return e
}

// parentPath strips the last ".key" or "[i]" from a field path.
func parentPath(p string) string {
	i := strings.LastIndexAny(p, ".[")
	if i < 0 {
		return ""
	}
	return p[:i]
}

// Validate reports every problem in c at once as a *ValidationError, in the
// order of Config's fields, or returns nil. (Parse sorts them by where the
// file writes them.) It expects the defaults to
// be in place, as Parse leaves them. It reads no files and makes no network
// calls: key, certificate and policy files are checked by the packages that
// load them, and issuers by discovery at start-up.
func (c *Config) Validate() error {
	problems := c.check()
	if len(problems) == 0 {
		return nil
	}
	return newValidationError(problems, nil)
}

// check returns c's problems in the order of Config's fields.
func (c *Config) check() []problem {
	v := new(validator)
	v.server(&c.Server)
	v.inbound(&c.Inbound)
	v.policy(&c.Policy)
	sources := v.tokenSources(c.TokenSources)
	upstreams := v.upstreams(c.Upstreams, sources)
	v.routes(c.Routes, upstreams)
	v.cache(&c.Cache)
	v.tracing(&c.Telemetry.Tracing)
	return v.problems
}

func (v *validator) tracing(t *Tracing) {
	if t.Endpoint != "" {
		u, err := url.Parse(t.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" || u.Fragment != "" {
			v.add("telemetry.tracing.endpoint", "%q is not an http or https base URL; write the collector's, e.g. http://otel-collector:4318", t.Endpoint)
		}
	}
	if !slices.Contains(telemetry.TracingProtocols(), t.Protocol) {
		v.add("telemetry.tracing.protocol", "%s", notOneOf(t.Protocol, "is not an OTLP protocol audgate exports with", telemetry.TracingProtocols()))
	}
	if t.SampleRatio < 0 || t.SampleRatio > 1 || math.IsNaN(t.SampleRatio) {
		v.add("telemetry.tracing.sample_ratio", "%v is not between 0 and 1; write e.g. 0.05 to sample one new trace in twenty", t.SampleRatio)
	}
	for k, val := range t.Headers {
		if !httpguts.ValidHeaderFieldName(k) || !httpguts.ValidHeaderFieldValue(val) {
			v.add("telemetry.tracing.headers."+k, "not a valid header name and value; write e.g. Authorization: Bearer ${OTEL_TOKEN}")
		}
	}
}

// validator collects problems; each section's checks are in their own file
// order.
type validator struct{ problems []problem }

func (v *validator) add(path, format string, args ...any) {
	v.problems = append(v.problems, problem{path, fmt.Sprintf(format, args...)})
}

func (v *validator) server(s *Server) {
	v.listenAddr("server.listen", s.Listen)
	if s.AdminListen != "off" {
		v.listenAddr("server.admin_listen", s.AdminListen)
		if _, port, err := net.SplitHostPort(s.AdminListen); err == nil && port != "0" && s.AdminListen == s.Listen {
			v.add("server.admin_listen", "%s is also server.listen; give the admin listener its own port, or write off", s.AdminListen)
		}
	}
	v.positive("server.read_header_timeout", s.ReadHeaderTimeout, "5s")
	v.positive("server.idle_timeout", s.IdleTimeout, "120s")
	v.positive("server.shutdown_timeout", s.ShutdownTimeout, "15s")
	if s.MaxHeaderBytes <= 0 {
		v.add("server.max_header_bytes", "%d is not a positive size; write a size in bytes, e.g. 16384", s.MaxHeaderBytes)
	}
	if s.MaxBodyBytes <= 0 {
		v.add("server.max_body_bytes", "%d is not a positive size; write a size in bytes, e.g. 10485760", s.MaxBodyBytes)
	}
	v.positive("server.body_read_timeout", s.BodyReadTimeout, "30s")
	for i, cidr := range s.TrustedProxies {
		if _, err := netip.ParsePrefix(cidr); err != nil {
			if _, aerr := netip.ParseAddr(cidr); aerr != nil {
				v.add(fmt.Sprintf("server.trusted_proxies[%d]", i), "%q is not a CIDR or an IP address; write e.g. 10.0.0.0/8 or 192.0.2.10", cidr)
			}
		}
	}
	if !slices.Contains(ClientIPHeaders(), s.ClientIPHeader) {
		v.add("server.client_ip_header", "%s", notOneOf(s.ClientIPHeader, "is not a client IP header audgate reads", ClientIPHeaders()))
	}
	if t := s.TLS; t != nil {
		if t.CertFile == "" || t.KeyFile == "" {
			v.add("server.tls", "cert_file and key_file are both required; write the paths of the PEM certificate chain and its key")
		}
		if !slices.Contains(TLSVersions(), t.MinVersion) {
			v.add("server.tls.min_version", "%s", notOneOf(t.MinVersion, "is not a TLS version audgate accepts as the minimum", TLSVersions()))
		}
		switch {
		case t.ClientAuth != "request" && t.ClientAuth != "require":
			v.add("server.tls.client_auth", "%s", notOneOf(t.ClientAuth, "is not a client certificate mode", []string{"request", "require"}))
		case t.ClientAuth == "require" && t.ClientCAFile == "":
			v.add("server.tls.client_auth", "require needs client_ca_file, the CAs client certificates are verified against")
		}
	}
	for i, h := range s.StripInboundHeaders {
		p := fmt.Sprintf("server.strip_inbound_headers[%d]", i)
		if h == "" {
			v.add(p, "empty; write a header name such as X-User-Id, with * as a wildcard")
		} else if r, ok := firstNonToken(h); !ok {
			v.add(p, "%q contains %q, which cannot appear in a header name; use letters, digits, - and * as a wildcard", h, r)
		}
	}
}

// listenAddr checks a host:port to listen on. The host may be empty (all
// interfaces); the port must be a number, 0 meaning any free port.
func (v *validator) listenAddr(path, addr string) {
	if addr == "" {
		v.add(path, "empty; write host:port, e.g. 0.0.0.0:8080 or :8080")
		return
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		v.add(path, "%q is not host:port; write e.g. 0.0.0.0:8080, :8080 or [::1]:8080", addr)
		return
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		v.add(path, "%q has no valid port; write a port number from 0 to 65535, e.g. :8080", addr)
	}
}

func (v *validator) inbound(in *Inbound) {
	if len(in.Issuers) == 0 {
		v.add("inbound.issuers", "no issuer is configured; add the identity provider whose tokens callers send")
	}
	seen := map[string]int{}
	for i := range in.Issuers {
		v.issuer(fmt.Sprintf("inbound.issuers[%d]", i), &in.Issuers[i], i, seen)
	}
	if d := in.JWKSRefreshInterval; d < Duration(authn.MinRefreshInterval) {
		v.add("inbound.jwks_refresh_interval", "%s is less than %s; write e.g. 15m", d, authn.MinRefreshInterval)
	}
	if d := in.JWKSMinRefetchInterval; d < Duration(time.Second) {
		// Each unknown kid may trigger a refetch: any caller could otherwise
		// make audgate hammer the IdP's JWKS endpoint.
		v.add("inbound.jwks_min_refetch_interval", "%s is less than 1s; unknown key IDs would let any caller make audgate refetch the JWKS without pause; write e.g. 10s", d)
	}
	if in.VerifiedCacheSize <= 0 {
		v.add("inbound.verified_cache_size", "%d is not a positive count; write e.g. 100000", in.VerifiedCacheSize)
	}
}

func (v *validator) issuer(p string, is *Issuer, i int, seen map[string]int) {
	if is.Issuer == "" {
		v.add(p+".issuer", "empty; write the issuer URL exactly as the tokens' iss claim has it")
	} else if msg := urlProblem(is.Issuer, issuerURL); msg != "" {
		v.add(p+".issuer", "%s", msg)
	} else if j, dup := seen[is.Issuer]; dup {
		v.add(p+".issuer", "%q is already configured at inbound.issuers[%d]; merge the two entries", is.Issuer, j)
	} else {
		seen[is.Issuer] = i
	}
	v.nonEmptyList(p+".audiences", is.Audiences, "the audiences of the tokens callers send to audgate, e.g. [https://gateway.example.com]")
	if is.JWKSURI != "" {
		if msg := urlProblem(is.JWKSURI, endpointURL); msg != "" {
			v.add(p+".jwks_uri", "%s", msg)
		}
	}
	if len(is.Algorithms) == 0 {
		v.add(p+".algorithms", "empty, so no token would be accepted; list the algorithms the issuer signs with, e.g. [RS256], or leave algorithms out")
	}
	for j, a := range is.Algorithms {
		if err := authn.CheckAlgorithm(a); err != nil {
			v.add(fmt.Sprintf("%s.algorithms[%d]", p, j), "%v", err)
		}
	}
	switch {
	case is.Leeway < 0:
		v.add(p+".leeway", "%s is negative; write e.g. 30s, or 0s for none", is.Leeway)
	case is.Leeway > Duration(5*time.Minute):
		v.add(p+".leeway", "%s is more than 5m, which would accept long-expired tokens; fix the clocks (NTP) and write at most 5m", is.Leeway)
	}
	if len(is.Typ) == 0 {
		v.add(p+".typ", `empty, so no token would be accepted; list typ values ("" for tokens without typ), or leave typ out`)
	}
}

// notOneOf explains that s is not one of allowed, pointing out a name
// that differs only in case: JOSE names are case-sensitive.
func notOneOf(s, what string, allowed []string) string {
	msg := fmt.Sprintf("%q %s", s, what)
	for _, a := range allowed {
		if strings.EqualFold(a, s) {
			return fmt.Sprintf("%s; names are case-sensitive, write %s", msg, a)
		}
	}
	return fmt.Sprintf("%s; use one of: %s", msg, strings.Join(allowed, ", "))
}

func (v *validator) policy(p *Policy) {
	switch q := p.Query; {
	case q == "":
		v.add("policy.query", "empty; write a reference such as data.audgate.decision")
	case !strings.HasPrefix(q, "data.") || len(q) == len("data.") || strings.ContainsAny(q, " \t\r\n"):
		v.add("policy.query", "%q is not a reference under data; write e.g. data.audgate.decision", q)
	}
	v.positive("policy.timeout", p.Timeout, "100ms")
	if p.DecisionCache.MaxEntries <= 0 {
		v.add("policy.decision_cache.max_entries", "%d is not a positive number of entries; write e.g. 100000, or enabled: false to turn the cache off", p.DecisionCache.MaxEntries)
	}
	if strings.TrimSpace(p.DecisionLog.Output) == "" {
		v.add("policy.decision_log.output", "empty; write stdout, off or a file path")
	}
	for i, m := range p.DecisionLog.Mask {
		switch {
		case !strings.HasPrefix(m, "/"):
			v.add(fmt.Sprintf("policy.decision_log.mask[%d]", i), "%q is not a JSON pointer; start it with /, e.g. /input/token/claims/email", m)
		case m != "/input" && m != "/result" && !strings.HasPrefix(m, "/input/") && !strings.HasPrefix(m, "/result/"):
			v.add(fmt.Sprintf("policy.decision_log.mask[%d]", i), "%q is not under /input or /result; pointers are rooted at the decision log event, as OPA's are: write /input%s", m, m)
		}
	}
	if len(p.Verification) > 0 && !strings.HasSuffix(p.Path, ".tar.gz") && !strings.HasSuffix(p.Path, ".tgz") {
		v.add("policy.verification", "set, but policy.path is not a bundle file (.tar.gz); remove it, or point policy.path at the signed bundle")
	}
}

// name checks the name of entry i of a list whose entries are referred to by
// name, and reports whether other entries may refer to it.
func (v *validator) name(p, name string, i int, seen map[string]int, list string) bool {
	if name == "" {
		v.add(p+".name", "empty; give it a name to refer to it by")
		return false
	}
	if j, dup := seen[name]; dup {
		v.add(p+".name", "%q is already the name of %s[%d]; names must be unique", name, list, j)
		return false
	}
	seen[name] = i
	return true
}

func (v *validator) tokenSources(list []TokenSource) (names []string) {
	seen := map[string]int{}
	for i := range list {
		ts, p := &list[i], fmt.Sprintf("token_sources[%d]", i)
		if v.name(p, ts.Name, i, seen, "token_sources") {
			names = append(names, ts.Name)
		}
		switch ts.Type {
		case SourceTokenExchange, SourceClientCredentials, SourceJWTBearer:
			v.idpSource(p, ts)
		case SourceSelfSigned:
			v.selfSigned(p, ts)
		case "":
			v.add(p+".type", "empty; write one of: token_exchange, client_credentials, jwt_bearer, self_signed")
		default:
			v.add(p+".type", "%s", notOneOf(ts.Type, "is not a token source type", []string{SourceTokenExchange, SourceClientCredentials, SourceJWTBearer, SourceSelfSigned}))
		}
		v.ignoredFields(p, ts)
	}
	return names
}

// idpSource checks a source that asks an identity provider for tokens.
func (v *validator) idpSource(p string, ts *TokenSource) {
	if ts.Issuer == "" && ts.TokenEndpoint == "" {
		v.add(p+".token_endpoint", "empty and there is no issuer to discover it from; set issuer or token_endpoint")
	}
	if ts.Issuer != "" {
		if msg := urlProblem(ts.Issuer, issuerURL); msg != "" {
			v.add(p+".issuer", "%s", msg)
		}
	}
	if ts.TokenEndpoint != "" {
		if msg := urlProblem(ts.TokenEndpoint, endpointURL); msg != "" {
			v.add(p+".token_endpoint", "%s", msg)
		}
	}
	if ts.ClientID == "" {
		v.add(p+".client_id", "empty; write the client ID audgate is registered with at the identity provider")
	}
	switch ts.ClientAuth {
	case oauth.AuthBasic, oauth.AuthPost:
		if ts.ClientAssertionAudience != "" {
			v.add(p+".client_assertion_audience", "set, but client_auth is %s, which sends no assertion; remove it or use client_auth: private_key_jwt", ts.ClientAuth)
		}
		if ts.CertificateFile != "" {
			v.add(p+".certificate_file", "set, but client_auth is %s, which sends no assertion; remove it or use client_auth: private_key_jwt", ts.ClientAuth)
		}
		if ts.ClientSecret == "" {
			v.add(p+".client_secret", "empty, but client_auth is %s; write client_secret: ${ENV_VAR}, or use client_auth: private_key_jwt", ts.ClientAuth)
		}
	case oauth.AuthPrivateKeyJWT:
		if ts.PrivateKeyFile == "" {
			v.add(p+".private_key_file", "empty, but client_auth is private_key_jwt; write the path of the PEM key that signs client assertions")
		}
		if ts.ClientSecret != "" {
			v.add(p+".client_secret", "set, but client_auth is private_key_jwt, which never sends it; remove it")
		}
	default:
		v.add(p+".client_auth", "%s", notOneOf(ts.ClientAuth, "is not a client authentication method", oauth.AuthMethods()))
	}
	if !slices.Contains(tokens.AudienceParams(), ts.AudienceParam) {
		v.add(p+".audience_param", "%s", notOneOf(ts.AudienceParam, "is not a way to send the audience", tokens.AudienceParams()))
	}
	for _, name := range slices.Sorted(maps.Keys(ts.ExtraParams)) {
		switch {
		case oauth.ReservedParam(name):
			v.add(p+".extra_params."+name, "the grant or client authentication sets %s itself; remove it (audiences and scopes come from the policy's decision)", name)
		case name == "" || strings.ContainsFunc(name, unicode.IsControl):
			v.add(p+".extra_params", "%q is not a form field name; remove it", name)
		}
	}
	if ts.Type == SourceTokenExchange {
		if ts.SubjectTokenType == "" {
			v.add(p+".subject_token_type", "empty; write a token type URI, e.g. %s", tokens.TokenTypeAccessToken)
		}
		if ts.RequestedTokenType == "" {
			v.add(p+".requested_token_type", "empty; write a token type URI, e.g. %s", tokens.TokenTypeAccessToken)
		}
		if ts.ActorTokenType != "" && ts.ActorToken == "" {
			v.add(p+".actor_token_type", "set without actor_token; write actor_token: ${ENV_VAR} or remove actor_token_type")
		}
	}
	v.positive(p+".timeout", ts.Timeout, "5s")
}

func (v *validator) selfSigned(p string, ts *TokenSource) {
	if ts.Issuer == "" {
		v.add(p+".issuer", "empty; write the iss of the tokens audgate signs, e.g. https://audgate.internal")
	} else if msg := urlProblem(ts.Issuer, issuerURL); msg != "" {
		v.add(p+".issuer", "%s", msg)
	}
	if !slices.Contains(tokens.SigningAlgorithms(), ts.Algorithm) {
		v.add(p+".algorithm", "%s", notOneOf(ts.Algorithm, "cannot sign self_signed tokens", tokens.SigningAlgorithms()))
	}
	v.positive(p+".ttl", ts.TTL, "5m")
}

// ignoredBy lists the fields a source type does not use.
func ignoredBy(typ string) []string {
	switch typ {
	case SourceTokenExchange:
		return []string{"signing_keys", "algorithm", "ttl", "on_behalf_of"}
	case SourceClientCredentials:
		return []string{"subject_token_type", "requested_token_type", "signing_keys", "algorithm", "ttl",
			"actor_token", "actor_token_type", "on_behalf_of"}
	case SourceJWTBearer:
		return []string{"subject_token_type", "requested_token_type", "signing_keys", "algorithm", "ttl",
			"actor_token", "actor_token_type"}
	case SourceSelfSigned:
		return []string{"token_endpoint", "client_id", "client_secret", "client_auth", "private_key_file",
			"certificate_file", "client_assertion_audience", "extra_params", "audience_param", "subject_token_type", "requested_token_type", "timeout",
			"actor_token", "actor_token_type", "on_behalf_of"}
	}
	return nil
}

// ignoredFields refuses fields set on a source type that does not use them:
// a setting that silently does nothing is a misconfiguration waiting to
// surprise (a ttl on a token_exchange source, say).
func (v *validator) ignoredFields(p string, ts *TokenSource) {
	ignored := ignoredBy(ts.Type)
	rv := reflect.ValueOf(ts).Elem()
	for i, name := range yamlNames(rv.Type()) {
		if slices.Contains(ignored, name) && !rv.Field(i).IsZero() {
			v.add(p+"."+name, "%s sources do not use %s; remove it, or change type", ts.Type, name)
		}
	}
}

func (v *validator) upstreams(list []Upstream, sources []string) (names []string) {
	seen := map[string]int{}
	for i := range list {
		u, p := &list[i], fmt.Sprintf("upstreams[%d]", i)
		if v.name(p, u.Name, i, seen, "upstreams") {
			names = append(names, u.Name)
		}
		if u.URL == "" {
			v.add(p+".url", "empty; write the upstream's base URL, e.g. http://orders:8080")
		} else if msg := urlProblem(u.URL, upstreamURL); msg != "" {
			v.add(p+".url", "%s", msg)
		}
		v.reference(p+".token_source", u.TokenSource, "token source", "token_sources", sources)
		v.nonEmptyList(p+".audiences", u.Audiences, "the audiences a decision may ask for on this upstream, e.g. [https://orders.example.com]")
		for j, s := range u.Scopes {
			if !policy.ValidScope(s) {
				v.add(fmt.Sprintf("%s.scopes[%d]", p, j), "%q is not a scope; a scope is printable ASCII without spaces, quotes or backslashes (RFC 6749 §3.3)", s)
			}
		}
		v.tls(p+".tls", &u.TLS, u.URL)
		v.positive(p+".timeout", u.Timeout, "30s")
		if u.MaxIdleConns < 0 {
			v.add(p+".max_idle_conns", "%d is negative; write a count, e.g. 256, or 0 for the default", u.MaxIdleConns)
		}
	}
	return names
}

// reference checks a field that names an entry of another list.
func (v *validator) reference(path, name, what, list string, defined []string) {
	hint := "define it under " + list
	if len(defined) > 0 {
		hint += " or use one of: " + strings.Join(defined, ", ")
	}
	switch {
	case name == "":
		v.add(path, "empty; %s", hint)
	case !slices.Contains(defined, name):
		v.add(path, "%q is not a defined %s; %s", name, what, hint)
	}
}

func (v *validator) tls(p string, t *TLS, rawURL string) {
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		v.add(p+".key_file", "empty, but cert_file is set; mTLS needs both")
	case t.KeyFile != "" && t.CertFile == "":
		v.add(p+".cert_file", "empty, but key_file is set; mTLS needs both")
	}
	if *t != (TLS{}) && strings.HasPrefix(strings.ToLower(rawURL), "http://") {
		v.add(p, "set, but the upstream URL is http://; use https:// or remove tls")
	}
}

func (v *validator) routes(list []Route, upstreams []string) {
	if len(list) == 0 {
		v.add("routes", "no route is configured; add at least one, e.g. {path: /orders/*, upstream: orders}")
	}
	for i := range list {
		r, p := &list[i], fmt.Sprintf("routes[%d]", i)
		v.routePath(p, r.Path)
		v.reference(p+".upstream", r.Upstream, "upstream", "upstreams", upstreams)
		v.methods(p, r.Methods)
		v.stripPrefix(p, r)
		v.overlaps(p, list[:i], r)
	}
}

func (v *validator) routePath(p, path string) {
	switch {
	case path == "":
		v.add(p+".path", "empty; write a path such as /orders/*")
	case path[0] != '/':
		v.add(p+".path", "%q does not start with /; write /%s", path, path)
	case strings.Contains(path, "//") || slices.Contains(strings.Split(path, "/"), ".") || slices.Contains(strings.Split(path, "/"), ".."):
		v.add(p+".path", "%q has an empty or dot segment, and audgate refuses such request paths; remove it", path)
	}
}

func (v *validator) methods(p string, methods []string) {
	for j, m := range methods {
		mp := fmt.Sprintf("%s.methods[%d]", p, j)
		switch _, token := firstNonToken(m); {
		case m == "" || m == "*" || !token:
			v.add(mp, "%q is not an HTTP method; write e.g. GET, or leave methods out to accept all", m)
		case m == "CONNECT":
			v.add(mp, "CONNECT opens a tunnel, which a reverse proxy cannot route; remove it")
		case m == "TRACE":
			v.add(mp, "TRACE echoes the request, credentials included, back to the caller; remove it")
		case slices.Contains(methods[:j], m):
			v.add(mp, "%s is listed twice; remove one", m)
		}
	}
}

// stripPrefix checks that strip_prefix removes whole segments of the
// route's fixed part, the part before the first :param or *.
func (v *validator) stripPrefix(p string, r *Route) {
	sp := r.StripPrefix
	if sp == "" || r.Path == "" {
		return
	}
	fixed := r.Path
	if i := strings.IndexAny(fixed, ":*"); i >= 0 {
		fixed = fixed[:i]
	}
	switch {
	case !strings.HasPrefix(fixed, sp):
		v.add(p+".strip_prefix", "%q is not a prefix of %q, the fixed part of the route's path; write a leading part of it", sp, fixed)
	case !strings.HasSuffix(sp, "/") && len(sp) < len(r.Path) && r.Path[len(sp)] != '/':
		// /public* with /public would turn /publicadmin into /admin.
		v.add(p+".strip_prefix", "%q ends inside a segment of %q; strip whole segments (the prefix must be followed by / or the end of the path)", sp, r.Path)
	}
}

// overlaps refuses a route that matches a (path, method) pair an earlier
// route already matches: which one Echo picks would be an accident.
func (v *validator) overlaps(p string, earlier []Route, r *Route) {
	key := routeShape(r.Path)
	for i := range earlier {
		e := &earlier[i]
		if routeShape(e.Path) != key {
			continue
		}
		if len(r.Methods) == 0 || len(e.Methods) == 0 {
			v.add(p+".path", "%s overlaps routes[%d], which has the same path, and one of them accepts every method; give each route its own methods, or merge them", r.Path, i)
			continue
		}
		for j, m := range r.Methods {
			if slices.Contains(e.Methods, m) && !slices.Contains(r.Methods[:j], m) {
				v.add(fmt.Sprintf("%s.methods[%d]", p, j), "%s %s is already routed by routes[%d]; remove one of the two", m, r.Path, i)
			}
		}
	}
}

// routeShape reduces a path to what Echo matches: parameter names do not
// matter, so /orders/:id and /orders/:oid are the same route.
func routeShape(path string) string {
	segs := strings.Split(path, "/")
	for i, s := range segs {
		if strings.HasPrefix(s, ":") {
			segs[i] = ":"
		}
	}
	return strings.Join(segs, "/")
}

func (v *validator) cache(c *Cache) {
	if c.MaxEntries <= 0 {
		v.add("cache.max_entries", "%d is not a positive count; write e.g. 100000", c.MaxEntries)
	}
	if c.RefreshBeforeExpiry < 0 {
		v.add("cache.refresh_before_expiry", "%s is negative; write e.g. 30s, or 0s to use tokens until they expire", c.RefreshBeforeExpiry)
	}
	v.positive("cache.default_ttl", c.DefaultTTL, "60s")
	if c.NegativeTTL < 0 {
		v.add("cache.negative_ttl", "%s is negative; write e.g. 5s, or 0s to turn it off", c.NegativeTTL)
	}
}

func (v *validator) positive(path string, d Duration, example string) {
	if d <= 0 {
		v.add(path, "%s is not a positive duration; write e.g. %s", d, example)
	}
}

// nonEmptyList checks a list that must hold at least one non-empty string.
func (v *validator) nonEmptyList(path string, list []string, what string) {
	if len(list) == 0 {
		v.add(path, "empty; list %s", what)
	}
	for i, s := range list {
		if s == "" {
			v.add(fmt.Sprintf("%s[%d]", path, i), "empty string; remove it")
		}
	}
}

// urlKind says what a URL is for, which decides what it may contain.
type urlKind int

const (
	issuerURL   urlKind = iota // OIDC Discovery §3: no query or fragment
	endpointURL                // RFC 6749 §3.1: a query is allowed, a fragment is not
	upstreamURL                // a base URL that request paths are appended to
)

func (k urlKind) example() string {
	switch k {
	case endpointURL:
		return "https://idp.example.com/oauth/token"
	case upstreamURL:
		return "http://orders:8080"
	}
	return "https://idp.example.com/"
}

// urlProblem checks that s is an absolute http or https URL fit for kind,
// and says what is wrong with it if not.
func urlProblem(s string, kind urlKind) string {
	u, err := url.Parse(s)
	switch {
	case err != nil || oauth.CheckURL(s) != nil:
		return fmt.Sprintf("%q is not an absolute http or https URL; write e.g. %s", s, kind.example())
	case u.Fragment != "" || strings.Contains(s, "#"):
		return fmt.Sprintf("%q has a #fragment; remove it", s)
	case u.User != nil:
		return fmt.Sprintf("%q has credentials in it; remove them (audgate authenticates with its own settings)", s)
	case kind != endpointURL && (u.RawQuery != "" || u.ForceQuery):
		return fmt.Sprintf("%q has a ?query, which this URL cannot have; remove it", s)
	}
	return ""
}

// firstNonToken returns the first character of s that is not an RFC 9110
// token character (the characters of header names and methods), or ok.
func firstNonToken(s string) (r rune, ok bool) {
	for _, r := range s {
		if !httpguts.IsTokenRune(r) {
			return r, false
		}
	}
	return 0, true
}
