// Package gateway serves audgate's request path: canonical path, route,
// authentication (RFC 6750 bearer tokens), policy decision, downstream
// token and reverse proxy. The stages are functions that run, eval and
// check share (see pipeline.go); every error, from any stage, reaches the
// client through one mapping function (errorResponse), and none of them
// proxies.
package gateway

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync/atomic"
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
	// EvalOnly builds a gateway for Eval alone (audgate eval): it fetches
	// no keys, logs no decisions and does not watch the policy, and only
	// such a gateway reads callers' tokens without verifying them.
	// Default: false.
	EvalOnly bool
}

// Gateway is one configured gateway. It is read-only after New.
type Gateway struct {
	cfg        *config.Config
	log        *slog.Logger
	verifier   *authn.Verifier
	policy     atomic.Pointer[policy.Engine] // swapped whole on reload
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
	if err := refuseUnhonoured(cfg); err != nil {
		return nil, err
	}
	g := &Gateway{cfg: cfg, log: opts.Logger, strip: newHeaderMatcher(cfg.Server.StripInboundHeaders),
		ups: map[string]*upstream{}, ids: newRequestIDs(), routes: map[string]*route{}, routePaths: map[string]bool{},
		tokenViews: authn.NewAttachment(newTokenView), evalOnly: opts.EvalOnly}
	g.cache = tokens.NewCache(tokens.CacheOptions{
		MaxEntries:          cfg.Cache.MaxEntries,
		RefreshBeforeExpiry: cfg.Cache.RefreshBeforeExpiry.D(),
		DefaultTTL:          cfg.Cache.DefaultTTL.D(),
		NegativeTTL:         cfg.Cache.NegativeTTL.D(),
		Now:                 opts.Now,
	})
	output := cfg.Policy.DecisionLog.Output
	if opts.EvalOnly {
		output = "off"
	}
	var err error
	g.obs, err = telemetry.NewObserver(telemetry.ObserverOptions{
		DecisionLog: output,
		// Cookies are credentials: they never reach the decision log.
		Masks:        append([]string{"/request/headers/cookie"}, cfg.Policy.DecisionLog.Mask...),
		CacheEntries: func() float64 { return float64(g.cache.Len()) },
	})
	if err != nil {
		return nil, fmt.Errorf("policy.decision_log: %w", err)
	}
	ao := authnOptions(cfg, opts)
	ao.OnJWKSFetch = g.obs.JWKSFetch
	if opts.EvalOnly {
		err = authn.Check(ao) // eval verifies nothing: no keys to fetch
	} else {
		g.verifier, err = authn.New(ctx, ao)
	}
	if err != nil {
		_ = g.obs.Close()
		return nil, fmt.Errorf("inbound: %w", err)
	}
	g.workers = policy.NewWorkers(0)
	ok := false
	defer func() {
		if !ok { // stop what was started
			g.Close()
		}
	}()
	popts := policyOptions(cfg, opts.Policies, g.workers)
	engine, err := policy.New(ctx, popts)
	if err != nil {
		return nil, err
	}
	g.policy.Store(engine)
	if err := g.buildUpstreams(opts); err != nil {
		return nil, err
	}
	g.echo = g.buildRouter()
	if cfg.Policy.Watch && cfg.Policy.Path != "" && !opts.EvalOnly {
		every := opts.PolicyWatchInterval
		if every <= 0 {
			every = 2 * time.Second
		}
		go g.watchPolicy(ctx, popts, every)
	}
	ok = true
	return g, nil
}

// refuseUnhonoured refuses configuration this version accepts in the file
// but cannot honour, rather than ignore it.
func refuseUnhonoured(cfg *config.Config) error {
	if len(cfg.Policy.OPA) > 0 {
		return errors.New("policy.opa: OPA plugins (bundles, decision log services) are not supported by this version; remove the section")
	}
	return nil
}

// policyOptions are the policy's compile options, the same for New, Check
// and every reload.
func policyOptions(cfg *config.Config, embedded fs.FS, workers *policy.Workers) policy.Options {
	return policy.Options{Path: cfg.Policy.Path, Modules: embedded, Query: cfg.Policy.Query,
		Timeout: cfg.Policy.Timeout.D(), Workers: workers}
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
	p, err := proxy.New(proxy.Options{
		Name: uc.Name, URL: target, Timeout: uc.Timeout.D(), MaxIdleConns: uc.MaxIdleConns,
		TLS: tlsCfg, ErrorHandler: g.writeError,
	})
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
		if err := g.Ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			_, _ = w.Write([]byte("not ready: " + err.Error() + "\n"))
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(g.obs.Registry(), promhttp.HandlerOpts{}))
	return mux
}

// Ready reports whether the gateway can serve: the policy is compiled (New
// did that) and every issuer's keys have been fetched once. An EvalOnly
// gateway never serves.
func (g *Gateway) Ready() error {
	if g.evalOnly {
		return errors.New("gateway: built for eval only")
	}
	return g.verifier.Ready()
}

// Close flushes the decision log and releases idle upstream connections.
func (g *Gateway) Close() {
	g.workers.Close()
	_ = g.obs.Close()
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
