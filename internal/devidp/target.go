package devidp

import (
	"net/url"
	"slices"
	"strings"
)

// target is what a token request asks for: one audience, and its scopes
// (nil: every scope the subject is entitled to there).
type target struct {
	audience string
	scopes   []string
}

// defaultScope is Entra's "every scope I may have" scope name.
const defaultScope = ".default"

// parseTarget reads the audience and scopes of a request, by the rule the
// package doc states: audience and resource parameters, or scopes
// qualified with the audience ("https://billing.example.com/billing:read",
// "https://billing.example.com/.default").
func parseTarget(form url.Values) (target, error) {
	var auds []string
	for _, a := range append(form["audience"], form["resource"]...) {
		if !slices.Contains(auds, a) {
			auds = append(auds, a)
		}
	}
	if len(auds) > 1 {
		return target{}, refuse("invalid_target", "one audience per request; got "+strings.Join(auds, ", "))
	}
	var t target
	if len(auds) == 1 {
		t.audience = auds[0]
	}
	scopeAud, scopes, err := parseScopes(form.Get("scope"))
	if err != nil {
		return target{}, err
	}
	switch {
	case scopeAud != "" && t.audience != "" && scopeAud != t.audience:
		return target{}, refuse("invalid_target", "scope names "+scopeAud+" but the audience is "+t.audience)
	case scopeAud != "":
		t.audience = scopeAud
	case t.audience == "":
		return target{}, refuse("invalid_request", "audience, resource or an audience-qualified scope is required")
	}
	t.scopes = scopes
	return t, nil
}

// parseScopes splits a scope parameter into scope names, de-duplicated in
// order, and the audience they are qualified with, if any. A scope is
// qualified when it holds "://": the audience is what precedes its last "/".
// Absent, or ".default", the scopes are nil.
func parseScopes(param string) (aud string, scopes []string, err error) {
	qualified, plain := 0, 0
	for _, s := range strings.Fields(param) {
		if i := strings.LastIndex(s, "/"); strings.Contains(s, "://") && i > 0 {
			if aud != "" && aud != s[:i] {
				return "", nil, refuse("invalid_target", "scopes name more than one audience")
			}
			aud, s = s[:i], s[i+1:]
			qualified++
		} else {
			plain++
		}
		if s == "" {
			return "", nil, refuse("invalid_scope", "empty scope name")
		}
		if !slices.Contains(scopes, s) {
			scopes = append(scopes, s)
		}
	}
	switch {
	case qualified > 0 && plain > 0:
		return "", nil, refuse("invalid_scope", "mix of audience-qualified and plain scopes")
	case slices.Contains(scopes, defaultScope) && len(scopes) > 1:
		return "", nil, refuse("invalid_scope", defaultScope+" cannot be combined with other scopes")
	case slices.Contains(scopes, defaultScope):
		scopes = nil
	}
	return aud, scopes, nil
}

// principal is a subject tokens can be issued for: a user or a client.
type principal struct {
	name         string
	entitlements map[string][]string
	claims       map[string]any // nil for clients
	user         bool
}

// entitle returns the scopes p may have at t: an audience nobody is
// entitled to, or one p is not, is invalid_target; a scope p lacks there is
// scopeErr (invalid_scope for a client's own token, access_denied for a
// user's, as issue 3 asks).
func (p *Provider) entitle(who principal, t target, scopeErr string) ([]string, error) {
	if !p.audiences[t.audience] {
		return nil, refuse("invalid_target", "unknown audience "+t.audience)
	}
	granted := who.entitlements[t.audience]
	if len(granted) == 0 {
		return nil, refuse("invalid_target", who.name+" is not entitled to "+t.audience)
	}
	if t.scopes == nil {
		return slices.Clone(granted), nil
	}
	for _, s := range t.scopes {
		if !slices.Contains(granted, s) {
			return nil, refuse(scopeErr, who.name+" may not have "+s+" at "+t.audience)
		}
	}
	return t.scopes, nil
}
