// Package policy evaluates audgate's Rego policy: it compiles the modules
// once, prepares the decision query, and turns each request's Input into a
// checked Decision. It uses OPA's v1 packages (Rego v1 syntax).
package policy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Defaults for the zero values of Options.
const (
	DefaultQuery   = "data.audgate.decision"
	DefaultTimeout = 100 * time.Millisecond
)

// Options configure an Engine.
type Options struct {
	// Path is a directory of .rego and .json files, or a bundle .tar.gz.
	// Empty: Modules is used.
	Path string
	// Modules is a file system of .rego files, used when Path is empty
	// (the embedded default policy). *_test.rego files are skipped.
	Modules fs.FS
	// Query is the decision reference. Default: data.audgate.decision.
	Query string
	// Timeout bounds one evaluation. Default: 100ms.
	Timeout time.Duration
	// Workers, if set, run evaluations (see Workers). Default: the
	// caller's goroutine.
	Workers *Workers
}

// Engine evaluates one compiled policy. It is safe for concurrent use and
// never changes after New; a reload builds a new Engine.
type Engine struct {
	query   rego.PreparedEvalQuery
	queryS  string
	timeout time.Duration
	workers *Workers
}

// New compiles the policy and prepares the query. Compile errors name the
// file and line.
func New(ctx context.Context, opts Options) (*Engine, error) {
	if opts.Query == "" {
		opts.Query = DefaultQuery
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	args := []func(*rego.Rego){
		rego.Query(opts.Query),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
		// Decode the decision from the OPA value itself, not from a
		// converted map.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	}
	switch {
	case opts.Path != "" && (strings.HasSuffix(opts.Path, ".tar.gz") || strings.HasSuffix(opts.Path, ".tgz")):
		args = append(args, rego.LoadBundle(opts.Path))
	case opts.Path != "":
		args = append(args, rego.Load([]string{opts.Path}, skipTests))
	case opts.Modules != nil:
		mods, err := readModules(opts.Modules)
		if err != nil {
			return nil, err
		}
		args = append(args, mods...)
	default:
		return nil, errors.New("policy: no policy: set Path or Modules")
	}
	pq, err := rego.New(args...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("policy: compile %s: %w", source(opts), err)
	}
	return &Engine{query: pq, queryS: opts.Query, timeout: opts.Timeout, workers: opts.Workers}, nil
}

func source(opts Options) string {
	if opts.Path != "" {
		return opts.Path
	}
	return "embedded policy"
}

// skipTests is a loader filter: true skips the file.
func skipTests(abspath string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}

func readModules(fsys fs.FS) ([]func(*rego.Rego), error) {
	var mods []func(*rego.Rego)
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || path.Ext(p) != ".rego" || strings.HasSuffix(p, "_test.rego") {
			return err
		}
		b, err := fs.ReadFile(fsys, p)
		if err != nil {
			return err
		}
		mods = append(mods, rego.Module(p, string(b)))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("policy: read modules: %w", err)
	}
	if len(mods) == 0 {
		return nil, errors.New("policy: no .rego modules found")
	}
	return mods, nil
}

// noMetrics spares each evaluation the allocation of OPA's metrics.
var noMetrics = metrics.NoOp()

// Query returns the decision reference the engine evaluates.
func (e *Engine) Query() string { return e.queryS }

// Decide evaluates the policy for in. The returned Decision is decoded but
// not yet checked against an upstream's limits (see Decision.Check). An
// undefined decision denies; an evaluation error is an *Error.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	v, err := in.Value()
	if err != nil {
		return Decision{}, &Error{Msg: "build input", Err: err}
	}
	if e.workers == nil {
		return e.eval(ctx, v)
	}
	return e.workers.run(&evaluation{e: e, ctx: ctx, input: v, res: make(chan evalResult, 1)})
}

func (e *Engine) eval(ctx context.Context, v ast.Value) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, &Error{Msg: "evaluate " + e.queryS, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	// OPA would start a goroutine per evaluation to watch ctx; AfterFunc
	// starts one only if ctx actually ends first.
	stop := topdown.NewCancel()
	defer context.AfterFunc(ctx, stop.Cancel)()
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(v), rego.EvalExternalCancel(stop), rego.EvalMetrics(noMetrics))
	if err != nil {
		return Decision{}, &Error{Msg: "evaluate " + e.queryS, Err: err}
	}
	switch {
	case len(rs) == 0 || len(rs[0].Expressions) == 0:
		return Decision{Reason: e.queryS + " is undefined"}, nil
	case len(rs) > 1:
		return Decision{}, &Error{Msg: fmt.Sprintf("%s has %d results; it must have one", e.queryS, len(rs))}
	}
	val, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		return Decision{}, &Error{Msg: fmt.Sprintf("%s: unexpected result %T", e.queryS, rs[0].Expressions[0].Value)}
	}
	return decode(val)
}

// Explain evaluates like Decide, on the caller's goroutine, and writes the
// evaluation trace to w: for audgate eval --explain, never the request
// path.
func (e *Engine) Explain(ctx context.Context, in *Input, w io.Writer) (Decision, error) {
	v, err := in.Value()
	if err != nil {
		return Decision{}, &Error{Msg: "build input", Err: err}
	}
	buf := topdown.NewBufferTracer()
	rs, err := e.query.Eval(ctx, rego.EvalParsedInput(v), rego.EvalQueryTracer(buf))
	topdown.PrettyTraceWithLocation(w, *buf)
	if err != nil {
		return Decision{}, &Error{Msg: "evaluate " + e.queryS, Err: err}
	}
	if len(rs) == 0 || len(rs[0].Expressions) == 0 {
		return Decision{Reason: e.queryS + " is undefined"}, nil
	}
	val, ok := rs[0].Expressions[0].Value.(ast.Value)
	if !ok {
		return Decision{}, &Error{Msg: fmt.Sprintf("%s: unexpected result %T", e.queryS, rs[0].Expressions[0].Value)}
	}
	return decode(val)
}
