package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/proxy"
	"github.com/audgate/audgate/internal/tokens"
)

// denyError is a policy deny: status from the decision, reason for the
// client.
type denyError struct {
	status int
	reason string
	// scopes are what the caller lacks, for the challenge's scope.
	scopes []string
	// headers are the decision's response headers.
	headers policy.Headers
}

func (e *denyError) Error() string { return "policy denied: " + e.reason }

// pathError is a request path that servers could read differently.
type pathError struct{ err error }

func (e *pathError) Error() string { return "request not canonical: " + e.err.Error() }
func (e *pathError) Unwrap() error { return e.err }

// tooLargeError is an oversize header block or body.
type tooLargeError struct {
	status int
	what   string
}

func (e *tooLargeError) Error() string { return e.what }

// response is what one error becomes on the wire.
type response struct {
	status     int
	code       string
	desc       string
	challenge  string // WWW-Authenticate
	retryAfter string
	level      slog.Level
	headers    policy.Headers // the decision's response headers, on a deny
}

// errorBody is the JSON error every failed request gets.
type errorBody struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
	RequestID        string `json:"request_id"`
}

// errorResponse maps an error from any stage to its HTTP response. It is the
// only place that decides statuses for errors; anything it does not
// recognise is a 500, so a new failure fails closed.
func errorResponse(err error) response {
	var (
		deny   *denyError
		pathE  *pathError
		large  *tooLargeError
		authnE *authn.Error
		he     *echo.HTTPError
		mbe    *http.MaxBytesError

		refused *tokens.RefusedError
		unavail *tokens.UnavailableError
		misconf *tokens.ConfigError
	)
	switch {
	case errors.Is(err, errBodyStalled):
		return response{status: 408, code: "request_timeout", desc: "the request body stopped arriving", level: slog.LevelInfo}
	case errors.As(err, &pathE):
		return response{status: 400, code: "invalid_request", desc: pathE.err.Error(), level: slog.LevelInfo}
	case errors.As(err, &large):
		return response{status: large.status, code: "request_too_large", desc: large.what, level: slog.LevelInfo}
	case errors.As(err, &mbe):
		return response{status: 413, code: "request_too_large", desc: "request body is too large", level: slog.LevelInfo}
	case errors.Is(err, errNoToken), errors.Is(err, errWrongScheme), errors.Is(err, errTwoAuthz), errors.Is(err, errTokenInQuery):
		return response{status: 401, code: "unauthorized", desc: err.Error(), challenge: `Bearer realm="audgate"`, level: slog.LevelInfo}
	case errors.Is(err, errTokenElsewhere), errors.Is(err, errAccessTokenParam):
		return response{status: 400, code: "invalid_request", desc: err.Error(), challenge: challenge("invalid_request", err.Error()), level: slog.LevelInfo}
	case errors.Is(err, errMalformedAuth):
		return response{status: 401, code: "invalid_token", desc: err.Error(), challenge: challenge("invalid_token", err.Error()), level: slog.LevelInfo}
	case errors.Is(err, authn.ErrKeysUnavailable):
		return response{status: 503, code: "temporarily_unavailable", desc: "the token issuer's keys are not available", retryAfter: "5", level: slog.LevelError}
	case errors.As(err, &authnE) || errors.Is(err, authn.ErrInvalidToken):
		desc := "the access token is not valid"
		if authnE != nil {
			desc = authnE.Reason
		}
		return response{status: 401, code: "invalid_token", desc: desc, challenge: challenge("invalid_token", desc), level: slog.LevelInfo}
	case errors.As(err, &refused):
		return refusedResponse(refused)
	case errors.As(err, &misconf):
		return misconfigured
	case errors.As(err, &unavail):
		after := "1"
		if unavail.RetryAfter > 0 {
			after = strconv.Itoa(int(min(unavail.RetryAfter, maxRetryAfter) / time.Second))
		}
		return response{status: 503, code: "temporarily_unavailable", desc: "the identity provider could not issue a token for the upstream; try again later",
			retryAfter: after, level: slog.LevelError}
	case errors.Is(err, tokens.ErrSubjectExpired):
		return response{status: 401, code: "invalid_token", desc: "token expired", challenge: challenge("invalid_token", "token expired"), level: slog.LevelInfo}
	case errors.As(err, &deny):
		return denyResponse(deny)
	case errors.Is(err, policy.ErrNotReady):
		return response{status: 503, code: "temporarily_unavailable", desc: "the gateway's policy is not loaded yet; try again later", retryAfter: "5", level: slog.LevelWarn}
	case errors.Is(err, policy.ErrPolicy):
		return response{status: 500, code: "policy_error", desc: "the policy could not decide", level: slog.LevelError}
	case errors.Is(err, proxy.ErrTimeout):
		return response{status: 504, code: "upstream_timeout", desc: "the upstream did not answer in time", level: slog.LevelWarn}
	case errors.Is(err, proxy.ErrUnavailable):
		return response{status: 502, code: "bad_gateway", desc: "the upstream could not be reached", level: slog.LevelWarn}
	case errors.Is(err, context.Canceled):
		return response{status: 499, code: "client_closed_request", desc: "the client went away", level: slog.LevelInfo}
	case errors.As(err, &he):
		return echoResponse(he)
	}
	return response{status: 500, code: "internal_error", desc: "internal error", level: slog.LevelError}
}

// refusedResponse maps an identity provider's OAuth error code (RFC 6749
// §5.2, RFC 8693 §2.2.2, RFC 8707 §2) to the caller: a refused subject
// token is the caller's invalid token, a refused audience or scope is the
// caller's missing permission, and a refused client is audgate's
// misconfiguration, which the caller cannot fix.
//
// invalid_grant and invalid_request are about the caller's token only when
// the request carried it (token exchange, jwt-bearer): from a client
// credentials grant they mean audgate's own request is wrong.
func refusedResponse(e *tokens.RefusedError) response {
	switch e.Answer.Code {
	case "invalid_grant", "invalid_request":
		if !e.CallerToken {
			break
		}
		desc := "the identity provider did not accept the access token (" + e.Answer.Code + ")"
		return response{status: 401, code: "invalid_token", desc: desc, challenge: challenge("invalid_token", desc), level: slog.LevelInfo}
	case "invalid_target", "invalid_scope", "access_denied", "unauthorized_client":
		desc := "the identity provider refused a token for the upstream's audience or scopes (" + e.Answer.Code + ")"
		return response{status: 403, code: "insufficient_scope", desc: desc, challenge: challenge("insufficient_scope", desc), level: slog.LevelInfo}
	}
	return misconfigured
}

// misconfigured is the answer when audgate's own token request is wrong:
// the caller cannot fix it.
var misconfigured = response{status: 502, code: "token_source_misconfigured",
	desc: "the identity provider refused audgate's token request; the gateway's operator must fix its client configuration", level: slog.LevelError}

func denyResponse(d *denyError) response {
	r := response{status: d.status, desc: d.reason, level: slog.LevelInfo}
	switch d.status {
	case http.StatusUnauthorized:
		r.code = "invalid_token"
		r.challenge = challenge("invalid_token", d.reason)
	case http.StatusNotFound:
		r.code = "not_found"
	default:
		r.code = "insufficient_scope"
		r.challenge = challenge("insufficient_scope", d.reason)
	}
	if len(d.scopes) > 0 && r.challenge != "" {
		// RFC 6750 §3: the scopes the request needs. Scope tokens hold no
		// quote or backslash (the decision was checked).
		r.challenge += `, scope="` + strings.Join(d.scopes, " ") + `"`
	}
	r.headers = d.headers
	return r
}

func echoResponse(he *echo.HTTPError) response {
	switch he.Code {
	case http.StatusNotFound:
		return response{status: 404, code: "not_found", desc: "no route for this path", level: slog.LevelInfo}
	case http.StatusMethodNotAllowed:
		return response{status: 405, code: "method_not_allowed", desc: "the route does not accept this method", level: slog.LevelInfo}
	}
	return response{status: 500, code: "internal_error", desc: "internal error", level: slog.LevelError}
}

// challenge builds an RFC 6750 §3 WWW-Authenticate value.
func challenge(code, desc string) string {
	return `Bearer realm="audgate", error="` + code + `", error_description="` + quoteSafe(desc) + `"`
}

// quoteSafe keeps desc within RFC 6750's error_description characters
// (%x20-21 / %x23-5B / %x5D-7E).
func quoteSafe(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r > 0x7e || r == '"' || r == '\\' {
			return '\''
		}
		return r
	}, s)
}

// pathCarriesBearer reports whether the request path, decoded or as sent,
// holds the request's bearer token.
func pathCarriesBearer(r *http.Request) bool {
	raw, err := bearer(r)
	return err == nil && (carries(r.URL.Path, raw) || carries(requestPath(r.RequestURI), raw))
}

// maxRetryAfter caps the Retry-After a caller is told: an identity
// provider's own may be long, but it is advice to audgate's client.
const maxRetryAfter = time.Minute

// writeError sends err's response and logs it with what went wrong. The
// log carries the full error chain; the response only the safe
// description. Nothing is written if the response has started.
func (g *Gateway) writeError(w http.ResponseWriter, r *http.Request, err error) {
	if dry := dryRunOf(r.Context()); dry != nil {
		dry.err = err
	}
	if stalledBody(r) {
		err = fmt.Errorf("%w: %w", errBodyStalled, err)
	}
	res := errorResponse(err)
	id := requestID(r)
	path := r.URL.Path
	if errors.Is(err, errTokenElsewhere) || pathCarriesBearer(r) {
		// Whatever failed, and even before the token was verified, a path
		// that carries the bearer value must not reach the log.
		path = "[withheld: it may carry the caller's token]"
	}
	g.log.Log(r.Context(), res.level, "request failed",
		"request_id", id, "method", r.Method, "path", path, "status", res.status,
		"error", res.code, "cause", err.Error())
	h := w.Header()
	for _, e := range res.headers {
		h.Set(e.Name, e.Value) // before the gateway's own, which win
	}
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Request-Id", id)
	if res.challenge != "" {
		h.Set("WWW-Authenticate", res.challenge)
	}
	if res.retryAfter != "" {
		h.Set("Retry-After", res.retryAfter)
	}
	if r.ProtoMajor == 1 && unreadBody(r) {
		// Go's server would read the unread body, up to 256 KiB, before
		// the response (or after it, to reuse the connection): a caller
		// that never sends it would hold the connection. Close it instead,
		// and end any read of it now. (HTTP/2 resets the stream itself.)
		h.Set("Connection", "close")
		_ = http.NewResponseController(w).SetReadDeadline(time.Now())
	}
	w.WriteHeader(res.status)
	_ = json.NewEncoder(w).Encode(errorBody{Error: res.code, ErrorDescription: res.desc, RequestID: id})
}
