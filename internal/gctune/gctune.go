// Package gctune sets the garbage collector's GOGC from the live heap, so
// that a process with a small heap collects rarely and one with a large
// heap does not grow it five times over.
//
// A gateway's live heap is small until its caches fill: a few MiB for a
// few callers, a few hundred MiB for a hundred thousand. At Go's default
// GOGC of 100, a small heap is collected every few milliseconds under
// load; at a fixed 400, a large one is allowed five times its live size.
// The tuner picks, after every collection, the GOGC whose heap goal,
// live × (1 + GOGC/100), is the budget, kept between Min and Max: Max
// while the live heap is under a fifth of the budget, then less, and Min
// (Go's default) once the live heap is half the budget or more. Unlike a
// memory limit (GOMEMLIMIT), it never collects more often than Min would,
// however large the live heap grows.
package gctune

import (
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"sync/atomic"
)

// Options are the tuner's bounds.
type Options struct {
	// Budget is the heap goal aimed at, in bytes.
	Budget uint64
	// Min and Max bound GOGC.
	Min, Max int
}

// Default aims at a 256 MiB heap with GOGC between 100 and 400.
var Default = Options{Budget: 256 << 20, Min: 100, Max: 400}

// Percent is the GOGC for a live heap of live bytes: the one whose heap
// goal is the budget, within [Min, Max].
func (o Options) Percent(live uint64) int {
	lo := max(o.Min, 1)
	hi := max(o.Max, lo)
	if live == 0 {
		return hi
	}
	if live >= o.Budget {
		return lo
	}
	p := float64(o.Budget-live) * 100 / float64(live)
	return int(min(max(p, float64(lo)), float64(hi)))
}

// Tuner sets GOGC after every collection until Stop.
type Tuner struct {
	opts    Options
	stopped atomic.Bool
	sample  []metrics.Sample
	mu      sync.Mutex // guards sample and percent; cleanups may overlap a Stop
	percent int
}

// Start sets GOGC for the live heap now and after every collection, and
// returns the tuner. The caller decides whether GOGC or GOMEMLIMIT in
// the environment should win over it.
func Start(o Options) *Tuner {
	t := &Tuner{opts: o, sample: []metrics.Sample{{Name: "/gc/heap/live:bytes"}}}
	t.tune()
	return t
}

// Stop ends the tuning and leaves GOGC at its last value.
func (t *Tuner) Stop() { t.stopped.Store(true) }

// Percent is the GOGC the tuner last set.
func (t *Tuner) Percent() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.percent
}

// sentinel is allocated and dropped once per collection: its cleanup runs
// after the collection that finds it unreachable. It holds a pointer so
// that it is not batched with other small objects.
type sentinel struct{ _ *byte }

func (t *Tuner) tune() {
	if t.stopped.Load() {
		return
	}
	t.mu.Lock()
	metrics.Read(t.sample)
	var live uint64
	if t.sample[0].Value.Kind() == metrics.KindUint64 {
		live = t.sample[0].Value.Uint64()
	}
	if p := t.opts.Percent(live); p != t.percent {
		t.percent = p
		debug.SetGCPercent(p)
	}
	t.mu.Unlock()
	runtime.AddCleanup(new(sentinel), func(t *Tuner) { t.tune() }, t)
}
