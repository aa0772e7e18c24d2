package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
	"github.com/audgate/audgate/policies"
)

type replayFlags struct {
	config, log, policy string
	json                bool
}

// errChanges makes replay exit 1 when decisions would change.
var errChanges = errors.New("decisions would change")

func newReplayCmd() *cobra.Command {
	var f replayFlags
	cmd := &cobra.Command{
		Use:   "replay --config FILE --log decisions.jsonl [--policy DIR]",
		Short: "Re-evaluate logged decisions with the configured or a candidate policy, and report what would change",
		Long: `replay reads a decision log (one event a line, as audgate writes it) and
re-evaluates every logged input with the configured policy, or with the
candidate policy in --policy, through the same policy stage as a served
request: the policy, then the upstream's limits. It reports how many
decisions are unchanged, go from allow to deny or deny to allow, or keep
allowing with another audience, scopes or headers, and the first events
that differ. It exits 1 if any decision would change.

Inputs are replayed as they were logged: a field the decision log masked
is absent, and a policy that reads it may decide otherwise.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return replay(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&f.config, "config", "c", "audgate.yaml", "configuration file")
	cmd.Flags().StringVar(&f.log, "log", "", "the decision log to replay (JSON lines); - for standard input")
	cmd.Flags().StringVar(&f.policy, "policy", "", "a candidate policy (a directory or a bundle file) instead of the configured one")
	cmd.Flags().BoolVar(&f.json, "json", false, "print the report as JSON")
	_ = cmd.MarkFlagRequired("log")
	return cmd
}

func replay(ctx context.Context, f replayFlags, out, errOut io.Writer) error {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	if f.policy != "" {
		// The candidate replaces the configured policy, bundles included.
		cfg.Policy.Path, cfg.Policy.Watch = f.policy, false
		if cfg.Policy.OPA != nil {
			delete(cfg.Policy.OPA, "bundles")
			delete(cfg.Policy.OPA, "bundle")
		}
	}
	var in io.Reader = os.Stdin
	if f.log != "-" {
		file, err := os.Open(f.log)
		if err != nil {
			return err
		}
		defer file.Close()
		in = file
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	gw, err := gateway.New(ctx, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler), Policies: policies.FS,
		EvalOnly: true, Version: versionString()})
	if err != nil {
		return err
	}
	defer gw.Close()
	if err := waitForPolicy(ctx, gw); err != nil {
		return err
	}
	report, err := gw.Replay(ctx, in, func(n int) { fmt.Fprintf(errOut, "replayed %d decisions\n", n) })
	if err != nil {
		return err
	}
	if f.json {
		enc := json.NewEncoder(out)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			return err
		}
	} else {
		printReport(out, report)
	}
	if report.Changes() > 0 {
		return fmt.Errorf("%d of %d %w", report.Changes(), report.Evaluated, errChanges)
	}
	return nil
}

func printReport(w io.Writer, r *gateway.ReplayReport) {
	fmt.Fprintf(w, "evaluated      %d\n", r.Evaluated)
	fmt.Fprintf(w, "unchanged      %d\n", r.Unchanged)
	fmt.Fprintf(w, "allow → deny   %d\n", r.AllowToDeny)
	fmt.Fprintf(w, "deny → allow   %d\n", r.DenyToAllow)
	fmt.Fprintf(w, "changed token  %d   (allowed, with another audience, scopes or headers)\n", r.Changed)
	fmt.Fprintf(w, "errors         %d\n", r.Errors)
	if len(r.Differences) == 0 {
		return
	}
	fmt.Fprintf(w, "\nfirst differences:\n")
	for _, d := range r.Differences {
		fmt.Fprintf(w, "  line %d", d.Line)
		if d.DecisionID != "" {
			fmt.Fprintf(w, "  decision %s", d.DecisionID)
		}
		if d.RequestID != "" {
			fmt.Fprintf(w, "  request %s", d.RequestID)
		}
		if d.Request != "" {
			fmt.Fprintf(w, "  %s", d.Request)
		}
		fmt.Fprintf(w, "\n    was: %s\n    now: %s\n", d.Was, d.Now)
	}
}
