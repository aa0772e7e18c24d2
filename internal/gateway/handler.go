package gateway

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/proxy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// defaultMethods are what a route without methods accepts. CONNECT and
// TRACE are never proxied.
var defaultMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// route is one configured route, resolved at start-up.
type route struct {
	path        string
	stripPrefix string
	upstream    *upstream
}

func (g *Gateway) buildRouter() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if !c.Response().Committed {
			g.writeError(c.Response(), c.Request(), err)
		}
	}
	e.Pre(g.preflight)
	e.Use(g.observe, g.guardOptions)
	if len(g.selfKeys) > 0 {
		jwks, discovery, err := g.wellKnown()
		if err == nil {
			e.GET("/.well-known/jwks.json", staticJSON(jwks))
			e.GET("/.well-known/openid-configuration", staticJSON(discovery))
		}
	}
	for _, rc := range g.cfg.Routes {
		rt := &route{path: rc.Path, stripPrefix: rc.StripPrefix, upstream: g.ups[rc.Upstream]}
		methods := rc.Methods
		if len(methods) == 0 {
			methods = defaultMethods
		}
		h := g.handle(rt)
		for _, m := range methods {
			e.Add(m, rc.Path, h)
			g.routes[routeKey(m, rc.Path)] = rt
		}
		g.routePaths[rc.Path] = true
	}

	return e
}

func staticJSON(body []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "public, max-age=300")
		return c.Blob(http.StatusOK, "application/json", body)
	}
}

// preflight runs before routing: it names the request, strips the
// headers no client may send, and refuses non-canonical paths and
// oversize requests.
func (g *Gateway) preflight(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		// The request ID lives in the inbound header from here on: every
		// stage, and writeError, read it there.
		id := g.ids.next(r.Header.Get("X-Request-Id"))
		tooLarge := headerBytes(r) > g.cfg.Server.MaxHeaderBytes // as sent
		g.strip.strip(r.Header)
		dropUnderscoreHeaders(r.Header)
		r.Header.Set("X-Request-Id", id)
		c.Response().Header().Set("X-Request-Id", id)

		if err := checkCanonical(requestPath(r.RequestURI)); err != nil {
			return &pathError{err}
		}
		if tooLarge {
			return &tooLargeError{status: http.StatusRequestHeaderFieldsTooLarge, what: "request headers are too large"}
		}
		if r.ContentLength > g.cfg.Server.MaxBodyBytes {
			return &tooLargeError{status: http.StatusRequestEntityTooLarge, what: "request body is too large"}
		}
		if r.Body != nil && r.Body != http.NoBody {
			r.Body = http.MaxBytesReader(c.Response(), r.Body, g.cfg.Server.MaxBodyBytes)
		}
		return next(c)
	}
}

// observe records each request's status and latency.
func (g *Gateway) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		up := ""
		if u, ok := c.Get("upstream").(string); ok {
			up = u
		}
		g.metrics.Requests.WithLabelValues(c.Path(), up, strconv.Itoa(c.Response().Status)).Inc()
		g.metrics.Duration.WithLabelValues(c.Path(), up).Observe(time.Since(start).Seconds())
		return nil
	}
}

// guardOptions makes OPTIONS on a route that does not accept it the 405
// it is: Echo would otherwise answer it itself, 204 with the route's
// methods, to anyone. A route that accepts OPTIONS gets it as any method.
func (g *Gateway) guardOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method != http.MethodOptions || !g.routePaths[c.Path()] {
			return next(c)
		}
		if _, routed := g.routes[routeKey(http.MethodOptions, c.Path())]; routed {
			return next(c)
		}
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok {
			// Echo lists OPTIONS for every route; this one does not take it.
			methods := slices.DeleteFunc(strings.Split(allow, ", "), func(m string) bool { return m == http.MethodOptions })
			c.Response().Header().Set(echo.HeaderAllow, strings.Join(methods, ", "))
		}
		return echo.ErrMethodNotAllowed
	}
}

// handle is the request path for one route: authenticate, decide, obtain
// the downstream token, proxy. Any error returned reaches writeError, and
// nothing has been sent upstream by then.
func (g *Gateway) handle(rt *route) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set("upstream", rt.upstream.name)
		r := c.Request()
		ctx := r.Context()
		raw, err := bearer(r)
		if err != nil {
			return err
		}
		p, err := g.verifier.Verify(ctx, raw)
		if err != nil {
			return err
		}
		if err := placeToken(r, raw); err != nil {
			return err
		}
		in, err := g.input(c, rt, p)
		if err != nil {
			return err
		}
		d, err := g.decide(ctx, rt, in)
		if err != nil {
			g.logDecision(r, in, d, err, nil)
			return err
		}
		entry := rt.upstream.entry
		treq := &tokens.Request{
			Audience: d.Audience, Scopes: tokens.NormalizeScopes(d.Scopes),
			Subject: p.Subject, ClientID: p.ClientID,
			SubjectToken: raw, SubjectTokenHash: p.TokenHash, SubjectExpiry: p.ExpiresAt,
			Claims: d.Claims,
		}
		tok, outcome, err := g.cache.Token(ctx, entry, treq)
		g.metrics.TokenRequests.WithLabelValues(entry.Name, string(outcome)).Inc()
		g.logDecision(r, in, d, nil, &telemetry.TokenOutcome{Name: entry.Name, Outcome: string(outcome), Error: errString(err)})
		if err != nil {
			return err
		}
		rt.upstream.proxy.Serve(c.Response(), r, &proxy.Outbound{
			Token: tok.Value, Headers: d.Headers, StripPrefix: rt.stripPrefix,
			RequestID: requestID(r),
			Drop:      func() bool { return g.cache.Drop(entry, treq, tok.Value) },
			Refresh: func(ctx context.Context) (string, error) {
				tok, outcome, err := g.cache.Token(ctx, entry, treq)
				g.metrics.TokenRequests.WithLabelValues(entry.Name, string(outcome)).Inc()
				return tok.Value, err
			},
		})
		return nil
	}
}

// decide asks the policy and checks the decision against the upstream's
// limits. A deny is a *denyError.
func (g *Gateway) decide(ctx context.Context, rt *route, in *policy.Input) (policy.Decision, error) {
	start := time.Now()
	engine := g.policy.Load()
	d, err := engine.Decide(ctx, in)
	if err == nil {
		err = d.Check(rt.upstream.limits)
	}
	g.metrics.PolicyDuration.Observe(time.Since(start).Seconds())
	switch {
	case err != nil:
		g.metrics.Decisions.WithLabelValues("error").Inc()
		return d, err
	case !d.Allow:
		g.metrics.Decisions.WithLabelValues("deny").Inc()
		reason := d.Reason
		if reason == "" {
			reason = "denied by policy"
		}
		return d, &denyError{status: d.Status, reason: reason}
	}
	g.metrics.Decisions.WithLabelValues("allow").Inc()
	return d, nil
}

// logDecision writes the decision log entry for one request. A policy
// error leaves no result; a deny or a token failure is named in error.
func (g *Gateway) logDecision(r *http.Request, in *policy.Input, d policy.Decision, err error, tok *telemetry.TokenOutcome) {
	if g.dlog == nil {
		return
	}
	e := &telemetry.DecisionEntry{
		DecisionID: g.ids.next(""), RequestID: requestID(r), Timestamp: time.Now(),
		Path: g.policy.Load().Query(), Input: in, Result: d, Error: errString(err), TokenSource: tok,
	}
	if errors.Is(err, policy.ErrPolicy) {
		e.Result = nil
	}
	g.dlog.Log(e)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func (g *Gateway) input(c echo.Context, rt *route, p *authn.Principal) (*policy.Input, error) {
	r := c.Request()
	names, values := c.ParamNames(), c.ParamValues()
	params := make(map[string]string, len(names))
	for i, n := range names {
		if i < len(values) {
			params[n] = values[i]
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	path := r.URL.Path
	var segments []string
	if trimmed := strings.Trim(path, "/"); trimmed != "" {
		segments = strings.Split(trimmed, "/")
	}
	tok := tokenInput(p)
	if tok.err != nil {
		return nil, &policy.Error{Msg: "token claims", Err: tok.err}
	}
	u := rt.upstream
	return &policy.Input{
		Request: policy.Request{
			Method: r.Method, Path: path, Segments: segments, Query: r.URL.Query(),
			Headers: inputHeaders(r.Header), Host: r.Host, RemoteIP: host,
		},
		Route:         policy.Route{Path: rt.path, Params: params, Upstream: u.name},
		Upstream:      u.input,
		UpstreamValue: u.inputValue,
		Token:         *tok.token,
		TokenValue:    tok.value,
	}, nil
}

// tokenView is the policy's view of a verified token, built once per
// token and kept with its principal.
type tokenView struct {
	token *policy.Token
	value ast.Value
	err   error
}

func tokenInput(p *authn.Principal) *tokenView {
	return p.Memo(func(p *authn.Principal) any {
		t := &policy.Token{
			Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Audience: p.Audience,
			Scopes: p.Scopes, ExpiresAt: p.ExpiresAt.Unix(), Claims: p.Claims,
		}
		v, err := t.Value()
		return &tokenView{token: t, value: v, err: err}
	}).(*tokenView)
}

// requestIDs makes request IDs: a random prefix per process and a
// counter, unique across replicas without a random read per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// next keeps a client's X-Request-Id when it is a short token of safe
// characters, and makes a new one otherwise.
func (ids *requestIDs) next(given string) string {
	if n := len(given); n > 0 && n <= 128 && strings.IndexFunc(given, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0 {
		return given
	}
	return ids.prefix + strconv.FormatUint(ids.n.Add(1), 36)
}

// requestID returns the ID preflight gave the request.
func requestID(r *http.Request) string { return r.Header.Get("X-Request-Id") }
