package policy

import (
	"context"
	"runtime"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/storage"
)

// Workers evaluate policies on long-lived goroutines. Rego evaluation
// recurses deeply: on a request's own goroutine the stack grows by copying
// on every request and the garbage collector shrinks it again, which cost
// about a tenth of the gateway's CPU under load. A worker parks inside a
// large frame, so its grown stack stays in use and is never shrunk.
//
// One Workers serves every Engine built with it, so a policy reload needs
// no new goroutines. It is safe for concurrent use.
type Workers struct {
	jobs chan *evaluation
	done chan struct{}
	once sync.Once
}

// evaluation is one Decide call handed to a worker.
type evaluation struct {
	e     *Engine
	ctx   context.Context
	input ast.Value
	txn   storage.Transaction // nil: the evaluation opens its own
	res   chan evalResult
}

type evalResult struct {
	d   Decision
	err error
}

// NewWorkers starts n workers; n <= 0 means four per CPU.
func NewWorkers(n int) *Workers {
	if n <= 0 {
		n = 4 * runtime.GOMAXPROCS(0)
	}
	w := &Workers{jobs: make(chan *evaluation), done: make(chan struct{})}
	for range n {
		go w.deepWorker()
	}
	return w
}

// Close stops the workers. Evaluations after Close run on the caller's
// goroutine.
func (w *Workers) Close() {
	w.once.Do(func() { close(w.done) })
}

// run evaluates j on a worker, or on the caller's goroutine once the
// workers are closed.
func (w *Workers) run(j *evaluation) (Decision, error) {
	select {
	case w.jobs <- j:
		r := <-j.res
		return r.d, r.err
	case <-w.done:
	case <-j.ctx.Done():
	}
	return j.e.eval(j.ctx, j.input, j.txn)
}

//go:noinline
func (w *Workers) deepWorker() {
	var pad [128 << 10]byte // stack kept in use while the worker waits
	pad[0] = 1
	w.serve()
	runtime.KeepAlive(&pad)
}

//go:noinline
func (w *Workers) serve() {
	for {
		select {
		case j := <-w.jobs:
			d, err := j.e.eval(j.ctx, j.input, j.txn)
			j.res <- evalResult{d, err}
		case <-w.done:
			return
		}
	}
}
