package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/audgate/audgate/policies"
)

// cachePolicies are the policies the decision cache is tested on: what
// each reads, and whether it may be cached at all.
var cachePolicies = []struct {
	name   string
	files  map[string]string // nil: the shipped default policy
	reads  string            // Reads.String(), "" to skip the check
	impure bool
}{
	{name: "default", reads: "input.request.method, input.token.claims.permissions, input.token.claims.tenant, input.token.scopes, input.token.subject, input.upstream.audiences, input.upstream.name"},
	{name: "dynamic headers", reads: "input.request.headers, input.token.subject", files: map[string]string{"p.rego": `package audgate

decision := {"allow": true, "audience": "a", "scopes": [k]} if {
	some k, v in input.request.headers
	startswith(k, "x-grant")
	v == "yes"
} else := {"allow": false, "reason": input.token.subject}
`}},
	{name: "whole input", reads: "input (the whole input)", files: map[string]string{"p.rego": `package audgate

decision := {"allow": n > 12, "audience": "a", "reason": sprintf("%d", [n])} if {
	n := count([p | walk(input, [p, _])])
}
`}},
	{name: "with", reads: "", files: map[string]string{"p.rego": `package audgate

_inner := {"allow": input.token.subject == "bob", "audience": "a", "reason": input.request.method}

decision := d if {
	input.request.path != "/admin"
	d := _inner with input.token.subject as "bob"
} else := {"allow": false, "reason": input.request.path}
`}},
	{name: "functions", reads: "input.token.claims.role, input.token.subject", files: map[string]string{"p.rego": `package audgate

_norm(x) := upper(x) if is_string(x)

_norm(x) := "NONE" if not is_string(x)

_allowed(role, sub) if {
	_norm(role) == "ADMIN"
	sub != "mallory"
}

decision := {"allow": true, "audience": "a"} if _allowed(input.token.claims.role, input.token.subject)

else := {"allow": false, "reason": _norm(input.token.claims.role)}
`}},
	{name: "time", impure: true, files: map[string]string{"p.rego": `package audgate

decision := {"allow": time.now_ns() > input.token.expires_at, "audience": "a"}
`}},
	{name: "print", impure: true, files: map[string]string{"p.rego": `package audgate

decision := {"allow": true, "audience": "a"} if print(input.token.subject)
`}},
	{name: "data", reads: "input.token.claims.level, input.token.subject", files: map[string]string{
		"p.rego": `package audgate

decision := {"allow": input.token.subject in data.admins, "audience": "a", "claims": {"level": data.levels[input.token.claims.level]}}
`,
		"data.json": `{"admins": ["alice", "carol"], "levels": {"1": "one", "1.0": "dotted", "2": "two"}}`,
	}},
	{name: "numbers", reads: "input.token.claims.level", files: map[string]string{"p.rego": `package audgate

decision := {"allow": input.token.claims.level == 1, "audience": "a", "reason": sprintf("%v", [input.token.claims.level])}
`}},
}

// TestDecisionCacheSound: for every policy, random inputs, each a
// mutation of one field (read by the policy or not) of the one before,
// are decided through the cache and without it, and the two decisions are
// the same every time.
func TestDecisionCacheSound(t *testing.T) {
	for _, pc := range cachePolicies {
		t.Run(pc.name, func(t *testing.T) {
			opts := Options{InputSchema: inputSchema(t), DecisionCache: true, DecisionCacheSize: 64}
			if pc.files == nil {
				opts.Modules = policies.FS
			} else {
				opts.Path = policyDir(t, pc.files)
			}
			var printed bytes.Buffer
			opts.Print = func(_ context.Context, _, msg string) { printed.WriteString(msg + "\n") }
			rt, err := startRuntime(t, opts)
			if err != nil {
				t.Fatal(err)
			}
			e := rt.Engine()
			reads := e.Reads()
			if (reads.Impure != "") != pc.impure || e.Cached() == pc.impure {
				t.Fatalf("impure %q, cached %v; want impure %v", reads.Impure, e.Cached(), pc.impure)
			}
			if pc.reads != "" && reads.String() != pc.reads {
				t.Errorf("reads\n %s\nwant\n %s", reads, pc.reads)
			}
			rng := rand.New(rand.NewPCG(1, uint64(len(pc.name))))
			in := randomInput(rng)
			hits := 0
			const n = 3000
			for i := range n {
				mutate(rng, in)
				dd, err := rt.Decide(context.Background(), in)
				want, werr := e.Decide(context.Background(), in)
				if (err == nil) != (werr == nil) {
					t.Fatalf("input %d: cached err %v, uncached %v", i, err, werr)
				}
				if got, exp := resultJSON(dd.Decision), resultJSON(want); err == nil && got != exp {
					raw, _ := json.Marshal(in.JSONMap())
					t.Fatalf("input %d (cached %v): the cache decided\n %s\nthe policy\n %s\nfor %s", i, dd.Cached, got, exp, raw)
				}
				if dd.Cached {
					hits++
				}
			}
			switch {
			case pc.impure && hits > 0:
				t.Errorf("%d hits from a policy that is not pure", hits)
			case !pc.impure && hits == 0:
				t.Errorf("no hit in %d decisions: the cache was never used", n)
			case pc.name == "print" && strings.Count(printed.String(), "\n") != 2*n:
				t.Errorf("print ran %d times for %d decisions made twice", strings.Count(printed.String(), "\n"), n)
			}
			t.Logf("%d of %d decisions from the cache", hits, n)
		})
	}
}

// resultJSON is the decision's result as the decision log writes it, and
// its decoded fields.
func resultJSON(d Decision) string {
	r, ok := d.Result()
	if !ok {
		r = "(none)"
	}
	d.Raw = nil
	d.rawJSON = nil
	b, _ := json.Marshal(map[string]any{"result": r, "decoded": d})
	return string(b)
}

// randomInput is an input from small domains, so that values repeat.
func randomInput(rng *rand.Rand) *Input {
	in := sampleInput()
	in.Request.Headers = map[string]string{}
	in.Token.Claims = map[string]any{}
	for range 3 {
		mutate(rng, in)
	}
	return in
}

func pick[T any](rng *rand.Rand, xs ...T) T { return xs[rng.IntN(len(xs))] }

// mutate changes one field of in, chosen at random among those the test
// policies read and those none reads.
func mutate(rng *rand.Rand, in *Input) {
	switch rng.IntN(12) {
	case 0:
		in.Request.Method = pick(rng, "GET", "POST", "DELETE")
	case 1:
		in.Request.Path = pick(rng, "/orders/1", "/orders/2", "/admin")
	case 2:
		k := pick(rng, "x-grant-a", "x-grant-b", "x-other", "accept")
		if rng.IntN(3) == 0 {
			delete(in.Request.Headers, k)
		} else {
			in.Request.Headers[k] = pick(rng, "yes", "no")
		}
	case 3:
		in.Token.Subject = pick(rng, "alice", "bob", "carol", "mallory", "")
	case 4:
		in.Token.Claims["role"] = pick[any](rng, "admin", "Admin", "user", json.Number("1"), nil)
	case 5:
		in.Token.Claims["permissions"] = pick[any](rng, []any{"orders:read"}, []any{"orders:write"}, []any{"orders:read", "orders:write"}, map[string]any{"0": "orders:read"})
	case 6:
		in.Token.Scopes = pick(rng, nil, []string{}, []string{"orders:read"}, []string{"orders:write"})
	case 7:
		// Numbers that OPA finds equal and unequal.
		in.Token.Claims["level"] = pick[any](rng, json.Number("1"), json.Number("1.0"), json.Number("10e-1"), json.Number("2"), json.Number("0.10000000000000001"), "1")
	case 8:
		in.Token.Claims["tenant"] = pick[any](rng, "acme", "globex", 7)
		in.Token.Claims["org"] = pick[any](rng, map[string]any{"name": "acme", "n": json.Number("2")}, map[string]any{"name": nil}, []any{"acme"}, map[string]any{}, true)
	case 9: // read by no policy but the whole-input one
		in.Request.Host = pick(rng, "a.example", "b.example")
	case 10:
		in.Token.ExpiresAt = pick[int64](rng, 1, 4102444800)
	case 11:
		in.Upstream.Name = pick(rng, "orders", "billing")
	}
}

// TestReads: what the analysis finds in the forms a policy reads input.
func TestReads(t *testing.T) {
	for _, tc := range []struct{ rego, want, impure string }{
		{rego: `decision := {"allow": input.token.claims.x.y == 1}`, want: "input.token.claims.x.y"},
		{rego: `decision := {"allow": input.token.claims[k] == 1} if some k`, want: "input.token.claims"},
		{rego: `decision := {"allow": input.token.claims.a == 1, "b": input.token.claims}`, want: "input.token.claims"},
		{rego: `decision := {"allow": x.token.subject == "a"} if x := input`, want: "input (the whole input)"},
		{rego: `decision := {"allow": data.audgate[k] == 1} if { k := "f" }` + "\n\nf := input.request.path", want: "input.request.path"},
		{rego: `decision := {"allow": true} if every h in input.request.segments { h != "x" }`, want: "input.request.segments"},
		{rego: `decision := {"allow": count([1 | input.request.query.a[_]]) > 0}`, want: "input.request.query.a"},
		{rego: `decision := {"allow": rand.intn("k", 2) == 1}`, want: "", impure: "p.rego:3 calls rand.intn"},
		{rego: `decision := {"allow": uuid.rfc4122("k") != ""}`, impure: "calls uuid.rfc4122"},
		{rego: `decision := {"allow": opa.runtime().env.X == "1"}`, impure: "calls opa.runtime"},
		{rego: `decision := {"allow": true} if trace("x")`, impure: "calls trace"},
		{rego: `decision := {"allow": true}` + "\n\nunrelated := time.now_ns()", want: ""},
	} {
		dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\n" + tc.rego + "\n"})
		rt, err := startRuntime(t, Options{Path: dir, DecisionCache: true})
		if err != nil {
			t.Fatalf("%s: %v", tc.rego, err)
		}
		r := rt.Engine().Reads()
		if tc.impure != "" {
			if !strings.Contains(r.Impure, tc.impure) {
				t.Errorf("%s: impure %q, want %q", tc.rego, r.Impure, tc.impure)
			}
			continue
		}
		if r.Impure != "" || r.String() != tc.want {
			t.Errorf("%s: reads %q (impure %q), want %q", tc.rego, r, r.Impure, tc.want)
		}
	}
}

// FuzzDecisionKey: two values share a key only when OPA finds them equal.
func FuzzDecisionKey(f *testing.F) {
	for _, pair := range [][2]string{
		{`["a b"]`, `["a","b"]`},
		{`{"a":"b"}`, `["a","b"]`},
		{`1`, `1.0`},
		{`1`, `"1"`},
		{`10`, `1e1`},
		{`0.1`, `0.10000000000000001`},
		{`-0`, `0`},
		{`[[]]`, `[]`},
		{`{"a":{"b":1}}`, `{"a":{"b":1.00}}`},
		{`{"b":1,"a":2}`, `{"a":2,"b":1}`},
		{`null`, `[null]`},
		{`1e400`, `1e401`},
		{`""`, `null`},
	} {
		f.Add(pair[0], pair[1])
	}
	path := &keyPaths{paths: [][]*ast.Term{{ast.StringTerm("v")}}}
	f.Fuzz(func(t *testing.T, a, b string) {
		va, ok1 := fuzzValue(a)
		vb, ok2 := fuzzValue(b)
		if !ok1 || !ok2 {
			return
		}
		ka := decisionKey(1, path, false, va)
		kb := decisionKey(1, path, false, vb)
		equal := ast.Compare(lookup(va, path.paths[0]), lookup(vb, path.paths[0])) == 0
		if ka == kb && !equal {
			t.Errorf("%s and %s share a key but OPA tells them apart", a, b)
		}
		if ka != decisionKey(1, path, false, va) {
			t.Errorf("%s: the key is not stable", a)
		}
		if decisionKey(2, path, false, va) == ka {
			t.Errorf("%s: another commit count gives the same key", a)
		}
	})
}

// fuzzValue reads JSON as the input's value at "v".
func fuzzValue(s string) (ast.Value, bool) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var x any
	if dec.Decode(&x) != nil || dec.More() {
		return nil, false
	}
	v, err := ast.InterfaceToValue(map[string]any{"v": x})
	return v, err == nil
}

// TestInputKeyIsTheValueKey: the key built from the input's fields as far
// as the paths reach is the key over the whole input value, for every
// path the input has and some it has not.
func TestInputKeyIsTheValueKey(t *testing.T) {
	var paths [][]string
	for _, p := range []string{
		"request.method", "request.path", "request.segments", "request.query", "request.query.expand", "request.query.none",
		"request.headers", "request.headers.x-grant-a", "request.host", "request.scheme", "request.protocol",
		"request.remote_ip", "request.client_ip", "request.tls", "request.tls.client_certificate.uris", "request.nope",
		"route", "route.path", "route.params", "route.params.id", "route.upstream", "route.nope",
		"upstream", "upstream.audiences", "token", "token.claims.level", "token.subject", "token.expires_at", "nope",
		"token.issuer", "token.client_id", "token.scopes", "token.audience", "token.claims", "token.claims.role",
		"token.claims.permissions", "token.claims.permissions.0", "token.claims.tenant", "token.claims.org.name",
		"token.claims.none", "token.subject.x", "token.scopes.0",
		"request.method.x",
	} {
		paths = append(paths, strings.Split(p, "."))
	}
	kp := newKeyPaths(&Reads{Paths: paths})
	tokenOnly := newKeyPaths(&Reads{Paths: [][]string{{"token", "subject"}, {"token", "claims", "role"}}})
	rng := rand.New(rand.NewPCG(7, 7))
	in := randomInput(rng)
	for i := range 500 {
		mutate(rng, in)
		if i%7 == 0 {
			in.Request.Scheme, in.Request.TLS = "", nil
		}
		v, err := in.Value()
		if err != nil {
			t.Fatal(err)
		}
		// The same token as verified tokens keep it: claims as JSON, and a
		// memo of the key's token part.
		lazy := *in
		b, err := json.Marshal(in.Token.Claims)
		if err != nil {
			t.Fatal(err)
		}
		lazy.Token.Claims, lazy.Token.ClaimsJSON, lazy.Token.Memo = nil, string(b), new(KeyMemo)
		for _, whole := range []bool{false, true} {
			want := decisionKey(3, kp, whole, v)
			if inputKey(3, kp, whole, in) != want {
				t.Fatalf("input %d (whole %v): the keys differ", i, whole)
			}
			// Twice: the second from the memo; then another engine's
			// paths, which the memo must not answer for, then kp's again.
			for range 2 {
				if l := lazy; inputKey(3, kp, whole, &l) != want {
					t.Fatalf("input %d (whole %v): with claims as JSON and a memo, the keys differ", i, whole)
				}
				if l := lazy; inputKey(3, tokenOnly, whole, &l) != decisionKey(3, tokenOnly, whole, v) {
					t.Fatalf("input %d (whole %v): a memo of other paths answered", i, whole)
				}
			}
		}
		for _, p := range kp.paths {
			if got, want := in.at(p), lookup(v, p); (got == nil) != (want == nil) || got != nil && ast.Compare(got, want) != 0 {
				t.Fatalf("input %d: at %v = %v, the value has %v", i, p, got, want)
			}
		}
	}
}

// TestCompactKeepsTheResult: a cached decision's result is the policy's
// value, number text and all, whether its fields stand for it or it is
// kept as JSON; and the result handed out is the caller's to change.
func TestCompactKeepsTheResult(t *testing.T) {
	for _, c := range []struct {
		value string
		typed bool
	}{
		{`{"allow": true, "audience": "a", "scopes": ["s"], "headers": {"X-A": "1"}}`, true},
		{`{"allow": true, "audience": "a", "response_headers": {"X-T": "g"}}`, true},
		{`{"allow": true, "audience": "a", "claims": {"n": 1.50, "o": {"x": [1, "y"]}}}`, false},
		{`{"allow": false, "status": 404, "reason": "no", "headers": {}, "scopes": ["a", "b"]}`, true},
		{`{"allow": true, "audience": "a", "reason": ""}`, false},
		{`{"allow": false, "status": 404, "reason": "no"}`, true},
		{`{"allow": false}`, true},
		{`{"allow": true, "audience": "a", "extra": 1}`, false},
		{`{"allow": false, "status": 403.0, "reason": "r"}`, false},
		{`{"allow": "yes"}`, false},
		{`{"audience": "a"}`, false},
		{`{"allow": true, "audience": "a", "scopes": []}`, true},
		{`{"allow": true, "audience": ""}`, false},
	} {
		v := ast.MustParseTerm(c.value).Value
		d, err := decode(v)
		if err != nil {
			t.Fatalf("%s: %v", c.value, err)
		}
		d.Raw = v
		want, _ := ast.JSON(v)
		wantJSON, _ := json.Marshal(want)
		kept := d.compact()
		if kept.Raw != nil || kept.typed != c.typed {
			t.Errorf("%s: typed %v, want %v", c.value, kept.typed, c.typed)
		}
		for range 2 {
			got, ok := kept.Result()
			gotJSON, _ := json.Marshal(got)
			if !ok || string(gotJSON) != string(wantJSON) {
				t.Fatalf("%s: result %s, want %s", c.value, gotJSON, wantJSON)
			}
			if m, ok := got.(map[string]any); ok { // the caller changes its copy
				if claims, ok := m["claims"].(map[string]any); ok {
					claims["o"].(map[string]any)["x"] = "changed"
				}
				m["allow"] = "changed"
			}
		}
	}
}

// TestFillOnFirstRead: the parts Fill sets are built on the first read of
// any of them, once, and not for a read of anything else.
func TestFillOnFirstRead(t *testing.T) {
	want := sampleInput()
	calls := 0
	lazy := *want
	lazy.Request.Segments, lazy.Request.Query, lazy.Request.Headers, lazy.Route.Params = nil, nil, nil, nil
	lazy.Fill = func(in *Input) {
		calls++
		in.Request.Segments, in.Request.Query, in.Request.Headers = want.Request.Segments, want.Request.Query, want.Request.Headers
		in.Route.Params = want.Route.Params
	}
	path := func(p string) []*ast.Term {
		var out []*ast.Term
		for _, k := range strings.Split(p, ".") {
			out = append(out, ast.StringTerm(k))
		}
		return out
	}
	for _, p := range []string{"request.method", "request.path", "route.path", "token.subject", "upstream.name"} {
		lazy.at(path(p))
	}
	if calls != 0 {
		t.Fatalf("Fill ran %d times for reads of what it does not set", calls)
	}
	wv, _ := want.Value()
	for _, p := range []string{"request.headers", "route.params", "request.query", "request.segments", "request", "route"} {
		l := lazy
		calls = 0
		if got, exp := l.at(path(p)), lookup(wv, path(p)); ast.Compare(got, exp) != 0 || calls != 1 {
			t.Errorf("%s: %v after %d fills, want %v after one", p, got, calls, exp)
		}
		l.at(path(p))
		if calls != 1 {
			t.Errorf("%s: Fill ran %d times", p, calls)
		}
	}
	l := lazy
	calls = 0
	if v, err := l.Value(); err != nil || ast.Compare(v, wv) != 0 || calls != 1 {
		t.Errorf("Value after %d fills: %v, %v", calls, v, err)
	}
}
