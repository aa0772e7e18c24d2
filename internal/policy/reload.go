package policy

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/open-policy-agent/opa/v1/loader"
	"github.com/open-policy-agent/opa/v1/storage"
)

// watch polls Path and, when any file under it changes, loads the policy
// into the store; the store compiles it, and a policy that fails keeps the
// last good one in force.
func (rt *Runtime) watch(ctx context.Context) {
	last, _ := fileStamp(rt.opts.Path)
	t := time.NewTicker(rt.opts.WatchInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		stamp, err := fileStamp(rt.opts.Path)
		if err != nil || stamp == last {
			continue
		}
		last = stamp
		err = rt.Reload(ctx)
		if rt.opts.OnReload != nil {
			rt.opts.OnReload(LocalBundle, rt.currentRevision(), err)
		}
		if err != nil {
			rt.log.Error("policy reload failed; keeping the last good policy", "path", rt.opts.Path, "error", err.Error())
			continue
		}
		rt.log.Info("policy reloaded", "path", rt.opts.Path, "revision", rt.currentRevision())
	}
}

func (rt *Runtime) currentRevision() string {
	if e := rt.engine.Load(); e != nil {
		return e.revisions[LocalBundle]
	}
	return ""
}

// Reload loads the local policy at Path again: in one transaction, the old
// modules and data go and the new ones come, and the store's check decides
// whether it commits. A local bundle file is read (and verified) anew.
func (rt *Runtime) Reload(ctx context.Context) error {
	if !rt.local || rt.opts.Path == "" {
		return fmt.Errorf("policy: only a local policy.path reloads")
	}
	rt.reloadMu.Lock() // one reload at a time: each sets rt.revision
	defer rt.reloadMu.Unlock()
	prev := rt.revision
	files, b, err := rt.loadLocal()
	if err != nil {
		rt.revision = prev
		return err
	}
	modules, data := files.Modules, files.Documents
	if b != nil {
		modules = make(map[string]*loader.RegoFile, len(b.Modules))
		for _, m := range b.Modules {
			modules[m.Path] = &loader.RegoFile{Name: m.Path, Raw: m.Raw, Parsed: m.Parsed}
		}
		data = b.Data
	}
	// A Context in the params is where the store hands the manager the
	// compiler it made; without one, the manager would recompile the
	// policy itself, with OPA's rules, inside the commit.
	params := storage.TransactionParams{Write: true, Context: storage.NewContext()}
	err = storage.Txn(ctx, rt.store, params, func(txn storage.Transaction) error {
		ids, err := rt.store.ListPolicies(ctx, txn)
		if err != nil {
			return err
		}
		for _, id := range ids {
			if err := rt.store.DeletePolicy(ctx, txn, id); err != nil {
				return err
			}
		}
		for name, m := range modules {
			if err := rt.store.UpsertPolicy(ctx, txn, name, m.Raw); err != nil {
				return err
			}
		}
		if data == nil {
			data = map[string]any{}
		}
		return rt.store.Write(ctx, txn, storage.ReplaceOp, storage.RootPath, data)
	})
	if err != nil {
		rt.revision = prev
		return fmt.Errorf("policy: reload %s: %w", rt.opts.Path, err)
	}
	return nil
}

// fileStamp summarises the names, sizes and modification times of every
// file under path.
func fileStamp(path string) ([32]byte, error) {
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
