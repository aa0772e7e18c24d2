package gateway

import (
	"errors"
	"io"
	"net/http"
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
// the error handler, which sees the mark, answers 408.
type inboundBody struct {
	rc    io.ReadCloser
	ctl   *http.ResponseController
	idle  time.Duration
	timer *time.Timer  // fires stall; runs only while a Read waits
	state atomic.Int32 // read by the handler while the transport reads
}

func newInboundBody(w http.ResponseWriter, body io.ReadCloser, max int64, idle time.Duration) *inboundBody {
	b := &inboundBody{rc: http.MaxBytesReader(w, body, max), ctl: http.NewResponseController(w), idle: idle}
	if idle > 0 {
		b.timer = time.AfterFunc(time.Hour, b.stall)
		b.timer.Stop()
	}
	return b
}

func (b *inboundBody) stall() {
	if b.state.CompareAndSwap(bodyReading, bodyStalled) {
		_ = b.ctl.SetReadDeadline(time.Now())
	}
}

func (b *inboundBody) Read(p []byte) (int, error) {
	if b.timer != nil {
		b.timer.Reset(b.idle)
	}
	n, err := b.rc.Read(p)
	if b.timer != nil {
		b.timer.Stop()
	}
	if err == io.EOF {
		b.state.CompareAndSwap(bodyReading, bodyDone)
	}
	return n, err
}

func (b *inboundBody) Close() error {
	if b.timer != nil {
		b.timer.Stop()
	}
	return b.rc.Close()
}

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
