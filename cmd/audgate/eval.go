package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
	"github.com/audgate/audgate/policies"
)

type evalFlags struct {
	config, token, claims, method, path, host, input string
	headers                                          []string
	explain                                          bool
}

func newEvalCmd() *cobra.Command {
	var f evalFlags
	cmd := &cobra.Command{
		Use:   "eval --config FILE ((--token T | --claims FILE) --method GET --path /orders/1 | --input FILE)",
		Short: "Print the policy input and decision for a request, without sending anything",
		Long: `eval sends a request through the gateway's own router and stages, up to the
decision: canonical path, route, stripped headers, the caller's token (read
from --token or --claims, NOT verified), the policy input, the decision and
its check against the upstream's limits. It prints the input, the decision
and the status audgate run would answer (200: allowed; the token source and
the upstream are not asked). --explain adds, on stderr, the input paths the
decision reads (the decision cache's key) and the evaluation trace.
It exits 0 when the request is allowed or the policy denies it, and 1 when
it is refused before the policy decides or the decision is a policy error.

--input takes a policy input, or a whole decision log event, and evaluates
that input as it was logged: the policy, then the upstream's limits.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return eval(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&f.config, "config", "c", "audgate.yaml", "configuration file")
	cmd.Flags().StringVar(&f.token, "token", "", "the caller's access token (read, not verified)")
	cmd.Flags().StringVar(&f.claims, "claims", "", "a JSON file of the caller's token claims")
	cmd.Flags().StringVar(&f.method, "method", "GET", "request method")
	cmd.Flags().StringVar(&f.path, "path", "/", "request path and query, as sent")
	cmd.Flags().StringVar(&f.host, "host", "localhost", "Host header")
	cmd.Flags().StringArrayVarP(&f.headers, "header", "H", nil, `request header, "Name: value" (repeatable)`)
	cmd.Flags().BoolVar(&f.explain, "explain", false, "print the evaluation trace")
	cmd.Flags().StringVar(&f.input, "input", "", "a JSON file: a policy input, or a decision log event")
	return cmd
}

func eval(ctx context.Context, f evalFlags, out, errOut io.Writer) error {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	req := gateway.EvalRequest{Method: strings.ToUpper(f.method), Target: f.path, Host: f.host, Header: http.Header{}, Token: f.token}
	var logged *gateway.Logged
	switch {
	case f.input != "" && (f.claims != "" || f.token != ""):
		return fmt.Errorf("--input holds the whole input: give it without --token or --claims")
	case f.input != "":
		raw, err := os.ReadFile(f.input)
		if err != nil {
			return err
		}
		if logged, err = gateway.ReadLogged(raw); err != nil {
			return fmt.Errorf("--input %s: %w", f.input, err)
		}
	case f.claims != "" && f.token != "":
		return fmt.Errorf("give --token or --claims, not both")
	case f.claims != "":
		if req.Claims, err = os.ReadFile(f.claims); err != nil {
			return err
		}
	case f.token == "":
		return fmt.Errorf("give --token or --claims")
	}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("--header %q: write \"Name: value\"", h)
		}
		req.Header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	var trace bytes.Buffer
	if f.explain {
		req.Trace = &trace
	}
	req.Print = errOut
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the key fetches New starts
	gw, err := gateway.New(ctx, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler), Policies: policies.FS,
		EvalOnly: true, Version: versionString()})
	if err != nil {
		return err
	}
	defer gw.Close()
	if err := waitForPolicy(ctx, gw); err != nil {
		return err
	}
	var ev *gateway.Evaluation
	if logged != nil {
		ev = gw.DecideInput(ctx, logged.Input, req.Trace, req.Print)
	} else if ev, err = gw.Eval(ctx, req); err != nil {
		return err
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(ev); err != nil {
		return err
	}
	if f.explain {
		if r := gw.PolicyReads(); r != nil {
			fmt.Fprintf(errOut, "the decision reads: %s\n", r)
			if r.Impure != "" {
				fmt.Fprintf(errOut, "its decisions are not cached: %s\n", r.Impure)
			} else {
				fmt.Fprintln(errOut, "its decisions are cached by those values (policy.decision_cache)")
			}
		}
		fmt.Fprint(errOut, trace.String())
	}
	switch {
	case ev.Status == http.StatusOK && ev.Error == "", ev.Denied():
		return nil
	case ev.Decision != nil:
		return fmt.Errorf("the decision is a policy error (%d): %s", ev.Status, ev.Cause)
	case ev.Cause == "":
		return fmt.Errorf("%d: %s", ev.Status, ev.Error)
	}
	return fmt.Errorf("refused with %d before the policy decided: %s (%s)", ev.Status, ev.Error, ev.Cause)
}

// policyWait bounds how long eval waits for the configured bundles.
const policyWait = 30 * time.Second

// waitForPolicy waits until the policy is in force: at once for a local
// policy, after the first download of every configured bundle.
func waitForPolicy(ctx context.Context, gw *gateway.Gateway) error {
	ctx, cancel := context.WithTimeout(ctx, policyWait)
	defer cancel()
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	for {
		err := gw.PolicyReady()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("no policy in force after %s: %w", policyWait, err)
		case <-t.C:
		}
	}
}
