package policy

import (
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Reads is what a decision can depend on, found from the compiled policy:
// the input paths every rule reachable from the query reads, and whether
// the decision is a pure function of them (and of the data, which changes
// only with a commit). A decision that is pure may be cached by the
// values at those paths.
type Reads struct {
	// Paths are the input paths read, sorted, none a prefix of another;
	// [] (not nil) with Whole means the entire input.
	Paths [][]string
	// Whole is set when the policy reads the input whole (a bare input,
	// walk(input), a key it computes at the top).
	Whole bool
	// Impure says why the decision is not a pure function of its input
	// and data ("" when it is): the first non-deterministic or
	// side-effecting call found, with its location.
	Impure string
}

// String writes the paths as input.a.b, one per line's worth.
func (r *Reads) String() string {
	if r.Whole {
		return "input (the whole input)"
	}
	out := make([]string, len(r.Paths))
	for i, p := range r.Paths {
		out[i] = "input." + strings.Join(p, ".")
	}
	return strings.Join(out, ", ")
}

// impureCalls are calls whose result or effect is not a function of
// their arguments but that OPA does not mark non-deterministic: print and
// trace write for every evaluation, and certificate verification reads
// the clock.
var impureCalls = map[string]bool{
	"print": true, "internal.print": true, "trace": true,
	"crypto.x509.parse_and_verify_certificates":              true,
	"crypto.x509.parse_and_verify_certificates_with_options": true,
}

// analyzeReads finds what the query's decision reads in compiler's policy.
func analyzeReads(compiler *ast.Compiler, query ast.Body) *Reads {
	a := &readAnalysis{compiler: compiler, seen: map[*ast.Rule]bool{}}
	a.walk(query)
	r := &Reads{Whole: a.whole, Impure: a.impure}
	if !r.Whole {
		r.Paths = minimalPaths(a.paths)
	} else {
		r.Paths = [][]string{}
	}
	return r
}

type readAnalysis struct {
	compiler *ast.Compiler
	seen     map[*ast.Rule]bool
	paths    [][]string
	whole    bool
	impure   string
}

// walk visits every ref and call under x, and the rules they reach.
func (a *readAnalysis) walk(x any) {
	ast.WalkTerms(x, func(t *ast.Term) bool {
		switch v := t.Value.(type) {
		case ast.Ref:
			a.ref(v, t.Location)
		case ast.Call:
			if op, ok := v[0].Value.(ast.Ref); ok {
				a.call(op, t.Location)
			}
		}
		return false
	})
	ast.WalkExprs(x, func(e *ast.Expr) bool {
		if e.IsCall() {
			a.call(e.Operator(), e.Location)
		}
		return false
	})
}

// ref records an input ref's path, or follows a data ref to its rules.
func (a *readAnalysis) ref(ref ast.Ref, loc *ast.Location) {
	switch {
	case ref.HasPrefix(ast.InputRootRef):
		// The path reaches as far as its keys are constant strings: a
		// variable or computed key widens to the subtree before it.
		var path []string
		for _, t := range ref[1:] {
			s, ok := t.Value.(ast.String)
			if !ok {
				break
			}
			path = append(path, string(s))
		}
		if len(path) == 0 {
			a.whole = true
			return
		}
		a.paths = append(a.paths, path)
	case ref.HasPrefix(ast.DefaultRootRef):
		for _, rule := range a.compiler.GetRules(ref.GroundPrefix()) {
			a.rule(rule)
		}
	}
}

// call notes a non-deterministic or side-effecting builtin, and follows a
// call of a policy function to its rules.
func (a *readAnalysis) call(op ast.Ref, loc *ast.Location) {
	if op.HasPrefix(ast.DefaultRootRef) {
		a.ref(op, loc)
		return
	}
	name := op.String()
	b, builtin := ast.BuiltinMap[name]
	if a.impure == "" && (impureCalls[name] || builtin && b.Nondeterministic) {
		a.impure = fmt.Sprintf("%s calls %s", where(loc), name)
	}
}

func (a *readAnalysis) rule(r *ast.Rule) {
	if a.seen[r] {
		return
	}
	a.seen[r] = true
	a.walk(r)
}

func where(loc *ast.Location) string {
	if loc == nil {
		return "the policy"
	}
	return fmt.Sprintf("%s:%d", loc.File, loc.Row)
}

// minimalPaths sorts and de-duplicates paths and drops any path under
// another: reading a.b reads a.b.c too.
func minimalPaths(paths [][]string) [][]string {
	slices.SortFunc(paths, func(x, y []string) int { return slices.Compare(x, y) })
	var out [][]string
	for _, p := range paths {
		if len(out) > 0 && hasPathPrefix(p, out[len(out)-1]) {
			continue
		}
		out = append(out, p)
	}
	if out == nil {
		out = [][]string{}
	}
	return out
}

func hasPathPrefix(p, prefix []string) bool {
	return len(p) >= len(prefix) && slices.Equal(p[:len(prefix)], prefix)
}
