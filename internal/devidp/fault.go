package devidp

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"time"
)

// FaultKind is how the token endpoint misbehaves.
type FaultKind int

const (
	// FaultNone: the token endpoint works.
	FaultNone FaultKind = iota
	// FaultServerError: 500 with an RFC 6749 server_error body.
	FaultServerError
	// FaultTooManyRequests: 429 with a Retry-After header.
	FaultTooManyRequests
	// FaultStall: the answer waits until the request's context ends (the
	// client gave up) or Fault.Stall passes, whichever is first; after
	// Fault.Stall the request is served normally.
	FaultStall
	// FaultMalformedJSON: 200, Content-Type application/json, a truncated
	// JSON object.
	FaultMalformedJSON
	// FaultNoAccessToken: 200 with a token response that lacks access_token.
	FaultNoAccessToken
	// FaultOAuthError: the RFC 6749 §5.2 error Fault.ErrorCode, with 400
	// (401 and WWW-Authenticate for invalid_client).
	FaultOAuthError
)

func (k FaultKind) String() string {
	switch k {
	case FaultNone:
		return "none"
	case FaultServerError:
		return "server_error"
	case FaultTooManyRequests:
		return "too_many_requests"
	case FaultStall:
		return "stall"
	case FaultMalformedJSON:
		return "malformed_json"
	case FaultNoAccessToken:
		return "no_access_token"
	case FaultOAuthError:
		return "oauth_error"
	}
	return "FaultKind(" + strconv.Itoa(int(k)) + ")"
}

// Fault makes the token endpoint misbehave, for fault-injection tests. The
// zero Fault is no fault. Every faulty request still counts in
// TokenRequests.
type Fault struct {
	Kind FaultKind
	// RetryAfter is FaultTooManyRequests' Retry-After, sent in whole
	// seconds. Default: 1s.
	RetryAfter time.Duration
	// Stall bounds FaultStall. Zero: until the request's context ends.
	Stall time.Duration
	// ErrorCode is FaultOAuthError's error, e.g. "invalid_grant".
	ErrorCode string
	// ExpiresIn, if not empty, replaces expires_in in successful responses
	// with this JSON number written verbatim: "0", "-60", "30", "1e10". The
	// token's exp claim is unchanged.
	ExpiresIn json.Number
	// OmitExpiresIn drops expires_in from successful responses.
	OmitExpiresIn bool
}

// inject answers r as f says and reports whether it did; false means the
// request is to be served normally.
func (f Fault) inject(w http.ResponseWriter, r *http.Request) bool {
	switch f.Kind {
	case FaultServerError:
		writeJSON(w, http.StatusInternalServerError, oauthError{Code: "server_error", Description: "injected fault"})
	case FaultTooManyRequests:
		retry := f.RetryAfter
		if retry <= 0 {
			retry = time.Second
		}
		w.Header().Set("Retry-After", strconv.Itoa(int((retry+time.Second-1)/time.Second)))
		writeJSON(w, http.StatusTooManyRequests, oauthError{Code: "temporarily_unavailable", Description: "injected fault"})
	case FaultStall:
		return stall(r, f.Stall)
	case FaultMalformedJSON:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		fmt.Fprint(w, `{"access_token":"eyJhbGciOi`)
	case FaultNoAccessToken:
		writeJSON(w, http.StatusOK, map[string]any{"token_type": "Bearer", "expires_in": 300})
	case FaultOAuthError:
		writeOAuthError(w, &oauthError{Code: f.ErrorCode, Description: "injected fault"})
	default:
		return false
	}
	return true
}

// stall waits for the client to give up or for d to pass (d > 0). It
// reports true when the client gave up: nothing more is to be written.
func stall(r *http.Request, d time.Duration) bool {
	var timeout <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		timeout = t.C
	}
	select {
	case <-r.Context().Done():
		return true
	case <-timeout:
		return false
	}
}

// applyExpiresIn rewrites a success response's expires_in as f says.
func (f Fault) applyExpiresIn(resp *tokenResponse) {
	switch {
	case f.OmitExpiresIn:
		resp.ExpiresIn = ""
	case f.ExpiresIn != "":
		resp.ExpiresIn = f.ExpiresIn
	}
}
