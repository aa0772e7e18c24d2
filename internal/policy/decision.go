package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"unique"

	"github.com/open-policy-agent/opa/v1/ast"
	"golang.org/x/net/http/httpguts"
)

// Decision is the policy's answer, decoded from data.audgate.decision.
type Decision struct {
	// Allow is true only when the policy returned the boolean true.
	Allow bool `json:"allow"`
	// Audience is the downstream token's audience; required on allow.
	Audience string `json:"audience,omitempty"`
	// Scopes are the downstream token's scopes.
	Scopes []string `json:"scopes,omitempty"`
	// Headers are set, replacing, on the upstream request.
	Headers Headers `json:"headers,omitempty"`
	// ResponseHeaders are set on the response to the caller, on allow and
	// on deny.
	ResponseHeaders Headers `json:"response_headers,omitempty"`
	// Claims are added to self-signed downstream tokens.
	Claims map[string]any `json:"claims,omitempty"`
	// Status is the deny status: 401, 403 (default) or 404.
	Status int `json:"status,omitempty"`
	// Reason explains a deny; it goes to the decision log and the client.
	Reason string `json:"reason,omitempty"`

	// Raw is the policy's value, before decoding and checks: what the
	// decision log records as the result (see Result). Nil when undefined,
	// and in a decision from the decision cache, which keeps no OPA value
	// (see compact).
	Raw ast.Value `json:"-"`
	// rawJSON is Raw as the decision cache keeps it, unless typed: the
	// fields stand for all of it.
	rawJSON []byte
	typed   bool
}

// Header is one header a decision sets. It is an unnamed struct type, so
// that a package that sets headers (proxy) takes Headers as they are
// without importing this one.
type Header = struct{ Name, Value string }

// Headers are a decision's headers in name order, each name once: a
// slice rather than a map, a tenth of the memory in the decision cache.
// As JSON, an object.
type Headers []Header

// Get is the value of the header named name exactly, and whether there
// is one.
func (h Headers) Get(name string) (string, bool) {
	i, ok := slices.BinarySearchFunc(h, name, func(e Header, name string) int { return strings.Compare(e.Name, name) })
	if !ok {
		return "", false
	}
	return h[i].Value, true
}

// Map is h as a map.
func (h Headers) Map() map[string]string {
	m := make(map[string]string, len(h))
	for _, e := range h {
		m[e.Name] = e.Value
	}
	return m
}

// MarshalJSON writes h as an object.
func (h Headers) MarshalJSON() ([]byte, error) {
	return json.Marshal(h.Map())
}

// UnmarshalJSON reads an object of strings.
func (h *Headers) UnmarshalJSON(b []byte) error {
	var m map[string]string
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	*h = HeadersOf(m)
	return nil
}

// HeadersOf is m as Headers; nil when m is.
func HeadersOf(m map[string]string) Headers {
	if m == nil {
		return nil
	}
	h := make(Headers, 0, len(m))
	for k, v := range m {
		h = append(h, Header{k, v})
	}
	slices.SortFunc(h, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
	return h
}

// Result is the policy's value as a JSON tree (numbers as json.Number),
// as the decision log records it; false when there is none. The tree is
// the caller's to change.
func (d *Decision) Result() (any, bool) {
	switch {
	case d.Raw != nil:
		v, err := ast.JSON(d.Raw)
		return v, err == nil
	case d.rawJSON != nil:
		dec := json.NewDecoder(bytes.NewReader(d.rawJSON))
		dec.UseNumber()
		var v any
		return v, dec.Decode(&v) == nil
	case d.typed:
		return d.typedResult(), true
	}
	return nil, false
}

// typedResult is the value d's fields but Claims stand for, as a fresh
// JSON tree: the policy's own value whenever it held nothing else (see
// compact).
func (d *Decision) typedResult() map[string]any {
	m := map[string]any{"allow": d.Allow}
	if d.Audience != "" {
		m["audience"] = d.Audience
	}
	if d.Scopes != nil {
		scopes := make([]any, len(d.Scopes))
		for i, s := range d.Scopes {
			scopes[i] = s
		}
		m["scopes"] = scopes
	}
	for key, h := range map[string]Headers{"headers": d.Headers, "response_headers": d.ResponseHeaders} {
		if h != nil {
			obj := make(map[string]any, len(h))
			for _, e := range h {
				obj[e.Name] = e.Value
			}
			m[key] = obj
		}
	}
	if d.Status != 0 {
		m["status"] = json.Number(strconv.Itoa(d.Status))
	}
	if d.Reason != "" {
		m["reason"] = d.Reason
	}
	return m
}

// compact is d as the decision cache keeps it: without its OPA value,
// which its fields stand for when the policy's value held nothing else
// (see typedStandsFor), else kept as JSON text.
func (d Decision) compact() Decision {
	if d.Raw == nil {
		return d
	}
	// Many entries share these: one copy of each.
	d.Audience = unique.Make(d.Audience).Value()
	for i, s := range d.Scopes {
		d.Scopes[i] = unique.Make(s).Value()
	}
	for i, h := range d.Headers {
		d.Headers[i].Name = unique.Make(h.Name).Value()
	}
	if obj, ok := d.Raw.(ast.Object); ok && d.typedStandsFor(obj) {
		d.Raw, d.typed = nil, true
		return d
	}
	if v, err := ast.JSON(d.Raw); err == nil {
		if b, err := json.Marshal(v); err == nil {
			d.Raw, d.rawJSON = nil, b
		}
	}
	return d
}

// typedStandsFor says whether typedResult is exactly obj, d's decoded
// value, numbers' text included: obj holds a boolean allow and, beside it,
// only fields that decode read without loss. decode has already checked
// the types of scopes and headers. A decision with claims keeps its text,
// as claims are any JSON.
func (d *Decision) typedStandsFor(obj ast.Object) bool {
	if _, ok := field(obj, "allow").(ast.Boolean); !ok {
		return false
	}
	ok := true
	obj.Foreach(func(k, v *ast.Term) {
		name, _ := k.Value.(ast.String)
		switch name {
		case "allow", "scopes", "headers", "response_headers":
		case "audience", "reason":
			s, _ := v.Value.(ast.String)
			ok = ok && s != ""
		case "status":
			n, _ := v.Value.(ast.Number)
			ok = ok && d.Status != 0 && string(n) == strconv.Itoa(d.Status)
		default:
			ok = false
		}
	})
	return ok
}

// ErrPolicy marks an evaluation error or a decision that breaks the
// contract; the gateway answers 500 and proxies nothing.
var ErrPolicy = errors.New("policy error")

// Error is a policy error naming the decision field at fault.
type Error struct {
	Field string // e.g. "decision.audience"; "" for evaluation errors
	Msg   string
	Err   error
}

func (e *Error) Error() string {
	msg := e.Msg
	if e.Field != "" {
		msg = e.Field + ": " + msg
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return "policy: " + msg
}

// Is makes every *Error match ErrPolicy.
func (e *Error) Is(target error) bool { return target == ErrPolicy }

func (e *Error) Unwrap() error { return e.Err }

func fieldError(field, format string, args ...any) error {
	return &Error{Field: "decision." + field, Msg: fmt.Sprintf(format, args...)}
}

// DecodeResult reads a decision from its JSON form, as the decision log
// records the policy's result: the same rules as a live decision.
func DecodeResult(result any) (Decision, error) {
	v, err := ast.InterfaceToValue(result)
	if err != nil {
		return Decision{}, &Error{Msg: "decode result", Err: err}
	}
	d, err := decode(v)
	d.Raw = v
	return d, err
}

// decode turns the policy's result, an OPA value, into a Decision. Only a
// boolean true allows; anything else that is not a contract violation
// denies.
func decode(v ast.Value) (Decision, error) {
	obj, ok := v.(ast.Object)
	if !ok {
		return Decision{}, fieldError("", "must be an object, got %s", kind(v))
	}
	var d Decision
	if allow, ok := field(obj, "allow").(ast.Boolean); ok && bool(allow) {
		d.Allow = true
	}
	var err error
	if d.Audience, err = optString(obj, "audience"); err != nil {
		return Decision{}, err
	}
	if d.Reason, err = optString(obj, "reason"); err != nil {
		return Decision{}, err
	}
	if d.Scopes, err = optStrings(obj, "scopes"); err != nil {
		return Decision{}, err
	}
	if d.Headers, err = optHeaders(obj, "headers"); err != nil {
		return Decision{}, err
	}
	if d.ResponseHeaders, err = optHeaders(obj, "response_headers"); err != nil {
		return Decision{}, err
	}
	if d.Claims, err = optClaims(obj); err != nil {
		return Decision{}, err
	}
	if s := field(obj, "status"); s != nil {
		n, ok := s.(ast.Number)
		st, isInt := n.Int()
		if !ok || !isInt {
			return Decision{}, fieldError("status", "must be an integer, got %s", kind(s))
		}
		d.Status = st
	}
	return d, nil
}

// field returns obj[key], or nil when absent.
func field(obj ast.Object, key string) ast.Value {
	t := obj.Get(ast.InternedTerm(key))
	if t == nil {
		return nil
	}
	return t.Value
}

func optString(obj ast.Object, key string) (string, error) {
	v := field(obj, key)
	if v == nil {
		return "", nil
	}
	s, ok := v.(ast.String)
	if !ok {
		return "", fieldError(key, "must be a string, got %s", kind(v))
	}
	return string(s), nil
}

func optStrings(obj ast.Object, key string) ([]string, error) {
	v := field(obj, key)
	if v == nil {
		return nil, nil
	}
	arr, ok := v.(*ast.Array)
	if !ok {
		return nil, fieldError(key, "must be an array of strings, got %s", kind(v))
	}
	out := make([]string, arr.Len())
	for i := range out {
		e := arr.Elem(i).Value
		s, ok := e.(ast.String)
		if !ok {
			return nil, fieldError(fmt.Sprintf("%s[%d]", key, i), "must be a string, got %s", kind(e))
		}
		out[i] = string(s)
	}
	return out, nil
}

func optHeaders(obj ast.Object, key string) (Headers, error) {
	v := field(obj, key)
	if v == nil {
		return nil, nil
	}
	m, ok := v.(ast.Object)
	if !ok {
		return nil, fieldError(key, "must be an object of strings, got %s", kind(v))
	}
	out := make(Headers, 0, m.Len())
	err := m.Iter(func(k, e *ast.Term) error {
		name, ok := k.Value.(ast.String)
		if !ok {
			return fieldError(key, "names must be strings, got %s", kind(k.Value))
		}
		s, ok := e.Value.(ast.String)
		if !ok {
			return fieldError(key+"."+string(name), "must be a string, got %s", kind(e.Value))
		}
		out = append(out, Header{string(name), string(s)})
		return nil
	})
	slices.SortFunc(out, func(a, b Header) int { return strings.Compare(a.Name, b.Name) })
	return out, err
}

func optClaims(obj ast.Object) (map[string]any, error) {
	v := field(obj, "claims")
	if v == nil {
		return nil, nil
	}
	if _, ok := v.(ast.Object); !ok {
		return nil, fieldError("claims", "must be an object, got %s", kind(v))
	}
	claims, err := ast.JSON(v)
	if err != nil {
		return nil, fieldError("claims", "must be JSON: %v", err)
	}
	m, ok := claims.(map[string]any)
	if !ok {
		return nil, fieldError("claims", "must be an object with string keys")
	}
	return m, nil
}

func kind(v ast.Value) string {
	switch v.(type) {
	case nil, ast.Null:
		return "null"
	case ast.Boolean:
		return "a boolean"
	case ast.Number:
		return "a number"
	case ast.String:
		return "a string"
	case *ast.Array:
		return "an array"
	case ast.Object:
		return "an object"
	case ast.Set:
		return "a set"
	}
	return fmt.Sprintf("%T", v)
}

// Limits are what an upstream allows a decision to ask for.
type Limits struct {
	// Audiences are the only audiences a decision may name. Required.
	Audiences []string
	// Scopes, when non-empty, are the only scopes a decision may name.
	Scopes []string
}

// reservedHeaders may not be set by a decision: the gateway owns them.
var reservedHeaders = map[string]bool{
	"Authorization": true, "Host": true, "Content-Length": true,
	"Connection": true, "Keep-Alive": true, "Proxy-Authenticate": true,
	"Proxy-Authorization": true, "Proxy-Connection": true, "Te": true,
	"Trailer": true, "Transfer-Encoding": true, "Upgrade": true,
	"Forwarded": true, "X-Forwarded-For": true, "X-Forwarded-Host": true,
	"X-Forwarded-Proto": true, "Cookie": true, "X-Request-Id": true,
}

// reservedResponseHeaders may not be set on the caller's response: those
// of reservedHeaders, and what the gateway alone may send the caller (a
// cookie from the policy could fix a session; the challenge and the
// request ID are the gateway's).
var reservedResponseHeaders = func() map[string]bool {
	// Besides the request's, those that would change how the caller
	// reads the body, or who it is.
	m := map[string]bool{"Set-Cookie": true, "Www-Authenticate": true, "Content-Type": true, "Content-Encoding": true, "Content-Range": true}
	for k := range reservedHeaders {
		m[k] = true
	}
	return m
}()

// registeredClaims may not be set by a decision's claims: the gateway
// sets them, or they carry authorization the upstream's allow-lists would
// not check (scp is scope's other spelling; cnf binds a key; may_act names
// who may act).
var registeredClaims = map[string]bool{
	"iss": true, "sub": true, "aud": true, "exp": true, "iat": true,
	"nbf": true, "jti": true, "scope": true, "client_id": true, "act": true,
	"scp": true, "azp": true, "cnf": true, "may_act": true,
}

// Check enforces the contract on a decision: on allow, the audience and
// scopes must be within the upstream's limits, headers must be settable
// and claims must not override registered ones; on deny, status must be
// absent, 401, 403 or 404. A violation is an *Error. d is not changed.
func (d *Decision) Check(lim Limits) error {
	if err := checkHeaders("response_headers", d.ResponseHeaders, reservedResponseHeaders); err != nil {
		return err
	}
	if !d.Allow {
		switch d.Status {
		case 0, http.StatusUnauthorized, http.StatusForbidden, http.StatusNotFound:
		default:
			return fieldError("status", "%d is not allowed on deny; use 401, 403 or 404", d.Status)
		}
		for i, s := range d.Scopes {
			if !ValidScope(s) {
				return fieldError(fmt.Sprintf("scopes[%d]", i), "%q is not a valid scope token (RFC 6749 §3.3)", s)
			}
		}
		return nil
	}
	if d.Audience == "" {
		return fieldError("audience", "required when allow is true")
	}
	if !slices.Contains(lim.Audiences, d.Audience) {
		return fieldError("audience", "%q is not in the upstream's audiences %q", d.Audience, lim.Audiences)
	}
	for i, s := range d.Scopes {
		if !ValidScope(s) {
			return fieldError(fmt.Sprintf("scopes[%d]", i), "%q is not a valid scope token (RFC 6749 §3.3)", s)
		}
		if len(lim.Scopes) > 0 && !slices.Contains(lim.Scopes, s) {
			return fieldError(fmt.Sprintf("scopes[%d]", i), "%q is not in the upstream's scopes %q", s, lim.Scopes)
		}
	}
	if err := checkHeaders("headers", d.Headers, reservedHeaders); err != nil {
		return err
	}
	for k := range d.Claims {
		if registeredClaims[k] {
			return fieldError("claims."+k, "is a registered claim set by the gateway and may not be overridden")
		}
	}
	return nil
}

// checkHeaders refuses a header a decision may not set, and values with
// control characters.
func checkHeaders(field string, headers Headers, reserved map[string]bool) error {
	var seen map[string]string // canonical name to name, for many headers
	if len(headers) > 16 {
		seen = make(map[string]string, len(headers))
	}
	for i, h := range headers {
		k := h.Name
		if !httpguts.ValidHeaderFieldName(k) {
			return fieldError(field, "%q is not a valid header name", k)
		}
		// Valid names differ from their canonical form in case alone.
		other, dup := "", false
		if seen != nil {
			other, dup = seen[http.CanonicalHeaderKey(k)]
			seen[http.CanonicalHeaderKey(k)] = k
		} else if j := slices.IndexFunc(headers[:i], func(o Header) bool { return strings.EqualFold(o.Name, k) }); j >= 0 {
			other, dup = headers[j].Name, true
		}
		if dup {
			return fieldError(field, "%q and %q name the same header; set it once", other, k)
		}
		if reserved[http.CanonicalHeaderKey(k)] {
			return fieldError(field+"."+k, "is set by the gateway and may not be set by the policy")
		}
		if hasControl(h.Value) {
			return fieldError(field+"."+k, "value contains CR, LF, TAB or another control character")
		}
	}
	return nil
}

// DenyStatus is the status a denied caller gets: the decision's, or 403.
func (d *Decision) DenyStatus() int {
	if d.Status == 0 {
		return http.StatusForbidden
	}
	return d.Status
}

// hasControl reports whether s holds a control character (RFC 5234 CTL).
// HTAB is one too: httpguts.ValidHeaderFieldValue allows it, as RFC 9110
// does inside a value, but a tab the upstream may trim or split on has no
// place in an identity header.
func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}

// ValidScope reports whether s is an RFC 6749 §3.3 scope-token: printable
// ASCII without space, " or \.
func ValidScope(s string) bool {
	if s == "" {
		return false
	}
	return !strings.ContainsFunc(s, func(r rune) bool {
		return r <= 0x20 || r == '"' || r == '\\' || r >= 0x7f
	})
}
