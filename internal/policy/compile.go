package policy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
)

// NetworkBuiltins are the built-in functions that reach the network: a
// policy may call them only with Options.AllowNetwork.
var NetworkBuiltins = []string{"http.send", "net.lookup_ip_addr"}

// checker compiles a policy set by audgate's rules: Rego v1, only the
// built-in functions capabilities allows (no network builtins unless
// allowed), print statements kept, and the input schema, when set, applied
// to every module, so that a misspelled input field fails with file:line.
type checker struct {
	capabilities *ast.Capabilities
	schemas      *ast.SchemaSet
	allowNetwork bool
	// eventPackages are the packages of the decision log's mask and drop
	// rules, which see an event, not the input: no schema applies there.
	eventPackages []ast.Ref
}

func newChecker(allowNetwork bool, inputSchema []byte) (*checker, error) {
	c := &checker{capabilities: ast.CapabilitiesForThisVersion(), allowNetwork: allowNetwork}
	if !allowNetwork {
		caps := *c.capabilities
		caps.Builtins = slices.DeleteFunc(slices.Clone(caps.Builtins), func(b *ast.Builtin) bool {
			return slices.Contains(NetworkBuiltins, b.Name)
		})
		c.capabilities = &caps
	}
	if len(inputSchema) > 0 {
		var schema any
		dec := json.NewDecoder(bytes.NewReader(inputSchema))
		dec.UseNumber()
		if err := dec.Decode(&schema); err != nil {
			return nil, fmt.Errorf("policy: input schema: %w", err)
		}
		c.schemas = ast.NewSchemaSet()
		c.schemas.Put(schemaInput, schema)
	}
	return c, nil
}

var systemRef = ast.MustParseRef("data.system")

// rulePackage is the package of the rule at a decision_logs path
// (slash form, e.g. acme/log/mask is data.acme.log).
func rulePackage(path string) (ast.Ref, bool) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	if len(parts) < 2 {
		return nil, false
	}
	ref := ast.Ref{ast.DefaultRootDocument}
	for _, p := range parts[:len(parts)-1] {
		ref = append(ref, ast.StringTerm(p))
	}
	return ref, true
}

// schemaInput is the input schema's name, as `opa check -s policies/schemas`
// names policies/schemas/input.json.
var schemaInput = ast.MustParseRef("schema.input")

// scopeSchema applies the input schema to m, as a package annotation
// naming schema.input would, unless m names a schema for input itself.
// Modules under data.system and the packages of the configured mask and
// drop rules are left alone: those rules see an event, not the input.
func (c *checker) scopeSchema(m *ast.Module) {
	if m.Package == nil || m.Package.Path.HasPrefix(systemRef) {
		return
	}
	for _, p := range c.eventPackages {
		if m.Package.Path.Equal(p) {
			return
		}
	}
	schema := &ast.SchemaAnnotation{Path: ast.InputRootRef, Schema: schemaInput}
	for _, a := range m.Annotations {
		if a.Scope != "package" {
			continue
		}
		for _, sa := range a.Schemas {
			if sa.Path.Equal(ast.InputRootRef) {
				return
			}
		}
		a.Schemas = append(a.Schemas, schema)
		return
	}
	ann := &ast.Annotations{Scope: "package", Schemas: []*ast.SchemaAnnotation{schema}, Location: m.Package.Location}
	m.Annotations = append(m.Annotations, ann.Copy(m.Package))
}

// parserOptions are how every module is parsed.
var parserOptions = ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true}

// compile compiles modules by the checker's rules. conflicts, when set,
// reports data that a package's path would conflict with.
func (c *checker) compile(modules map[string]*ast.Module, conflicts func([]string) (bool, error)) (*ast.Compiler, error) {
	comp := ast.NewCompiler().
		WithCapabilities(c.capabilities).
		WithEnablePrintStatements(true).
		WithUseTypeCheckAnnotations(true)
	if c.schemas != nil {
		comp = comp.WithSchemas(c.schemas)
	}
	if conflicts != nil {
		comp = comp.WithPathConflictsCheck(conflicts)
	}
	comp.Compile(modules)
	if comp.Failed() {
		return nil, c.explain(comp.Errors)
	}
	return comp, nil
}

// compileSources parses and compiles raw modules, by name.
func (c *checker) compileSources(sources map[string][]byte, conflicts func([]string) (bool, error)) (*ast.Compiler, error) {
	modules := make(map[string]*ast.Module, len(sources))
	var errs ast.Errors
	for name, src := range sources {
		m, err := ast.ParseModuleWithOpts(name, string(src), parserOptions)
		if err != nil {
			var astErrs ast.Errors
			if errors.As(err, &astErrs) {
				errs = append(errs, astErrs...)
				continue
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		if c.schemas != nil {
			c.scopeSchema(m)
		}
		modules[name] = m
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return c.compile(modules, conflicts)
}

// explain adds what to do to the errors a refused network builtin causes.
func (c *checker) explain(errs ast.Errors) error {
	if c.allowNetwork {
		return errs
	}
	for _, e := range errs {
		for _, name := range NetworkBuiltins {
			if strings.Contains(e.Message, "undefined function "+name) {
				e.Message += " (" + name + " reaches the network: it is refused unless policy.allow_network is true)"
			}
		}
	}
	return errs
}
