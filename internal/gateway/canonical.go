package gateway

import (
	"errors"
	"strings"
)

// errNotCanonical reasons are safe to show to the client.
var (
	errPathForm     = errors.New("request target must be an absolute path")
	errEmptySegment = errors.New("path has an empty segment (//)")
	errDotSegment   = errors.New("path has a dot segment (. or ..)")
	errBackslash    = errors.New("path has a backslash")
	errControl      = errors.New("path has a control character")
	errEncodedSep   = errors.New("path has an encoded slash, backslash, dot or control character")
	errBadEscape    = errors.New("path has a malformed percent-encoding")
)

// checkCanonical refuses a request path that different servers could read
// differently, so that what the policy sees is exactly what the upstream
// receives: empty segments, dot segments (raw, percent-encoded, or with
// ;parameters as Java servers read them), backslashes, encoded slashes or
// dots, and control characters raw or encoded. rawPath is the path part of
// the request target, as sent.
func checkCanonical(rawPath string) error {
	if !strings.HasPrefix(rawPath, "/") {
		return errPathForm
	}
	for i := 0; i < len(rawPath); i++ {
		c := rawPath[i]
		switch {
		case c < 0x20 || c == 0x7f:
			return errControl
		case c == '\\':
			return errBackslash
		case c == '%':
			if i+2 >= len(rawPath) || !isHex(rawPath[i+1]) || !isHex(rawPath[i+2]) {
				return errBadEscape
			}
			d := unhex(rawPath[i+1])<<4 | unhex(rawPath[i+2])
			if d == '/' || d == '\\' || d == '.' || d < 0x20 || d == 0x7f {
				return errEncodedSep
			}
			i += 2
		}
	}
	rest := rawPath[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" && more {
			return errEmptySegment
		}
		if name, _, _ := strings.Cut(seg, ";"); name == "." || name == ".." {
			return errDotSegment
		}
		rest = tail
	}
	return nil
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// requestPath returns the path part of a request target.
func requestPath(requestURI string) string {
	p, _, _ := strings.Cut(requestURI, "?")
	return p
}
