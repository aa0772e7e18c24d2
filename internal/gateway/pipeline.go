package gateway

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/open-policy-agent/opa/v1/ast"

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
}

// prepare is the first stage after routing.
func (g *Gateway) prepare(c echo.Context, rt *route, dry *dryRun) (*call, error) {
	r := c.Request()
	raw, err := bearer(r)
	if err != nil {
		return nil, err
	}
	p, err := g.authenticate(r.Context(), raw, dry)
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

// authenticate verifies the caller's token; in a dry run it reads the
// token, or the claims standing for it, without verifying anything.
func (g *Gateway) authenticate(ctx context.Context, raw string, dry *dryRun) (*authn.Principal, error) {
	switch {
	case dry == nil && g.evalOnly:
		return nil, errors.New("gateway: built for eval only; it verifies no tokens")
	case dry == nil:
		return g.verifier.Verify(ctx, raw)
	case !g.evalOnly:
		// Only Eval sets a dry run, and only on an EvalOnly gateway: a
		// serving gateway never reads a token without verifying it.
		return nil, errors.New("gateway: a dry run on a serving gateway")
	case dry.claims != nil:
		return authn.ClaimsUnverified(dry.claims)
	}
	return authn.ParseUnverified(raw)
}

// decide asks the policy about in and checks the decision against up's
// limits. decided says whether the policy returned a decision (d), even
// one that breaks the contract: false only on an evaluation error. A deny
// is a *denyError; a policy error wraps policy.ErrPolicy. With trace set,
// the evaluation trace is written to it (eval --explain).
func (g *Gateway) decide(ctx context.Context, up *upstream, in *policy.Input, trace io.Writer) (d policy.Decision, decided bool, err error) {
	start := time.Now()
	engine := g.policy.Load()
	if trace != nil {
		d, err = engine.Explain(ctx, in, trace)
	} else {
		d, err = engine.Decide(ctx, in)
	}
	if err == nil {
		decided = true
		err = d.Check(up.limits)
	}
	switch {
	case err != nil:
		g.obs.Decision(telemetry.PolicyFailed, time.Since(start))
		return d, decided, err
	case !d.Allow:
		g.obs.Decision(telemetry.Denied, time.Since(start))
		reason := d.Reason
		if reason == "" {
			reason = "denied by policy"
		}
		return d, true, &denyError{status: d.DenyStatus(), reason: reason}
	}
	g.obs.Decision(telemetry.Allowed, time.Since(start))
	return d, true, nil
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
	tok, outcome, err := g.cache.Token(ctx, b, treq)
	g.obs.TokenLookup(b.Name, string(outcome))
	return treq, tok, outcome, err
}

// forward proxies the request upstream with the downstream token.
func (g *Gateway) forward(w http.ResponseWriter, cl *call, d policy.Decision, treq *tokens.Request, tok tokens.Token) {
	up := cl.route.upstream
	b := up.binding
	up.proxy.Serve(w, cl.r, &proxy.Outbound{
		Token: tok.Value, Headers: d.Headers, StripPrefix: cl.route.stripPrefix,
		RequestID: requestID(cl.r),
		Drop:      func() bool { return g.cache.Drop(b, treq, tok.Value) },
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
		ctx := c.Request().Context()
		dry := dryRunOf(ctx)
		cl, err := g.prepare(c, rt, dry)
		if err != nil {
			return err
		}
		d, decided, err := g.decide(ctx, rt.upstream, cl.input, dry.traceWriter())
		if dry != nil {
			dry.input, dry.decision, dry.decided = cl.input, d, decided
			if err != nil {
				return err
			}
			return c.NoContent(http.StatusOK)
		}
		if err != nil {
			g.logDecision(cl, d, decided, err, nil)
			return err
		}
		treq, tok, outcome, err := g.obtain(ctx, cl, d)
		g.logDecision(cl, d, true, nil, &telemetry.TokenOutcome{Name: rt.upstream.binding.Name, Outcome: string(outcome), Error: errString(err)})
		if err != nil {
			return err
		}
		g.forward(c.Response(), cl, d, treq, tok)
		return nil
	}
}

// logDecision writes the decision log entry for one request: the decision
// as the policy returned it, none when evaluation failed; a deny, a
// decision that breaks the contract or a token failure is named in error.
func (g *Gateway) logDecision(cl *call, d policy.Decision, decided bool, err error, tok *telemetry.TokenOutcome) {
	if !g.obs.LogsDecisions() {
		return
	}
	e := &telemetry.DecisionEntry{
		DecisionID: g.ids.next(""), RequestID: requestID(cl.r), Timestamp: time.Now(),
		Path: g.policy.Load().Query(), Input: cl.input, Result: d, Error: errString(err), TokenSource: tok,
	}
	if !decided {
		e.Result = nil
	}
	g.obs.LogDecision(e)
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
	tok := g.tokenViews.Get(p)
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
// token and kept with its principal (Gateway.tokenViews).
type tokenView struct {
	token *policy.Token
	value ast.Value
	err   error
}

func newTokenView(p *authn.Principal) *tokenView {
	t := &policy.Token{
		Issuer: p.Issuer, Subject: p.Subject, ClientID: p.ClientID, Audience: p.Audience,
		Scopes: p.Scopes, ExpiresAt: p.ExpiresAt.Unix(), Claims: p.Claims,
	}
	v, err := t.Value()
	return &tokenView{token: t, value: v, err: err}
}
