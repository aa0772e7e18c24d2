package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/open-policy-agent/opa/v1/tester"
	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/policies"
)

func newCheckCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "check --config FILE",
		Short: "Validate the configuration, compile the policy and run its tests",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return check(cmd.Context(), path, cmd.OutOrStdout())
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "audgate.yaml", "configuration file")
	return cmd
}

// check does everything audgate run does before it listens, without the
// network, and runs the policy's *_test.rego files.
func check(ctx context.Context, path string, out io.Writer) error {
	cfg, err := config.Load(path)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "config: ok")
	if _, err := policy.New(ctx, policy.Options{Path: cfg.Policy.Path, Modules: policies.FS, Query: cfg.Policy.Query}); err != nil {
		return err
	}
	fmt.Fprintln(out, "policy: compiled")
	if err := runPolicyTests(ctx, cfg.Policy.Path, out); err != nil {
		return err
	}
	if err := gateway.Check(cfg); err != nil {
		return err
	}
	fmt.Fprintln(out, "token sources and upstreams: ok")
	return nil
}

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
