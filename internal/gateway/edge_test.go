package gateway

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// seePolicy allows every request and shows the upstream, in X-Seen, the
// request part of the input the policy saw.
const seePolicy = `decision := {
	"allow": true,
	"audience": "https://orders.test",
	"headers": {"X-Seen": base64url.encode_no_pad(json.marshal(input.request))},
}`

// seenRequest is input.request as the policy saw it.
type seenRequest struct {
	Headers  map[string]string `json:"headers"`
	Scheme   string            `json:"scheme"`
	Protocol string            `json:"protocol"`
	RemoteIP string            `json:"remote_ip"`
	ClientIP string            `json:"client_ip"`
	TLS      *struct {
		Version           string `json:"version"`
		ClientCertificate *struct {
			Subject           string   `json:"subject"`
			Issuer            string   `json:"issuer"`
			Serial            string   `json:"serial"`
			DNSNames          []string `json:"dns_names"`
			URIs              []string `json:"uris"`
			Emails            []string `json:"emails"`
			FingerprintSHA256 string   `json:"fingerprint_sha256"`
			NotAfter          int64    `json:"not_after"`
		} `json:"client_certificate"`
	} `json:"tls"`
}

func seen(t *testing.T, h http.Header) seenRequest {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(h.Get("X-Seen"))
	if err != nil {
		t.Fatalf("X-Seen: %v", err)
	}
	var s seenRequest
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatalf("X-Seen: %v: %s", err, raw)
	}
	return s
}

// testPKI is a CA that issues server and client certificates.
type testPKI struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pem  []byte
}

func newTestPKI(t testing.TB, name string) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testPKI{cert: cert, key: key, pem: pemBlock(t, "CERTIFICATE", der)}
}

func pemBlock(t testing.TB, typ string, der []byte) []byte {
	t.Helper()
	return []byte("-----BEGIN " + typ + "-----\n" + base64.StdEncoding.EncodeToString(der) + "\n-----END " + typ + "-----\n")
}

func (p *testPKI) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.cert)
	return pool
}

// newClientCA is a CA for client certificates and the file that holds
// it, for server.tls.client_ca_file.
func newClientCA(t testing.TB) (*testPKI, string) {
	t.Helper()
	ca := newTestPKI(t, "client CA")
	path := filepath.Join(t.TempDir(), "ca.pem")
	writeFile(t, path, ca.pem)
	return ca, path
}

// issued is a leaf certificate and its key, as PEM and as a tls pair.
type issued struct {
	certPEM, keyPEM []byte
	der             []byte
	pair            tls.Certificate
}

// issue makes a leaf: a server certificate for 127.0.0.1 when uri is
// empty, else a client certificate with uri as its URI SAN.
func (p *testPKI) issue(t testing.TB, serial int64, uri string) issued {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: fmt.Sprintf("leaf-%d", serial)},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour).Truncate(time.Second),
		KeyUsage: x509.KeyUsageDigitalSignature}
	if uri == "" {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		tmpl.DNSNames = []string{"localhost"}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
		u, _ := url.Parse(uri)
		tmpl.URIs = []*url.URL{u}
		tmpl.EmailAddresses = []string{"worker@acme.test"}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.cert, &key.PublicKey, p.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalECPrivateKey(key)
	out := issued{certPEM: pemBlock(t, "CERTIFICATE", der), keyPEM: pemBlock(t, "EC PRIVATE KEY", kder), der: der}
	if out.pair, err = tls.X509KeyPair(out.certPEM, out.keyPEM); err != nil {
		t.Fatal(err)
	}
	return out
}

// writeFile replaces path's content in place, as a rotation does.
func writeFile(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// tlsEnv is a gateway serving TLS as run serves it.
type tlsEnv struct {
	*env
	url      string
	pki      *testPKI
	certFile string
	keyFile  string
}

// newTLSEnv serves the gateway over TLS with a certificate from a new CA
// (serial 100); tlsYAML is added under server.tls.
func newTLSEnv(t testing.TB, tlsYAML string, edit func(string) string) *tlsEnv {
	t.Helper()
	pki := newTestPKI(t, "server CA")
	dir := t.TempDir()
	te := &tlsEnv{pki: pki, certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key")}
	leaf := pki.issue(t, 100, "")
	writeFile(t, te.certFile, leaf.certPEM)
	writeFile(t, te.keyFile, leaf.keyPEM)
	te.env = newEnvWith(t, func(doc string) string {
		doc = strings.Replace(doc, "server:\n", fmt.Sprintf("server:\n  tls: {cert_file: %s, key_file: %s%s}\n", te.certFile, te.keyFile, tlsYAML), 1)
		if edit != nil {
			doc = edit(doc)
		}
		return doc
	}, Options{CertWatchInterval: 20 * time.Millisecond})
	srv := te.gw.Server()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.ServeTLS(ln, "", "") }()
	t.Cleanup(func() { _ = srv.Close() })
	te.url = "https://" + ln.Addr().String()
	return te
}

// client is an HTTPS client that trusts the server CA, offers HTTP/2
// when h2, and presents cert when given. Each call of client dials anew.
func (te *tlsEnv) client(t testing.TB, h2 bool, cert *tls.Certificate, maxVersion uint16) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: te.pki.pool(), MaxVersion: maxVersion}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: h2, DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func (te *tlsEnv) get(t *testing.T, c *http.Client, token string) (*http.Response, error) {
	t.Helper()
	req, _ := http.NewRequest("GET", te.url+"/orders/1", nil)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err == nil {
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// serverSerial is the serial of the certificate a new connection gets.
func (te *tlsEnv) serverSerial(t *testing.T) int64 {
	t.Helper()
	conn, err := tls.Dial("tcp", strings.TrimPrefix(te.url, "https://"), &tls.Config{RootCAs: te.pki.pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].SerialNumber.Int64()
}

func TestTLSListener(t *testing.T) {
	te := newTLSEnv(t, "", withPolicy(t, seePolicy))
	token := te.issuer.mint(t, nil)
	for _, tc := range []struct {
		h2        bool
		wantProto string
	}{{true, "HTTP/2.0"}, {false, "HTTP/1.1"}} {
		resp, err := te.get(t, te.client(t, tc.h2, nil, 0), token)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 200 || resp.Proto != tc.wantProto {
			t.Fatalf("status %d over %s, want 200 over %s", resp.StatusCode, resp.Proto, tc.wantProto)
		}
		got := te.upstream.requests()
		s := seen(t, got[len(got)-1].Header)
		if s.Scheme != "https" || s.Protocol != tc.wantProto || s.TLS == nil || s.TLS.Version != "1.3" || s.TLS.ClientCertificate != nil {
			t.Errorf("policy saw scheme %q protocol %q tls %+v", s.Scheme, s.Protocol, s.TLS)
		}
		if p := got[len(got)-1].Header.Get("X-Forwarded-Proto"); p != "https" {
			t.Errorf("X-Forwarded-Proto = %q", p)
		}
	}

	// Rotation: both files overwritten in place; a new connection gets the
	// new certificate without a restart.
	next := te.pki.issue(t, 101, "")
	writeFile(t, te.certFile, next.certPEM)
	writeFile(t, te.keyFile, next.keyPEM)
	waitUntil(t, 5*time.Second, "the rotated certificate is served", func() bool { return te.serverSerial(t) == 101 })

	// A broken replacement keeps the last good certificate and says why.
	writeFile(t, te.certFile, []byte("not a certificate"))
	waitUntil(t, 5*time.Second, "the broken certificate is reported", func() bool {
		return strings.Contains(te.logs.String(), "TLS certificate not reloaded")
	})
	if s := te.serverSerial(t); s != 101 {
		t.Errorf("after a broken replacement the server presents serial %d, want 101", s)
	}
	if resp, err := te.get(t, te.client(t, true, nil, 0), token); err != nil || resp.StatusCode != 200 {
		t.Errorf("after a broken replacement: %v", err)
	}
}

func TestTLSMinVersion(t *testing.T) {
	te := newTLSEnv(t, `, min_version: "1.3"`, nil)
	token := te.issuer.mint(t, nil)
	if _, err := te.get(t, te.client(t, false, nil, tls.VersionTLS12), token); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("a TLS 1.2 client: err = %v, want a protocol version alert", err)
	}
	if resp, err := te.get(t, te.client(t, false, nil, tls.VersionTLS13), token); err != nil || resp.StatusCode != 200 {
		t.Errorf("a TLS 1.3 client: %v", err)
	}
	if n := len(te.upstream.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want 1", n)
	}
}

// TestMutualTLS: with client_auth require, no certificate, no request; a
// verified certificate's SPIFFE ID reaches the policy, which allows one
// SPIFFE ID and not another from the same CA; the token is still needed.
func TestMutualTLS(t *testing.T) {
	clients, caFile := newClientCA(t)
	const worker = "spiffe://acme.test/ns/billing/sa/worker"
	te := newTLSEnv(t, ", client_ca_file: "+caFile+", client_auth: require", withPolicy(t, `
default decision := {"allow": false, "reason": "not the billing worker"}

decision := {
	"allow": true,
	"audience": "https://orders.test",
	"headers": {"X-Seen": base64url.encode_no_pad(json.marshal(input.request))},
} if {
	"`+worker+`" in input.request.tls.client_certificate.uris
}`))
	token := te.issuer.mint(t, nil)

	if _, err := te.get(t, te.client(t, true, nil, 0), token); err == nil {
		t.Error("no client certificate: the request went through")
	}
	stranger := newTestPKI(t, "another CA").issue(t, 7, worker)
	if _, err := te.get(t, te.client(t, true, &stranger.pair, 0), token); err == nil {
		t.Error("a certificate from another CA: the request went through")
	}
	if n := len(te.upstream.requests()); n != 0 {
		t.Fatalf("upstream got %d requests", n)
	}

	good := clients.issue(t, 0x1f3a, worker)
	resp, err := te.get(t, te.client(t, true, &good.pair, 0), token)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("the billing worker: %v %v", resp, err)
	}
	c := seen(t, te.upstream.requests()[0].Header).TLS.ClientCertificate
	sum := sha256.Sum256(good.der)
	leaf, _ := x509.ParseCertificate(good.der)
	switch {
	case c == nil:
		t.Fatal("the policy saw no client certificate")
	case len(c.URIs) != 1 || c.URIs[0] != worker, c.Serial != "1f3a", c.Subject != "CN=leaf-7994",
		c.Issuer != "CN=client CA", c.FingerprintSHA256 != hex.EncodeToString(sum[:]),
		c.NotAfter != leaf.NotAfter.Unix(), len(c.Emails) != 1 || c.DNSNames == nil:
		t.Errorf("the policy saw %+v", c)
	}

	other := clients.issue(t, 9, "spiffe://acme.test/ns/other/sa/worker")
	if resp, err := te.get(t, te.client(t, true, &other.pair, 0), token); err != nil || resp.StatusCode != 403 {
		t.Errorf("another SPIFFE ID from the same CA: %v %v, want 403", resp, err)
	}
	if resp, err := te.get(t, te.client(t, true, &good.pair, 0), ""); err != nil || resp.StatusCode != 401 {
		t.Errorf("a certificate and no token: %v %v, want 401", resp, err)
	}
	if n := len(te.upstream.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want 1", n)
	}
}

// TestClientCertificateRequested: with client_auth request, a caller
// without a certificate is served and the policy sees none.
func TestClientCertificateRequested(t *testing.T) {
	clients, caFile := newClientCA(t)
	te := newTLSEnv(t, ", client_ca_file: "+caFile, withPolicy(t, seePolicy))
	token := te.issuer.mint(t, nil)
	if resp, err := te.get(t, te.client(t, true, nil, 0), token); err != nil || resp.StatusCode != 200 {
		t.Fatalf("no certificate: %v %v", resp, err)
	}
	if s := seen(t, te.upstream.requests()[0].Header); s.TLS == nil || s.TLS.ClientCertificate != nil {
		t.Errorf("the policy saw %+v", s.TLS)
	}
	cert := clients.issue(t, 5, "spiffe://acme.test/x")
	if resp, err := te.get(t, te.client(t, true, &cert.pair, 0), token); err != nil || resp.StatusCode != 200 {
		t.Fatalf("with a certificate: %v %v", resp, err)
	}
	if s := seen(t, te.upstream.requests()[1].Header); s.TLS.ClientCertificate == nil || s.TLS.ClientCertificate.URIs[0] != "spiffe://acme.test/x" {
		t.Errorf("the policy saw %+v", s.TLS)
	}
}

// TestNoCleartextHTTP2: the plain listener speaks HTTP/1 only; an h2c
// connection preface gets no HTTP/2 answer.
func TestNoCleartextHTTP2(t *testing.T) {
	e := newEnv(t, nil)
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	_, _ = io.WriteString(conn, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "HTTP/1.1 ") {
		t.Errorf("h2c preface answered with %q, want an HTTP/1.1 error", line)
	}
}

func TestTrustedProxies(t *testing.T) {
	for _, tc := range []struct {
		name       string
		server     string // added under server:
		header     http.Header
		wantClient string
		wantXFF    string
		logged     string
	}{
		{"xff", "trusted_proxies: [127.0.0.0/8]", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"xff spoofed left of the caller", "trusted_proxies: [127.0.0.0/8]", http.Header{"X-Forwarded-For": {"6.6.6.6, 203.0.113.7"}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"xff through two proxies", "trusted_proxies: [127.0.0.0/8]", http.Header{"X-Forwarded-For": {"203.0.113.7", "127.0.0.5"}}, "203.0.113.7", "203.0.113.7, 127.0.0.5, 127.0.0.1", ""},
		{"xff from an untrusted peer", "trusted_proxies: [10.0.0.0/8]", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "127.0.0.1", "127.0.0.1", ""},
		{"no proxies trusted", "", http.Header{"X-Forwarded-For": {"203.0.113.7"}, "Forwarded": {"for=203.0.113.7"}}, "127.0.0.1", "127.0.0.1", ""},
		{"forwarded", "trusted_proxies: [127.0.0.1/32]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {`for=203.0.113.7;proto=https, for="[2001:db8::1]:4711"`}}, "2001:db8::1", "2001:db8::1, 127.0.0.1", ""},
		{"forwarded ignores x-forwarded-for", "trusted_proxies: [127.0.0.1/32]\n  client_ip_header: Forwarded", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "127.0.0.1", "127.0.0.1", ""},
		{"x-real-ip", "trusted_proxies: [127.0.0.1]\n  client_ip_header: X-Real-IP", http.Header{"X-Real-Ip": {"203.0.113.9"}}, "203.0.113.9", "203.0.113.9, 127.0.0.1", ""},
		{"garbage xff", "trusted_proxies: [127.0.0.0/8]", http.Header{"X-Forwarded-For": {"203.0.113.7, not-an-address"}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
		{"garbage forwarded", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {"for=unknown"}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
		{"forwarded without for", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {"proto=https"}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
		{"garbage left of the caller", "trusted_proxies: [127.0.0.0/8]", http.Header{"X-Forwarded-For": {"x, 203.0.113.7"}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"forwarded unknown left of the caller", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {"for=unknown, FOR=203.0.113.7"}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"forwarded quoted comma", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {`for=203.0.113.7;host="a, for=6.6.6.6"`}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"forwarded quoted semicolon", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {`host="a;for=6.6.6.6";for=203.0.113.7`}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"forwarded obfuscated port", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {`for="[2001:db8::1]:_p1"`}}, "2001:db8::1", "2001:db8::1, 127.0.0.1", ""},
		{"forwarded two for= in one element", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {"for=203.0.113.7;for=6.6.6.6"}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
		{"forwarded unterminated quote", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: Forwarded", http.Header{"Forwarded": {`for="203.0.113.7`}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
		{"ipv4-mapped trusted proxies", "trusted_proxies: [\"::ffff:127.0.0.0/104\"]", http.Header{"X-Forwarded-For": {"203.0.113.7"}}, "203.0.113.7", "203.0.113.7, 127.0.0.1", ""},
		{"two x-real-ip", "trusted_proxies: [127.0.0.0/8]\n  client_ip_header: X-Real-IP", http.Header{"X-Real-Ip": {"203.0.113.9", "203.0.113.10"}}, "127.0.0.1", "127.0.0.1", "client IP header ignored"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, func(doc string) string {
				doc = withPolicy(t, seePolicy)(doc)
				return strings.Replace(doc, "server:\n", "server:\n  "+tc.server+"\n", 1)
			})
			if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), tc.header, ""); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			r := e.upstream.requests()[0]
			s := seen(t, r.Header)
			if s.ClientIP != tc.wantClient || s.RemoteIP != "127.0.0.1" {
				t.Errorf("policy saw client_ip %q remote_ip %q, want %q", s.ClientIP, s.RemoteIP, tc.wantClient)
			}
			for _, k := range []string{"x-forwarded-for", "forwarded", "x-real-ip"} {
				if v, ok := s.Headers[k]; ok {
					t.Errorf("policy saw %s: %q", k, v)
				}
			}
			if got := r.Header.Values("X-Forwarded-For"); len(got) != 1 || got[0] != tc.wantXFF {
				t.Errorf("upstream X-Forwarded-For %q, want %q", got, tc.wantXFF)
			}
			if r.Header.Get("Forwarded") != "" || r.Header.Get("X-Real-Ip") != "" {
				t.Errorf("upstream got Forwarded %q X-Real-IP %q", r.Header.Get("Forwarded"), r.Header.Get("X-Real-Ip"))
			}
			if tc.logged != "" && !strings.Contains(e.logs.String(), tc.logged) {
				t.Errorf("log lacks %q", tc.logged)
			}
		})
	}
}

// rawConn is a raw HTTP/1.1 client connection.
type rawConn struct {
	net.Conn
	r *bufio.Reader
}

func dialRaw(t *testing.T, addr string) *rawConn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &rawConn{Conn: conn, r: bufio.NewReader(conn)}
}

// response reads one response, waiting at most d.
func (c *rawConn) response(t *testing.T, d time.Duration) (*http.Response, []byte) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(d))
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		t.Fatalf("reading the response: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	return resp, body
}

// closed reports whether the server closed the connection within d.
func (c *rawConn) closed(d time.Duration) bool {
	_ = c.SetReadDeadline(time.Now().Add(d))
	_, err := c.r.ReadByte()
	return err == io.EOF
}

// countingServer serves the gateway as run does and counts its open
// connections.
func countingServer(t *testing.T, gw *Gateway) (addr string, open *atomic.Int64) {
	t.Helper()
	srv := gw.Server()
	open = &atomic.Int64{}
	srv.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			open.Add(1)
		case http.StateClosed, http.StateHijacked:
			open.Add(-1)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return ln.Addr().String(), open
}

// TestUnsentBodyAnsweredAtOnce: errors answered before the body is read
// close the connection, so a caller that announces a body and never sends
// it gets its answer at once and holds nothing; a denied Expect:
// 100-continue is answered without asking for the body.
func TestUnsentBodyAnsweredAtOnce(t *testing.T) {
	e := newEnv(t, func(doc string) string {
		return strings.Replace(doc, "server:\n", "server:\n  idle_timeout: 1h\n", 1)
	})
	addr, open := countingServer(t, e.gw)
	const callers = 300
	var wg sync.WaitGroup
	errs := make(chan string, callers)
	for i := range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
			if err != nil {
				errs <- err.Error()
				return
			}
			defer conn.Close()
			_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
			fmt.Fprintf(conn, "POST /orders HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\nX-N: %d\r\n\r\n", i)
			r := bufio.NewReader(conn)
			resp, err := http.ReadResponse(r, nil)
			if err != nil {
				errs <- "no response: " + err.Error()
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 401 || !resp.Close {
				errs <- fmt.Sprintf("status %d, Connection: close %v", resp.StatusCode, resp.Close)
				return
			}
			if _, err := r.ReadByte(); err != io.EOF {
				errs <- fmt.Sprintf("connection not closed: %v", err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for msg := range errs {
		t.Error(msg)
		break
	}
	waitUntil(t, 5*time.Second, "the server holds no connection", func() bool { return open.Load() == 0 })

	// Expect: 100-continue and no token: 401 without 100 Continue.
	c := dialRaw(t, addr)
	fmt.Fprint(c, "PUT /orders/1 HTTP/1.1\r\nHost: gw\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n")
	if resp, _ := c.response(t, 5*time.Second); resp.StatusCode != 401 {
		t.Errorf("Expect: 100-continue without a token: status %d, want 401", resp.StatusCode)
	}
	if !c.closed(5 * time.Second) {
		t.Error("the connection stayed open")
	}

	// Allowed, the body is asked for and proxied.
	c = dialRaw(t, addr)
	fmt.Fprintf(c, "PUT /orders/1 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n", e.issuer.mint(t, nil))
	if resp, _ := c.response(t, 5*time.Second); resp.StatusCode != 100 {
		t.Fatalf("Expect: 100-continue with a token: status %d, want 100", resp.StatusCode)
	}
	fmt.Fprint(c, "0123456789")
	if resp, _ := c.response(t, 5*time.Second); resp.StatusCode != 200 {
		t.Errorf("after the body: status %d", resp.StatusCode)
	}
	if !c.closed(200*time.Millisecond) && c.r.Buffered() > 0 {
		t.Error("more than one answer to one request")
	}
	if got := e.upstream.requests(); len(got) != 1 || got[0].Body != "0123456789" || got[0].Header.Get("Expect") != "" {
		t.Errorf("upstream got %d requests; the first: body %q, Expect %q", len(got), got[0].Body, got[0].Header.Get("Expect"))
	}
}

// TestStalledBody: a caller that stops sending its body gets 408 after
// body_read_timeout, and the upstream sees its request end.
func TestStalledBody(t *testing.T) {
	upstreamErr := make(chan error, 1)
	up := newUpstreamFunc(t, func(w http.ResponseWriter, r *http.Request) {
		_, err := io.ReadAll(r.Body)
		upstreamErr <- err
	})
	e := newEnv(t, func(doc string) string {
		doc = strings.Replace(doc, "server:\n", "server:\n  body_read_timeout: 300ms\n", 1)
		return strings.Replace(doc, "url: ${UPSTREAM}\n", "url: "+up+"\n", 1)
	})
	c := dialRaw(t, strings.TrimPrefix(e.srv.URL, "http://"))
	start := time.Now()
	fmt.Fprintf(c, "POST /orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n0123456789", e.issuer.mint(t, nil))
	resp, body := c.response(t, 10*time.Second)
	if resp.StatusCode != 408 || !strings.Contains(string(body), `"request_timeout"`) {
		t.Fatalf("status %d %s, want 408", resp.StatusCode, body)
	}
	if took := time.Since(start); took < 300*time.Millisecond {
		t.Errorf("408 after %v, before body_read_timeout", took)
	}
	select {
	case err := <-upstreamErr:
		if err == nil {
			t.Error("the upstream read a whole body")
		}
	case <-time.After(5 * time.Second):
		t.Error("the upstream request did not end")
	}
	if !c.closed(5 * time.Second) {
		t.Error("the connection stayed open")
	}
	if !strings.Contains(e.logs.String(), "body stalled") {
		t.Error("the log does not say the body stalled")
	}
}

// newUpstreamFunc is an upstream served by h on loopback.
func newUpstreamFunc(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	return "http://" + ln.Addr().String()
}

// TestHugeHeadersJSON: a header block far over max_header_bytes still
// gets audgate's JSON 431, not Go's text/plain one.
func TestHugeHeadersJSON(t *testing.T) {
	e := newEnv(t, nil) // max_header_bytes: 8192
	for _, size := range []int{9000, 21000, 40000} {
		resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), http.Header{"X-Big": {strings.Repeat("a", size)}}, "")
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 431 || resp.Header.Get("Content-Type") != "application/json" || !strings.Contains(string(body), `"request_too_large"`) {
			t.Errorf("%d-byte header: %d %q %s", size, resp.StatusCode, resp.Header.Get("Content-Type"), body)
		}
	}
	if n := len(e.upstream.requests()); n != 0 {
		t.Errorf("upstream got %d requests", n)
	}
}

// TestStalledBodyUpstreamAnswersEarly: an upstream that answers without
// reading the body gets its answer to the caller, and the caller's stalled
// body holds nothing once body_read_timeout has passed, over HTTP/1.1 and
// over HTTP/2.
func TestStalledBodyUpstreamAnswersEarly(t *testing.T) {
	early := func(w http.ResponseWriter, r *http.Request) {
		// Connection: close, or Go's server would wait for the body
		// before it answers.
		w.Header().Set("Connection", "close")
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusConflict)
		_, _ = w.Write([]byte(`{"early":true}`))
	}
	timeout := func(doc string) string {
		return strings.Replace(doc, "server:\n", "server:\n  body_read_timeout: 300ms\n", 1)
	}
	t.Run("HTTP/1.1", func(t *testing.T) {
		up := newUpstreamFunc(t, early)
		e := newEnv(t, func(doc string) string {
			return strings.Replace(timeout(doc), "url: ${UPSTREAM}\n", "url: "+up+"\n", 1)
		})
		addr, open := countingServer(t, e.gw)
		c := dialRaw(t, addr)
		fmt.Fprintf(c, "POST /orders HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer %s\r\nContent-Length: 1000\r\n\r\n0123456789", e.issuer.mint(t, nil))
		resp, body := c.response(t, 10*time.Second)
		if resp.StatusCode != http.StatusConflict || string(body) != `{"early":true}` {
			t.Fatalf("status %d %s, want the upstream's 409", resp.StatusCode, body)
		}
		if !c.closed(5 * time.Second) {
			t.Error("the connection stayed open")
		}
		waitUntil(t, 5*time.Second, "the server holds no connection", func() bool { return open.Load() == 0 })
	})
	t.Run("HTTP/2", func(t *testing.T) {
		up := newUpstreamFunc(t, early)
		te := newTLSEnv(t, "", func(doc string) string {
			return strings.Replace(timeout(doc), "url: ${UPSTREAM}\n", "url: "+up+"\n", 1)
		})
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { _, _ = pw.Write([]byte("0123456789")) }() // and nothing more
		req, _ := http.NewRequest("POST", te.url+"/orders", pr)
		req.ContentLength = 1000
		req.Header.Set("Authorization", "Bearer "+te.issuer.mint(t, nil))
		resp, err := te.client(t, true, nil, 0).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.Proto != "HTTP/2.0" || resp.StatusCode != http.StatusConflict || string(body) != `{"early":true}` {
			t.Fatalf("%s %d %s, want the upstream's 409 over HTTP/2", resp.Proto, resp.StatusCode, body)
		}
		// The gateway lives on: a later request on a new connection works.
		if resp, err := te.get(t, te.client(t, true, nil, 0), te.issuer.mint(t, nil)); err != nil || resp.StatusCode != http.StatusConflict {
			t.Errorf("after the stalled stream: %v %v", resp, err)
		}
		time.Sleep(500 * time.Millisecond) // past body_read_timeout: no timer may fire now
	})
}
