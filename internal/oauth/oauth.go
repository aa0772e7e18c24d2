// Package oauth is a small OAuth 2.0 client for a token endpoint and an
// issuer's metadata, with no knowledge of what the tokens are for:
// OpenID Connect Discovery 1.0 and RFC 8414 metadata, client
// authentication (RFC 6749 §2.3.1 client_secret_basic and
// client_secret_post; RFC 7523 §2.2 private_key_jwt, with Microsoft's
// certificate thumbprint form), token requests (RFC 6749 §4.4 and §5,
// RFC 8693 §2, RFC 7523 §2.1) and their answers, read within a size bound.
//
// Every answer comes back as a *Token, an *Error (the server's OAuth error
// code, RFC 6749 §5.2: it understood the request and refused it), an
// *UnavailableError (no usable answer: unreachable, 5xx, 429, timeout,
// malformed), or a *MetadataError (the issuer's metadata contradicts the
// configuration). It is modelled on x/oauth2's internal stsexchange
// package, with one reading of answers for every grant.
package oauth

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// MaxBody bounds every document and answer read from a server, in bytes.
// A larger one is an *UnavailableError, never silently cut.
const MaxBody = 1 << 20

// maxRetryAfter caps a server's Retry-After.
const maxRetryAfter = time.Hour

// Error is a server's OAuth error answer (RFC 6749 §5.2, RFC 8693
// §2.2.2): it understood the request and refused it.
type Error struct {
	// Code is the error code, e.g. invalid_grant, invalid_target.
	Code string
	// Description is the server's error_description, bounded and with
	// control characters replaced, for logs.
	Description string
	// Status is the HTTP status of the answer.
	Status int
}

func (e *Error) Error() string {
	msg := "refused: " + e.Code
	if e.Description != "" {
		msg += ": " + e.Description
	}
	return msg
}

// UnavailableError means no usable answer came from the server.
type UnavailableError struct {
	// Reason says what went wrong, e.g. "token endpoint answered 503".
	Reason string
	// Status is the HTTP status of the answer; 0 when there was none.
	Status int
	// RetryAfter is the server's Retry-After; 0 when it sent none.
	RetryAfter time.Duration
	// Err is the cause, if any.
	Err error
}

func (e *UnavailableError) Error() string {
	msg := "oauth: unavailable: " + e.Reason
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

func (e *UnavailableError) Unwrap() error { return e.Err }

func unavailable(reason string, err error) *UnavailableError {
	return &UnavailableError{Reason: reason, Err: err}
}

// MetadataError means an issuer's metadata was read but contradicts the
// configuration (another issuer, an endpoint that is not a URL): asking
// again will not help, the configuration must change.
type MetadataError struct {
	// URL is the metadata document's address.
	URL string
	// Reason says what is wrong.
	Reason string
}

func (e *MetadataError) Error() string { return "oauth: metadata " + e.URL + ": " + e.Reason }

// CheckURL reports whether s is an absolute http or https URL with a host,
// as every endpoint and issuer must be.
func CheckURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL: %w", s, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.Opaque != "" {
		return fmt.Errorf("%q is not an absolute http or https URL", s)
	}
	return nil
}

// RetryAfter reads a Retry-After header (RFC 9110 §10.2.3), in seconds or
// as an HTTP date, relative to now. Absent, malformed or past: 0; more
// than an hour is read as an hour.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	var d time.Duration
	if s, err := strconv.ParseInt(v, 10, 64); err == nil {
		if s <= 0 {
			return 0
		}
		d = time.Duration(min(s, int64(maxRetryAfter/time.Second))) * time.Second
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now).Round(time.Second)
	}
	return max(0, min(d, maxRetryAfter))
}

// readBody reads at most MaxBody bytes; a longer body is an error.
func readBody(r io.Reader) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBody+1))
	if err != nil {
		return nil, err
	}
	if len(body) > MaxBody {
		return nil, fmt.Errorf("larger than %d bytes", MaxBody)
	}
	return body, nil
}

// GetJSON fetches a JSON document (a discovery document, a JWKS): 200
// only, at most MaxBody bytes. ctx bounds the request.
func GetJSON(ctx context.Context, client *http.Client, u string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, unavailable("GET "+u, err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, unavailable("GET "+u, stripURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, &UnavailableError{Reason: "GET " + u + ": " + resp.Status, Status: resp.StatusCode,
			RetryAfter: RetryAfter(resp.Header, time.Now())}
	}
	body, err := readBody(resp.Body)
	if err != nil {
		return nil, unavailable("GET "+u, err)
	}
	return body, nil
}

// stripURLError drops the *url.Error wrapper, which repeats the method and
// URL the caller already names.
func stripURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// LogSafe bounds text a server sent that goes to logs: at most max bytes,
// control characters replaced by spaces.
func LogSafe(s string, max int) string {
	if len(s) > max {
		s = s[:max] + "..."
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}
