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
	"sync"
	"sync/atomic"
	"time"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/policy"
)

// certReloader serves the listener's certificate, read again when either
// file changes, as cert-manager rotates them in place: new connections get
// the new certificate without a restart, and a broken pair keeps the old
// one in service (and says why in the log).
type certReloader struct {
	certFile, keyFile string
	log               *slog.Logger
	cert              atomic.Pointer[tls.Certificate]

	mu    sync.Mutex
	stamp string // of the files the current certificate came from
}

func newCertReloader(certFile, keyFile string, log *slog.Logger) (*certReloader, error) {
	c := &certReloader{certFile: certFile, keyFile: keyFile, log: log}
	if err := c.load(); err != nil {
		return nil, err
	}
	return c, nil
}

// stampOf summarises both files' size and modification time.
func (c *certReloader) stampOf() string {
	var b strings.Builder
	for _, f := range []string{c.certFile, c.keyFile} {
		if info, err := os.Stat(f); err == nil {
			fmt.Fprintf(&b, "%d:%d;", info.Size(), info.ModTime().UnixNano())
		}
	}
	return b.String()
}

func (c *certReloader) load() error {
	stamp := c.stampOf()
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("server.tls: cert_file/key_file: %w", err)
	}
	c.cert.Store(&cert)
	c.mu.Lock()
	c.stamp = stamp
	c.mu.Unlock()
	return nil
}

// watch checks the files every interval (default 5s) until ctx ends.
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
		c.mu.Lock()
		unchanged := c.stampOf() == c.stamp
		c.mu.Unlock()
		if unchanged {
			continue
		}
		if err := c.load(); err != nil {
			// Remember the broken files' stamp: log once per change.
			c.mu.Lock()
			c.stamp = c.stampOf()
			c.mu.Unlock()
			c.log.Error("TLS certificate not reloaded; serving the previous one", "error", err.Error())
			continue
		}
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
	"X-Client-Ip", "X-Cluster-Client-Ip",
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
		c.trusted = append(c.trusted, p.Masked())
	}
	return c, nil
}

func (c *clientIPs) isTrusted(a netip.Addr) bool {
	a = a.Unmap()
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
// only from a trusted peer: the right-most address in it that is not
// itself trusted is the caller. A header that does not parse counts as
// absent.
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
	addrs, err := parseForwarded(c.header, values)
	if err != nil || len(addrs) == 0 {
		c.log.Debug("client IP header ignored", "header", c.header, "reason", errString(err), "peer", peer)
		return peer, nil
	}
	i := len(addrs) - 1
	for i > 0 && c.isTrusted(addrs[i]) {
		i--
	}
	chain = make([]string, len(addrs)-i)
	for j, a := range addrs[i:] {
		chain[j] = a.Unmap().String()
	}
	return chain[0], chain
}

var errNoAddress = errors.New("a value is not an IP address")

// parseForwarded reads the addresses a header names, in order.
func parseForwarded(header string, values []string) ([]netip.Addr, error) {
	var out []netip.Addr
	switch header {
	case "X-Real-Ip":
		if len(values) != 1 {
			return nil, errors.New("X-Real-IP given more than once")
		}
		a, err := parseNode(values[0])
		if err != nil {
			return nil, err
		}
		return []netip.Addr{a}, nil
	case "Forwarded": // RFC 7239 §4: elements by ",", pairs by ";"
		for _, v := range values {
			for _, elem := range strings.Split(v, ",") {
				found := false
				for _, pair := range strings.Split(elem, ";") {
					k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
					if !ok || !strings.EqualFold(k, "for") {
						continue
					}
					a, err := parseNode(strings.Trim(val, `"`))
					if err != nil {
						return nil, err
					}
					out, found = append(out, a), true
				}
				if !found {
					return nil, errors.New("a Forwarded element has no for=")
				}
			}
		}
		return out, nil
	}
	for _, v := range values { // X-Forwarded-For
		for _, part := range strings.Split(v, ",") {
			a, err := parseNode(part)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	return out, nil
}

// parseNode reads one address: 203.0.113.7, 2001:db8::1, [2001:db8::1],
// with or without a port. Obfuscated identifiers ("unknown", "_hidden")
// are not addresses.
func parseNode(s string) (netip.Addr, error) {
	s = strings.TrimSpace(s)
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr(), nil
	}
	a, err := netip.ParseAddr(strings.Trim(s, "[]"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%w: %q", errNoAddress, truncate(s, 64))
	}
	return a, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
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
