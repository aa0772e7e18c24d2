package policy

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Input is the document the policy sees as `input`. Its JSON form is the
// policy contract (docs/policy.md); Value builds the same document as an
// ast.Value directly, without a JSON round trip.
type Input struct {
	Request  Request  `json:"request"`
	Route    Route    `json:"route"`
	Upstream Upstream `json:"upstream"`
	Token    Token    `json:"token"`

	// TokenValue, when set, is Token.Value() computed earlier: the token
	// part depends only on the verified token, so callers may build it once
	// per token and reuse it across requests.
	TokenValue ast.Value `json:"-"`
	// UpstreamValue, when set, is Upstream.Value() computed at start-up.
	UpstreamValue ast.Value `json:"-"`

	// Fill, when set, sets Request.Segments, Request.Query,
	// Request.Headers and Route.Params, left empty until something reads
	// one of them: it is called once, on the first such read, so that a
	// decision served from the cache by a policy that reads none of them
	// builds none of them. Call Complete before what Fill reads from
	// changes or is gone.
	Fill func(*Input) `json:"-"`
}

// Complete calls Fill, if it has not been called yet.
func (in *Input) Complete() {
	if f := in.Fill; f != nil {
		in.Fill = nil
		f(in)
	}
}

// filled says whether the input part at path is one that Fill sets.
func filled(path []*ast.Term) bool {
	if len(path) < 2 {
		return true // the whole input, request or route
	}
	switch k, _ := path[1].Value.(ast.String); k {
	case "segments", "query", "headers", "params":
		return true
	}
	return false
}

// Request describes the inbound HTTP request.
type Request struct {
	Method string `json:"method"`
	// Path is exactly the path the upstream receives (before strip_prefix).
	Path     string              `json:"path"`
	Segments []string            `json:"segments"`
	Query    map[string][]string `json:"query"`
	// Headers has lower-case names, repeated values joined with ", ", and
	// never Authorization.
	Headers map[string]string `json:"headers"`
	Host    string            `json:"host"`
	// Scheme is http or https: how the caller reached the gateway.
	Scheme string `json:"scheme,omitempty"`
	// Protocol is the HTTP version, e.g. HTTP/1.1 or HTTP/2.0.
	Protocol string `json:"protocol,omitempty"`
	// RemoteIP is the TCP peer.
	RemoteIP string `json:"remote_ip"`
	// ClientIP is the caller: from the client IP header when the peer is
	// a trusted proxy, else the peer.
	ClientIP string `json:"client_ip,omitempty"`
	// TLS describes the caller's TLS session; nil on plain HTTP.
	TLS *TLS `json:"tls,omitempty"`
}

// TLS is the caller's TLS session.
type TLS struct {
	// Version is "1.2" or "1.3".
	Version string `json:"version"`
	// ClientCertificate is the verified client certificate; nil when none
	// was presented (or it could not be verified).
	ClientCertificate *Certificate `json:"client_certificate,omitempty"`
}

// Certificate is a verified client certificate.
type Certificate struct {
	Subject           string   `json:"subject"`
	Issuer            string   `json:"issuer"`
	Serial            string   `json:"serial"` // hexadecimal
	DNSNames          []string `json:"dns_names"`
	URIs              []string `json:"uris"` // a SPIFFE ID is one
	Emails            []string `json:"emails"`
	FingerprintSHA256 string   `json:"fingerprint_sha256"` // hexadecimal, of the DER certificate
	NotAfter          int64    `json:"not_after"`          // seconds since the epoch
}

// Route is the configured route that matched.
type Route struct {
	Path     string            `json:"path"`
	Params   map[string]string `json:"params"`
	Upstream string            `json:"upstream"`
}

// Upstream is the route's upstream as configured.
type Upstream struct {
	Name        string   `json:"name"`
	TokenSource string   `json:"token_source"`
	Audiences   []string `json:"audiences"`
}

// Token is the caller's verified access token.
type Token struct {
	Issuer    string   `json:"issuer"`
	Subject   string   `json:"subject"`
	ClientID  string   `json:"client_id"`
	Audience  []string `json:"audience"`
	Scopes    []string `json:"scopes"`
	ExpiresAt int64    `json:"expires_at"`
	// Claims are the token's claims as JSON values (numbers as json.Number).
	Claims map[string]any `json:"claims"`
	// ClaimsJSON, when Claims is nil, is the token's claims as a JSON
	// object, decoded when first needed: a verified token keeps its claims
	// this way, in a third of the memory, and a decision cache hit needs
	// none of them (see Memo).
	ClaimsJSON string `json:"-"`
	// Memo, when set, keeps the token's part of decision cache keys with
	// the verified token.
	Memo *KeyMemo `json:"-"`

	decoded map[string]any // ClaimsJSON, decoded
}

// claims are t's claims: Claims, else ClaimsJSON decoded (once per t).
func (t *Token) claims() (map[string]any, error) {
	if t.Claims != nil || t.ClaimsJSON == "" {
		return t.Claims, nil
	}
	if t.decoded == nil {
		dec := json.NewDecoder(strings.NewReader(t.ClaimsJSON))
		dec.UseNumber()
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			return nil, fmt.Errorf("token claims: %w", err)
		}
		t.decoded = m
	}
	return t.decoded, nil
}

// Value returns the input as an OPA value.
func (in *Input) Value() (ast.Value, error) {
	in.Complete()
	tok := in.TokenValue
	if tok == nil {
		var err error
		if tok, err = in.Token.Value(); err != nil {
			return nil, err
		}
	}
	up := in.UpstreamValue
	if up == nil {
		up = in.Upstream.Value()
	}
	return ast.NewObject(
		item("request", in.Request.value()),
		item("route", ast.NewObject(
			item("path", ast.String(in.Route.Path)),
			item("params", stringMap(in.Route.Params)),
			item("upstream", ast.String(in.Route.Upstream)),
		)),
		item("upstream", up),
		item("token", tok),
	), nil
}

// Value returns the upstream part of the input; it never changes for a
// configured upstream, so callers may build it once.
func (u *Upstream) Value() ast.Value {
	return ast.NewObject(
		item("name", ast.String(u.Name)),
		item("token_source", ast.String(u.TokenSource)),
		item("audiences", stringArray(u.Audiences)),
	)
}

// at is the value at path in the input, as Value would have it, nil when
// there is none; it builds only what the path reaches, so a decision key
// over a few paths costs no whole input. The path's keys are strings.
func (in *Input) at(path []*ast.Term) ast.Value {
	if len(path) == 0 {
		v, err := in.Value()
		if err != nil {
			return nil
		}
		return v
	}
	key, _ := path[0].Value.(ast.String)
	rest := path[1:]
	if (key == "request" || key == "route") && filled(path) {
		in.Complete()
	}
	switch key {
	case "request":
		return in.Request.at(rest)
	case "route":
		if len(rest) > 0 {
			switch k, _ := rest[0].Value.(ast.String); k {
			case "path":
				return lookup(ast.String(in.Route.Path), rest[1:])
			case "upstream":
				return lookup(ast.String(in.Route.Upstream), rest[1:])
			case "params":
				return lookup(stringMap(in.Route.Params), rest[1:])
			}
			return nil
		}
	case "upstream":
		up := in.UpstreamValue
		if up == nil {
			up = in.Upstream.Value()
		}
		return lookup(up, rest)
	case "token":
		if in.TokenValue != nil {
			return lookup(in.TokenValue, rest)
		}
		return in.Token.at(rest)
	}
	v, err := in.Value()
	if err != nil {
		return nil
	}
	return lookup(v, path)
}

// at is the value at path in the token's part of the input, built from
// the token's fields as far as the path reaches. A claim that cannot be
// an OPA value is errClaim.
func (t *Token) at(path []*ast.Term) ast.Value {
	if len(path) == 0 {
		v, err := t.Value()
		if err != nil {
			return errClaim
		}
		return v
	}
	rest := path[1:]
	switch k, _ := path[0].Value.(ast.String); k {
	case "issuer":
		return lookup(ast.String(t.Issuer), rest)
	case "subject":
		return lookup(ast.String(t.Subject), rest)
	case "client_id":
		return lookup(ast.String(t.ClientID), rest)
	case "audience":
		return lookup(stringArray(t.Audience), rest)
	case "scopes":
		return lookup(stringArray(t.Scopes), rest)
	case "expires_at":
		return lookup(ast.Number(strconv.FormatInt(t.ExpiresAt, 10)), rest)
	case "claims":
		claims, err := t.claims()
		if err != nil {
			return errClaim
		}
		var cur any = claims
		for _, k := range rest {
			m, ok := cur.(map[string]any)
			if !ok {
				return nil
			}
			key, _ := k.Value.(ast.String)
			if cur, ok = m[string(key)]; !ok {
				return nil
			}
		}
		if m, ok := cur.(map[string]any); ok && m == nil {
			return ast.NewObject() // as Value has absent claims
		}
		v, err := ast.InterfaceToValue(cur)
		if err != nil {
			return errClaim
		}
		return v
	}
	return nil
}

// errClaim stands for a claim that cannot be an OPA value, in a decision
// key: Input.Value fails on it, so no decision is ever cached under it.
var errClaim = ast.String("\x00claim that is not a JSON value")

func (r *Request) at(path []*ast.Term) ast.Value {
	if len(path) == 0 {
		return r.value()
	}
	str := func(s string, optional bool) ast.Value {
		if optional && s == "" {
			return nil
		}
		return lookup(ast.String(s), path[1:])
	}
	switch k, _ := path[0].Value.(ast.String); k {
	case "method":
		return str(r.Method, false)
	case "path":
		return str(r.Path, false)
	case "host":
		return str(r.Host, false)
	case "remote_ip":
		return str(r.RemoteIP, false)
	case "scheme":
		return str(r.Scheme, true)
	case "protocol":
		return str(r.Protocol, true)
	case "client_ip":
		return str(r.ClientIP, true)
	case "segments":
		return lookup(stringArray(r.Segments), path[1:])
	case "query":
		if len(path) > 1 {
			k, _ := path[1].Value.(ast.String)
			vs, ok := r.Query[string(k)]
			if !ok {
				return nil
			}
			return lookup(stringArray(vs), path[2:])
		}
		return r.queryValue()
	case "headers":
		if len(path) > 1 {
			k, _ := path[1].Value.(ast.String)
			v, ok := r.Headers[string(k)]
			if !ok {
				return nil
			}
			return lookup(ast.String(v), path[2:])
		}
		return stringMap(r.Headers)
	case "tls":
		if r.TLS == nil {
			return nil
		}
		return lookup(r.TLS.value(), path[1:])
	}
	return nil
}

func (r *Request) queryValue() ast.Value {
	query := ast.NewObject()
	for k, vs := range r.Query {
		query.Insert(ast.StringTerm(k), ast.NewTerm(stringArray(vs)))
	}
	return query
}

func (r *Request) value() ast.Value {
	query := r.queryValue()
	obj := ast.NewObject(
		item("method", ast.String(r.Method)),
		item("path", ast.String(r.Path)),
		item("segments", stringArray(r.Segments)),
		item("query", query),
		item("headers", stringMap(r.Headers)),
		item("host", ast.String(r.Host)),
		item("remote_ip", ast.String(r.RemoteIP)),
	)
	for _, kv := range [...][2]string{{"scheme", r.Scheme}, {"protocol", r.Protocol}, {"client_ip", r.ClientIP}} {
		if kv[1] != "" {
			obj.Insert(keyTerm(kv[0]), ast.StringTerm(kv[1]))
		}
	}
	if r.TLS != nil {
		obj.Insert(keyTerm("tls"), ast.NewTerm(r.TLS.value()))
	}
	return obj
}

func (t *TLS) value() ast.Value {
	obj := ast.NewObject(item("version", ast.String(t.Version)))
	if c := t.ClientCertificate; c != nil {
		obj.Insert(keyTerm("client_certificate"), ast.NewTerm(ast.NewObject(
			item("subject", ast.String(c.Subject)),
			item("issuer", ast.String(c.Issuer)),
			item("serial", ast.String(c.Serial)),
			item("dns_names", stringArray(c.DNSNames)),
			item("uris", stringArray(c.URIs)),
			item("emails", stringArray(c.Emails)),
			item("fingerprint_sha256", ast.String(c.FingerprintSHA256)),
			item("not_after", ast.Number(strconv.FormatInt(c.NotAfter, 10))),
		)))
	}
	return obj
}

// jsonMap is t as a JSON tree.
func (t *TLS) jsonMap() map[string]any {
	out := map[string]any{"version": t.Version}
	if c := t.ClientCertificate; c != nil {
		strs := func(ss []string) []any {
			out := make([]any, len(ss))
			for i, s := range ss {
				out[i] = s
			}
			return out
		}
		out["client_certificate"] = map[string]any{
			"subject": c.Subject, "issuer": c.Issuer, "serial": c.Serial,
			"dns_names": strs(c.DNSNames), "uris": strs(c.URIs), "emails": strs(c.Emails),
			"fingerprint_sha256": c.FingerprintSHA256, "not_after": c.NotAfter,
		}
	}
	return out
}

// Value returns the token part of the input.
func (t *Token) Value() (ast.Value, error) {
	m, err := t.claims()
	if err != nil {
		return nil, err
	}
	claims, err := ast.InterfaceToValue(m)
	if err != nil {
		return nil, fmt.Errorf("token claims: %w", err)
	}
	if m == nil {
		claims = ast.NewObject()
	}
	return ast.NewObject(
		item("issuer", ast.String(t.Issuer)),
		item("subject", ast.String(t.Subject)),
		item("client_id", ast.String(t.ClientID)),
		item("audience", stringArray(t.Audience)),
		item("scopes", stringArray(t.Scopes)),
		item("expires_at", ast.Number(strconv.FormatInt(t.ExpiresAt, 10))),
		item("claims", claims),
	), nil
}

// inputKeys are the input's object keys, made once: terms in an input are
// never modified by evaluation, so they can be shared.
var inputKeys = func() map[string]*ast.Term {
	m := map[string]*ast.Term{}
	for _, k := range []string{
		"request", "route", "upstream", "token", "method", "path", "segments", "query",
		"headers", "host", "remote_ip", "params", "name", "token_source", "audiences",
		"scheme", "protocol", "client_ip", "tls", "version", "subject", "issuer", "serial",
		"dns_names", "uris", "emails", "fingerprint_sha256", "not_after", "client_certificate",
		"issuer", "subject", "client_id", "audience", "scopes", "expires_at", "claims",
	} {
		m[k] = ast.StringTerm(k)
	}
	return m
}()

func item(key string, v ast.Value) [2]*ast.Term {
	return [2]*ast.Term{keyTerm(key), ast.NewTerm(v)}
}

// keyTerm is the term of an input object key, shared when it is known.
func keyTerm(key string) *ast.Term {
	if k, ok := inputKeys[key]; ok {
		return k
	}
	return ast.StringTerm(key)
}

func stringArray(ss []string) ast.Value {
	terms := make([]*ast.Term, len(ss))
	for i, s := range ss {
		terms[i] = ast.StringTerm(s)
	}
	return ast.NewArray(terms...)
}

func stringMap(m map[string]string) ast.Value {
	obj := ast.NewObject()
	for k, v := range m {
		obj.Insert(ast.StringTerm(k), ast.StringTerm(v))
	}
	return obj
}

// MarshalJSON writes the input as the policy sees it: JSONMap's tree, so
// that an absent list is [] and an absent map {}, as in Value. On a copy:
// an input not yet completed is filled for the copy alone.
func (in Input) MarshalJSON() ([]byte, error) { return json.Marshal(in.JSONMap()) }

// JSONMap returns the input as the generic JSON tree its JSON form
// decodes to, without a JSON round trip: for the decision log. Maps are
// fresh but for token claims, which are shared with the verified token:
// callers must not modify them in place.
func (in *Input) JSONMap() map[string]any {
	in.Complete()
	strs := func(ss []string) []any {
		out := make([]any, len(ss))
		for i, s := range ss {
			out[i] = s
		}
		return out
	}
	strMap := func(m map[string]string) map[string]any {
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	query := make(map[string]any, len(in.Request.Query))
	for k, vs := range in.Request.Query {
		query[k] = strs(vs)
	}
	claims, err := in.Token.claims()
	if err != nil || claims == nil { // an error is refused by Value, before any log
		claims = map[string]any{}
	}
	request := map[string]any{
		"method": in.Request.Method, "path": in.Request.Path, "segments": strs(in.Request.Segments),
		"query": query, "headers": strMap(in.Request.Headers), "host": in.Request.Host,
		"remote_ip": in.Request.RemoteIP,
	}
	for k, v := range map[string]string{"scheme": in.Request.Scheme, "protocol": in.Request.Protocol, "client_ip": in.Request.ClientIP} {
		if v != "" {
			request[k] = v
		}
	}
	if in.Request.TLS != nil {
		request["tls"] = in.Request.TLS.jsonMap()
	}
	return map[string]any{
		"request": request,
		"route":   map[string]any{"path": in.Route.Path, "params": strMap(in.Route.Params), "upstream": in.Route.Upstream},
		"upstream": map[string]any{
			"name": in.Upstream.Name, "token_source": in.Upstream.TokenSource, "audiences": strs(in.Upstream.Audiences),
		},
		"token": map[string]any{
			"issuer": in.Token.Issuer, "subject": in.Token.Subject, "client_id": in.Token.ClientID,
			"audience": strs(in.Token.Audience), "scopes": strs(in.Token.Scopes),
			"expires_at": in.Token.ExpiresAt, "claims": claims,
		},
	}
}
