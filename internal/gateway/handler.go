package gateway

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/labstack/echo/v4"
)

// defaultMethods are what a route without methods accepts. CONNECT and
// TRACE are never proxied.
var defaultMethods = []string{
	http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
	http.MethodPatch, http.MethodDelete, http.MethodOptions,
}

// route is one configured route, resolved at start-up.
type route struct {
	path        string
	stripPrefix string
	upstream    *upstream
}

func (g *Gateway) buildRouter() *echo.Echo {
	e := echo.New()
	e.HideBanner = true
	e.HidePort = true
	e.HTTPErrorHandler = func(err error, c echo.Context) {
		if !c.Response().Committed {
			g.writeError(c.Response(), c.Request(), err)
		}
	}
	e.Pre(g.preflight)
	e.Use(g.observe, g.guardOptions)
	if len(g.selfKeys) > 0 {
		jwks, discovery, err := g.wellKnown()
		if err == nil {
			e.GET("/.well-known/jwks.json", staticJSON(jwks))
			e.GET("/.well-known/openid-configuration", staticJSON(discovery))
		}
	}
	for _, rc := range g.cfg.Routes {
		rt := &route{path: rc.Path, stripPrefix: rc.StripPrefix, upstream: g.ups[rc.Upstream]}
		methods := rc.Methods
		if len(methods) == 0 {
			methods = defaultMethods
		}
		h := g.handle(rt)
		for _, m := range methods {
			e.Add(m, rc.Path, h)
			g.routes[methodPath(m, rc.Path)] = rt
		}
		g.routePaths[rc.Path] = true
	}

	return e
}

func staticJSON(body []byte) echo.HandlerFunc {
	return func(c echo.Context) error {
		h := c.Response().Header()
		h.Set("Cache-Control", "public, max-age=300")
		return c.Blob(http.StatusOK, "application/json", body)
	}
}

// preflight runs before routing: it names the request, strips the
// headers no client may send, and refuses non-canonical paths and
// oversize requests.
func (g *Gateway) preflight(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if g.tracing != nil {
			g.traced(c, func() error { return g.admit(c, next) })
			return nil
		}
		return g.admit(c, next)
	}
}

// admit is preflight's work.
func (g *Gateway) admit(c echo.Context, next echo.HandlerFunc) error {
	r := c.Request()
	// The request ID lives in the inbound header from here on: every
	// stage, and writeError, read it there.
	id := g.ids.next(r.Header.Get("X-Request-Id"))
	tooLarge := headerBytes(r) > g.cfg.Server.MaxHeaderBytes // as sent
	if cl, ok := g.clientIPs.behindProxy(r); ok {
		c.Set(callerKey, cl)
	}
	for _, k := range forwarding {
		delete(r.Header, k) // a proxy's account is believed only as callerKey
	}
	g.strip.strip(r.Header)
	dropUnderscoreHeaders(r.Header)
	joinRepeated(r.Header)
	r.Header.Set("X-Request-Id", id)
	c.Response().Header().Set("X-Request-Id", id)

	if err := checkCanonical(requestPath(r.RequestURI)); err != nil {
		return &pathError{err}
	}
	if tooLarge {
		return &tooLargeError{status: http.StatusRequestHeaderFieldsTooLarge, what: "request headers are too large"}
	}
	if r.ContentLength > g.cfg.Server.MaxBodyBytes {
		return &tooLargeError{status: http.StatusRequestEntityTooLarge, what: "request body is too large"}
	}
	return next(c)
}

// observe records each request's status and latency.
func (g *Gateway) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		up, _ := c.Get("upstream").(string)
		g.obs.Request(c.Path(), up, c.Response().Status, time.Since(start))
		return nil
	}
}

// methodPath keys a route by method and configured path.
func methodPath(method, path string) string { return method + " " + path }

// guardOptions makes OPTIONS on a route that does not accept it the 405
// it is: Echo would otherwise answer it itself, 204 with the route's
// methods, to anyone. A route that accepts OPTIONS gets it as any method.
func (g *Gateway) guardOptions(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if c.Request().Method != http.MethodOptions || !g.routePaths[c.Path()] {
			return next(c)
		}
		if _, routed := g.routes[methodPath(http.MethodOptions, c.Path())]; routed {
			return next(c)
		}
		if allow, ok := c.Get(echo.ContextKeyHeaderAllow).(string); ok {
			// Echo lists OPTIONS for every route; this one does not take it.
			methods := slices.DeleteFunc(strings.Split(allow, ", "), func(m string) bool { return m == http.MethodOptions })
			c.Response().Header().Set(echo.HeaderAllow, strings.Join(methods, ", "))
		}
		return echo.ErrMethodNotAllowed
	}
}

// requestIDs makes request IDs: a random prefix per process and a
// counter, unique across replicas without a random read per request.
type requestIDs struct {
	prefix string
	n      atomic.Uint64
}

func newRequestIDs() *requestIDs {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return &requestIDs{prefix: hex.EncodeToString(b[:]) + "-"}
}

// next keeps a client's X-Request-Id when it is a short token of safe
// characters, and makes a new one otherwise.
func (ids *requestIDs) next(given string) string {
	if n := len(given); n > 0 && n <= 128 && strings.IndexFunc(given, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
	}) < 0 {
		return given
	}
	return ids.prefix + strconv.FormatUint(ids.n.Add(1), 36)
}

// requestID returns the ID preflight gave the request.
func requestID(r *http.Request) string { return r.Header.Get("X-Request-Id") }
