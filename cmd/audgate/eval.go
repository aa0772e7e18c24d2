package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
)

type evalFlags struct {
	config, token, claims, method, path string
	headers                             []string
	explain                             bool
}

func newEvalCmd() *cobra.Command {
	var f evalFlags
	cmd := &cobra.Command{
		Use:   "eval --config FILE (--token T | --claims FILE) --method GET --path /orders/1",
		Short: "Print the policy input and decision for a request, without sending anything",
		Long: `eval routes a request as the gateway would, builds the policy input with the
given token's claims (the token is decoded, not verified), evaluates the policy
and checks the decision against the upstream's limits. --explain adds the
evaluation trace.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return eval(cmd.Context(), f, cmd.OutOrStdout(), cmd.ErrOrStderr())
		},
	}
	cmd.Flags().StringVarP(&f.config, "config", "c", "audgate.yaml", "configuration file")
	cmd.Flags().StringVar(&f.token, "token", "", "the caller's access token (decoded, not verified)")
	cmd.Flags().StringVar(&f.claims, "claims", "", "a JSON file of the caller's token claims")
	cmd.Flags().StringVar(&f.method, "method", "GET", "request method")
	cmd.Flags().StringVar(&f.path, "path", "/", "request path and query")
	cmd.Flags().StringArrayVarP(&f.headers, "header", "H", nil, `request header, "Name: value" (repeatable)`)
	cmd.Flags().BoolVar(&f.explain, "explain", false, "print the evaluation trace")
	return cmd
}

func eval(ctx context.Context, f evalFlags, out, errOut io.Writer) error {
	cfg, err := config.Load(f.config)
	if err != nil {
		return err
	}
	claims, err := evalClaims(f)
	if err != nil {
		return err
	}
	header := http.Header{}
	for _, h := range f.headers {
		k, v, ok := strings.Cut(h, ":")
		if !ok {
			return fmt.Errorf("--header %q: write \"Name: value\"", h)
		}
		header.Add(strings.TrimSpace(k), strings.TrimSpace(v))
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the key fetches New starts
	gw, err := gateway.New(ctx, cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	defer gw.Close()
	var trace io.Writer
	var buf bytes.Buffer
	if f.explain {
		trace = &buf
	}
	in, d, evalErr := gw.Eval(ctx, strings.ToUpper(f.method), f.path, header, claims, trace)
	doc := map[string]any{"input": in, "decision": d}
	if evalErr != nil {
		doc["error"] = evalErr.Error()
	}
	enc := json.NewEncoder(out)
	enc.SetIndent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	if f.explain {
		fmt.Fprint(errOut, buf.String())
	}
	return evalErr
}

// evalClaims reads the caller's claims from --claims or, unverified, from
// --token's payload.
func evalClaims(f evalFlags) (map[string]any, error) {
	var raw []byte
	switch {
	case f.claims != "" && f.token != "":
		return nil, fmt.Errorf("give --token or --claims, not both")
	case f.claims != "":
		b, err := os.ReadFile(f.claims)
		if err != nil {
			return nil, err
		}
		raw = b
	case f.token != "":
		parts := strings.Split(f.token, ".")
		if len(parts) != 3 {
			return nil, fmt.Errorf("--token: not a compact JWS (header.payload.signature)")
		}
		b, err := base64.RawURLEncoding.DecodeString(parts[1])
		if err != nil {
			return nil, fmt.Errorf("--token: payload: %w", err)
		}
		raw = b
	default:
		return nil, fmt.Errorf("give --token or --claims")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil {
		return nil, fmt.Errorf("claims: %w", err)
	}
	return claims, nil
}
