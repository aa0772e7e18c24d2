package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/open-policy-agent/opa/v1/ast"
)

// The decision cache's key is the SHA-256 of a canonical encoding of the
// input values a policy reads (see Reads). The encoding is injective:
// every value is tagged with its type and every string, number, array,
// object and set carries its length, so that no two different tuples of
// values encode alike (["a b"] and ["a","b"], {"a":"b"} and ["a","b"]);
// and an object's or a set's members are sorted, as OPA compares them
// regardless of order. Numbers keep their text (see appendValue).

// Value tags.
const (
	tagAbsent byte = iota
	tagNull
	tagFalse
	tagTrue
	tagNumber
	tagString
	tagArray
	tagObject
	tagSet
	tagOther // not a JSON value: written as OPA prints it
)

// keyPaths are a Reads' paths as terms, for lookups without allocation,
// the token's first: tokens is how many paths start with "token".
type keyPaths struct {
	paths  [][]*ast.Term
	tokens int
}

func newKeyPaths(r *Reads) *keyPaths {
	kp := &keyPaths{paths: make([][]*ast.Term, 0, len(r.Paths))}
	for _, first := range []bool{true, false} {
		for _, p := range r.Paths {
			if (len(p) > 0 && p[0] == "token") != first {
				continue
			}
			terms := make([]*ast.Term, len(p))
			for j, k := range p {
				terms[j] = ast.StringTerm(k)
			}
			kp.paths = append(kp.paths, terms)
			if first {
				kp.tokens++
			}
		}
	}
	return kp
}

// KeyMemo keeps, for one verified token, the encoding of the token's
// values at the paths an Engine's decision key reads, so that the next
// request with the token encodes none of them. The gateway keeps one with
// each verified token (Token.Memo); the zero value is ready.
type KeyMemo struct {
	p atomic.Pointer[keyMemo]
}

type keyMemo struct {
	paths *keyPaths // whose token paths b encodes
	b     []byte
}

var keyBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// decisionKey is the key of input's decision: gen (the store's commit
// count, so that new data never meets an old entry), then each path and
// the value at it, or the whole input when whole.
func decisionKey(gen uint64, kp *keyPaths, whole bool, input ast.Value) [32]byte {
	bp := keyBuffers.Get().(*[]byte)
	b := binary.BigEndian.AppendUint64((*bp)[:0], gen)
	if whole {
		b = appendValue(b, input)
	} else {
		b = binary.AppendUvarint(b, uint64(len(kp.paths)))
		for _, path := range kp.paths {
			b = appendValue(b, lookup(input, path))
		}
	}
	sum := sha256.Sum256(b)
	if cap(b) <= 64<<10 {
		*bp = b
		keyBuffers.Put(bp)
	}
	return sum
}

// inputKey is decisionKey over in, built only as far as the paths reach:
// the same key as decisionKey(gen, kp, whole, in.Value()).
func inputKey(gen uint64, kp *keyPaths, whole bool, in *Input) [32]byte {
	bp := keyBuffers.Get().(*[]byte)
	b := binary.BigEndian.AppendUint64((*bp)[:0], gen)
	if whole {
		b = appendValue(b, in.at(nil))
	} else {
		b = binary.AppendUvarint(b, uint64(len(kp.paths)))
		b = in.appendTokenPaths(b, kp)
		for _, path := range kp.paths[kp.tokens:] {
			if rb, ok := appendRequestAt(b, &in.Request, path); ok {
				b = rb
				continue
			}
			b = appendValue(b, in.at(path))
		}
	}
	sum := sha256.Sum256(b)
	if cap(b) <= 64<<10 {
		*bp = b
		keyBuffers.Put(bp)
	}
	return sum
}

// appendTokenPaths appends the encoding of the token's values at kp's
// token paths: from the token's memo when it holds kp's, else from the
// token's fields, and then kept in the memo.
func (in *Input) appendTokenPaths(b []byte, kp *keyPaths) []byte {
	paths := kp.paths[:kp.tokens]
	if len(paths) == 0 {
		return b
	}
	if in.TokenValue != nil {
		for _, path := range paths {
			b = appendValue(b, lookup(in.TokenValue, path[1:]))
		}
		return b
	}
	memo := in.Token.Memo
	if memo != nil {
		if m := memo.p.Load(); m != nil && m.paths == kp {
			return append(b, m.b...)
		}
	}
	start := len(b)
	for _, path := range paths {
		if tb, ok := appendTokenAt(b, &in.Token, path); ok {
			b = tb
			continue
		}
		b = appendValue(b, in.Token.at(path[1:]))
	}
	if memo != nil {
		memo.p.Store(&keyMemo{paths: kp, b: bytes.Clone(b[start:])})
	}
	return b
}

// appendRequestAt appends the encoding of one of the request's strings at
// path, as appendValue would write in.at(path), without boxing it; false
// for any other path.
func appendRequestAt(b []byte, r *Request, path []*ast.Term) ([]byte, bool) {
	if len(path) != 2 || path[0].Value.Compare(ast.String("request")) != 0 {
		return b, false
	}
	var s string
	optional := false
	switch k, _ := path[1].Value.(ast.String); k {
	case "method":
		s = r.Method
	case "path":
		s = r.Path
	case "host":
		s = r.Host
	case "remote_ip":
		s = r.RemoteIP
	case "scheme":
		s, optional = r.Scheme, true
	case "protocol":
		s, optional = r.Protocol, true
	case "client_ip":
		s, optional = r.ClientIP, true
	default:
		return b, false
	}
	if optional && s == "" {
		return append(b, tagAbsent), true
	}
	return appendBytes(append(b, tagString), s), true
}

// appendTokenAt appends the encoding of the token's value at path (which
// starts with "token") straight from its Go fields, as appendValue would
// write the OPA value Token.Value builds, without building it. False when
// the path is not the token's, or reaches something only the OPA value
// can encode.
func appendTokenAt(b []byte, t *Token, path []*ast.Term) ([]byte, bool) {
	if len(path) < 2 || path[0].Value.Compare(ast.String("token")) != 0 {
		return b, false
	}
	k, _ := path[1].Value.(ast.String)
	rest := path[2:]
	switch {
	case len(rest) > 0 && k != "claims":
		return b, false
	case k == "subject":
		return appendBytes(append(b, tagString), t.Subject), true
	case k == "issuer":
		return appendBytes(append(b, tagString), t.Issuer), true
	case k == "client_id":
		return appendBytes(append(b, tagString), t.ClientID), true
	case k == "scopes":
		return appendStrings(b, t.Scopes), true
	case k == "audience":
		return appendStrings(b, t.Audience), true
	case k == "claims":
		claims, err := t.claims()
		if err != nil {
			return b, false
		}
		var cur any = claims
		for _, k := range rest {
			m, ok := cur.(map[string]any)
			if !ok {
				return append(b, tagAbsent), true
			}
			key, _ := k.Value.(ast.String)
			if cur, ok = m[string(key)]; !ok {
				return append(b, tagAbsent), true
			}
		}
		return appendJSON(b, cur)
	}
	return b, false
}

func appendStrings(b []byte, ss []string) []byte {
	b = binary.AppendUvarint(append(b, tagArray), uint64(len(ss)))
	for _, s := range ss {
		b = appendBytes(append(b, tagString), s)
	}
	return b
}

// appendJSON appends the encoding of a JSON value as encoding/json
// decodes it with UseNumber, as appendValue writes its OPA value; false
// for any other Go value.
func appendJSON(b []byte, x any) ([]byte, bool) {
	switch v := x.(type) {
	case nil:
		return append(b, tagNull), true
	case bool:
		if v {
			return append(b, tagTrue), true
		}
		return append(b, tagFalse), true
	case string:
		return appendBytes(append(b, tagString), v), true
	case json.Number:
		return appendBytes(append(b, tagNumber), string(v)), true
	case []any:
		b = binary.AppendUvarint(append(b, tagArray), uint64(len(v)))
		for _, e := range v {
			var ok bool
			if b, ok = appendJSON(b, e); !ok {
				return b, false
			}
		}
		return b, true
	case map[string]any:
		if v == nil {
			return binary.AppendUvarint(append(b, tagObject), 0), true
		}
		b = binary.AppendUvarint(append(b, tagObject), uint64(len(v)))
		members := make([][]byte, 0, len(v))
		for k, e := range v {
			m, ok := appendJSON(appendBytes([]byte{tagString}, k), e)
			if !ok {
				return b, false
			}
			members = append(members, m)
		}
		return appendSorted(b, members), true
	}
	return b, false
}

// lookup is the value at path in v, nil when there is none.
func lookup(v ast.Value, path []*ast.Term) ast.Value {
	for _, k := range path {
		obj, ok := v.(ast.Object)
		if !ok {
			return nil
		}
		t := obj.Get(k)
		if t == nil {
			return nil
		}
		v = t.Value
	}
	return v
}

// appendValue appends v's canonical encoding; nil is absent.
func appendValue(b []byte, v ast.Value) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, tagAbsent)
	case ast.Null:
		return append(b, tagNull)
	case ast.Boolean:
		if x {
			return append(b, tagTrue)
		}
		return append(b, tagFalse)
	case ast.Number:
		// As written: OPA finds 1 and 1.0 equal, but looks base data up
		// by a number's text (data.levels[1.0] reads the key "1.0").
		return appendBytes(append(b, tagNumber), string(x))
	case ast.String:
		return appendBytes(append(b, tagString), string(x))
	case *ast.Array:
		b = binary.AppendUvarint(append(b, tagArray), uint64(x.Len()))
		for i := range x.Len() {
			b = appendValue(b, x.Elem(i).Value)
		}
		return b
	case ast.Object:
		b = binary.AppendUvarint(append(b, tagObject), uint64(x.Len()))
		members := make([][]byte, 0, x.Len())
		x.Foreach(func(k, v *ast.Term) {
			m := appendValue(nil, k.Value)
			members = append(members, appendValue(m, v.Value))
		})
		return appendSorted(b, members)
	case ast.Set:
		b = binary.AppendUvarint(append(b, tagSet), uint64(x.Len()))
		members := make([][]byte, 0, x.Len())
		x.Foreach(func(t *ast.Term) { members = append(members, appendValue(nil, t.Value)) })
		return appendSorted(b, members)
	}
	return appendBytes(append(b, tagOther), v.String())
}

// appendSorted appends members in byte order. Each member is itself
// self-delimiting, so the order alone makes the encoding canonical.
func appendSorted(b []byte, members [][]byte) []byte {
	slices.SortFunc(members, bytes.Compare)
	for _, m := range members {
		b = append(b, m...)
	}
	return b
}

func appendBytes(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}
