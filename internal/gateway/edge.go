package gateway

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/policy"
)

// certReloader serves the listener's certificate, read again when either
// file changes, as cert-manager rotates them in place: new connections get
// the new certificate without a restart, and a broken pair keeps the old
// one in service (and says why in the log). A change is a change of
// content: both files are read on each check (they are small), and a pair
// is loaded from exactly the bytes that were compared.
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]
	sum               [32]byte // of the files last tried, good or not
	lastErr           string   // reported already
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	certPEM, keyPEM, sum, err := c.read()
	if err != nil {
		return nil, err
	}
	if err := c.load(certPEM, keyPEM); err != nil {
		return nil, err
	}
	c.sum = sum
	return c, nil
}

// read returns both files and the SHA-256 of the two.
func (c *certReloader) read() (certPEM, keyPEM []byte, sum [32]byte, err error) {
	if certPEM, err = os.ReadFile(c.certFile); err != nil {
		return nil, nil, sum, fmt.Errorf("server.tls.cert_file: %w", err)
	}
	if keyPEM, err = os.ReadFile(c.keyFile); err != nil {
		return nil, nil, sum, fmt.Errorf("server.tls.key_file: %w", err)
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d:", len(certPEM))
	h.Write(certPEM)
	h.Write(keyPEM)
	copy(sum[:], h.Sum(nil))
	return certPEM, keyPEM, sum, nil
}

func (c *certReloader) load(certPEM, keyPEM []byte) error {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return fmt.Errorf("server.tls: cert_file/key_file: %w", err)
	}
	c.cert.Store(&cert)
	return nil
}

// watch checks the files every interval (default 5s) until ctx ends. A
// failure is reported once until it changes; a later write of either file
// is another try.
func (c *certReloader) watch(ctx context.Context, every time.Duration) {
	if every <= 0 {
		every = 5 * time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		certPEM, keyPEM, sum, err := c.read()
		if err == nil && sum == c.sum {
			continue
		}
		if err == nil {
			c.sum = sum
			err = c.load(certPEM, keyPEM)
		}
		if err != nil {
			if err.Error() != c.lastErr {
				c.log.Error("TLS certificate not reloaded; serving the previous one", "error", err.Error())
			}
			c.lastErr = err.Error()
			continue
		}
		c.lastErr = ""
		c.log.Info("TLS certificate reloaded", "cert_file", c.certFile)
	}
}

func (c *certReloader) getCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	return c.cert.Load(), nil
}

// tlsVersions maps server.tls.min_version.
var tlsVersions = map[string]uint16{"1.2": tls.VersionTLS12, "1.3": tls.VersionTLS13}

// tlsVersionNames names a negotiated version for the policy.
var tlsVersionNames = map[uint16]string{tls.VersionTLS12: "1.2", tls.VersionTLS13: "1.3"}

// newTLSConfig builds the listener's TLS configuration: the reloading
// certificate (certs.watch keeps it current), the minimum version, ALPN
// for HTTP/2 and HTTP/1.1, and client certificates verified against
// client_ca_file.
func newTLSConfig(c *config.ServerTLS, log *slog.Logger) (cfg *tls.Config, certs *certReloader, err error) {
	if certs, err = newCertReloader(c.CertFile, c.KeyFile, log); err != nil {
		return nil, nil, err
	}
	cfg = &tls.Config{
		GetCertificate: certs.getCertificate,
		MinVersion:     tlsVersions[c.MinVersion],
		NextProtos:     []string{"h2", "http/1.1"},
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return nil, nil, fmt.Errorf("server.tls.client_ca_file: %w", err)
		}
		cfg.ClientCAs = x509.NewCertPool()
		if !cfg.ClientCAs.AppendCertsFromPEM(pem) {
			return nil, nil, fmt.Errorf("server.tls.client_ca_file: %s holds no PEM certificate; give the CA bundle callers' certificates chain to", c.ClientCAFile)
		}
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
		if c.ClientAuth == "require" {
			cfg.ClientAuth = tls.RequireAndVerifyClientCert
		}
	}
	return cfg, certs, nil
}

// tlsInput is the caller's TLS session as the policy sees it.
func tlsInput(cs *tls.ConnectionState) *policy.TLS {
	if cs == nil {
		return nil
	}
	t := &policy.TLS{Version: tlsVersionNames[cs.Version]}
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return t // a certificate that was not verified is not shown
	}
	cert := cs.VerifiedChains[0][0]
	sum := sha256.Sum256(cert.Raw)
	uris := make([]string, len(cert.URIs))
	for i, u := range cert.URIs {
		uris[i] = u.String()
	}
	t.ClientCertificate = &policy.Certificate{
		Subject: cert.Subject.String(), Issuer: cert.Issuer.String(), Serial: cert.SerialNumber.Text(16),
		DNSNames: nonNil(cert.DNSNames), URIs: uris, Emails: nonNil(cert.EmailAddresses),
		FingerprintSHA256: hex.EncodeToString(sum[:]), NotAfter: cert.NotAfter.Unix(),
	}
	return t
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// forwarding are the headers that carry a proxy's account of the caller.
// The gateway removes every client-sent one before the policy runs, reads
// the configured one only from a trusted peer, and sets X-Forwarded-*
// itself.
var forwarding = []string{
	"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Forwarded-Port",
	"X-Forwarded-Prefix", "X-Forwarded-Server", "X-Forwarded-Ssl", "X-Forwarded-Scheme", "X-Real-Ip",
	"X-Url-Scheme", "Front-End-Https", "X-Forwarded-Uri", "X-Original-Host", "X-Host", "True-Client-Ip",
	"X-Client-Ip", "X-Cluster-Client-Ip", "Client-Ip", "X-Forwarded", "Forwarded-For", "X-Original-Forwarded-For",
	"Cf-Connecting-Ip", "Fastly-Client-Ip", "X-Envoy-External-Address", "X-Appengine-User-Ip",
}

// clientIPs finds the caller behind the trusted proxies.
type clientIPs struct {
	trusted []netip.Prefix
	header  string // canonical: X-Forwarded-For, Forwarded or X-Real-Ip
	log     *slog.Logger
}

func newClientIPs(s config.Server, log *slog.Logger) (*clientIPs, error) {
	c := &clientIPs{header: http.CanonicalHeaderKey(s.ClientIPHeader), log: log}
	for i, cidr := range s.TrustedProxies {
		p, err := netip.ParsePrefix(cidr)
		if err != nil {
			a, aerr := netip.ParseAddr(cidr)
			if aerr != nil {
				return nil, fmt.Errorf("server.trusted_proxies[%d]: %q is not a CIDR or an address", i, cidr)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if p.Addr().Is4In6() && p.Bits() >= 96 { // ::ffff:10.0.0.0/104 is 10.0.0.0/8
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		c.trusted = append(c.trusted, p.Masked())
	}
	return c, nil
}

func (c *clientIPs) isTrusted(a netip.Addr) bool {
	a = a.Unmap().WithZone("")
	for _, p := range c.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// behindProxy resolves the caller when the peer is a trusted proxy that
// names one.
func (c *clientIPs) behindProxy(r *http.Request) (caller, bool) {
	if len(c.trusted) == 0 {
		return caller{}, false
	}
	client, chain := c.resolve(r, peerIP(r))
	if chain == nil {
		return caller{}, false
	}
	return caller{ip: client, chain: chain}, true
}

// resolve returns the caller's address and the chain of addresses the
// trusted proxies vouch for, from the caller to the last proxy before the
// peer (nil when the peer is not trusted). It reads the client IP header
// only from a trusted peer, right to left: the first address that is not
// itself a trusted proxy is the caller, and whatever stands left of it
// (what the caller wrote, garbage included) is not read. A value at or
// right of the caller that does not parse makes the header count as
// absent: the caller is then the peer.
func (c *clientIPs) resolve(r *http.Request, peer string) (client string, chain []string) {
	if len(c.trusted) == 0 {
		return peer, nil
	}
	pa, err := netip.ParseAddr(peer)
	if err != nil || !c.isTrusted(pa) {
		return peer, nil
	}
	values := r.Header.Values(c.header)
	if len(values) == 0 {
		return peer, nil
	}
	nodes, err := forwardedNodes(c.header, values)
	var addrs []netip.Addr // right to left
	for i := len(nodes) - 1; err == nil && i >= 0; i-- {
		var a netip.Addr
		if a, err = parseNode(nodes[i]); err == nil {
			addrs = append(addrs, a)
			if !c.isTrusted(a) {
				break
			}
		}
	}
	if err != nil || len(addrs) == 0 {
		c.log.Debug("client IP header ignored; the caller is the peer", "header", c.header, "reason", errString(err), "peer", peer)
		return peer, nil
	}
	chain = make([]string, len(addrs))
	for i, a := range addrs {
		chain[len(addrs)-1-i] = a.String()
	}
	return chain[0], chain
}

var (
	errNoAddress       = errors.New("a value is not an IP address")
	errForwardedSyntax = errors.New("the Forwarded header does not parse (RFC 7239)")
)

// forwardedNodes are the node values a header lists, in order: one per
// X-Forwarded-For entry, the for= of each Forwarded element ("" for an
// element with none or with two), or X-Real-IP's one value.
func forwardedNodes(header string, values []string) ([]string, error) {
	switch header {
	case "X-Real-Ip":
		if len(values) != 1 {
			return nil, errors.New("X-Real-IP given more than once")
		}
		return values, nil
	case "Forwarded":
		var nodes []string
		for _, v := range values {
			elems, ok := splitUnquoted(v, ',')
			if !ok {
				return nil, errForwardedSyntax
			}
			for _, elem := range elems {
				pairs, ok := splitUnquoted(elem, ';')
				if !ok {
					return nil, errForwardedSyntax
				}
				node, n := "", 0
				for _, pair := range pairs {
					k, val, _ := strings.Cut(strings.TrimSpace(pair), "=")
					if strings.EqualFold(k, "for") {
						if node, ok = unquote(val); !ok {
							return nil, errForwardedSyntax
						}
						n++
					}
				}
				if n != 1 {
					node = ""
				}
				nodes = append(nodes, node)
			}
		}
		return nodes, nil
	}
	var nodes []string // X-Forwarded-For
	for _, v := range values {
		nodes = append(nodes, strings.Split(v, ",")...)
	}
	return nodes, nil
}

// splitUnquoted splits s at sep outside RFC 9110 quoted strings; false
// when a quoted string does not end.
func splitUnquoted(s string, sep byte) ([]string, bool) {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && c == sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:]), !quoted
}

// unquote reads a token or an RFC 9110 quoted string.
func unquote(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, `"`) {
		return s, !strings.Contains(s, `"`)
	}
	if len(s) < 2 || !strings.HasSuffix(s, `"`) {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s)-1; i++ {
		if s[i] == '\\' && i+1 < len(s)-1 {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String(), true
}

// parseNode reads one address: 203.0.113.7, 2001:db8::1, [2001:db8::1],
// with or without a port, numeric or obfuscated (RFC 7239 §6.3: _p1).
// Obfuscated identifiers ("unknown", "_hidden") are not addresses.
func parseNode(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if i := strings.LastIndex(s, ":_"); i > 0 && (s[i-1] == ']' || strings.Count(s[:i], ":") == 0) {
		s = s[:i] // an obfuscated port
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), nil
	}
	a, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"))
	if err != nil {
		return netip.Addr{}, errNoAddress
	}
	return a.Unmap(), nil
}

// peerIP is the TCP peer's address.
func peerIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// callerKey holds the caller preflight found, in the echo context.
const callerKey = "audgate.caller"

// caller is who sent the request, as preflight found it.
type caller struct {
	ip    string   // the caller: behind trusted proxies, or the peer
	chain []string // the trusted proxies' chain, from the caller on; nil without
}

// headerLimit is the http.Server's own header limit: well above
// max_header_bytes, so that audgate's check answers (with JSON) rather
// than Go's text/plain 431.
func headerLimit(max int) int { return 4*max + 64<<10 }

// Server returns the gateway's HTTP server, as server.* configures it:
// timeouts, the header limit, and TLS with HTTP/2 when server.tls is set
// (serve it with ServeTLS(ln, "", "")). h2c is never offered.
func (g *Gateway) Server() *http.Server {
	s := g.cfg.Server
	return &http.Server{
		Handler:           g.echo,
		ReadHeaderTimeout: s.ReadHeaderTimeout.D(),
		IdleTimeout:       s.IdleTimeout.D(),
		MaxHeaderBytes:    headerLimit(s.MaxHeaderBytes),
		TLSConfig:         g.tlsConfig,
		ErrorLog:          slog.NewLogLogger(g.log.Handler(), slog.LevelWarn),
	}
}

// AdminServer returns the admin listener's server: plain HTTP.
func (g *Gateway) AdminServer() *http.Server {
	return &http.Server{Handler: g.AdminHandler(), ReadHeaderTimeout: g.cfg.Server.ReadHeaderTimeout.D()}
}
