package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"reflect"
	"strconv"
	"strings"

	"github.com/agnivade/levenshtein"
	"gopkg.in/yaml.v3"
)

// Load reads the config file at path and parses it with the process
// environment (see Parse). Every error names the file: a *ValidationError
// gets its File set, other errors are prefixed with path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// The PathError already names the file; keep only its cause so the
		// path is not printed twice. errors.Is(err, fs.ErrNotExist) still holds.
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	cfg, err := Parse(data, os.LookupEnv)
	if err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.File = path
			return nil, ve
		}
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// Parse decodes a config file's contents, gives every key the file leaves
// out its default, and validates the result. Problems with the file's
// contents come back together as a *ValidationError, each naming its field
// path; a YAML syntax error comes back as it is (it names a line).
//
// ${NAME} is looked up with lookupEnv and expanded inside scalar values only,
// after parsing, so a value can never add structure to the document whatever
// it contains. $${ is a literal ${. An unset variable is an error. An
// expanded plain (unquoted) scalar is typed from its new text, so
// max_body_bytes: ${LIMIT} is a number; string fields keep the text as is.
//
// A key written with a value, even 0 or "", keeps that value and is
// validated as written: defaults fill only what the file leaves out (or
// writes as null). Anchors and aliases work; merge keys (<<) are refused.
func Parse(data []byte, lookupEnv func(string) (string, bool)) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	d := &decoder{lookupEnv: lookupEnv, pos: map[string]position{}}
	cfg := Default()
	d.value(root, reflect.ValueOf(cfg).Elem(), "")
	if len(d.problems) > 0 {
		return nil, newValidationError(d.problems, d.pos)
	}
	cfg.normalize()
	if problems := cfg.check(); len(problems) > 0 {
		return nil, newValidationError(problems, d.pos)
	}
	return cfg, nil
}

// parseDocument parses data into a node tree. An empty file gives a null
// node, which decodes to all defaults.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, nil
		}
		return nil, err
	}
	// A second document would be ignored silently; refuse it. An empty one
	// (a trailing ---) is harmless.
	for {
		var next yaml.Node
		err := dec.Decode(&next)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(next.Content) > 0 && !isNull(next.Content[0]) {
			return nil, fmt.Errorf("line %d: a second YAML document; audgate reads exactly one, remove the extra ---", next.Line)
		}
	}
	if len(doc.Content) == 0 {
		return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null"}, nil
	}
	return doc.Content[0], nil
}

// position is where a field is written in the file, for sorting problems.
type position struct{ line, col int }

// decoder walks the node tree and the Go types side by side, so that every
// problem it finds can name the field path: yaml.v3's own errors name only a
// line.
type decoder struct {
	lookupEnv func(string) (string, bool)
	pos       map[string]position // field path → where the file writes it
	problems  []problem
}

func (d *decoder) fail(path, format string, args ...any) {
	d.problems = append(d.problems, problem{path, fmt.Sprintf(format, args...)})
}

// at records where path is written; the first occurrence wins.
func (d *decoder) at(path string, n *yaml.Node) {
	if _, ok := d.pos[path]; !ok {
		d.pos[path] = position{n.Line, n.Column}
	}
}

var durationType = reflect.TypeFor[Duration]()

// value decodes n into v, dispatching on v's type.
func (d *decoder) value(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if isNull(n) {
		return // null is the same as leaving the value out: v keeps its default
	}
	switch {
	case v.Type() == durationType:
		d.scalar(n, v, path)
	case v.Kind() == reflect.Struct:
		d.mapping(n, v, path)
	case v.Kind() == reflect.Slice:
		d.sequence(n, v, path)
	case v.Kind() == reflect.Map:
		d.freeForm(n, v, path)
	case v.Kind() == reflect.Pointer:
		// An optional section: written, it starts from its defaults.
		if v.IsNil() {
			p := reflect.New(v.Type().Elem())
			p.Elem().Set(d.elementDefault(v.Type().Elem(), n))
			v.Set(p)
		}
		d.value(n, v.Elem(), path)
	default:
		d.scalar(n, v, path)
	}
}

func isNull(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// mapping decodes a mapping into a struct by its yaml tags, refusing unknown
// and repeated keys. v holds the defaults, which the keys left out keep.
func (d *decoder) mapping(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "expected a mapping of keys to values, got %s", describe(n))
		return
	}
	names := yamlNames(v.Type())
	seen := map[string]int{} // key → line
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode {
			k = k.Alias
		}
		if k.Kind != yaml.ScalarNode {
			d.fail(path, "line %d: a key must be a plain name, not %s", k.Line, describe(k))
			continue
		}
		p := join(path, k.Value)
		d.at(p, n.Content[i])
		if k.Value == "<<" && k.ShortTag() == "!!merge" {
			d.fail(p, "YAML merge keys are not supported; write the keys out")
			continue
		}
		if line, dup := seen[k.Value]; dup {
			d.fail(p, "written twice (lines %d and %d); keep one", line, k.Line)
			continue
		}
		seen[k.Value] = k.Line
		idx := indexOf(names, k.Value)
		if idx < 0 {
			d.fail(p, "%s", unknownKey(k.Value, path, names))
			continue
		}
		d.value(val, v.Field(idx), p)
	}
}

func resolveAlias(n *yaml.Node) *yaml.Node {
	if n.Kind == yaml.AliasNode {
		return n.Alias
	}
	return n
}

// sequence decodes a YAML list into a slice.
func (d *decoder) sequence(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.fail(path, "expected a list, got %s; write [a, b] or one \"- item\" per line", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, i)
		d.at(p, item)
		s.Index(i).Set(d.elementDefault(s.Index(i).Type(), item))
		d.value(item, s.Index(i), p)
	}
	v.Set(s)
}

// elementDefault is what a list entry of type t, written as n, starts
// from: a token source's defaults depend on its type, read from n.
func (d *decoder) elementDefault(t reflect.Type, n *yaml.Node) reflect.Value {
	var def any
	switch t {
	case reflect.TypeFor[Issuer]():
		def = DefaultIssuer()
	case reflect.TypeFor[Upstream]():
		def = DefaultUpstream()
	case reflect.TypeFor[TokenSource]():
		def = DefaultTokenSource(d.peek(n, "type"))
	case reflect.TypeFor[ServerTLS]():
		def = ServerTLS{MinVersion: defaultTLSMinVersion, ClientAuth: defaultClientAuth}
	default:
		return reflect.Zero(t)
	}
	return reflect.ValueOf(def)
}

// peek returns the scalar value of key in the mapping n, expanded, or "".
// Errors are left for the decoding of n to report.
func (d *decoder) peek(n *yaml.Node, key string) string {
	n = resolveAlias(n)
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if k, val := resolveAlias(n.Content[i]), resolveAlias(n.Content[i+1]); k.Value == key && val.Kind == yaml.ScalarNode && !isNull(val) {
			text, err := expand(val.Value, d.lookupEnv)
			if err != nil {
				return ""
			}
			return text
		}
	}
	return ""
}

// scalar decodes one value with yaml.v3's own rules (and Duration's
// UnmarshalYAML), after expanding ${NAME} in it.
func (d *decoder) scalar(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.ScalarNode {
		d.fail(path, "expected a single value, got %s", describe(n))
		return
	}
	text, err := expand(n.Value, d.lookupEnv)
	if err != nil {
		d.fail(path, "%v", err)
		return
	}
	expanded := text != n.Value
	if expanded && v.Kind() == reflect.String {
		// The text is the value, whatever it looks like ("null", "0123",
		// "a: {b"): a secret must arrive exactly as the environment holds it.
		v.SetString(text)
		return
	}
	// Decode a copy: an anchored node may be reached again through an alias,
	// and the tree must stay as the file wrote it.
	c := *n
	if expanded {
		c.Value = text
		if c.Style == 0 {
			c.Tag = "" // plain scalars are typed from their new text
		}
	}
	if err := c.Decode(v.Addr().Interface()); err != nil {
		d.fail(path, "%s", decodeMessage(err, &c, v.Kind()))
	}
}

// decodeMessage rewords yaml.v3's type errors, which name a line and a Go
// type, into what the field needs. Duration's own errors pass through.
func decodeMessage(err error, n *yaml.Node, k reflect.Kind) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	want, unquotedOK := "an integer", false
	if k == reflect.Bool {
		want = "true or false"
		_, perr := strconv.ParseBool(n.Value)
		unquotedOK = perr == nil
	} else {
		_, perr := strconv.ParseInt(n.Value, 10, 64)
		unquotedOK = perr == nil
	}
	msg := fmt.Sprintf("%q is not %s", n.Value, want)
	if unquotedOK && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) != 0 {
		msg += "; write it without quotes"
	}
	return msg
}

// freeForm decodes a subtree audgate does not interpret (policy.opa): any
// keys are accepted, and ${NAME} is expanded in its values.
func (d *decoder) freeForm(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.fail(path, "expected a mapping of keys to values, got %s", describe(n))
		return
	}
	before := len(d.problems)
	c := d.expandTree(n, path, map[*yaml.Node]*yaml.Node{})
	if len(d.problems) > before {
		return
	}
	if err := c.Decode(v.Addr().Interface()); err != nil {
		d.fail(path, "%s", strings.TrimPrefix(err.Error(), "yaml: "))
	}
}

// expandTree copies n with ${NAME} expanded in every scalar value; keys stay
// as written. memo maps each node to its copy, so an anchor reached through
// several aliases is expanded once and the copy keeps the aliases: nested
// aliases cost no more than the file's size, and a cycle ends.
func (d *decoder) expandTree(n *yaml.Node, path string, memo map[*yaml.Node]*yaml.Node) *yaml.Node {
	if c, ok := memo[n]; ok {
		return c
	}
	c := *n
	memo[n] = &c
	switch n.Kind {
	case yaml.ScalarNode:
		text, err := expand(n.Value, d.lookupEnv)
		switch {
		case err != nil:
			d.fail(path, "%v", err)
		case text != n.Value:
			c.Value = text
			if c.Style == 0 {
				c.Tag = ""
			}
		}
	case yaml.AliasNode:
		c.Alias = d.expandTree(n.Alias, path, memo)
	case yaml.MappingNode:
		c.Content = make([]*yaml.Node, len(n.Content))
		for i := 0; i+1 < len(n.Content); i += 2 {
			c.Content[i] = n.Content[i]
			c.Content[i+1] = d.expandTree(n.Content[i+1], join(path, n.Content[i].Value), memo)
		}
	case yaml.SequenceNode:
		c.Content = make([]*yaml.Node, len(n.Content))
		for i, item := range n.Content {
			c.Content[i] = d.expandTree(item, fmt.Sprintf("%s[%d]", path, i), memo)
		}
	}
	return &c
}

// yamlNames lists a struct's yaml keys in field order.
func yamlNames(t reflect.Type) []string {
	names := make([]string, t.NumField())
	for i := range names {
		tag, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		names[i] = tag
	}
	return names
}

func indexOf(names []string, name string) int {
	for i, n := range names {
		if n == name {
			return i
		}
	}
	return -1
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "an alias"
}

// unknownKey explains an unknown key and lists the keys known at its level.
func unknownKey(key, parent string, known []string) string {
	msg := "unknown key"
	if s := closest(key, known); s != "" {
		msg += fmt.Sprintf(" (did you mean %s?)", s)
	}
	where := "at the top level"
	if parent != "" {
		where = "in " + parent
	}
	return fmt.Sprintf("%s; the keys known %s are: %s", msg, where, strings.Join(known, ", "))
}

// closest returns the known key most like key, or "" when none is close:
// a typo (edit distance ≤ 2) or a shortened name (secret → client_secret).
func closest(key string, known []string) string {
	best, bestDist := "", 3
	for _, k := range known {
		if dist := levenshtein.ComputeDistance(key, k); dist < bestDist {
			best, bestDist = k, dist
		}
	}
	if best == "" && len(key) >= 4 {
		for _, k := range known {
			if strings.Contains(k, key) {
				return k
			}
		}
	}
	return best
}

// expand replaces each ${NAME} in s with lookupEnv(NAME); $${ is a literal
// ${. What a variable holds is not expanded again.
func expand(s string, lookupEnv func(string) (string, bool)) (string, error) {
	if !strings.Contains(s, "${") {
		return s, nil
	}
	var b strings.Builder
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			b.WriteString(s)
			return b.String(), nil
		}
		if i > 0 && s[i-1] == '$' {
			b.WriteString(s[:i-1])
			b.WriteString("${")
			s = s[i+2:]
			continue
		}
		b.WriteString(s[:i])
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", errors.New("a ${ has no closing }; write ${NAME}, or $${ for a literal ${")
		}
		name := s[i+2 : i+2+end]
		if !isEnvName(name) {
			return "", fmt.Errorf("${%s}: %q is not an environment variable name; use letters, digits and _ (write $${ for a literal ${)", name, name)
		}
		val, ok := lookupEnv(name)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", name)
		}
		b.WriteString(val)
		s = s[i+2+end+1:]
	}
}

func isEnvName(s string) bool {
	if s == "" || s[0] >= '0' && s[0] <= '9' {
		return false
	}
	for _, r := range s {
		if r != '_' && (r < 'A' || r > 'Z') && (r < 'a' || r > 'z') && (r < '0' || r > '9') {
			return false
		}
	}
	return true
}
