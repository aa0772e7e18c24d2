// Package gateway serves audgate's request path: canonical path, route,
// authentication (RFC 6750 bearer tokens), policy decision, downstream
// token and reverse proxy. The stages are functions that run, eval and
// check share (see pipeline.go); every error, from any stage, reaches the
// client through one mapping function (errorResponse), and none of them
// proxies.
package gateway

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/proxy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// Options are what the gateway needs besides its configuration.
type Options struct {
	// Logger receives the gateway's logs. Default: slog.Default().
	Logger *slog.Logger
	// Policies holds the .rego files compiled when policy.path is empty:
	// the embedded default policy. Required then.
	Policies fs.FS
	// HTTPClient fetches issuers' discovery documents and JWKS. Default:
	// a client with a 10s timeout.
	HTTPClient *http.Client
	// Now is the clock, for tests. Default: time.Now.
	Now func() time.Time
	// IdPClient makes token sources' requests to identity providers.
	// Default: one client per source with a 10s timeout.
	IdPClient *http.Client
	// PolicyWatchInterval is how often policy.path is checked for changes
	// when policy.watch is on. Default: 2s.
	PolicyWatchInterval time.Duration
	// Version is audgate's version, for OPA's labels and status. Default:
	// "(devel)".
	Version string
	// InstanceID names this replica in OPA's labels and status. Default:
	// the host name and a random suffix.
	InstanceID string
	// EvalOnly builds a gateway for Eval alone (audgate eval): it fetches
	// no keys, logs no decisions and does not watch the policy, and only
	// such a gateway reads callers' tokens without verifying them.
	// Default: false.
	EvalOnly bool
	// CertWatchInterval is how often server.tls's files are checked for
	// a new certificate. Default: 5s.
	CertWatchInterval time.Duration
}

// Gateway is one configured gateway. It is read-only after New.
type Gateway struct {
	cfg        *config.Config
	log        *slog.Logger
	verifier   *authn.Verifier
	policy     *policy.Runtime
	events     *telemetry.EventLog // the local decision log; nil when off
	cache      *tokens.Cache
	obs        *telemetry.Observer
	workers    *policy.Workers
	strip      *headerMatcher
	echo       *echo.Echo
	selfKeys   []*tokens.SelfSigned
	ups        map[string]*upstream
	ids        *requestIDs
	routes     map[string]*route // by methodPath
	routePaths map[string]bool   // configured route paths
	tokenViews *authn.Attachment[*tokenView]
	evalOnly   bool
	tlsConfig  *tls.Config // the listener's; nil on plain HTTP
	clientIPs  *clientIPs
	tracing    *telemetry.Tracing // nil: tracing off
	stop       context.CancelFunc // ends New's background work (key and certificate refreshes)
}

// upstream is one configured upstream with its proxy and token source.
type upstream struct {
	name    string
	cfg     config.Upstream
	proxy   *proxy.Upstream
	binding *tokens.Binding
	limits  policy.Limits
	// input is the upstream as the policy sees it; inputValue, the same as
	// an OPA value, built once.
	input      policy.Upstream
	inputValue ast.Value
}

// New builds every stage from cfg: issuers' key sets start loading in the
// background (Ready reports them), the policy is compiled, token sources
// and upstream proxies are built, and routes are registered. ctx bounds
// background work such as JWKS refresh.
func New(ctx context.Context, cfg *config.Config, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.InstanceID == "" {
		opts.InstanceID = instanceID()
	}
	var tracing *telemetry.Tracing
	if !opts.EvalOnly {
		t := cfg.Telemetry.Tracing
		var err error
		tracing, err = telemetry.NewTracing(ctx, telemetry.TracingOptions{
			Endpoint: t.Endpoint, Protocol: t.Protocol, SampleRatio: t.SampleRatio, Headers: t.Headers,
			Version: opts.Version, InstanceID: opts.InstanceID,
		})
		if err != nil {
			return nil, err
		}
		if tracing != nil {
			// Every log line written inside a request names its trace.
			opts.Logger = slog.New(telemetry.LogHandler(opts.Logger.Handler()))
		}
	}
	ctx, stop := context.WithCancel(ctx) // Close ends the background work
	g := &Gateway{cfg: cfg, log: opts.Logger, tracing: tracing, stop: stop, strip: newHeaderMatcher(cfg.Server.StripInboundHeaders),
		ups: map[string]*upstream{}, ids: newRequestIDs(), routes: map[string]*route{}, routePaths: map[string]bool{},
		tokenViews: authn.NewAttachment(newTokenView), evalOnly: opts.EvalOnly}
	ok := false
	defer func() {
		if !ok { // stop what was started
			g.Close()
		}
	}()
	g.cache = tokens.NewCache(tokens.CacheOptions{
		MaxEntries:          cfg.Cache.MaxEntries,
		RefreshBeforeExpiry: cfg.Cache.RefreshBeforeExpiry.D(),
		DefaultTTL:          cfg.Cache.DefaultTTL.D(),
		NegativeTTL:         cfg.Cache.NegativeTTL.D(),
		Now:                 opts.Now,
	})
	g.obs = telemetry.NewObserver(func() float64 { return float64(g.cache.Len()) })
	ao := authnOptions(cfg, opts)
	ao.OnJWKSFetch = g.obs.JWKSFetch
	var err error
	if opts.EvalOnly {
		err = authn.Check(ao) // eval verifies nothing: no keys to fetch
	} else {
		g.verifier, err = authn.New(ctx, ao)
	}
	if err != nil {
		return nil, fmt.Errorf("inbound: %w", err)
	}
	if g.clientIPs, err = newClientIPs(cfg.Server, g.log); err != nil {
		return nil, err
	}
	if cfg.Server.TLS != nil && !opts.EvalOnly {
		var certs *certReloader
		if g.tlsConfig, certs, err = newTLSConfig(cfg.Server.TLS, g.log); err != nil {
			return nil, err
		}
		go certs.watch(ctx, opts.CertWatchInterval)
	}
	g.workers = policy.NewWorkers(0)
	if !opts.EvalOnly {
		if g.events, err = telemetry.OpenEventLog(cfg.Policy.DecisionLog.Output); err != nil {
			return nil, fmt.Errorf("policy.decision_log: %w", err)
		}
	}
	popts, err := g.policyOptions(opts)
	if err != nil {
		return nil, err
	}
	if g.policy, err = policy.Start(ctx, popts); err != nil {
		return nil, err
	}
	g.obs.OPACounters(g.policy.Counters)
	g.obs.DecisionCacheState(g.policy.DecisionCacheState)
	if err := g.buildUpstreams(opts); err != nil {
		return nil, err
	}
	g.echo = g.buildRouter()
	ok = true
	return g, nil
}

// inputSchema is where the embedded policy file system holds the input's
// JSON Schema.
const inputSchema = "schemas/input.json"

// policyOptions are the policy's options, the same for New and Check:
// where the policy comes from, the rules it compiles by, OPA's own
// configuration, and where decisions, print() output and reloads go.
func (g *Gateway) policyOptions(opts Options) (policy.Options, error) {
	cfg := g.cfg
	po := policy.Options{
		Path: cfg.Policy.Path, Modules: opts.Policies, Verification: cfg.Policy.Verification,
		Query: cfg.Policy.Query, Timeout: cfg.Policy.Timeout.D(), Workers: g.workers,
		AllowNetwork: cfg.Policy.AllowNetwork, OPA: cfg.Policy.OPA,
		DecisionCache: cfg.Policy.DecisionCache.Enabled && !opts.EvalOnly, DecisionCacheSize: cfg.Policy.DecisionCache.MaxEntries,
		InstanceID: opts.InstanceID, Version: opts.Version,
		// Cookies are credentials: they never reach the decision log.
		Masks:        append([]string{"/input/request/headers/cookie"}, cfg.Policy.DecisionLog.Mask...),
		OnLogDropped: g.obs.DecisionLogDropped,
		OnReload:     g.obs.PolicyReload,
		Print:        g.policyPrint,
		Logger:       g.log,
	}
	if g.events != nil {
		po.DecisionLog = g.events
	}
	if po.InstanceID == "" {
		po.InstanceID = instanceID()
	}
	if po.Version == "" {
		po.Version = "(devel)"
	}
	if cfg.Policy.Watch && !opts.EvalOnly {
		po.WatchInterval = opts.PolicyWatchInterval
		if po.WatchInterval <= 0 {
			po.WatchInterval = 2 * time.Second
		}
	}
	if opts.EvalOnly {
		// eval sends nothing anywhere: no decision logs, no status.
		po.OPA = maps.Clone(po.OPA)
		delete(po.OPA, "decision_logs")
		delete(po.OPA, "status")
	}
	if opts.Policies != nil {
		if schema, err := fs.ReadFile(opts.Policies, inputSchema); err == nil {
			po.InputSchema = schema
		} else if !errors.Is(err, fs.ErrNotExist) {
			return po, fmt.Errorf("policy: %s: %w", inputSchema, err)
		}
	}
	return po, nil
}

// instanceID names this replica: its host name (a pod's name) and a
// random suffix, as OPA names its instances.
func instanceID() string {
	host, _ := os.Hostname()
	var b [4]byte
	_, _ = rand.Read(b[:])
	return strings.Trim(host+"-"+hex.EncodeToString(b[:]), "-")
}

func authnOptions(cfg *config.Config, opts Options) authn.Options {
	ao := authn.Options{
		RefreshInterval:    cfg.Inbound.JWKSRefreshInterval.D(),
		MinRefetchInterval: cfg.Inbound.JWKSMinRefetchInterval.D(),
		CacheSize:          cfg.Inbound.VerifiedCacheSize,
		HTTPClient:         opts.HTTPClient,
		Logger:             opts.Logger,
		Now:                opts.Now,
	}
	for _, is := range cfg.Inbound.Issuers {
		ao.Issuers = append(ao.Issuers, authn.IssuerConfig{
			Issuer: is.Issuer, Audiences: is.Audiences, JWKSURI: is.JWKSURI,
			Algorithms: is.Algorithms, Leeway: is.Leeway.D(), Typ: is.Typ,
		})
	}
	return ao
}

// buildUpstreams builds the token sources and the upstreams that use them.
// It reads key and certificate files but makes no network call.
func (g *Gateway) buildUpstreams(opts Options) error {
	bindings := map[string]*tokens.Binding{}
	for i, sc := range g.cfg.TokenSources {
		src, perCaller, err := g.buildSource(sc, opts)
		if err != nil {
			return fmt.Errorf("token_sources[%d]: %w", i, err)
		}
		src = timedSource{Source: src, name: sc.Name, obs: g.obs}
		bindings[sc.Name] = &tokens.Binding{Name: sc.Name, Source: src, PerCaller: perCaller, Timeout: sc.Timeout.D()}
	}
	for i, uc := range g.cfg.Upstreams {
		u, err := g.buildUpstream(uc, bindings[uc.TokenSource])
		if err != nil {
			return fmt.Errorf("upstreams[%d]: %w", i, err)
		}
		g.ups[uc.Name] = u
	}
	return nil
}

// timedSource observes how long each token request takes.
type timedSource struct {
	tokens.Source
	name string
	obs  *telemetry.Observer
}

func (s timedSource) Token(ctx context.Context, req *tokens.Request) (tokens.Token, error) {
	start := time.Now()
	defer func() { s.obs.IdPRequest(s.name, time.Since(start)) }()
	return s.Source.Token(ctx, req)
}

// buildSource makes one token source; perCaller says whether its tokens
// depend on the caller's token.
func (g *Gateway) buildSource(sc config.TokenSource, opts Options) (tokens.Source, bool, error) {
	idp := tokens.IdPOptions{
		Name: sc.Name, Issuer: sc.Issuer, TokenEndpoint: sc.TokenEndpoint,
		ClientID: sc.ClientID, ClientSecret: sc.ClientSecret.Value(), ClientAuth: sc.ClientAuth,
		PrivateKeyFile: sc.PrivateKeyFile, CertificateFile: sc.CertificateFile, AssertionAudience: sc.ClientAssertionAudience,
		AudienceParam: sc.AudienceParam, ExtraParams: sc.ExtraParams,
		HTTPClient: opts.IdPClient, Now: opts.Now,
	}
	if g.tracing != nil {
		idp.WrapTransport = g.tracing.Transport
	}
	switch sc.Type {
	case config.SourceSelfSigned:
		s, err := tokens.NewSelfSigned(tokens.SelfSignedOptions{
			Name: sc.Name, Issuer: sc.Issuer, Algorithm: sc.Algorithm, TTL: sc.TTL.D(),
			KeysPath: sc.SigningKeys, Logger: opts.Logger, Now: opts.Now,
		})
		if err != nil {
			return nil, false, err
		}
		g.selfKeys = append(g.selfKeys, s)
		return s, true, nil
	case config.SourceTokenExchange:
		s, err := tokens.NewTokenExchange(tokens.ExchangeOptions{
			IdPOptions: idp, SubjectTokenType: sc.SubjectTokenType, RequestedTokenType: sc.RequestedTokenType,
			ActorToken: sc.ActorToken.Value(), ActorTokenType: sc.ActorTokenType,
		})
		return s, true, err
	case config.SourceJWTBearer:
		s, err := tokens.NewJWTBearer(tokens.JWTBearerOptions{IdPOptions: idp, OnBehalfOf: sc.OnBehalfOf})
		return s, true, err
	case config.SourceClientCredentials:
		s, err := tokens.NewClientCredentials(idp)
		return s, false, err
	}
	return nil, false, fmt.Errorf("type: %q is not a token source type", sc.Type)
}

func (g *Gateway) buildUpstream(uc config.Upstream, binding *tokens.Binding) (*upstream, error) {
	if binding == nil {
		return nil, fmt.Errorf("token_source: %q is not defined", uc.TokenSource)
	}
	target, err := url.Parse(uc.URL)
	if err != nil {
		return nil, fmt.Errorf("url: %w", err)
	}
	tlsCfg, err := upstreamTLS(uc.TLS)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	po := proxy.Options{
		Name: uc.Name, URL: target, Timeout: uc.Timeout.D(), MaxIdleConns: uc.MaxIdleConns,
		TLS: tlsCfg, ErrorHandler: g.writeError,
	}
	if g.tracing != nil {
		po.WrapTransport = g.tracing.Transport
	}
	p, err := proxy.New(po)
	if err != nil {
		return nil, err
	}
	in := policy.Upstream{Name: uc.Name, TokenSource: uc.TokenSource, Audiences: uc.Audiences}
	return &upstream{name: uc.Name, cfg: uc, proxy: p, binding: binding,
		limits: policy.Limits{Audiences: uc.Audiences, Scopes: uc.Scopes},
		input:  in, inputValue: in.Value()}, nil
}

func upstreamTLS(c config.TLS) (*tls.Config, error) {
	if c.CAFile == "" && c.CertFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("ca_file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("ca_file: %s holds no PEM certificate", c.CAFile)
		}
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("cert_file/key_file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// Handler returns the gateway's HTTP handler.
func (g *Gateway) Handler() http.Handler { return g.echo }

// AdminHandler serves /healthz, /readyz and /metrics.
func (g *Gateway) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		// The bundles' state follows, also when ready: a bundle whose
		// latest update failed keeps the last good one in force.
		detail := strings.Join(g.policy.Status(), "\n")
		if detail != "" {
			detail += "\n"
		}
		if err := g.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n" + detail))
			return
		}
		_, _ = w.Write([]byte("ready\n" + detail))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.obs.Registry(), promhttp.HandlerOpts{}))
	return mux
}

// Ready reports whether the gateway can serve: a policy is in force (every
// configured bundle activated once) and every issuer's keys have been
// fetched once. An EvalOnly gateway never serves.
func (g *Gateway) Ready() error {
	if g.evalOnly {
		return errors.New("gateway: built for eval only")
	}
	return errors.Join(g.policy.Ready(), g.verifier.Ready())
}

// PolicyReady reports whether a policy is in force, for eval to wait on.
func (g *Gateway) PolicyReady() error { return g.policy.Ready() }

// Close stops OPA's plugins (uploading what decision logs and status they
// hold, as OPA does on shutdown), flushes the local decision log and
// releases idle upstream connections.
func (g *Gateway) Close() {
	if g.stop != nil {
		g.stop()
	}
	if g.tracing != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = g.tracing.Shutdown(ctx) // exports what is buffered
		cancel()
	}
	if g.policy != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		g.policy.Close(ctx)
		cancel()
	}
	if g.workers != nil {
		g.workers.Close()
	}
	if g.events != nil {
		_ = g.events.Close()
	}
	for _, u := range g.ups {
		u.proxy.Close()
	}
}

// wellKnown serves the self-signed sources' keys and a discovery document,
// so upstreams can verify audgate's tokens with any OIDC library.
func (g *Gateway) wellKnown() (jwks, discovery []byte, err error) {
	type key = map[string]any
	var keys []any
	for _, s := range g.selfKeys {
		set := s.PublicKeys()
		for i := range set.Len() {
			k, _ := set.Key(i)
			keys = append(keys, k)
		}
	}
	if jwks, err = json.Marshal(key{"keys": keys}); err != nil {
		return nil, nil, err
	}
	first := g.selfKeys[0]
	discovery, err = json.Marshal(key{
		"issuer":                                first.Issuer(),
		"jwks_uri":                              strings.TrimRight(first.Issuer(), "/") + "/.well-known/jwks.json",
		"id_token_signing_alg_values_supported": []string{first.Algorithm()},
	})
	return jwks, discovery, err
}
