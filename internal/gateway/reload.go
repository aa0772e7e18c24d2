package gateway

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/audgate/audgate/internal/policy"
)

// watchPolicy polls the policy path and, when any file under it changes,
// compiles the new policy and swaps it in. A policy that fails to compile
// is logged and the last good one stays in force.
func (g *Gateway) watchPolicy(ctx context.Context, opts policy.Options, every time.Duration) {
	last, _ := fingerprint(opts.Path)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		fp, err := fingerprint(opts.Path)
		if err != nil || fp == last {
			continue
		}
		last = fp
		e, err := policy.New(ctx, opts)
		g.obs.PolicyReload(err)
		if err != nil {
			g.log.Error("policy reload failed; keeping the last good policy", "path", opts.Path, "error", err.Error())
			continue
		}
		g.policy.Store(e)
		g.log.Info("policy reloaded", "path", opts.Path)
	}
}

// fingerprint summarises the names, sizes and modification times of
// every file under path.
func fingerprint(path string) ([32]byte, error) {
	h := sha256.New()
	err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := os.Stat(p) // follows links, as Kubernetes ConfigMaps need
		if err != nil || info.IsDir() {
			return nil
		}
		fmt.Fprintf(h, "%s\x00%d\x00%d\x00", p, info.Size(), info.ModTime().UnixNano())
		return nil
	})
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	return sum, err
}
