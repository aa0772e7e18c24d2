package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/open-policy-agent/opa/v1/ast"
	"go.opentelemetry.io/otel/attribute"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/proxy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// The request path is four stages, each one function that run, eval and
// check share, so that they can never disagree:
//
//   - prepare: the bearer token, the caller, the token's placement and the
//     policy input (preflight has already made the path canonical,
//     stripped headers and named the request; the router chose the route);
//   - decide: the policy, and its decision checked against the upstream;
//   - obtain: the downstream token, from the cache or the token source;
//   - forward: the reverse proxy.
//
// eval runs the same request through the same router and stages, as a dry
// run (see dryRun): the caller is read without verification, and it stops
// after decide.

// call is one request on its way through the stages.
type call struct {
	r      *http.Request
	route  *route
	token  string // the caller's raw token
	caller *authn.Principal
	input  *policy.Input
	logged bool // the decision goes to the decision log
}

// prepare is the first stage after routing.
func (g *Gateway) prepare(c echo.Context, rt *route, dry *dryRun) (*call, error) {
	r := c.Request()
	raw, err := bearer(r)
	if err != nil {
		return nil, err
	}
	ctx, span := g.span(r.Context(), "authn")
	p, cached, err := g.authenticate(ctx, raw, dry)
	if span.IsRecording() {
		span.SetAttributes(attribute.Bool("audgate.authn.cached", cached))
	}
	endSpan(span, err)
	if err != nil {
		return nil, err
	}
	if err := placeToken(r, raw); err != nil {
		return nil, err
	}
	in, err := g.input(c, rt, p)
	if err != nil {
		return nil, err
	}
	return &call{r: r, route: rt, token: raw, caller: p, input: in}, nil
}

// authenticate verifies the caller's token, and says whether the
// verified-token cache knew it; in a dry run it reads the token, or the
// claims standing for it, without verifying anything.
func (g *Gateway) authenticate(ctx context.Context, raw string, dry *dryRun) (*authn.Principal, bool, error) {
	var p *authn.Principal
	var err error
	switch {
	case dry == nil && g.evalOnly:
		err = errors.New("gateway: built for eval only; it verifies no tokens")
	case dry == nil:
		return g.verifier.VerifyCached(ctx, raw)
	case !g.evalOnly:
		// Only Eval sets a dry run, and only on an EvalOnly gateway: a
		// serving gateway never reads a token without verifying it.
		err = errors.New("gateway: a dry run on a serving gateway")
	case dry.claims != nil:
		p, err = authn.ClaimsUnverified(dry.claims)
	default:
		p, err = authn.ParseUnverified(raw)
	}
	return p, false, err
}

// verdict is what the policy stage came to.
type verdict struct {
	// decision is the policy's decision; decided says whether there was
	// one, even one that breaks the contract: false on an evaluation error
	// or when no policy is in force.
	decision policy.Decision
	decided  bool
	// engine is the policy that decided, at when, took how long it took;
	// cached says the decision came from the decision cache.
	engine *policy.Engine
	at     time.Time
	took   time.Duration
	cached bool
}

// errPolicyNotReady: no policy in force yet (bundles not activated).
var errPolicyNotReady = policy.ErrNotReady

// decide asks the policy about in and checks the decision against up's
// limits. A deny is a *denyError; a policy error wraps policy.ErrPolicy.
// With trace set, the evaluation trace is written to it (eval --explain).
func (g *Gateway) decide(ctx context.Context, up *upstream, in *policy.Input, trace io.Writer) (v verdict, err error) {
	start := time.Now()
	v.at = start
	ctx, span := g.span(ctx, "policy")
	defer func() { endPolicySpan(span, v.cached, err) }()
	if trace != nil {
		if v.engine = g.policy.Engine(); v.engine == nil {
			return v, fmt.Errorf("%w: %v", errPolicyNotReady, g.policy.Ready())
		}
		v.decision, err = v.engine.Explain(ctx, in, trace)
	} else {
		var dd policy.Decided
		dd, err = g.policy.Decide(ctx, in)
		v.engine, v.decision, v.cached = dd.Engine, dd.Decision, dd.Cached
		if v.engine == nil {
			return v, err
		}
		if v.engine.Cached() {
			g.obs.DecisionCached(v.cached)
		}
	}
	v.took = time.Since(start)
	d := &v.decision
	if err == nil {
		v.decided = true
		err = d.Check(up.limits)
	}
	switch {
	case err != nil:
		g.obs.Decision(telemetry.PolicyFailed, v.took)
		return v, err
	case !d.Allow:
		g.obs.Decision(telemetry.Denied, v.took)
		reason := d.Reason
		if reason == "" {
			reason = "denied by policy"
		}
		return v, &denyError{status: d.DenyStatus(), reason: reason, scopes: d.Scopes, headers: d.ResponseHeaders}
	}
	g.obs.Decision(telemetry.Allowed, v.took)
	return v, nil
}

// obtain gets the downstream token the decision asks for.
func (g *Gateway) obtain(ctx context.Context, cl *call, d policy.Decision) (*tokens.Request, tokens.Token, tokens.Outcome, error) {
	b := cl.route.upstream.binding
	treq := &tokens.Request{
		Audience: d.Audience, Scopes: tokens.NormalizeScopes(d.Scopes),
		Subject: cl.caller.Subject, ClientID: cl.caller.ClientID,
		SubjectToken: cl.token, SubjectTokenHash: cl.caller.TokenHash, SubjectExpiry: cl.caller.ExpiresAt,
		Claims: d.Claims,
	}
	ctx, span := g.span(ctx, "token")
	tok, outcome, err := g.cache.Token(ctx, b, treq)
	g.obs.TokenLookup(b.Name, string(outcome))
	if span.IsRecording() {
		span.SetAttributes(attribute.String("audgate.token_source.name", b.Name),
			attribute.String("audgate.token_source.outcome", string(outcome)))
	}
	endSpan(span, err)
	return treq, tok, outcome, err
}

// forward proxies the request upstream with the downstream token. The
// body, if any, is read only here, through inboundBody.
func (g *Gateway) forward(c echo.Context, cl *call, d policy.Decision, treq *tokens.Request, tok tokens.Token) {
	up := cl.route.upstream
	b := up.binding
	w, r := c.Response(), cl.r
	if r.Body != nil && r.Body != http.NoBody {
		// A copy: the server's own request keeps the server's body, and
		// with it Go's 100-continue and unread-body handling.
		body := newInboundBody(w.Writer, cl.r.Body, g.cfg.Server.MaxBodyBytes, g.cfg.Server.BodyReadTimeout.D())
		defer body.finish()
		r = r.WithContext(context.WithValue(r.Context(), inboundBodyKey{}, body))
		r.Body = body
	}
	var chain []string
	if who, ok := c.Get(callerKey).(caller); ok {
		chain = who.chain
	}
	up.proxy.Serve(w, r, &proxy.Outbound{
		Token: tok.Value, Headers: d.Headers, StripPrefix: cl.route.stripPrefix,
		RequestID: requestID(cl.r), ResponseHeaders: d.ResponseHeaders, ForwardedFor: chain,
		Drop: func() bool { return g.cache.Drop(b, treq, tok.Value) },
		Refresh: func(ctx context.Context) (string, error) {
			tok, outcome, err := g.cache.Token(ctx, b, treq)
			g.obs.TokenLookup(b.Name, string(outcome))
			return tok.Value, err
		},
	})
}

// handle is the request path for one route. Any error returned reaches
// writeError, and nothing has been sent upstream by then.
func (g *Gateway) handle(rt *route) echo.HandlerFunc {
	return func(c echo.Context) error {
		c.Set("upstream", rt.upstream.name)
		r := c.Request()
		// print() in the policy names the request it ran for.
		ctx := context.WithValue(r.Context(), requestIDKey{}, requestID(r))
		dry := dryRunOf(ctx)
		cl, err := g.prepare(c, rt, dry)
		if err != nil {
			return err
		}
		v, err := g.decide(ctx, rt.upstream, cl.input, dry.traceWriter())
		cl.logged = g.policy.LogsDecisions() // read once: the input is completed for it
		if dry != nil || cl.logged {
			cl.input.Complete() // the input is shown or logged whole
		} else {
			cl.input.Fill = nil // nothing reads it after this
		}
		d := v.decision
		if dry != nil {
			dry.input, dry.decision, dry.decided = cl.input, d, v.decided
			if err != nil {
				return err
			}
			return c.NoContent(http.StatusOK)
		}
		if err != nil {
			g.logDecision(cl, v, err, errorResponse(err).status, nil)
			return err
		}
		treq, tok, outcome, err := g.obtain(r.Context(), cl, d)
		to := &tokenOutcome{name: rt.upstream.binding.Name, outcome: string(outcome), errorCode: refusalCode(err)}
		if err != nil {
			g.logDecision(cl, v, err, errorResponse(err).status, to)
			return err
		}
		// Logged even when the proxy panics (http.ErrAbortHandler: the
		// caller or the upstream went away mid-body): the request did
		// reach the upstream.
		defer func() { g.logDecision(cl, v, nil, c.Response().Status, to) }()
		g.forward(c, cl, d, treq, tok)
		return nil
	}
}

// requestIDKey carries the request ID in an evaluation's context.
type requestIDKey struct{}

// policyPrint receives print() output from the policy: in eval, it goes
// to eval's writer; otherwise to the log, with the request ID.
func (g *Gateway) policyPrint(ctx context.Context, location, msg string) {
	if dry := dryRunOf(ctx); dry != nil && dry.print != nil {
		fmt.Fprintf(dry.print, "%s: %s\n", location, msg)
		return
	}
	id, _ := ctx.Value(requestIDKey{}).(string)
	g.log.InfoContext(ctx, "policy print", "request_id", id, "location", location, "message", msg)
}

// refusalCode is an identity provider's OAuth error code in err, if any.
func refusalCode(err error) string {
	var re *tokens.RefusedError
	if errors.As(err, &re) {
		return re.Answer.Code
	}
	return ""
}

// logDecision hands one request's decision to the decision log (OPA's
// event format; the policy runtime masks and ships it off the request
// path): the input, the policy's raw result (none when evaluation failed),
// and audgate's own fields under custom.
func (g *Gateway) logDecision(cl *call, v verdict, err error, status int, tok *tokenOutcome) {
	if v.engine == nil || !cl.logged {
		return
	}
	custom := map[string]any{"request_id": requestID(cl.r), "http_status": status, "cached": v.cached}
	var deny *denyError
	switch {
	case errors.As(err, &deny):
		custom["reason"] = deny.reason
	case err != nil:
		custom["reason"] = err.Error()
	}
	if tok != nil {
		ts := map[string]any{"name": tok.name, "outcome": tok.outcome}
		if tok.errorCode != "" {
			ts["error_code"] = tok.errorCode
		}
		custom["token_source"] = ts
	}
	r := &policy.Record{DecisionID: g.ids.next(""), Timestamp: v.at, Engine: v.engine,
		Input: cl.input, Decision: v.decision, Eval: v.took, Custom: custom}
	r.TraceID, r.SpanID = g.traceIDs(cl.r)
	if !v.decided {
		r.Err = err
	}
	g.policy.Log(r)
}

// tokenOutcome is how the downstream token was obtained, for the log.
type tokenOutcome struct {
	name, outcome, errorCode string
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// input builds the policy input: the request as the upstream will receive
// it, the route, the upstream and the caller's token.
func (g *Gateway) input(c echo.Context, rt *route, p *authn.Principal) (*policy.Input, error) {
	r := c.Request()
	peer := peerIP(r)
	client := peer
	if cl, ok := c.Get(callerKey).(caller); ok {
		client = cl.ip
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	path := r.URL.Path
	token := tokenOf(p)
	view := g.tokenViews.Get(p)
	var tokValue ast.Value
	if on, _ := g.policy.DecisionCacheState(); on {
		// A hit needs no token value, only its part of the key, kept
		// with the token; a token seldom misses twice, so its value is
		// built then and not kept, which saves about 2 KB a caller.
		token.Memo = &view.memo
	} else {
		// Without the decision cache every request evaluates: the
		// token's part of the input is built once per token and kept.
		var err error
		if tokValue, err = view.astValue(p); err != nil {
			return nil, &policy.Error{Msg: "token claims", Err: err}
		}
	}
	u := rt.upstream
	return &policy.Input{
		Request: policy.Request{
			Method: r.Method, Path: path, Host: r.Host, RemoteIP: peer,
			Scheme: scheme, Protocol: r.Proto, ClientIP: client, TLS: tlsInput(r.TLS),
		},
		Route:         policy.Route{Path: rt.path, Upstream: u.name},
		Upstream:      u.input,
		UpstreamValue: u.inputValue,
		Token:         token,
		TokenValue:    tokValue,
		// Built only if the policy reads them; handle completes the input
		// before forward, which changes r, and before echo reuses c.
		Fill: func(in *policy.Input) {
			if trimmed := strings.Trim(path, "/"); trimmed != "" {
				in.Request.Segments = strings.Split(trimmed, "/")
			}
			in.Request.Query, in.Request.Headers = r.URL.Query(), inputHeaders(r.Header)
			names, values := c.ParamNames(), c.ParamValues()
			in.Route.Params = make(map[string]string, len(names))
			for i, n := range names {
				if i < len(values) {
					in.Route.Params[n] = values[i]
				}
			}
		},
	}, nil
}

// tokenView is what the policy needs of a verified token, kept with its
// principal (Gateway.tokenViews): the memo of its part of decision cache
// keys and, with the decision cache off, its OPA value, built on first
// need.
type tokenView struct {
	memo  policy.KeyMemo
	value atomic.Pointer[tokenValue]
}

type tokenValue struct {
	v   ast.Value
	err error
}

func newTokenView(*authn.Principal) *tokenView { return new(tokenView) }

// tokenOf is the policy's view of a verified token; it shares the
// principal's slices, and its claims are the principal's JSON text,
// decoded only if the policy evaluates.
func tokenOf(p *authn.Principal) policy.Token {
	return policy.Token{
		Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Audience: p.Audience,
		Scopes: p.Scopes, ExpiresAt: p.ExpiresAt.Unix(), ClaimsJSON: p.ClaimsJSON(),
	}
}

// astValue is p's token as an OPA value, built on first need; concurrent
// first callers may each build it.
func (v *tokenView) astValue(p *authn.Principal) (ast.Value, error) {
	if tv := v.value.Load(); tv != nil {
		return tv.v, tv.err
	}
	t := tokenOf(p)
	tv := &tokenValue{}
	tv.v, tv.err = t.Value()
	v.value.CompareAndSwap(nil, tv)
	return tv.v, tv.err
}
