package gateway

import (
	"errors"
	"net/url"
	"strings"
	"unicode/utf8"
)

// Why a path is not canonical; safe to show to the client.
var (
	errPathForm     = errors.New("request target must be an absolute path")
	errEmptySegment = errors.New("path has an empty segment (//)")
	errDotSegment   = errors.New("path has a dot segment (. or ..)")
	errBackslash    = errors.New("path has a backslash")
	errControl      = errors.New("path has a control character")
	errEncodedSep   = errors.New("path has an encoded slash, backslash, dot or control character")
	errBadEscape    = errors.New("path has a malformed percent-encoding")
	errNeedlessEsc  = errors.New("path percent-encodes a character that needs no encoding (a letter, digit, -, _ or ~)")
	errDoubleEsc    = errors.New("path has an encoded percent sign (double encoding)")
	errSemicolon    = errors.New("path has a semicolon (;), which servers read differently (Java drops ;parameters)")
	errBadUTF8      = errors.New("path is not valid UTF-8 once decoded")
)

// checkCanonical refuses a request path that different servers could read
// differently, so that what the router and the policy see is what the
// upstream receives: empty segments, dot segments, semicolons raw or
// encoded (Java servers drop ;parameters: /orders/admin;x is
// /orders/admin there), backslashes, encoded slashes, dots or percent
// signs, needlessly encoded letters and digits (/orders/%61dmin would
// route apart from /orders/admin, which the upstream reads it as),
// control characters raw or encoded, and invalid UTF-8. The rules follow
// Spring Security's StrictHttpFirewall. rawPath is the path part of the
// request target, as sent.
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
		case c == ';':
			return errSemicolon
		case c == '%':
			if i+2 >= len(rawPath) || !isHex(rawPath[i+1]) || !isHex(rawPath[i+2]) {
				return errBadEscape
			}
			d := unhex(rawPath[i+1])<<4 | unhex(rawPath[i+2])
			switch {
			case d == '/' || d == '\\' || d == '.' || d < 0x20 || d == 0x7f:
				return errEncodedSep
			case d == '%':
				return errDoubleEsc
			case d == ';':
				return errSemicolon
			case isUnreserved(d):
				return errNeedlessEsc
			}
			i += 2
		}
	}
	if err := checkSegments(rawPath); err != nil {
		return err
	}
	decoded, err := url.PathUnescape(rawPath)
	if err != nil {
		return errBadEscape
	}
	if !utf8.ValidString(decoded) {
		return errBadUTF8
	}
	return nil
}

// checkSegments refuses empty and dot segments.
func checkSegments(p string) error {
	rest := p[1:]
	for rest != "" {
		seg, tail, more := strings.Cut(rest, "/")
		if seg == "" && more {
			return errEmptySegment
		}
		if seg == "." || seg == ".." {
			return errDotSegment
		}
		rest = tail
	}
	return nil
}

// isUnreserved reports whether c is an RFC 3986 §2.3 unreserved character,
// which a canonical URI never percent-encodes.
func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
		c == '-' || c == '.' || c == '_' || c == '~'
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
