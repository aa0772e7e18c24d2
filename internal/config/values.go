package config

import (
	"encoding"
	"fmt"
	"time"

	"gopkg.in/yaml.v3"
)

var (
	_ yaml.Unmarshaler       = (*Duration)(nil)
	_ yaml.Marshaler         = Duration(0)
	_ fmt.Stringer           = Duration(0)
	_ fmt.Formatter          = Secret("")
	_ encoding.TextMarshaler = Secret("")
)

// UnmarshalYAML accepts a Go duration string ("30s", "1m30s", "0s") or a
// bare 0. Any other bare number is refused: "10" could mean seconds or
// nanoseconds, so the unit must be written.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("expected a duration such as 30s, got %s", describe(n))
	}
	s := n.Value
	if isBareNumber(s) {
		if isZeroNumber(s) {
			*d = 0
			return nil
		}
		return fmt.Errorf("%s has no unit; write a unit, e.g. %ss or %sms", s, s, s)
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration; write a Go duration such as 30s, 5m or 1h30m", s)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes d as a Go duration string, the form UnmarshalYAML reads.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// String formats d as a Go duration ("1m30s").
func (d Duration) String() string { return time.Duration(d).String() }

// isBareNumber reports whether s is a decimal number without a unit: an
// optional sign, digits, at most one point.
func isBareNumber(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	digits, points := 0, 0
	for _, r := range s {
		switch {
		case r >= '0' && r <= '9':
			digits++
		case r == '.':
			points++
		default:
			return false
		}
	}
	return digits > 0 && points <= 1
}

// isZeroNumber reports whether the bare number s is zero ("0", "-0", "0.00").
func isZeroNumber(s string) bool {
	for _, r := range s {
		if r >= '1' && r <= '9' {
			return false
		}
	}
	return true
}

// Format prints "[redacted]" for every verb, so that no format (%d, %x, %#v,
// or a bad verb, which fmt would print raw) shows the secret.
func (s Secret) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), s.String())
}

// MarshalText hides the value from encoding/json, YAML and log/slog, which
// would otherwise print a string type as it is.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
