// Package policy evaluates audgate's Rego policy inside OPA's plugin
// manager, as OPA itself runs it: a Runtime loads the policy (local files,
// the embedded default, or signed bundles from a bundle service), compiles
// it by audgate's rules (Rego v1, the input schema, no network builtins
// unless allowed), prepares the decision query on every change and swaps
// the Engine in, and hands decisions to OPA's decision log plugin. An
// Engine turns each request's Input into a checked Decision.
package policy

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Defaults for the zero values of Options.
const (
	DefaultQuery   = "data.audgate.decision"
	DefaultTimeout = 100 * time.Millisecond
)

// Engine evaluates one compiled policy. It is safe for concurrent use and
// never changes; a policy change prepares a new Engine.
type Engine struct {
	query     rego.PreparedEvalQuery
	queryS    string
	path      string            // the query in slash form, e.g. audgate/decision
	revisions map[string]string // bundle name → revision, for the decision log
	timeout   time.Duration
	workers   *Workers
	rt        *Runtime

	// reads is what the decision depends on; cache, when the decision is
	// a pure function of it and caching is on, holds decisions by
	// decisionKey over keyPaths. A new Engine starts a new cache.
	reads    *Reads
	keyPaths *keyPaths
	cache    *hashMap[Decision]
}

// prepare prepares the decision query on the manager's current compiler.
// txn is the transaction that changed the policy: preparation must not
// open another while it commits.
func (rt *Runtime) prepare(ctx context.Context, txn storage.Transaction, revisions map[string]string) (*Engine, error) {
	args := []func(*rego.Rego){
		rego.Query(rt.opts.Query),
		rego.Compiler(rt.manager.GetCompiler()),
		rego.Store(rt.store),
		rego.Transaction(txn),
		rego.SetRegoVersion(ast.RegoV1),
		rego.StrictBuiltinErrors(true),
		rego.EnablePrintStatements(true),
		rego.PrintHook(printHook{rt}),
		// Decode the decision from the OPA value itself, not from a
		// converted map.
		rego.GenerateJSON(func(t *ast.Term, _ *rego.EvalContext) (any, error) { return t.Value, nil }),
	}
	pq, err := rego.New(args...).PrepareForEval(ctx)
	if err != nil {
		return nil, fmt.Errorf("prepare %s: %w", rt.opts.Query, err)
	}
	e := &Engine{query: pq, queryS: rt.opts.Query, path: slashPath(rt.opts.Query), revisions: revisions,
		timeout: rt.opts.Timeout, workers: rt.opts.Workers, rt: rt}
	e.reads = analyzeReads(rt.manager.GetCompiler(), rt.store.query)
	switch {
	case !rt.opts.DecisionCache:
	case e.reads.Impure != "":
		rt.log.Info("policy: decision cache off: the decision is not a pure function of its input", "reason", e.reads.Impure)
	default:
		e.keyPaths = newKeyPaths(e.reads)
		e.cache = newHashMap[Decision](rt.opts.DecisionCacheSize)
	}
	return e, nil
}

// Reads is what the engine's decision depends on.
func (e *Engine) Reads() *Reads { return e.reads }

// Cached reports whether the engine caches decisions.
func (e *Engine) Cached() bool { return e.cache != nil }

// DecisionCacheState says whether the policy in force caches decisions
// and, when not, why: disabled (by configuration), not_pure (see
// Reads.Impure), or not_ready.
func (rt *Runtime) DecisionCacheState() (on bool, offReason string) {
	e := rt.engine.Load()
	switch {
	case !rt.opts.DecisionCache:
		return false, "disabled"
	case e == nil:
		return false, "not_ready"
	case e.cache == nil:
		return false, "not_pure"
	}
	return true, ""
}

// slashPath writes a query reference as OPA's decision log path:
// data.audgate.decision is audgate/decision.
func slashPath(query string) string {
	return strings.ReplaceAll(strings.TrimPrefix(query, "data."), ".", "/")
}

// noMetrics spares each evaluation the allocation of OPA's metrics.
var noMetrics = metrics.NoOp()

// Query returns the decision reference the engine evaluates.
func (e *Engine) Query() string { return e.queryS }

// Revisions returns the bundles in force and their revisions. Callers must
// not change the map.
func (e *Engine) Revisions() map[string]string { return e.revisions }

// Decide evaluates the policy for in. The returned Decision is decoded but
// not yet checked against an upstream's limits (see Decision.Check); its
// Raw holds the policy's value. An undefined decision denies; an
// evaluation error is an *Error. It reads the store as it is when the
// evaluation starts: Runtime.Decide is what requests use.
func (e *Engine) Decide(ctx context.Context, in *Input) (Decision, error) {
	return e.decide(ctx, in, nil)
}

func (e *Engine) decide(ctx context.Context, in *Input, txn storage.Transaction) (Decision, error) {
	v, err := in.Value()
	if err != nil {
		return Decision{}, &Error{Msg: "build input", Err: err}
	}
	return e.decideValue(ctx, v, txn)
}

func (e *Engine) decideValue(ctx context.Context, v ast.Value, txn storage.Transaction) (Decision, error) {
	if e.workers == nil {
		return e.eval(ctx, v, txn)
	}
	return e.workers.run(&evaluation{e: e, ctx: ctx, input: v, txn: txn, res: make(chan evalResult, 1)})
}

// Decided is what Runtime.Decide came to.
type Decided struct {
	// Engine is the policy that decided.
	Engine *Engine
	// Decision is its decision (Raw set), not yet checked against an
	// upstream's limits. Its maps are shared with the decision cache:
	// callers must not change them.
	Decision Decision
	// Cached says the decision came from the decision cache.
	Cached bool
}

// Decide evaluates the policy in force for in, or serves the decision
// from the cache. Before a policy is in force, the error wraps
// ErrNotReady; Engine is then nil.
//
// An evaluation runs in a read transaction opened before the Engine is
// chosen, and a commit swaps the Engine while it holds the store, so the
// policy and the data it reads always come from the same commit, and so
// does the commit count in its cache key. A hit needs no transaction: the
// count is read before the Engine, and an Engine's cache only holds keys
// with counts from its own commit on, since every entry was made inside a
// transaction. Read across a commit, the pair (new count, old Engine)
// finds no entry, nor does (old count, new Engine): both go on to the
// transaction.
func (rt *Runtime) Decide(ctx context.Context, in *Input) (Decided, error) {
	gen := rt.gen.Load()
	var key [32]byte
	e0 := rt.Engine()
	if e0 != nil && e0.cache != nil {
		// The key reads only the paths the policy reads: a hit builds no
		// input at all.
		key = inputKey(gen, e0.keyPaths, e0.reads.Whole, in)
		if d, ok := e0.cache.Get(&key); ok {
			return Decided{Engine: e0, Decision: d, Cached: true}, nil
		}
	}
	txn, err := rt.store.NewTransaction(ctx)
	if err != nil {
		return Decided{}, &Error{Msg: "open the policy store", Err: err}
	}
	defer rt.store.Abort(ctx, txn)
	e := rt.Engine()
	if e == nil {
		return Decided{}, fmt.Errorf("%w: %v", ErrNotReady, rt.Ready())
	}
	if e.cache != nil {
		if g := rt.gen.Load(); g != gen || e != e0 { // a commit came in between
			key = inputKey(g, e.keyPaths, e.reads.Whole, in)
			if d, ok := e.cache.Get(&key); ok {
				return Decided{Engine: e, Decision: d, Cached: true}, nil
			}
		}
	}
	v, err := in.Value()
	if err != nil {
		return Decided{Engine: e}, &Error{Msg: "build input", Err: err}
	}
	d, err := e.decideValue(ctx, v, txn)
	if e.cache == nil {
		return Decided{Engine: e, Decision: d}, err
	}
	if err == nil { // errors, timeouts among them, are never kept
		e.cache.Put(&key, d.compact())
	}
	return Decided{Engine: e, Decision: d}, err
}

func (e *Engine) evalOptions(v ast.Value) []rego.EvalOption {
	opts := []rego.EvalOption{rego.EvalParsedInput(v), rego.EvalMetrics(noMetrics)}
	if e.rt.iqCache != nil {
		opts = append(opts, rego.EvalInterQueryBuiltinCache(e.rt.iqCache), rego.EvalInterQueryBuiltinValueCache(e.rt.iqValue))
	}
	return opts
}

func (e *Engine) eval(ctx context.Context, v ast.Value, txn storage.Transaction) (Decision, error) {
	if err := ctx.Err(); err != nil {
		return Decision{}, &Error{Msg: "evaluate " + e.queryS, Err: err}
	}
	ctx, cancel := context.WithTimeout(ctx, e.timeout)
	defer cancel()
	// OPA would start a goroutine per evaluation to watch ctx; AfterFunc
	// starts one only if ctx actually ends first.
	stop := topdown.NewCancel()
	defer context.AfterFunc(ctx, stop.Cancel)()
	opts := append(e.evalOptions(v), rego.EvalExternalCancel(stop))
	if txn != nil {
		opts = append(opts, rego.EvalTransaction(txn))
	}
	rs, err := e.query.Eval(ctx, opts...)
	return e.result(rs, err)
}

// result decodes a result set into a Decision.
func (e *Engine) result(rs rego.ResultSet, err error) (Decision, error) {
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
	d, err := decode(val)
	d.Raw = val
	return d, err
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
	rs, err := e.query.Eval(ctx, append(e.evalOptions(v), rego.EvalQueryTracer(buf))...)
	topdown.PrettyTraceWithLocation(w, *buf)
	return e.result(rs, err)
}
