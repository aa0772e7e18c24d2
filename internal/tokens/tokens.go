// Package tokens obtains the downstream tokens that audgate sends to
// upstreams: RFC 8693 token exchange, OAuth 2.0 client credentials
// (RFC 6749 §4.4), and RFC 9068 access tokens that audgate signs itself.
// Every source sits behind the Source interface and the Cache, which
// coalesces concurrent requests for one key and never caches a failure as
// a success.
package tokens

import (
	"context"
	"errors"
	"slices"
	"time"
)

// Request is what a source is asked for: a token for one audience and set
// of scopes, on behalf of one caller.
type Request struct {
	// Audience is the downstream token's audience.
	Audience string
	// Scopes are the downstream token's scopes, sorted and de-duplicated
	// (see NormalizeScopes).
	Scopes []string
	// Subject and ClientID identify the caller (the inbound token's sub and
	// client_id).
	Subject  string
	ClientID string
	// SubjectToken is the caller's raw access token; SubjectTokenHash is its
	// SHA-256, the only form of it that may appear in a cache key.
	SubjectToken     string
	SubjectTokenHash [32]byte
	// SubjectExpiry is the inbound token's exp: no downstream token is used
	// past it.
	SubjectExpiry time.Time
	// Claims are extra claims for self-signed tokens; other sources ignore
	// them.
	Claims map[string]any
}

// Token is a downstream access token.
type Token struct {
	// Value is the bearer token.
	Value string
	// Expiry is when the token stops being valid; zero if unknown.
	Expiry time.Time
}

// Source obtains downstream tokens. Implementations are safe for
// concurrent use and do not cache: the Cache does.
type Source interface {
	// Token returns a fresh token for req. ctx bounds the request.
	Token(ctx context.Context, req *Request) (Token, error)
}

// ErrSubjectExpired means the caller's token expired before a downstream
// token could be issued for it: the caller must get a new token.
var ErrSubjectExpired = errors.New("the caller's token has expired")

// NormalizeScopes returns scopes sorted and de-duplicated, so that
// ["write","read"] and ["read","write"] ask for the same token.
func NormalizeScopes(scopes []string) []string {
	if len(scopes) < 2 {
		return scopes
	}
	if slices.IsSorted(scopes) && !hasAdjacentDup(scopes) {
		return scopes
	}
	out := slices.Clone(scopes)
	slices.Sort(out)
	return slices.Compact(out)
}

func hasAdjacentDup(s []string) bool {
	for i := 1; i < len(s); i++ {
		if s[i] == s[i-1] {
			return true
		}
	}
	return false
}
