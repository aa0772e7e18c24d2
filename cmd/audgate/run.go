package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
	"github.com/audgate/audgate/internal/telemetry"
)

func newRunCmd() *cobra.Command {
	var path string
	cmd := &cobra.Command{
		Use:   "run --config FILE",
		Short: "Serve the gateway",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(path)
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			return serve(ctx, cfg, telemetry.NewLogger(os.Stderr, slog.LevelInfo))
		},
	}
	cmd.Flags().StringVarP(&path, "config", "c", "audgate.yaml", "configuration file")
	return cmd
}

// serve runs the gateway and admin listeners until ctx ends, then stops
// accepting, lets in-flight requests finish within server.shutdown_timeout,
// and returns nil.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	gw, err := gateway.New(ctx, cfg, gateway.Options{Logger: log})
	if err != nil {
		return err
	}
	defer gw.Close()
	servers := []*http.Server{{
		Addr:              cfg.Server.Listen,
		Handler:           gw.Handler(),
		ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.Server.IdleTimeout.D(),
		MaxHeaderBytes:    cfg.Server.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}}
	if cfg.Server.AdminListen != "off" {
		servers = append(servers, &http.Server{
			Addr: cfg.Server.AdminListen, Handler: gw.AdminHandler(),
			ReadHeaderTimeout: cfg.Server.ReadHeaderTimeout.D(),
		})
	}
	errc := make(chan error, len(servers))
	for _, srv := range servers {
		ln, err := net.Listen("tcp", srv.Addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", srv.Addr, err)
		}
		log.Info("listening", "addr", ln.Addr().String(), "admin", srv.Handler != gw.Handler())
		go func() { errc <- srv.Serve(ln) }()
	}
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down", "timeout", cfg.Server.ShutdownTimeout.D().String())
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cfg.Server.ShutdownTimeout.D())
	defer cancel()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(sctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
