package policy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/plugins"
	"github.com/open-policy-agent/opa/v1/storage"
)

// checkingStore is the policy's store: OPA's in-memory store, whose Commit
// first compiles, by the checker's rules, the policies a write transaction
// leaves. A policy set that breaks them is never committed, so whatever
// wrote it (a bundle activation, a local reload, the first load) fails,
// says why with file:line, and the last good policy stays in force. OPA's
// own bundle activation compiles with no schema and every builtin; this is
// where audgate's rules apply to bundles too.
//
// It also keeps audgate's own modules (extra) in every policy set, and
// hands OPA's plugin manager its compiler, so that the policy, the decision
// log's mask rule and everything else run on one compiler.
type checkingStore struct {
	storage.Store
	check *checker
	extra map[string][]byte // module ID → source, kept in every policy set
	query ast.Body          // the decision query, compiled against every policy set

	mu       sync.Mutex
	writes   map[uint64]bool // open write transactions, by ID
	nwrites  atomic.Int32    // len(writes), read without mu
	lastSum  [32]byte        // the policy set last committed
	compiler *ast.Compiler   // its compiler
}

var _ storage.Store = (*checkingStore)(nil)

func newCheckingStore(inner storage.Store, check *checker) *checkingStore {
	return &checkingStore{Store: inner, check: check, writes: map[uint64]bool{}}
}

func (s *checkingStore) NewTransaction(ctx context.Context, params ...storage.TransactionParams) (storage.Transaction, error) {
	txn, err := s.Store.NewTransaction(ctx, params...)
	if err == nil && len(params) > 0 && params[0].Write {
		s.mu.Lock()
		s.writes[txn.ID()] = true
		s.nwrites.Add(1)
		s.mu.Unlock()
	}
	return txn, err
}

func (s *checkingStore) Abort(ctx context.Context, txn storage.Transaction) {
	s.forget(txn)
	s.Store.Abort(ctx, txn)
}

// Commit puts audgate's modules in a write transaction's policy set and
// compiles the set, then commits; if the set does not compile, it aborts
// the transaction, as the Store contract asks.
func (s *checkingStore) Commit(ctx context.Context, txn storage.Transaction) error {
	if !s.forget(txn) {
		return s.Store.Commit(ctx, txn)
	}
	if err := s.keepExtra(ctx, txn); err != nil {
		s.Store.Abort(ctx, txn)
		return err
	}
	if err := s.checkPolicies(ctx, txn); err != nil {
		s.Store.Abort(ctx, txn)
		return err
	}
	return s.Store.Commit(ctx, txn)
}

// Register wraps the commit triggers (OPA's plugin manager registers one)
// so that a commit that changed policies hands them the compiler this
// store made.
func (s *checkingStore) Register(ctx context.Context, txn storage.Transaction, config storage.TriggerConfig) (storage.TriggerHandle, error) {
	inner := config.OnCommit
	config.OnCommit = func(ctx context.Context, txn storage.Transaction, event storage.TriggerEvent) {
		if event.PolicyChanged() {
			s.mu.Lock()
			c := s.compiler
			s.mu.Unlock()
			if c != nil && event.Context != nil {
				plugins.SetCompilerOnContext(event.Context, c)
			}
		}
		inner(ctx, txn, event)
	}
	return s.Store.Register(ctx, txn, config)
}

// forget drops txn from the open write transactions and reports whether
// it was one.
func (s *checkingStore) forget(txn storage.Transaction) bool {
	if s.nwrites.Load() == 0 {
		return false // every evaluation's read transaction passes here
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	write := s.writes[txn.ID()]
	if write {
		delete(s.writes, txn.ID())
		s.nwrites.Add(-1)
	}
	return write
}

// keepExtra upserts audgate's modules where the transaction removed or
// changed them (a bundle whose roots cover everything erases them).
func (s *checkingStore) keepExtra(ctx context.Context, txn storage.Transaction) error {
	for id, src := range s.extra {
		if cur, err := s.Store.GetPolicy(ctx, txn, id); err == nil && bytes.Equal(cur, src) {
			continue
		}
		if err := s.Store.UpsertPolicy(ctx, txn, id, src); err != nil {
			return err
		}
	}
	return nil
}

// checkPolicies compiles the policies txn would leave, unless they are the
// set last committed, and keeps the compiler.
func (s *checkingStore) checkPolicies(ctx context.Context, txn storage.Transaction) error {
	ids, err := s.Store.ListPolicies(ctx, txn)
	if err != nil {
		return err
	}
	slices.Sort(ids)
	sources := make(map[string][]byte, len(ids))
	h := sha256.New()
	for _, id := range ids {
		src, err := s.Store.GetPolicy(ctx, txn, id)
		if err != nil {
			return err
		}
		sources[id] = src
		fmt.Fprintf(h, "%d:%s%d:", len(id), id, len(src))
		h.Write(src)
	}
	var sum [32]byte
	copy(sum[:], h.Sum(nil))
	s.mu.Lock()
	unchanged := sum == s.lastSum && s.compiler != nil
	s.mu.Unlock()
	if unchanged {
		return nil
	}
	compiler, err := s.check.compileSources(sources, storage.NonEmpty(ctx, s.Store, txn))
	if err != nil {
		return fmt.Errorf("policy refused: %w", err)
	}
	if s.query != nil {
		// The decision query must compile against the new policy too, or
		// the commit would leave a policy no Engine can be prepared on.
		if _, err := compiler.QueryCompiler().Compile(s.query); err != nil {
			return fmt.Errorf("policy refused: the query %s: %w", s.query, err)
		}
	}
	s.mu.Lock()
	s.lastSum, s.compiler = sum, compiler
	s.mu.Unlock()
	return nil
}

// MakeDir and NonEmpty pass OPA's optional store interfaces through.

func (s *checkingStore) MakeDir(ctx context.Context, txn storage.Transaction, path storage.Path) error {
	if md, ok := s.Store.(storage.MakeDirer); ok {
		return md.MakeDir(ctx, txn, path)
	}
	return storage.MakeDir(ctx, s.Store, txn, path)
}

func (s *checkingStore) NonEmpty(ctx context.Context, txn storage.Transaction) func([]string) (bool, error) {
	if ne, ok := s.Store.(storage.NonEmptyer); ok {
		return ne.NonEmpty(ctx, txn)
	}
	return storage.NonEmpty(ctx, s.Store, txn)
}
