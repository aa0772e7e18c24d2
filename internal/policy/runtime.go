package policy

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/open-policy-agent/opa/metrics"
	"github.com/open-policy-agent/opa/plugins/logs"
	"github.com/open-policy-agent/opa/plugins/status"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
	"github.com/open-policy-agent/opa/v1/config"
	"github.com/open-policy-agent/opa/v1/hooks"
	"github.com/open-policy-agent/opa/v1/keys"
	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/plugins"
	bundleplugin "github.com/open-policy-agent/opa/v1/plugins/bundle"
	"github.com/open-policy-agent/opa/v1/plugins/discovery"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	"github.com/open-policy-agent/opa/v1/topdown/cache"
	"github.com/open-policy-agent/opa/v1/topdown/print"
)

// LocalBundle is the name a local policy (a directory, the embedded
// policy, or a local bundle file) has in the decision log's bundles.
const LocalBundle = "audgate"

// Options configure a Runtime.
type Options struct {
	// Path is a directory of .rego and .json files, or a bundle file
	// (.tar.gz or .tgz). Empty: Modules, unless OPA bundles are configured.
	Path string
	// Modules is a file system whose top-level .rego files (not
	// *_test.rego) are the policy when Path is empty and no bundle is
	// configured: the embedded default policy.
	Modules fs.FS
	// Verification is OPA's bundle verification block for a Path that is
	// a bundle file: keys (as OPA's keys section), keyid, scope,
	// exclude_files. Empty: the bundle is read unverified.
	Verification map[string]any
	// Query is the decision reference. Default: DefaultQuery.
	Query string
	// Timeout bounds one evaluation. Default: DefaultTimeout.
	Timeout time.Duration
	// Workers, if set, run evaluations (see Workers).
	Workers *Workers
	// AllowNetwork lets a policy call NetworkBuiltins; their results are
	// cached between requests by OPA's inter-query cache. Default: false.
	AllowNetwork bool
	// InputSchema is the JSON Schema of the input; every policy is type
	// checked against it. Default: none.
	InputSchema []byte
	// OPA is OPA's own configuration (services, bundles, decision_logs,
	// status, keys, labels, caching; not discovery). Default: none.
	OPA map[string]any
	// InstanceID is this replica's id in OPA's labels and status.
	InstanceID string
	// Version is audgate's version, the version label.
	Version string
	// DecisionLog receives every decision log event, masked, as one JSON
	// line. Default: none (events go only where OPA's decision_logs
	// section sends them).
	DecisionLog EventWriter
	// Masks are JSON pointers, rooted at the event (/input/...), erased
	// from every decision log event, wherever it goes.
	Masks []string
	// LogQueue bounds the decisions waiting to be logged. Default: 4096.
	LogQueue int
	// OnLogDropped is called for each decision dropped because the log
	// fell behind.
	OnLogDropped func()
	// Print receives the output of print() in policies, with the
	// evaluation's ctx. Default: logged at info.
	Print func(ctx context.Context, location, msg string)
	// WatchInterval, when positive, is how often Path is checked for
	// changes; a change is compiled and, if good, swapped in.
	WatchInterval time.Duration
	// OnReload is called after each attempt to load a new policy (a local
	// change or a bundle), with its result and, on success, the revision.
	OnReload func(bundle, revision string, err error)
	// Logger receives the runtime's logs and OPA's. Default: slog.Default().
	Logger *slog.Logger
	// DecisionCache serves a repeated decision from a cache keyed by the
	// input values the policy reads, when the policy is provably a pure
	// function of them (see Reads). Default: off.
	DecisionCache bool
	// DecisionCacheSize bounds the cache's entries. Default: 100000.
	DecisionCacheSize int
}

// DefaultDecisionCacheSize is the decision cache's default bound.
const DefaultDecisionCacheSize = 100000

// EventWriter writes decision log events, one JSON object each.
type EventWriter interface {
	// WriteEvent writes one event. It is called from one goroutine, never
	// while the policy's store is held.
	WriteEvent(event []byte) error
	// Flush writes out what is buffered; it is called when no event waits.
	Flush() error
}

// Runtime is the policy's home: OPA's plugin manager with its store, the
// compiled policy and the prepared decision query, kept current as
// bundles activate or local files change. It is safe for concurrent use.
type Runtime struct {
	opts    Options
	log     *slog.Logger
	store   *checkingStore
	manager *plugins.Manager
	engine  atomic.Pointer[Engine] // nil until a policy is in force
	check   *checker
	iqCache cache.InterQueryCache
	iqValue cache.InterQueryValueCache

	local    bool       // the policy is local, not from bundles
	reloadMu sync.Mutex // held by Reload, which sets revision
	revision string     // of the local policy
	userMask string     // the data path of the user's mask rule, slash form

	mu      sync.Mutex
	bundles map[string]*bundleplugin.Status // configured bundles' latest status
	lastErr error                           // of the latest engine preparation

	pluginMetrics metrics.Metrics // OPA's plugins count into it

	// gen counts the store's commits; a commit changes it while it holds
	// the store, so a reader inside a transaction sees the gen of its data.
	gen atomic.Uint64

	logs    chan *Record
	logDone chan struct{}
	sink    *eventSink // Options.DecisionLog's writer; nil without
	closeMu sync.RWMutex
	closed  bool
}

// ErrNotReady means no policy is in force yet: the configured bundles
// have not all been activated once.
var ErrNotReady = errors.New("policy not ready")

// Start builds the runtime and loads the policy: a local one is compiled
// now (an error names the file and line); with OPA bundles configured,
// they download in the background and Engine is nil until they are all
// activated once. ctx bounds the background work.
func Start(ctx context.Context, opts Options) (*Runtime, error) {
	rt, err := build(ctx, opts, opts.InstanceID)
	if err != nil {
		return nil, err
	}
	m := rt.manager
	factories := map[string]plugins.Factory{}
	if rt.opts.DecisionLog != nil {
		rt.sink = newEventSink(rt.opts.DecisionLog, rt.opts.LogQueue, rt.opts.OnLogDropped, rt.log)
		factories[logPluginName] = logPluginFactory{sink: rt.sink}
	}
	// discovery.New builds OPA's plugin set (bundles, decision logs,
	// status, and audgate's log writer) from the configuration, as OPA
	// does; the discovery section itself is refused (see opaConfig).
	rt.pluginMetrics = metrics.New()
	disco, err := discovery.New(m, discovery.Factories(factories), discovery.Metrics(rt.pluginMetrics),
		discovery.Hooks(hooks.New(labelsHook{version: rt.opts.Version})))
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	m.Register(discovery.Name, disco)
	if bp := bundleplugin.Lookup(m); bp != nil {
		for name := range bp.Config().Bundles {
			rt.bundles[name] = nil
		}
		bp.Register("audgate", rt.bundleStatus)
	}
	if err := m.Start(ctx); err != nil {
		// Not m.Stop: a plugin that never started can block it forever.
		rt.closeSink(ctx)
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	rt.logs, rt.logDone = make(chan *Record, rt.opts.LogQueue), make(chan struct{})
	go rt.logLoop(ctx)
	if rt.local && rt.opts.WatchInterval > 0 && rt.opts.Path != "" {
		go rt.watch(ctx)
	}
	return rt, nil
}

// Check does what Start does short of starting anything: it validates
// OPA's configuration (services, bundles, decision logs, status, keys) and
// compiles a local policy by the same rules. It downloads no bundle.
func Check(ctx context.Context, opts Options) error {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rt, err := build(ctx, opts, "check")
	if err != nil {
		return err
	}
	defer rt.manager.Stop(ctx)
	return validatePlugins(rt.manager, opts.DecisionLog != nil)
}

// validatePlugins checks the configuration of OPA's plugins (bundles,
// decision logs, status) as building them would, without building them.
func validatePlugins(m *plugins.Manager, logPlugin bool) error {
	cfg := m.GetConfig()
	var plugs []string
	if logPlugin {
		plugs = append(plugs, logPluginName)
	}
	if _, err := bundleplugin.NewConfigBuilder().WithBytes(cfg.Bundles).WithServices(m.Services()).
		WithKeyConfigs(m.PublicKeys()).Parse(); err != nil {
		return fmt.Errorf("policy.opa.bundles: %w", err)
	}
	if _, err := logs.NewConfigBuilder().WithBytes(cfg.DecisionLogs).WithServices(m.Services()).
		WithPlugins(plugs).Parse(); err != nil {
		return fmt.Errorf("policy.opa.decision_logs: %w", err)
	}
	if _, err := status.NewConfigBuilder().WithBytes(cfg.Status).WithServices(m.Services()).
		WithPlugins(plugs).Parse(); err != nil {
		return fmt.Errorf("policy.opa.status: %w", err)
	}
	return nil
}

// build makes the runtime up to its compiled policy: the configuration,
// the store, OPA's plugin manager and the local policy, loaded and
// compiled. No plugin is built yet.
func build(ctx context.Context, opts Options, id string) (*Runtime, error) {
	if opts.Query == "" {
		opts.Query = DefaultQuery
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.LogQueue <= 0 {
		opts.LogQueue = 4096
	}
	if opts.DecisionCacheSize <= 0 {
		opts.DecisionCacheSize = DefaultDecisionCacheSize
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	check, err := newChecker(opts.AllowNetwork, opts.InputSchema)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{opts: opts, log: opts.Logger, check: check, bundles: map[string]*bundleplugin.Status{}}
	raw, bundlesConfigured, err := rt.opaConfig()
	if err != nil {
		return nil, err
	}
	mopts := []func(*plugins.Manager){
		plugins.Logger(opaLogger{rt.log}), plugins.ConsoleLogger(opaLogger{rt.log}),
		plugins.EnablePrintStatements(true), plugins.PrintHook(printHook{rt}),
		plugins.WithParserOptions(parserOptions),
		plugins.WithHooks(hooks.New(labelsHook{version: opts.Version})),
	}
	switch {
	case bundlesConfigured && opts.Path != "":
		return nil, errors.New("policy: policy.path and policy.opa.bundles are both set; the policy comes from one place: remove one")
	case !bundlesConfigured:
		rt.local = true
		files, b, err := rt.loadLocal()
		if err != nil {
			return nil, err
		}
		if b != nil {
			mopts = append(mopts, plugins.InitBundles(map[string]*bundle.Bundle{LocalBundle: b}))
		} else {
			mopts = append(mopts, plugins.InitFiles(files))
		}
	}
	inner := inmem.NewWithOpts(inmem.OptRoundTripOnWrite(false))
	if err := countCommits(ctx, inner, &rt.gen); err != nil {
		return nil, err
	}
	rt.store = newCheckingStore(inner, check)
	rt.store.extra = map[string][]byte{logModuleID: logModule(opts.Masks, rt.userMask)}
	if rt.store.query, err = ast.ParseBody(opts.Query); err != nil {
		return nil, fmt.Errorf("policy.query: %q: %w", opts.Query, err)
	}
	m, err := plugins.New(raw, id, rt.store, mopts...)
	if err != nil {
		return nil, fmt.Errorf("policy.opa: %w", err)
	}
	rt.manager = m
	if opts.AllowNetwork {
		rt.iqCache = cache.NewInterQueryCacheWithContext(ctx, m.InterQueryBuiltinCacheConfig())
		rt.iqValue = cache.NewInterQueryValueCache(ctx, m.InterQueryBuiltinCacheConfig())
		m.RegisterCacheTrigger(rt.iqCache.UpdateConfig)
		m.RegisterCacheTrigger(rt.iqValue.UpdateConfig)
	}
	m.RegisterCompilerTrigger(rt.compilerChanged)
	if err := m.Init(ctx); err != nil {
		return nil, fmt.Errorf("policy: compile %s: %w", rt.source(), err)
	}
	if rt.local && rt.engine.Load() == nil {
		m.Stop(ctx)
		return nil, fmt.Errorf("policy: compile %s: %w", rt.source(), rt.prepareErr())
	}
	return rt, nil
}

// countCommits makes every commit to store add one to gen, inside the
// commit.
func countCommits(ctx context.Context, store storage.Store, gen *atomic.Uint64) error {
	txn, err := store.NewTransaction(ctx, storage.WriteParams)
	if err != nil {
		return err
	}
	_, err = store.Register(ctx, txn, storage.TriggerConfig{OnCommit: func(context.Context, storage.Transaction, storage.TriggerEvent) {
		gen.Add(1)
	}})
	if err != nil {
		store.Abort(ctx, txn)
		return err
	}
	return store.Commit(ctx, txn)
}

// opaConfig is OPA's configuration as JSON, with what audgate adds: its
// decision log writer as a decision_logs plugin, and its mask rule.
func (rt *Runtime) opaConfig() (raw []byte, bundles bool, err error) {
	cfg := maps.Clone(rt.opts.OPA)
	if cfg == nil {
		cfg = map[string]any{}
	}
	if _, set := cfg["discovery"]; set {
		// A discovered configuration replaces decision_logs and bundles
		// after start: audgate's output and masks, which it imposes on
		// decision_logs, would silently stop applying, and readiness is
		// gated on the bundles named at start.
		return nil, false, errors.New("policy.opa.discovery: not supported: a discovered configuration could replace the decision log masks and output audgate imposes and the bundles readiness waits for; configure services, bundles, decision_logs and status directly")
	}
	_, bundles = cfg["bundles"]
	if _, old := cfg["bundle"]; old {
		bundles = true
	}
	dl, _ := cfg["decision_logs"].(map[string]any)
	dl = maps.Clone(dl)
	if rt.opts.DecisionLog != nil {
		if dl == nil {
			dl = map[string]any{}
		}
		if p, set := dl["plugin"]; set {
			return nil, false, fmt.Errorf("policy.opa.decision_logs.plugin: %v is set, but audgate's own decision log output takes that place; set policy.decision_log.output to off to use your plugin", p)
		}
		dl["plugin"] = logPluginName
		plugs, _ := cfg["plugins"].(map[string]any)
		plugs = maps.Clone(plugs)
		if plugs == nil {
			plugs = map[string]any{}
		}
		plugs[logPluginName] = map[string]any{}
		cfg["plugins"] = plugs
	}
	rt.userMask = "system/log/mask"
	drop := ""
	if dl != nil {
		if m, ok := dl["mask_decision"].(string); ok && m != "" {
			rt.userMask = strings.Trim(m, "/")
		}
		drop, _ = dl["drop_decision"].(string)
		dl["mask_decision"] = logMaskDecision
		cfg["decision_logs"] = dl
	}
	for _, p := range []string{rt.userMask, drop, logMaskDecision} {
		if ref, ok := rulePackage(p); ok {
			rt.check.eventPackages = append(rt.check.eventPackages, ref)
		}
	}
	raw, err = json.Marshal(cfg)
	return raw, bundles, err
}

// source names where the policy comes from, for messages.
func (rt *Runtime) source() string {
	switch {
	case !rt.local:
		return "bundles"
	case rt.opts.Path != "":
		return rt.opts.Path
	}
	return "embedded policy"
}

// isBundleFile reports whether path names a bundle file.
func isBundleFile(path string) bool {
	return strings.HasSuffix(path, ".tar.gz") || strings.HasSuffix(path, ".tgz")
}

// loadLocal reads the local policy: a directory's .rego and data files
// (not *_test.rego), a bundle file (verified when Verification is set), or
// the embedded modules. It sets the revision: the bundle's own, or the
// SHA-256 of the files.
func (rt *Runtime) loadLocal() (loader.Result, *bundle.Bundle, error) {
	switch {
	case rt.opts.Path != "" && isBundleFile(rt.opts.Path):
		b, err := rt.readBundle()
		if err != nil {
			return loader.Result{}, nil, err
		}
		return loader.Result{}, b, nil
	case rt.opts.Path != "":
		res, err := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).WithProcessAnnotation(true).
			Filtered([]string{rt.opts.Path}, skipTests)
		if err != nil {
			return loader.Result{}, nil, fmt.Errorf("policy: load %s: %w", rt.opts.Path, err)
		}
		rt.revision, err = fingerprintDir(rt.opts.Path)
		return *res, nil, err
	case rt.opts.Modules != nil:
		res, err := loader.NewFileLoader().WithFS(rt.opts.Modules).WithRegoVersion(ast.RegoV1).WithProcessAnnotation(true).
			Filtered([]string{"."}, embeddedFilter)
		if err != nil {
			return loader.Result{}, nil, fmt.Errorf("policy: load the embedded policy: %w", err)
		}
		if len(res.Modules) == 0 {
			return loader.Result{}, nil, errors.New("policy: no .rego modules found")
		}
		rt.revision = fingerprintModules(res)
		return *res, nil, nil
	}
	return loader.Result{}, nil, errors.New("policy: no policy: set policy.path, or configure OPA bundles")
}

// readBundle reads the local bundle file, verifying its signature when
// Verification is set.
func (rt *Runtime) readBundle() (*bundle.Bundle, error) {
	fl := loader.NewFileLoader().WithRegoVersion(ast.RegoV1).WithProcessAnnotation(true)
	if len(rt.opts.Verification) > 0 {
		vc, err := verificationConfig(rt.opts.Verification)
		if err != nil {
			return nil, fmt.Errorf("policy.verification: %w", err)
		}
		fl = fl.WithBundleVerificationConfig(vc)
	} else {
		fl = fl.WithSkipBundleVerification(true)
	}
	b, err := fl.AsBundle(rt.opts.Path)
	if err != nil {
		return nil, fmt.Errorf("policy: bundle %s: %w", rt.opts.Path, err)
	}
	rt.revision = b.Manifest.Revision
	if rt.revision == "" {
		raw, err := os.ReadFile(rt.opts.Path)
		if err != nil {
			return nil, err
		}
		sum := sha256.Sum256(raw)
		rt.revision = hex.EncodeToString(sum[:])
	}
	return b, nil
}

// verificationConfig turns policy.verification (keys, keyid, scope,
// exclude_files, as OPA writes them) into OPA's verification config.
func verificationConfig(v map[string]any) (*bundle.VerificationConfig, error) {
	raw, err := json.Marshal(v["keys"])
	if err != nil {
		return nil, err
	}
	ks, err := keys.ParseKeysConfig(raw)
	if err != nil {
		return nil, fmt.Errorf("keys: %w", err)
	}
	if len(ks) == 0 {
		return nil, errors.New("keys: at least one public key is required to verify a signed bundle")
	}
	str := func(k string) string { s, _ := v[k].(string); return s }
	var exclude []string
	if xs, ok := v["exclude_files"].([]any); ok {
		for _, x := range xs {
			if s, ok := x.(string); ok {
				exclude = append(exclude, s)
			}
		}
	}
	for k := range v {
		if !slices.Contains([]string{"keys", "keyid", "scope", "exclude_files"}, k) {
			return nil, fmt.Errorf("%s: unknown key; the keys known are keys, keyid, scope, exclude_files", k)
		}
	}
	return bundle.NewVerificationConfig(ks, str("keyid"), str("scope"), exclude), nil
}

// skipTests is a loader filter: true skips the file.
func skipTests(abspath string, info fs.FileInfo, _ int) bool {
	return !info.IsDir() && strings.HasSuffix(info.Name(), "_test.rego")
}

// embeddedFilter keeps the embedded file system's top-level policy files.
func embeddedFilter(abspath string, info fs.FileInfo, depth int) bool {
	if info.IsDir() {
		return depth > 0
	}
	return path.Ext(info.Name()) != ".rego" || strings.HasSuffix(info.Name(), "_test.rego")
}

// fingerprintDir is the SHA-256 of every file's path and contents under
// dir, as a revision.
func fingerprintDir(dir string) (string, error) {
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%d:%s%d:", len(rel), rel, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil)), err
}

// fingerprintModules is the SHA-256 of the loaded modules, as a revision.
func fingerprintModules(res *loader.Result) string {
	h := sha256.New()
	for _, name := range slices.Sorted(maps.Keys(res.Modules)) {
		src := res.Modules[name].Raw
		fmt.Fprintf(h, "%d:%s%d:", len(name), name, len(src))
		h.Write(src)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// compilerChanged runs inside the commit of every policy change (the first
// load, a reload, a bundle activation, even one that changes only data),
// holding the store: it prepares the decision query on
// the new compiler and swaps the new Engine in. Requests in flight finish
// on the Engine they started with.
func (rt *Runtime) compilerChanged(txn storage.Transaction) {
	ctx := context.Background()
	revisions, err := rt.revisions(ctx, txn)
	if err == nil {
		var e *Engine
		e, err = rt.prepare(ctx, txn, revisions)
		if err == nil {
			rt.engine.Store(e)
		}
	}
	rt.mu.Lock()
	rt.lastErr = err
	rt.mu.Unlock()
	if err != nil {
		rt.log.Error("policy: the new policy cannot be evaluated; keeping the last good one", "error", err.Error())
		return
	}
	rt.log.Info("policy: in force", "bundles", revisions)
}

func (rt *Runtime) prepareErr() error {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.lastErr == nil {
		return errors.New("no policy was compiled")
	}
	return rt.lastErr
}

// revisions are the bundles in force and their revisions, for the
// decision log: the bundles' own, or the local policy's.
func (rt *Runtime) revisions(ctx context.Context, txn storage.Transaction) (map[string]string, error) {
	if rt.local && !isBundleFile(rt.opts.Path) {
		return map[string]string{LocalBundle: rt.revision}, nil
	}
	names, err := bundle.ReadBundleNamesFromStore(ctx, rt.store, txn)
	if err != nil && !storage.IsNotFound(err) {
		return nil, err
	}
	out := make(map[string]string, len(names))
	for _, name := range names {
		rev, err := bundle.ReadBundleRevisionFromStore(ctx, rt.store, txn, name)
		if err != nil && !storage.IsNotFound(err) {
			return nil, err
		}
		out[name] = rev
	}
	if rt.local && len(out) == 0 {
		out[LocalBundle] = rt.revision
	}
	return out, nil
}

// bundleStatus follows the bundle plugin's status of each bundle.
func (rt *Runtime) bundleStatus(s bundleplugin.Status) {
	rt.mu.Lock()
	prev := rt.bundles[s.Name]
	st := s
	rt.bundles[s.Name] = &st
	rt.mu.Unlock()
	if rt.opts.OnReload == nil {
		return
	}
	switch {
	case len(s.Errors) > 0 || s.Code != "":
		if prev == nil || prev.Message != s.Message || prev.LastRequest != s.LastRequest {
			rt.opts.OnReload(s.Name, "", statusError(s))
		}
	case prev == nil || !s.LastSuccessfulActivation.Equal(prev.LastSuccessfulActivation):
		if !s.LastSuccessfulActivation.IsZero() {
			rt.opts.OnReload(s.Name, s.ActiveRevision, nil)
		}
	}
}

func statusError(s bundleplugin.Status) error {
	msg := s.Message
	for _, e := range s.Errors {
		msg += ": " + e.Error()
	}
	if s.Code != "" {
		msg = s.Code + ": " + msg
	}
	return errors.New(msg)
}

// Engine returns the policy in force; nil until the configured bundles
// have all been activated once.
func (rt *Runtime) Engine() *Engine {
	if !rt.bundlesActivated() {
		return nil
	}
	return rt.engine.Load()
}

// bundlesActivated reports whether every configured bundle has been
// activated once.
func (rt *Runtime) bundlesActivated() bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	for _, s := range rt.bundles {
		if s == nil || s.LastSuccessfulActivation.IsZero() {
			return false
		}
	}
	return true
}

// Ready returns nil once a policy is in force, else an error naming each
// bundle not activated yet and its last error.
func (rt *Runtime) Ready() error {
	rt.mu.Lock()
	var waiting []string
	for _, name := range slices.Sorted(maps.Keys(rt.bundles)) {
		s := rt.bundles[name]
		switch {
		case s == nil:
			waiting = append(waiting, fmt.Sprintf("bundle %q (not downloaded yet)", name))
		case s.LastSuccessfulActivation.IsZero() && (len(s.Errors) > 0 || s.Code != ""):
			waiting = append(waiting, fmt.Sprintf("bundle %q (%s)", name, statusError(*s)))
		case s.LastSuccessfulActivation.IsZero():
			waiting = append(waiting, fmt.Sprintf("bundle %q (not activated yet)", name))
		}
	}
	rt.mu.Unlock()
	if len(waiting) > 0 {
		return fmt.Errorf("%w: %s", ErrNotReady, strings.Join(waiting, ", "))
	}
	if rt.engine.Load() == nil {
		return fmt.Errorf("%w: %v", ErrNotReady, rt.prepareErr())
	}
	return nil
}

// Status reports each configured bundle's active revision and, when the
// latest download, verification or activation failed, why: for /readyz.
func (rt *Runtime) Status() []string {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	var out []string
	for _, name := range slices.Sorted(maps.Keys(rt.bundles)) {
		s := rt.bundles[name]
		switch {
		case s == nil:
			out = append(out, fmt.Sprintf("bundle %q: not downloaded yet", name))
		case len(s.Errors) > 0 || s.Code != "":
			out = append(out, fmt.Sprintf("bundle %q: revision %q in force; the latest update failed: %s", name, s.ActiveRevision, statusError(*s)))
		default:
			out = append(out, fmt.Sprintf("bundle %q: revision %q", name, s.ActiveRevision))
		}
	}
	return out
}

// Counters are OPA's plugins' counters (e.g. decision logs dropped by
// the upload buffer, chunks uploaded), by OPA's names.
func (rt *Runtime) Counters() map[string]uint64 {
	out := map[string]uint64{}
	if rt.pluginMetrics == nil {
		return out
	}
	for name, v := range rt.pluginMetrics.All() {
		if n, ok := v.(uint64); ok {
			out[strings.TrimPrefix(name, "counter_")] = n
		}
	}
	return out
}

// Close stops OPA's plugins (flushing decision logs to their service as
// OPA does) and the local decision log.
func (rt *Runtime) Close(ctx context.Context) {
	rt.closeMu.Lock()
	if rt.closed {
		rt.closeMu.Unlock()
		return
	}
	rt.closed = true
	if rt.logs != nil {
		close(rt.logs)
	}
	rt.closeMu.Unlock()
	if rt.logDone != nil {
		select {
		case <-rt.logDone:
		case <-ctx.Done():
		}
	}
	if rt.manager != nil {
		rt.manager.Stop(ctx)
	}
	rt.closeSink(ctx)
}

func (rt *Runtime) closeSink(ctx context.Context) {
	if rt.sink != nil {
		rt.sink.close(ctx)
	}
}

// Manager is OPA's plugin manager, for tests.
func (rt *Runtime) Manager() *plugins.Manager { return rt.manager }

// printHook sends print() output to Options.Print.
type printHook struct{ rt *Runtime }

func (h printHook) Print(pc print.Context, msg string) error {
	loc := ""
	if pc.Location != nil {
		loc = pc.Location.String()
	}
	if h.rt.opts.Print != nil {
		h.rt.opts.Print(pc.Context, loc, msg)
		return nil
	}
	h.rt.log.Info("policy print", "location", loc, "message", msg)
	return nil
}

// labelsHook makes the version label audgate's, where OPA puts its own.
type labelsHook struct{ version string }

func (h labelsHook) OnConfig(_ context.Context, c *config.Config) (*config.Config, error) {
	if h.version != "" {
		if c.Labels == nil {
			c.Labels = map[string]string{}
		}
		c.Labels["version"] = h.version
	}
	return c, nil
}
