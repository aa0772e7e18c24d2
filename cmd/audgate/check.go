package main

import (
	"context"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
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
	return gateway.Check(ctx, cfg, policies.FS, out)
}
