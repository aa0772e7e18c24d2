package config

import (
	"strings"
	"time"

	"github.com/audgate/audgate/internal/authn"
	"github.com/audgate/audgate/internal/oauth"
	"github.com/audgate/audgate/internal/policy"
	"github.com/audgate/audgate/internal/proxy"
	"github.com/audgate/audgate/internal/telemetry"
	"github.com/audgate/audgate/internal/tokens"
)

// The defaults of the listeners, which belong to no other package. Every
// other default comes from the package that uses the value.
const (
	defaultListen            = "0.0.0.0:8080"
	defaultAdminListen       = "127.0.0.1:9090"
	defaultReadHeaderTimeout = 5 * time.Second
	defaultIdleTimeout       = 120 * time.Second
	defaultShutdownTimeout   = 15 * time.Second
	defaultMaxHeaderBytes    = 16384
	defaultMaxBodyBytes      = 10 << 20
	defaultBodyReadTimeout   = 30 * time.Second
	defaultClientIPHeader    = "X-Forwarded-For"
	defaultTLSMinVersion     = "1.2"
	defaultClientAuth        = "request"
)

// ClientIPHeaders are the headers a trusted proxy may name the caller in.
func ClientIPHeaders() []string { return []string{"X-Forwarded-For", "Forwarded", "X-Real-IP"} }

// TLSVersions are the accepted min_version values.
func TLSVersions() []string { return []string{"1.2", "1.3"} }

// defaultStripInboundHeaders is a function, not a variable, so that no
// caller can change the list for everyone.
func defaultStripInboundHeaders() []string {
	return []string{"X-User-*", "X-Forwarded-User", "X-Original-URL", "X-Rewrite-URL",
		"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}
}

// Default returns a Config with every default in place. The lists
// (issuers, token sources, upstreams, routes) are empty; an entry of one
// starts from DefaultIssuer, DefaultTokenSource or DefaultUpstream. Parse
// decodes the file over these, so that a key the file leaves out keeps its
// default and a key it writes, even as 0, keeps what it writes.
func Default() *Config {
	cache := tokens.DefaultCacheOptions()
	return &Config{
		Server: Server{
			Listen:              defaultListen,
			AdminListen:         defaultAdminListen,
			ReadHeaderTimeout:   Duration(defaultReadHeaderTimeout),
			IdleTimeout:         Duration(defaultIdleTimeout),
			ShutdownTimeout:     Duration(defaultShutdownTimeout),
			MaxHeaderBytes:      defaultMaxHeaderBytes,
			MaxBodyBytes:        defaultMaxBodyBytes,
			StripInboundHeaders: defaultStripInboundHeaders(),
			BodyReadTimeout:     Duration(defaultBodyReadTimeout),
			ClientIPHeader:      defaultClientIPHeader,
		},
		Inbound: Inbound{
			JWKSRefreshInterval:    Duration(authn.DefaultRefreshInterval),
			JWKSMinRefetchInterval: Duration(authn.DefaultMinRefetchInterval),
			VerifiedCacheSize:      authn.DefaultCacheSize,
		},
		Policy: Policy{
			Query:         policy.DefaultQuery,
			Timeout:       Duration(policy.DefaultTimeout),
			DecisionLog:   DecisionLog{Output: telemetry.DefaultDecisionLog},
			DecisionCache: DecisionCache{Enabled: true, MaxEntries: policy.DefaultDecisionCacheSize},
		},
		Telemetry: Telemetry{Tracing: Tracing{
			Protocol: telemetry.ProtocolHTTPProtobuf, SampleRatio: telemetry.DefaultSampleRatio,
		}},
		Cache: Cache{
			MaxEntries:          cache.MaxEntries,
			RefreshBeforeExpiry: Duration(cache.RefreshBeforeExpiry),
			DefaultTTL:          Duration(cache.DefaultTTL),
			NegativeTTL:         Duration(cache.NegativeTTL),
		},
	}
}

// DefaultIssuer is an inbound issuer with its defaults, from authn.
func DefaultIssuer() Issuer {
	ic := authn.DefaultIssuerConfig()
	return Issuer{Algorithms: ic.Algorithms, Leeway: Duration(ic.Leeway), Typ: ic.Typ}
}

// DefaultTokenSource is a token source of type typ with the defaults of
// the fields that type uses; the fields it does not use stay empty, so
// that Validate can refuse them when they are set.
func DefaultTokenSource(typ string) TokenSource {
	ts := TokenSource{Type: typ}
	switch typ {
	case SourceTokenExchange, SourceClientCredentials, SourceJWTBearer:
		ts.ClientAuth = oauth.AuthMethods()[0]
		ts.AudienceParam = tokens.AudienceParams()[0]
		ts.Timeout = Duration(tokens.DefaultTimeout)
		if typ == SourceTokenExchange {
			ts.SubjectTokenType = tokens.TokenTypeAccessToken
			ts.RequestedTokenType = tokens.TokenTypeAccessToken
		}
	case SourceSelfSigned:
		ts.Algorithm = tokens.DefaultSigningAlgorithm
		ts.TTL = Duration(tokens.DefaultSelfSignedTTL)
	}
	return ts
}

// DefaultUpstream is an upstream with its defaults, from proxy.
func DefaultUpstream() Upstream {
	return Upstream{Timeout: Duration(proxy.DefaultTimeout), MaxIdleConns: proxy.DefaultMaxIdleConns}
}

// normalize rewrites values that have one canonical form. It runs on
// every value the file writes.
func (c *Config) normalize() {
	for i := range c.Routes {
		for j, m := range c.Routes[i].Methods {
			// Methods are case-sensitive on the wire and clients send them
			// upper-case; "get" in a config means GET.
			c.Routes[i].Methods[j] = strings.ToUpper(m)
		}
	}
	for i := range c.Upstreams {
		// max_idle_conns: 0 means the default, as it does in net/http,
		// rather than "keep none", which would reconnect on every request.
		if c.Upstreams[i].MaxIdleConns == 0 {
			c.Upstreams[i].MaxIdleConns = proxy.DefaultMaxIdleConns
		}
	}
}
