package gateway

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// Eval runs the policy for one request as the gateway would, with claims
// standing for the caller's verified token, and checks the decision
// against the upstream's limits: the same path rules, stripped headers
// and request ID as a real request. It proxies nothing and asks no token
// source: it is for audgate eval. With trace set, the evaluation trace is
// written to it.
func (g *Gateway) Eval(ctx context.Context, method, target string, header http.Header, claims map[string]any, trace io.Writer) (*policy.Input, policy.Decision, error) {
	if err := checkCanonical(requestPath(target)); err != nil {
		return nil, policy.Decision{}, fmt.Errorf("path %q: %w", target, err)
	}
	r, err := http.NewRequestWithContext(ctx, method, target, nil)
	if err != nil {
		return nil, policy.Decision{}, err
	}
	r.RequestURI, r.RemoteAddr, r.Host = target, "127.0.0.1:0", "localhost"
	for k, v := range header {
		r.Header[k] = v
	}
	g.strip.strip(r.Header)
	dropUnderscoreHeaders(r.Header)
	r.Header.Set("X-Request-Id", g.ids.next(""))
	c := g.echo.NewContext(r, nil)
	g.echo.Router().Find(method, r.URL.Path, c)
	rt, ok := g.routes[routeKey(method, c.Path())]
	if !ok {
		return nil, policy.Decision{}, fmt.Errorf("no route for %s %s", method, r.URL.Path)
	}
	in, err := g.input(c, rt, principalFromClaims(claims))
	if err != nil {
		return nil, policy.Decision{}, err
	}
	engine := g.policy.Load()
	var d policy.Decision
	if trace != nil {
		d, err = engine.Explain(ctx, in, trace)
	} else {
		d, err = engine.Decide(ctx, in)
	}
	if err == nil {
		err = d.Check(rt.upstream.limits)
	}
	return in, d, err
}

func routeKey(method, path string) string { return method + " " + path }

// principalFromClaims reads a token's claims as authn would, without
// verifying anything.
func principalFromClaims(claims map[string]any) *authn.Principal {
	str := func(k string) string { s, _ := claims[k].(string); return s }
	list := func(k string) []string {
		switch v := claims[k].(type) {
		case string:
			return strings.Fields(v)
		case []any:
			out := []string{}
			for _, e := range v {
				if s, ok := e.(string); ok {
					out = append(out, s)
				}
			}
			return out
		}
		return []string{}
	}
	p := &authn.Principal{Issuer: str("iss"), Subject: str("sub"), ClientID: str("client_id"), Claims: claims}
	if p.ClientID == "" {
		p.ClientID = str("azp")
	}
	if aud, ok := claims["aud"].(string); ok {
		p.Audience = []string{aud}
	} else {
		p.Audience = list("aud")
	}
	if p.Scopes = list("scope"); len(p.Scopes) == 0 {
		p.Scopes = list("scp")
	}
	if exp, ok := claims["exp"].(json.Number); ok {
		if n, err := exp.Int64(); err == nil {
			p.ExpiresAt = time.Unix(n, 0)
		}
	}
	return p
}

// Check builds what New builds without touching the network: token
// sources (signing and client keys are read) and upstream transports (TLS
// files are read). For audgate check.
func Check(cfg *config.Config) error {
	if err := unsupported(cfg); err != nil {
		return err
	}
	g := &Gateway{cfg: cfg, log: slog.New(slog.DiscardHandler), cache: tokens.NewCache(tokens.CacheOptions{})}
	g.metrics = telemetry.NewMetrics(func() float64 { return 0 })
	entries, err := g.buildSources(Options{Logger: g.log})
	if err != nil {
		return err
	}
	for i, uc := range cfg.Upstreams {
		if _, err := g.buildUpstream(uc, entries[uc.TokenSource]); err != nil {
			return fmt.Errorf("upstreams[%d]: %w", i, err)
		}
	}
	return nil
}
