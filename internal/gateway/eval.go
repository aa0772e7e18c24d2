package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"

	"github.com/open-policy-agent/opa/v1/tester"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/telemetry"
)

// dryRun is a request that eval sends through the router and the stages:
// the caller is read without verification, and the request stops after
// the decision. It travels in the request's context.
type dryRun struct {
	claims []byte    // set: these claims stand for the caller's token
	trace  io.Writer // set: the policy's evaluation trace goes here
	print  io.Writer // set: print() output goes here

	// What the request came to.
	input    *policy.Input
	decision policy.Decision
	decided  bool // the policy returned a decision (a deny included)
	err      error
}

type dryRunKey struct{}

func dryRunOf(ctx context.Context) *dryRun {
	d, _ := ctx.Value(dryRunKey{}).(*dryRun)
	return d
}

func (d *dryRun) traceWriter() io.Writer {
	if d == nil || d.trace == nil {
		return nil
	}
	return d.trace
}

// EvalRequest is a request for Eval.
type EvalRequest struct {
	// Method and Target (path and query, as sent) are the request line.
	Method, Target string
	// Host is the Host header. Default: localhost.
	Host string
	// Header holds the request's headers, Authorization aside.
	Header http.Header
	// Token is the caller's token: it is read, NOT VERIFIED.
	Token string
	// Claims, when Token is empty, is a JSON object of claims that stands
	// for the caller's token.
	Claims []byte
	// Trace, when set, receives the policy's evaluation trace.
	Trace io.Writer
	// Print, when set, receives the policy's print() output.
	Print io.Writer
}

// Evaluation is what a request came to in Eval.
type Evaluation struct {
	// Input is the policy input; nil when the request ended before it
	// (bad path, no route, token refused).
	Input *policy.Input `json:"input,omitempty"`
	// Decision is the policy's decision; nil when there was none.
	Decision *policy.Decision `json:"decision,omitempty"`
	// Status is what audgate run would answer, short of the token source
	// and the upstream: 200 means allowed. A decision with a 500 broke the
	// contract (e.g. an audience outside the upstream's allow-list).
	Status int `json:"status"`
	// Error is what the caller would get when refused: the error code and
	// its description.
	Error string `json:"error,omitempty"`
	// Cause is why, in full, as the gateway's log says it.
	Cause string `json:"cause,omitempty"`
}

// PolicyReads is what the policy in force reads of its input and whether
// its decisions can be cached (see policy.Reads); nil before a policy is
// in force.
func (g *Gateway) PolicyReads() *policy.Reads {
	if e := g.policy.Engine(); e != nil {
		return e.Reads()
	}
	return nil
}

// placeholderToken stands in the Authorization header when claims stand
// for the caller's token.
const placeholderToken = "claims-given-not-a-token"

// Eval sends req through the same router and stages as a served request,
// up to and including the decision, and reports what it came to. The
// caller's token is read, not verified; nothing is asked of a token source
// or proxied. It is for audgate eval, on a gateway built with EvalOnly.
func (g *Gateway) Eval(ctx context.Context, req EvalRequest) (*Evaluation, error) {
	if !g.evalOnly {
		return nil, errors.New("eval: the gateway was not built with EvalOnly")
	}
	token := req.Token
	dry := &dryRun{trace: req.Trace, print: req.Print}
	if token == "" {
		if req.Claims == nil {
			return nil, errors.New("eval: give a token or claims")
		}
		token, dry.claims = placeholderToken, req.Claims
	}
	r, err := http.NewRequestWithContext(context.WithValue(ctx, dryRunKey{}, dry), req.Method, "http://eval"+req.Target, nil)
	if err != nil {
		return nil, fmt.Errorf("eval: %w", err)
	}
	r.RequestURI, r.RemoteAddr, r.Host = req.Target, "127.0.0.1:0", req.Host
	if r.Host == "" {
		r.Host = "localhost"
	}
	for k, v := range req.Header {
		r.Header[http.CanonicalHeaderKey(k)] = v
	}
	r.Header.Set("Authorization", "Bearer "+token)
	w := &statusWriter{header: http.Header{}}
	g.echo.ServeHTTP(w, r)
	ev := &Evaluation{Input: dry.input, Status: w.status}
	if dry.decided {
		d := dry.decision
		ev.Decision = &d
	}
	switch {
	case dry.err != nil:
		res := errorResponse(dry.err)
		ev.Error, ev.Cause = res.code+": "+res.desc, dry.err.Error()
	case dry.input == nil:
		// Answered without the pipeline, e.g. /.well-known/jwks.json.
		ev.Error = "not_proxied: the gateway answers this path itself; no route, no policy"
	}
	return ev, nil
}

// Denied reports whether the policy decided, and denied: the request got
// the decision's own refusal.
func (ev *Evaluation) Denied() bool {
	return ev.Decision != nil && !ev.Decision.Allow && ev.Status < http.StatusInternalServerError
}

// statusWriter is the ResponseWriter of an Eval: it keeps the status and
// discards the body.
type statusWriter struct {
	header http.Header
	status int
}

func (w *statusWriter) Header() http.Header { return w.header }

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return len(b), nil
}

func (w *statusWriter) WriteHeader(status int) {
	if w.status == 0 {
		w.status = status
	}
}

// Check does what New does without the network, for audgate check: it
// refuses what New refuses (issuers' options, OPA's configuration and the
// decision log's output included, though it fetches no keys, downloads no
// bundle and creates no file), compiles a local policy as New does, runs
// the policy's *_test.rego files when policy.path is a directory, and
// builds the token sources (reading signing and client keys) and the
// upstream transports (reading TLS files). What it did goes to out.
func Check(ctx context.Context, cfg *config.Config, embedded fs.FS, out io.Writer) error {
	if err := authn.Check(authnOptions(cfg, Options{})); err != nil {
		return fmt.Errorf("inbound: %w", err)
	}
	if err := telemetry.CheckOutput(cfg.Policy.DecisionLog.Output); err != nil {
		return fmt.Errorf("policy.decision_log: %w", err)
	}
	if _, err := newClientIPs(cfg.Server, nil); err != nil {
		return err
	}
	if cfg.Server.TLS != nil {
		if _, _, err := newTLSConfig(cfg.Server.TLS, nil); err != nil {
			return err
		}
		fmt.Fprintln(out, "server.tls: certificate and key load")
	}
	g := &Gateway{cfg: cfg, log: slog.New(slog.DiscardHandler), obs: telemetry.NewObserver(nil), ups: map[string]*upstream{}}
	po, err := g.policyOptions(Options{Policies: embedded})
	if err != nil {
		return err
	}
	if cfg.Policy.DecisionLog.Output != "off" {
		po.DecisionLog = discardEvents{} // validated as run validates it, written nowhere
	}
	if err := policy.Check(ctx, po); err != nil {
		return err
	}
	if _, bundles := cfg.Policy.OPA["bundles"]; bundles {
		fmt.Fprintln(out, "policy: OPA configuration ok; the policy comes from bundles, not checked here")
	} else {
		fmt.Fprintln(out, "policy: compiled")
	}
	if err := runPolicyTests(ctx, cfg.Policy.Path, out); err != nil {
		return err
	}
	if err := g.buildUpstreams(Options{Logger: g.log}); err != nil {
		return err
	}
	for _, u := range g.ups {
		u.proxy.Close()
	}
	fmt.Fprintln(out, "token sources and upstreams: ok")
	return nil
}

// runPolicyTests runs the *_test.rego files under dir, as opa test does.
func runPolicyTests(ctx context.Context, dir string, out io.Writer) error {
	if dir == "" {
		fmt.Fprintln(out, "policy tests: the embedded policy's tests run with `go test ./policies`")
		return nil
	}
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		fmt.Fprintln(out, "policy tests: none (policy.path is not a directory)")
		return nil
	}
	results, err := tester.Run(ctx, dir)
	if err != nil {
		return fmt.Errorf("policy tests: %w", err)
	}
	failed := 0
	for _, r := range results {
		if r.Fail || r.Error != nil {
			failed++
			fmt.Fprintf(out, "FAIL %s.%s (%s)\n", r.Package, r.Name, r.Location)
			if r.Error != nil {
				fmt.Fprintf(out, "  %v\n", r.Error)
			}
		}
	}
	fmt.Fprintf(out, "policy tests: %d passed, %d failed\n", len(results)-failed, failed)
	if failed > 0 {
		return fmt.Errorf("%d policy tests failed", failed)
	}
	return nil
}

// discardEvents is a decision log output that writes nothing.
type discardEvents struct{}

func (discardEvents) WriteEvent([]byte) error { return nil }
func (discardEvents) Flush() error            { return nil }
