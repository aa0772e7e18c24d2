package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/logging"
	"github.com/open-policy-agent/opa/v1/metrics"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/plugins/logs"
	"github.com/open-policy-agent/opa/v1/server"
	"github.com/open-policy-agent/opa/v1/topdown"
)

// Record is one decision for the decision log. It must not change once
// logged.
type Record struct {
	DecisionID string
	Timestamp  time.Time
	// Engine is the policy that decided; its query and bundle revisions
	// go into the event.
	Engine *Engine
	// Input is what the policy saw.
	Input *Input
	// Decision is what it returned; Decision.Result is the event's
	// result, absent when Err is set.
	Decision Decision
	// Err is the evaluation error, if evaluation failed.
	Err error
	// Eval is how long evaluation took.
	Eval time.Duration
	// Custom are audgate's own fields (request ID, status, ...).
	Custom map[string]any
	// TraceID and SpanID name the request's trace, when tracing is on.
	TraceID, SpanID string
}

// Log queues r for OPA's decision log plugin, which masks it, drops it if
// system.log.drop says so, and sends it where OPA's configuration and
// Options.DecisionLog say. It never blocks and never runs a policy on the
// caller's goroutine: when the queue is full, r is dropped and counted.
func (rt *Runtime) Log(r *Record) {
	rt.closeMu.RLock()
	defer rt.closeMu.RUnlock()
	if rt.closed || rt.logs == nil {
		return
	}
	select {
	case rt.logs <- r:
	default:
		if rt.opts.OnLogDropped != nil {
			rt.opts.OnLogDropped()
		}
	}
}

// LogsDecisions reports whether decisions are logged anywhere, so that
// callers can skip building records.
func (rt *Runtime) LogsDecisions() bool { return logs.Lookup(rt.manager) != nil }

// LogNow hands r to OPA's decision log plugin on the caller's goroutine:
// the work Log leaves to the background, for benchmarks and tests.
func (rt *Runtime) LogNow(ctx context.Context, r *Record) error {
	plugin := logs.Lookup(rt.manager)
	if plugin == nil {
		return errors.New("decision log: no decision_logs plugin")
	}
	return rt.logOne(ctx, plugin, r)
}

// logOne hands r to the plugin inside a read transaction, as OPA's server
// does. The plugin prepares its mask and drop queries under its own lock,
// which a commit's trigger also takes while the commit holds the store:
// without the transaction, the plugin would open one while holding that
// lock, and a commit in between would deadlock both (and every
// evaluation behind them). The order is always store, then plugin.
func (rt *Runtime) logOne(ctx context.Context, plugin *logs.Plugin, r *Record) error {
	txn, err := rt.store.NewTransaction(ctx)
	if err != nil {
		return err
	}
	defer rt.store.Abort(ctx, txn)
	info := r.info()
	info.Txn = txn
	return plugin.Log(ctx, info)
}

func (rt *Runtime) logLoop(ctx context.Context) {
	defer close(rt.logDone)
	ctx = context.WithoutCancel(ctx)
	for r := range rt.logs {
		plugin := logs.Lookup(rt.manager)
		if plugin == nil {
			continue
		}
		if err := rt.logOne(ctx, plugin, r); err != nil {
			rt.log.Error("decision log: event not logged", "decision_id", r.DecisionID, "error", err.Error())
		}
	}
}

// eventSink writes the events OPA's decision log plugin hands logPlugin,
// on its own goroutine: the plugin runs inside a store read transaction
// (see logOne), which must not wait on a slow writer, or a commit would
// wait on it, and every evaluation on the commit. When the writer falls
// behind, events are dropped and counted.
type eventSink struct {
	w      EventWriter
	onDrop func()
	log    *slog.Logger
	lines  chan []byte
	done   chan struct{}
	mu     sync.RWMutex
	closed bool
}

func newEventSink(w EventWriter, size int, onDrop func(), log *slog.Logger) *eventSink {
	s := &eventSink{w: w, onDrop: onDrop, log: log, lines: make(chan []byte, size), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *eventSink) run() {
	defer close(s.done)
	for line := range s.lines {
		if err := s.w.WriteEvent(line); err != nil {
			s.log.Error("decision log: event not written", "error", err.Error())
		}
		if len(s.lines) == 0 {
			if err := s.w.Flush(); err != nil {
				s.log.Error("decision log: flush failed", "error", err.Error())
			}
		}
	}
	_ = s.w.Flush()
}

func (s *eventSink) put(line []byte) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		return
	}
	select {
	case s.lines <- line:
	default:
		if s.onDrop != nil {
			s.onDrop()
		}
	}
}

// close writes out what is queued, waiting at most until ctx ends.
func (s *eventSink) close(ctx context.Context) {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.lines)
	}
	s.mu.Unlock()
	select {
	case <-s.done:
	case <-ctx.Done():
	}
}

// info is r as OPA's decision log plugin takes it. The input is a fresh
// tree: masking changes it in place.
func (r *Record) info() *server.Info {
	input := any(r.Input.JSONMap())
	input = deepCopy(input)
	info := &server.Info{
		// The input's OPA value, as the policy saw it: the drop and mask
		// rules read it without a JSON round trip.
		InputAST:   r.inputValue(),
		DecisionID: r.DecisionID,
		Timestamp:  r.Timestamp,
		Path:       r.Engine.path,
		Input:      &input,
		Metrics:    evalMetrics{Metrics: metrics.NoOp(), evalNS: r.Eval.Nanoseconds()},
		Custom:     r.Custom,
		TraceID:    r.TraceID,
		SpanID:     r.SpanID,
		Bundles:    make(map[string]server.BundleInfo, len(r.Engine.revisions)),
	}
	for name, rev := range r.Engine.revisions {
		info.Bundles[name] = server.BundleInfo{Revision: rev}
	}
	switch {
	case r.Err != nil:
		info.Error = eventError(r.Err)
	default:
		if result, ok := r.Decision.Result(); ok {
			info.Results = &result
		}
	}
	return info
}

func (r *Record) inputValue() ast.Value {
	v, err := r.Input.Value()
	if err != nil {
		return nil
	}
	return v
}

// eventError is an evaluation error as OPA logs it: {code, message}.
func eventError(err error) error {
	var te *topdown.Error
	if errors.As(err, &te) {
		return te
	}
	return &topdown.Error{Code: topdown.InternalErr, Message: err.Error()}
}

// evalMetrics reports the evaluation's duration as OPA names it.
type evalMetrics struct {
	metrics.Metrics
	evalNS int64
}

func (m evalMetrics) All() map[string]any {
	return map[string]any{"timer_rego_query_eval_ns": m.evalNS}
}

func (m evalMetrics) MarshalJSON() ([]byte, error) { return json.Marshal(m.All()) }

// deepCopy copies a JSON tree of maps and slices.
func deepCopy(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

// logPluginName is the decision_logs plugin that writes events to
// Options.DecisionLog.
const logPluginName = "audgate_decision_log"

// logPlugin is an OPA decision log plugin (logs.Logger): OPA hands it each
// event after masking, and it queues the event as one JSON line.
type logPlugin struct{ sink *eventSink }

var _ logs.Logger = logPlugin{}

func (logPlugin) Start(context.Context) error      { return nil }
func (logPlugin) Stop(context.Context)             {}
func (logPlugin) Reconfigure(context.Context, any) {}

func (p logPlugin) Log(_ context.Context, e logs.EventV1) error {
	line, err := json.Marshal(e)
	if err != nil {
		return err
	}
	p.sink.put(line)
	return nil
}

// logPluginFactory makes the logPlugin for OPA's plugin set.
type logPluginFactory struct{ sink *eventSink }

func (logPluginFactory) Validate(*plugins.Manager, []byte) (any, error) { return nil, nil }

func (f logPluginFactory) New(*plugins.Manager, any) plugins.Plugin { return logPlugin{sink: f.sink} }

// The mask rule audgate points OPA's decision_logs.mask_decision at: the
// user's own mask rule (system.log.mask, or the configured one), plus the
// configured pointers, which always apply.
const (
	// logModuleID is no path a bundle's module can have: those are
	// "<bundle name>/<file path>".
	logModuleID     = "audgate:decision_log_mask.rego"
	logMaskDecision = "audgate_decision_log/mask"
)

// logModule is the mask rule's module.
func logModule(masks []string, userMask string) []byte {
	var b strings.Builder
	b.WriteString("package audgate_decision_log\n\n")
	fmt.Fprintf(&b, "mask contains p if some p in data.%s\n", strings.ReplaceAll(userMask, "/", "."))
	for _, m := range masks {
		fmt.Fprintf(&b, "\nmask contains %s\n", strconv.Quote(m))
	}
	return []byte(b.String())
}

// opaLogger sends OPA's logs to slog.
type opaLogger struct{ l *slog.Logger }

var _ logging.Logger = opaLogger{}

func (o opaLogger) Debug(f string, a ...any) { o.l.Debug(fmt.Sprintf(f, a...), "source", "opa") }
func (o opaLogger) Info(f string, a ...any)  { o.l.Info(fmt.Sprintf(f, a...), "source", "opa") }
func (o opaLogger) Warn(f string, a ...any)  { o.l.Warn(fmt.Sprintf(f, a...), "source", "opa") }
func (o opaLogger) Error(f string, a ...any) { o.l.Error(fmt.Sprintf(f, a...), "source", "opa") }

func (o opaLogger) WithFields(fields map[string]any) logging.Logger {
	args := make([]any, 0, 2*len(fields))
	for k, v := range fields {
		args = append(args, k, v)
	}
	return opaLogger{o.l.With(args...)}
}

func (opaLogger) GetLevel() logging.Level { return logging.Debug }
func (opaLogger) SetLevel(logging.Level)  {}
