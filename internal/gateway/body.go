package gateway

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// The caller's body is read only on its way upstream, and only through an
// inboundBody: no stage before the proxy reads it, so an error answered
// before it (no token, a deny) is answered at once, even to a caller that
// never sends the body or sent Expect: 100-continue.

// Body states, as the proxy's error handler reads them.
const (
	bodyReading int32 = iota
	bodyDone          // read to its end
	bodyStalled       // the caller sent nothing for body_read_timeout
)

// inboundBody is the caller's body on its way upstream: at most max
// bytes (then *http.MaxBytesError), and a read that waits idle for the
// caller ends: the body is marked stalled, then the connection's read
// deadline fails the read, so that the upstream request is cancelled and
// the error handler, which sees the mark, answers 408. finish, called
// before the handler returns, ends what is left: no timer fires after the
// handler (the writer may then serve another request), and a read still
// waiting for a caller the upstream no longer needs ends at once.
type inboundBody struct {
	rc    io.ReadCloser
	ctl   *http.ResponseController // of the server's own writer, never a pooled wrapper
	idle  time.Duration
	timer *time.Timer  // fires stall; runs only while a Read waits
	state atomic.Int32 // read by the handler while the transport reads

	mu       sync.Mutex
	inRead   bool // a Read is waiting on the caller
	finished bool // the handler is done with the body
}

// newInboundBody wraps body; w must be the server's writer.
func newInboundBody(w http.ResponseWriter, body io.ReadCloser, max int64, idle time.Duration) *inboundBody {
	b := &inboundBody{rc: http.MaxBytesReader(w, body, max), ctl: http.NewResponseController(w), idle: idle}
	if idle > 0 {
		b.timer = time.AfterFunc(time.Hour, b.stall)
		b.timer.Stop()
	}
	return b
}

func (b *inboundBody) stall() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.finished || !b.inRead {
		return
	}
	if b.state.CompareAndSwap(bodyReading, bodyStalled) {
		_ = b.ctl.SetReadDeadline(time.Now())
	}
}

func (b *inboundBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.finished {
		b.mu.Unlock()
		return 0, errBodyFinished
	}
	b.inRead = true
	if b.timer != nil {
		b.timer.Reset(b.idle)
	}
	b.mu.Unlock()
	n, err := b.rc.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.inRead = false
	if b.timer != nil {
		b.timer.Stop()
	}
	switch {
	case err == io.EOF:
		b.state.Store(bodyDone)
		// The server's own read for the next request, or for the caller
		// going away, must not inherit a deadline.
		_ = b.ctl.SetReadDeadline(time.Time{})
	case err == nil && b.state.Load() == bodyStalled:
		// The timer fired as the read returned: the caller was not idle.
		b.state.Store(bodyReading)
		_ = b.ctl.SetReadDeadline(time.Time{})
	}
	return n, err
}

// Close does nothing: ReverseProxy never passes its Close on, and the
// server closes the body itself; finish is the end of the body's life.
func (b *inboundBody) Close() error { return nil }

// finish is called when the proxy returns, before the handler does.
func (b *inboundBody) finish() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.finished = true
	if b.timer != nil {
		b.timer.Stop()
	}
	if b.state.Load() != bodyDone {
		// The upstream answered without the rest of the body. The
		// transport may still wait for it, and Go's server would read it
		// after the handler, to reuse the connection, however long the
		// caller takes: end both; the connection closes after the
		// response.
		_ = b.ctl.SetReadDeadline(time.Now())
	}
}

var errBodyFinished = errors.New("the request body is no longer read: the upstream has answered")

// errBodyStalled: the caller stopped sending its body.
var errBodyStalled = errors.New("the request body stalled: nothing arrived for server.body_read_timeout")

// inboundBodyKey holds the request's inboundBody in the context of the
// request the proxy serves (ReverseProxy hides the body itself behind
// its own wrapper).
type inboundBodyKey struct{}

func inboundBodyOf(r *http.Request) *inboundBody {
	b, _ := r.Context().Value(inboundBodyKey{}).(*inboundBody)
	return b
}

// unreadBody reports whether r's body may still hold bytes the gateway
// never read: a body no stage read, or an inboundBody not read to its end.
func unreadBody(r *http.Request) bool {
	if b := inboundBodyOf(r); b != nil {
		return b.state.Load() != bodyDone
	}
	return r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0
}

// stalledBody reports whether r's body stopped arriving.
func stalledBody(r *http.Request) bool {
	b := inboundBodyOf(r)
	return b != nil && b.state.Load() == bodyStalled
}
