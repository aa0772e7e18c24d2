package oauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// metadataServer serves a discovery document; gate, when set, holds each
// answer until it is closed.
type metadataServer struct {
	srv    *httptest.Server
	hits   atomic.Int64
	mu     sync.Mutex
	status int
	issuer string // "" means the server's own URL
	noJWKS bool   // leave jwks_uri out of the document
	gate   chan struct{}
	first  chan struct{} // closed when the first request arrives
	once   sync.Once
}

func newMetadataServer(t *testing.T) *metadataServer {
	t.Helper()
	m := &metadataServer{status: 200, first: make(chan struct{})}
	m.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		m.once.Do(func() { close(m.first) })
		m.mu.Lock()
		status, issuer, gate, noJWKS := m.status, m.issuer, m.gate, m.noJWKS
		m.mu.Unlock()
		if gate != nil {
			<-gate
		}
		if issuer == "" {
			issuer = m.srv.URL
		}
		w.WriteHeader(status)
		doc := Metadata{Issuer: issuer, TokenEndpoint: m.srv.URL + "/token", JWKSURI: m.srv.URL + "/jwks"}
		if noJWKS {
			doc.JWKSURI = ""
		}
		_ = json.NewEncoder(w).Encode(doc)
	}))
	t.Cleanup(m.srv.Close)
	return m
}

func TestDiscovery(t *testing.T) {
	m := newMetadataServer(t)
	d := NewDiscovery(m.srv.URL, m.srv.Client())
	doc, err := d.Metadata(context.Background())
	if err != nil || doc.TokenEndpoint != m.srv.URL+"/token" || doc.JWKSURI != m.srv.URL+"/jwks" {
		t.Fatalf("Metadata = %+v, %v", doc, err)
	}
	if _, err := d.Metadata(context.Background()); err != nil || m.hits.Load() != 1 {
		t.Errorf("a second call fetched again (%d fetches), err %v", m.hits.Load(), err)
	}
}

func TestDiscoveryFailureIsNotKept(t *testing.T) {
	m := newMetadataServer(t)
	m.status = 503
	d := NewDiscovery(m.srv.URL, m.srv.Client())
	var ue *UnavailableError
	if _, err := d.Metadata(context.Background()); !errors.As(err, &ue) || ue.Status != 503 {
		t.Fatalf("err = %v, want unavailable with status 503", err)
	}
	m.mu.Lock()
	m.status = 200
	m.mu.Unlock()
	if _, err := d.Metadata(context.Background()); err != nil {
		t.Errorf("after the server recovered: %v", err)
	}
}

// TestDiscoveryWithoutTheEndpoint: a document that lacks the endpoint a
// caller needs is not kept, so the issuer's fix is seen without a restart.
func TestDiscoveryWithoutTheEndpoint(t *testing.T) {
	m := newMetadataServer(t)
	m.noJWKS = true
	d := NewDiscovery(m.srv.URL, m.srv.Client())
	var me *MetadataError
	if _, err := d.JWKSURI(context.Background()); !errors.As(err, &me) || !strings.Contains(err.Error(), "no jwks_uri") {
		t.Fatalf("err = %v, want a metadata error naming jwks_uri", err)
	}
	m.mu.Lock()
	m.noJWKS = false
	m.mu.Unlock()
	if uri, err := d.JWKSURI(context.Background()); err != nil || uri != m.srv.URL+"/jwks" {
		t.Errorf("after the issuer published it: %q, %v", uri, err)
	}
	if ep, err := d.TokenEndpoint(context.Background()); err != nil || ep != m.srv.URL+"/token" {
		t.Errorf("token endpoint: %q, %v", ep, err)
	}
}

func TestDiscoveryIssuerMustMatch(t *testing.T) {
	m := newMetadataServer(t)
	m.issuer = "https://evil.example.com"
	var me *MetadataError
	if _, err := NewDiscovery(m.srv.URL, m.srv.Client()).Metadata(context.Background()); !errors.As(err, &me) || !strings.Contains(err.Error(), "does not equal") {
		t.Errorf("err = %v, want a metadata error", err)
	}
	// A trailing slash makes another issuer (OpenID Connect Discovery §4.3).
	m.issuer = ""
	if _, err := NewDiscovery(m.srv.URL+"/", m.srv.Client()).Metadata(context.Background()); !errors.As(err, &me) {
		t.Errorf("err = %v, want a metadata error for the slash", err)
	}
}

// TestDiscoveryShared: concurrent callers share one fetch, and one that
// gives up stops waiting without cancelling it for the others.
func TestDiscoveryShared(t *testing.T) {
	m := newMetadataServer(t)
	gate := make(chan struct{})
	m.gate = gate
	d := NewDiscovery(m.srv.URL, m.srv.Client())

	quitter, quit := context.WithCancel(context.Background())
	quitErr := make(chan error, 1)
	go func() { _, err := d.Metadata(quitter); quitErr <- err }()
	var wg sync.WaitGroup
	errs := make([]error, 10)
	for i := range errs {
		wg.Go(func() { _, errs[i] = d.Metadata(context.Background()) })
	}
	<-m.first // the one fetch is at the server
	quit()
	if err := <-quitErr; !errors.Is(err, context.Canceled) {
		t.Errorf("the caller that gave up: err = %v, want context.Canceled", err)
	}
	close(gate)
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("caller %d: %v", i, err)
		}
	}
	if n := m.hits.Load(); n != 1 {
		t.Errorf("%d fetches, want 1", n)
	}
}

func TestRetryAfter(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
	}{
		{"", 0},
		{"7", 7 * time.Second},
		{"0", 0},
		{"-3", 0},
		{"soon", 0},
		{"999999", time.Hour},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{now.Add(-time.Minute).Format(http.TimeFormat), 0},
		{now.Add(48 * time.Hour).Format(http.TimeFormat), time.Hour},
	}
	for _, tc := range tests {
		if got := RetryAfter(http.Header{"Retry-After": {tc.value}}, now); got != tc.want {
			t.Errorf("RetryAfter(%q) = %v, want %v", tc.value, got, tc.want)
		}
	}
}

func TestCheckURL(t *testing.T) {
	for s, ok := range map[string]bool{
		"https://idp.example.com/": true, "http://127.0.0.1:9400": true,
		"ftp://idp": false, "idp.example.com": false, "https://": false, "mailto:a@b": false, "": false,
	} {
		if err := CheckURL(s); (err == nil) != ok {
			t.Errorf("CheckURL(%q) = %v", s, err)
		}
	}
}

func TestNewClientRefuses(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"no endpoint", Options{Auth: ClientAuth{Method: AuthBasic, ClientID: "c", ClientSecret: "s"}}, "token endpoint"},
		{"relative endpoint", Options{TokenEndpoint: "/token", Auth: ClientAuth{Method: AuthBasic, ClientID: "c", ClientSecret: "s"}}, "absolute"},
		{"no client id", Options{TokenEndpoint: "https://idp/token", Auth: ClientAuth{Method: AuthBasic, ClientSecret: "s"}}, "client ID"},
		{"no secret", Options{TokenEndpoint: "https://idp/token", Auth: ClientAuth{Method: AuthPost, ClientID: "c"}}, "secret"},
		{"no key", Options{TokenEndpoint: "https://idp/token", Auth: ClientAuth{Method: AuthPrivateKeyJWT, ClientID: "c"}}, "private key"},
		{"unknown method", Options{TokenEndpoint: "https://idp/token", Auth: ClientAuth{Method: "client_secret_jwt", ClientID: "c"}}, "client_secret_jwt"},
		{"reserved extra", Options{TokenEndpoint: "https://idp/token", Auth: ClientAuth{Method: AuthBasic, ClientID: "c", ClientSecret: "s"},
			ExtraParams: map[string]string{"grant_type": "password"}}, "grant_type"},
	}
	for _, tc := range tests {
		if _, err := NewClient(tc.opts); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}
