// Package proxy forwards allowed requests to an upstream with
// httputil.ReverseProxy and its Rewrite hook (RFC 9110 §7.6 hop-by-hop
// headers are removed before Rewrite runs, so what Rewrite sets cannot be
// removed by a client's Connection header). The caller's Authorization is
// replaced by the downstream token; the gateway has already refused any
// request that carries the caller's token anywhere else.
package proxy

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Defaults for the zero values of Options.
const (
	DefaultTimeout      = 30 * time.Second
	DefaultMaxIdleConns = 256
)

// Options configure one upstream.
type Options struct {
	// Name is the upstream's name, for errors.
	Name string
	// URL is the upstream's base URL; its path prefixes every request path.
	URL *url.URL
	// Timeout bounds the wait for the upstream's response headers.
	// Default: 30s.
	Timeout time.Duration
	// MaxIdleConns is the number of idle keep-alive connections kept to
	// the upstream. Default: 256.
	MaxIdleConns int
	// TLS configures TLS to an https upstream. Default: system roots.
	TLS *tls.Config
	// WrapTransport, if set, wraps the transport each attempt is sent
	// with (tracing). Default: none.
	WrapTransport func(http.RoundTripper) http.RoundTripper
	// ErrorHandler writes the response when the upstream cannot be
	// reached or times out; err wraps ErrUnavailable or ErrTimeout.
	// Required.
	ErrorHandler func(w http.ResponseWriter, r *http.Request, err error)
}

// Errors passed to Options.ErrorHandler.
var (
	ErrUnavailable = errors.New("upstream unavailable")
	ErrTimeout     = errors.New("upstream timed out")
)

// Header is a header the gateway sets: the unnamed struct type that
// policy.Headers holds.
type Header = struct{ Name, Value string }

// Outbound is what the gateway decided for one request.
type Outbound struct {
	// Token is the downstream bearer token.
	Token string
	// Headers are set, replacing any inbound value.
	Headers []Header
	// StripPrefix is removed from the request path.
	StripPrefix string
	// RequestID is sent as X-Request-Id. The caller's response carries it
	// already; the upstream's own X-Request-Id, if any, is dropped.
	RequestID string
	// ResponseHeaders are set, replacing the upstream's, on the response
	// to the caller.
	ResponseHeaders []Header
	// ForwardedFor is the chain of addresses trusted proxies vouched for,
	// from the caller on; X-Forwarded-For is it plus the peer. Without
	// it, X-Forwarded-For is the peer alone.
	ForwardedFor []string
	// Drop, if set, forgets the downstream token because the upstream
	// answered 401 to it, and reports whether a fresh one may be tried (it
	// declines to bound how often one key is refetched).
	Drop func() bool
	// Refresh, if set, returns a fresh downstream token after a Drop. When
	// the upstream answers 401 to an idempotent request without a body,
	// and Drop allows it, the request is sent once more with it.
	Refresh func(ctx context.Context) (string, error)
}

// Upstream proxies to one upstream. It is safe for concurrent use.
type Upstream struct {
	name      string
	target    *url.URL
	rp        *httputil.ReverseProxy
	transport *http.Transport

	errorHandler func(http.ResponseWriter, *http.Request, error)
}

type outboundKey struct{}

// New builds the upstream's transport and reverse proxy.
func New(opts Options) (*Upstream, error) {
	if opts.URL == nil || (opts.URL.Scheme != "http" && opts.URL.Scheme != "https") || opts.URL.Host == "" {
		return nil, fmt.Errorf("upstream %q: url must be an absolute http or https URL", opts.Name)
	}
	if opts.ErrorHandler == nil {
		return nil, fmt.Errorf("upstream %q: no error handler", opts.Name)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.MaxIdleConns <= 0 {
		opts.MaxIdleConns = DefaultMaxIdleConns
	}
	transport := &http.Transport{
		Proxy:                 nil, // upstreams are reached directly, never through HTTP_PROXY
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSClientConfig:       opts.TLS,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: opts.Timeout,
		ExpectContinueTimeout: time.Second,
		MaxIdleConns:          opts.MaxIdleConns,
		MaxIdleConnsPerHost:   opts.MaxIdleConns,
		IdleConnTimeout:       90 * time.Second,
		ForceAttemptHTTP2:     opts.URL.Scheme == "https",
	}
	var base http.RoundTripper = transport
	if opts.WrapTransport != nil {
		base = opts.WrapTransport(transport)
	}
	u := &Upstream{name: opts.Name, target: opts.URL, transport: transport, errorHandler: opts.ErrorHandler}
	u.rp = &httputil.ReverseProxy{
		Rewrite:        u.rewrite,
		ModifyResponse: u.modifyResponse,
		Transport:      &retryOn401{base: base},
		BufferPool:     buffers,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			opts.ErrorHandler(w, r, transportError(opts.Name, err))
		},
		ErrorLog: nil,
	}
	return u, nil
}

// Serve proxies r with out applied.
func (u *Upstream) Serve(w http.ResponseWriter, r *http.Request, out *Outbound) {
	if out == nil || out.Token == "" {
		u.errorHandler(w, r, fmt.Errorf("%w: %s: no downstream token", ErrUnavailable, u.name))
		return
	}
	ctx := context.WithValue(r.Context(), outboundKey{}, out)
	u.rp.ServeHTTP(w, r.WithContext(ctx))
}

// Close drops idle upstream connections.
func (u *Upstream) Close() { u.transport.CloseIdleConnections() }

// spoofable are headers a client could send to pose as a proxy hop; the
// gateway sets the X-Forwarded-* family itself.
var spoofable = []string{
	"Forwarded", "X-Real-Ip", "X-Forwarded-Port", "X-Forwarded-Prefix", "X-Forwarded-Server",
	"X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Url-Scheme", "Front-End-Https", "X-Forwarded-Uri",
	"X-Original-Host", "X-Host", "True-Client-Ip", "X-Client-Ip", "X-Cluster-Client-Ip",
	"Client-Ip", "X-Forwarded", "Forwarded-For", "X-Original-Forwarded-For", "Cf-Connecting-Ip",
	"Fastly-Client-Ip", "X-Envoy-External-Address", "X-Appengine-User-Ip",
	"Proxy-Authorization",
}

func (u *Upstream) rewrite(pr *httputil.ProxyRequest) {
	out := pr.In.Context().Value(outboundKey{}).(*Outbound) // Serve always sets it
	if out.StripPrefix != "" {
		pr.Out.URL.Path = stripPrefix(pr.Out.URL.Path, out.StripPrefix)
		pr.Out.URL.RawPath = stripPrefix(pr.Out.URL.RawPath, out.StripPrefix)
	}
	pr.SetURL(u.target)
	pr.SetXForwarded() // ReverseProxy removed any X-Forwarded-For before Rewrite: the peer alone
	h := pr.Out.Header
	// The gateway's own server answered the caller's Expect: 100-continue
	// when the body was first read; the upstream's 100 would reach the
	// caller as a second one.
	h.Del("Expect")
	if len(out.ForwardedFor) > 0 {
		h.Set("X-Forwarded-For", strings.Join(out.ForwardedFor, ", ")+", "+h.Get("X-Forwarded-For"))
	}
	for _, k := range spoofable {
		h.Del(k)
	}
	h.Set("Authorization", "Bearer "+out.Token)
	if out.RequestID != "" {
		h.Set("X-Request-Id", out.RequestID)
	}
	for _, e := range out.Headers {
		h.Set(e.Name, e.Value)
	}
}

// modifyResponse drops the upstream's X-Request-Id (the caller's
// response already carries the gateway's, and gets only that one) and
// sets the decision's response headers.
func (u *Upstream) modifyResponse(resp *http.Response) error {
	out, _ := resp.Request.Context().Value(outboundKey{}).(*Outbound)
	if out == nil {
		return nil
	}
	h := resp.Header
	if out.RequestID != "" {
		h.Del("X-Request-Id")
	}
	for _, e := range out.ResponseHeaders {
		h.Set(e.Name, e.Value)
	}
	return nil
}

// buffers lends the 32 KiB buffers ReverseProxy copies bodies through;
// without a pool each request allocates one, half of all the bytes a
// proxied request allocates.
var buffers = &bufferPool{pool: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ pool sync.Pool }

func (p *bufferPool) Get() []byte { return *p.pool.Get().(*[]byte) }

func (p *bufferPool) Put(b []byte) {
	if cap(b) == 32<<10 {
		b = b[:cap(b)]
		p.pool.Put(&b)
	}
}

// retryOn401 sends an idempotent bodyless request once more, with a fresh
// downstream token, when the upstream answers 401: the cached token may
// have been revoked or the upstream's keys rotated.
type retryOn401 struct {
	base http.RoundTripper
}

func (t *retryOn401) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		return resp, err
	}
	out, _ := req.Context().Value(outboundKey{}).(*Outbound)
	if out == nil {
		return resp, nil
	}
	if out.Drop == nil || !out.Drop() || out.Refresh == nil || !retryable(req) {
		return resp, nil
	}
	tok, rerr := out.Refresh(req.Context())
	if rerr != nil || tok == "" {
		// No fresh token: the upstream's own 401 is the honest answer.
		return resp, nil
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	retry := req.Clone(req.Context())
	retry.Header.Set("Authorization", "Bearer "+tok)
	return t.base.RoundTrip(retry)
}

// retryable reports whether req may be sent twice: an idempotent method
// (RFC 9110 §9.2.2) and no body.
func retryable(req *http.Request) bool {
	switch req.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodDelete:
	default:
		return false
	}
	return (req.Body == nil || req.Body == http.NoBody) && req.ContentLength == 0
}

// stripPrefix removes prefix from p only where it ends at a segment
// boundary: /public never turns /publicadmin into /admin. A path the
// prefix does not cut cleanly goes upstream whole, as the policy saw it.
func stripPrefix(p, prefix string) string {
	rest, ok := strings.CutPrefix(p, prefix)
	if p == "" || !ok || !(strings.HasSuffix(prefix, "/") || rest == "" || rest[0] == '/') {
		return p
	}
	if !strings.HasPrefix(rest, "/") {
		rest = "/" + rest
	}
	return rest
}

func transportError(name string, err error) error {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return fmt.Errorf("%w: %s: %w", ErrTimeout, name, err)
	default:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return err
		}
		return fmt.Errorf("%w: %s: %w", ErrUnavailable, name, err)
	}
}
