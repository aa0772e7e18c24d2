package authn

import (
	"bytes"
	"encoding/json"
	"io"
)

// ParseUnverified reads raw, a JWS compact serialization, into a Principal
// by the same claim rules as Verify, WITHOUT VERIFYING ANYTHING: not the
// signature, not the issuer, not the audience, not the times. The form is
// checked as Verify checks it (compact only, no JWE, no crit, no alg
// none), so a token Verify would refuse for its form or its claims' types
// is refused here too. It is for audgate eval, which shows what the policy
// decides for a token; never use it to let a request through.
func ParseUnverified(raw string) (*Principal, error) {
	if raw == "" {
		return nil, invalid("token missing")
	}
	if len(raw) > MaxTokenSize {
		return nil, invalid("token too large")
	}
	tok, err := parseCompact(raw)
	if err != nil {
		return nil, err
	}
	return claimsPrincipal(tok.claims, tok.payload)
}

// ClaimsUnverified reads a token payload, a JSON object of claims, into a
// Principal by the same claim rules as Verify, WITHOUT VERIFYING
// ANYTHING (see ParseUnverified). Numbers are kept as the JSON wrote them.
func ClaimsUnverified(payload []byte) (*Principal, error) {
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, invalid("claims must be a JSON object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, invalid("claims must be one JSON object")
	}
	return claimsPrincipal(claims, string(payload))
}

// Attachment is a value of type T that another stage derives from a
// Principal once per verified token and keeps with it, so that every cache
// hit finds it built (the gateway keeps the policy's view of the token
// this way). One Attachment per kind of value; a Principal holds one.
type Attachment[T any] struct {
	build func(*Principal) T
}

// attached is the value a Principal holds, with the Attachment it is for.
type attached struct {
	owner any // the *Attachment[T]
	value any // a T
}

// NewAttachment returns an Attachment whose value build derives. build must
// be a pure function of the Principal.
func NewAttachment[T any](build func(*Principal) T) *Attachment[T] {
	return &Attachment[T]{build: build}
}

// Get returns a's value for p, building it on first use; concurrent first
// callers may each build it, and one result wins.
func (a *Attachment[T]) Get(p *Principal) T {
	if at := p.attached.Load(); at != nil && at.owner == a {
		return at.value.(T)
	}
	v := a.build(p)
	if p.attached.CompareAndSwap(nil, &attached{owner: a, value: v}) {
		return v
	}
	if at := p.attached.Load(); at.owner == a {
		return at.value.(T)
	}
	return v // p holds another Attachment's value: build each time
}
