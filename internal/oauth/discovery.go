package oauth

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"
)

// Metadata is what this client reads of an issuer's discovery document
// (OpenID Connect Discovery 1.0 §3, RFC 8414 §2).
type Metadata struct {
	Issuer        string `json:"issuer"`
	TokenEndpoint string `json:"token_endpoint"`
	JWKSURI       string `json:"jwks_uri"`
}

// DefaultDiscoveryTimeout bounds one fetch of a discovery document.
const DefaultDiscoveryTimeout = 10 * time.Second

// Discovery fetches one issuer's metadata from
// <issuer>/.well-known/openid-configuration and keeps it once a fetch
// succeeds; a failure is not kept, so the next call tries again.
// Concurrent callers share one fetch, which runs under its own timeout
// rather than any caller's context: a caller that gives up stops waiting
// and leaves the fetch to the others. It is safe for concurrent use.
type Discovery struct {
	issuer  string
	client  *http.Client
	timeout time.Duration
	group   singleflight.Group
	doc     atomic.Pointer[Metadata]
}

// NewDiscovery returns a Discovery for issuer, fetching with client
// (http.DefaultClient if nil).
func NewDiscovery(issuer string, client *http.Client) *Discovery {
	if client == nil {
		client = http.DefaultClient
	}
	return &Discovery{issuer: issuer, client: client, timeout: DefaultDiscoveryTimeout}
}

// Issuer returns the issuer whose metadata this is.
func (d *Discovery) Issuer() string { return d.issuer }

// URL returns the discovery document's address.
func (d *Discovery) URL() string {
	return strings.TrimSuffix(d.issuer, "/") + "/.well-known/openid-configuration"
}

// Metadata returns the issuer's metadata, fetching it on first use. The
// document's issuer must equal the configured one exactly (OpenID Connect
// Discovery 1.0 §4.3), or a document could point to someone else's keys
// and endpoints; its endpoints, when present, must be absolute http(s)
// URLs. Errors are *UnavailableError or *MetadataError.
func (d *Discovery) Metadata(ctx context.Context) (*Metadata, error) {
	if doc := d.doc.Load(); doc != nil {
		return doc, nil
	}
	ch := d.group.DoChan("", func() (any, error) {
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), d.timeout)
		defer cancel()
		doc, err := d.fetch(fctx)
		if err != nil {
			return nil, err
		}
		d.doc.Store(doc)
		return doc, nil
	})
	select {
	case <-ctx.Done():
		return nil, unavailable("discovery "+d.URL(), ctx.Err())
	case r := <-ch:
		if r.Err != nil {
			return nil, r.Err
		}
		return r.Val.(*Metadata), nil
	}
}

// TokenEndpoint returns the issuer's token_endpoint.
func (d *Discovery) TokenEndpoint(ctx context.Context) (string, error) {
	return d.endpoint(ctx, "token_endpoint", func(m *Metadata) string { return m.TokenEndpoint })
}

// JWKSURI returns the issuer's jwks_uri.
func (d *Discovery) JWKSURI(ctx context.Context) (string, error) {
	return d.endpoint(ctx, "jwks_uri", func(m *Metadata) string { return m.JWKSURI })
}

// endpoint returns one endpoint of the metadata. A document that lacks it
// is not kept: the issuer may publish it later, and the next call fetches
// the document again.
func (d *Discovery) endpoint(ctx context.Context, name string, get func(*Metadata) string) (string, error) {
	doc, err := d.Metadata(ctx)
	if err != nil {
		return "", err
	}
	if v := get(doc); v != "" {
		return v, nil
	}
	d.doc.CompareAndSwap(doc, nil)
	return "", &MetadataError{URL: d.URL(), Reason: "no " + name + "; configure it, or publish it in the document"}
}

func (d *Discovery) fetch(ctx context.Context) (*Metadata, error) {
	u := d.URL()
	body, err := GetJSON(ctx, d.client, u)
	if err != nil {
		return nil, err
	}
	var doc Metadata
	if err := json.Unmarshal(body, &doc); err != nil {
		return nil, unavailable("discovery "+u+": not a JSON metadata document", err)
	}
	if doc.Issuer != d.issuer {
		return nil, &MetadataError{URL: u, Reason: "issuer " + quoteSafe(doc.Issuer) + " does not equal the configured issuer " + quoteSafe(d.issuer)}
	}
	for name, v := range map[string]string{"token_endpoint": doc.TokenEndpoint, "jwks_uri": doc.JWKSURI} {
		if v == "" {
			continue
		}
		if err := CheckURL(v); err != nil {
			return nil, &MetadataError{URL: u, Reason: name + ": " + LogSafe(err.Error(), 300)}
		}
	}
	return &doc, nil
}

func quoteSafe(s string) string { return `"` + LogSafe(s, 256) + `"` }
