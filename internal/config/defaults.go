package config

import (
	"strings"
	"time"
)

// The defaults documented on Config's fields.
const (
	defaultListen              = "0.0.0.0:8080"
	defaultAdminListen         = "127.0.0.1:9090"
	defaultReadHeaderTimeout   = 5 * time.Second
	defaultIdleTimeout         = 120 * time.Second
	defaultShutdownTimeout     = 15 * time.Second
	defaultMaxHeaderBytes      = 16384
	defaultMaxBodyBytes        = 10 << 20
	defaultJWKSRefresh         = 15 * time.Minute
	defaultJWKSMinRefetch      = 10 * time.Second
	defaultVerifiedCacheSize   = 100000
	defaultLeeway              = 30 * time.Second
	defaultQuery               = "data.audgate.decision"
	defaultPolicyTimeout       = 100 * time.Millisecond
	defaultDecisionLogOutput   = "stdout"
	defaultClientAuth          = "client_secret_basic"
	defaultAudienceParam       = "audience"
	defaultTokenType           = "urn:ietf:params:oauth:token-type:access_token"
	defaultSourceTimeout       = 5 * time.Second
	defaultSelfSignedAlgorithm = "ES256"
	defaultSelfSignedTTL       = 5 * time.Minute
	defaultUpstreamTimeout     = 30 * time.Second
	defaultMaxIdleConns        = 256
	defaultCacheMaxEntries     = 100000
	defaultRefreshBeforeExpiry = 30 * time.Second
	defaultCacheTTL            = 60 * time.Second
	defaultNegativeTTL         = 5 * time.Second
)

// The list defaults are functions, not variables, so that no caller can
// change them for everyone.

func defaultStripInboundHeaders() []string {
	return []string{"X-User-*", "X-Forwarded-User", "X-Original-URL", "X-Rewrite-URL",
		"X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}
}

func defaultAlgorithms() []string { return []string{"RS256", "ES256", "EdDSA"} }

func defaultTyp() []string { return []string{"at+jwt", "application/at+jwt", "JWT", ""} }

// applyDefaults gives every zero field of c its documented default, and
// normalizes what has a canonical form. Parse runs it only for the keys the
// file leaves out (see fillAbsent), so that a value the file writes, even 0,
// is validated as written instead of being replaced.
func (c *Config) applyDefaults() {
	c.Server.applyDefaults()
	c.Inbound.applyDefaults()
	c.Policy.applyDefaults()
	for i := range c.TokenSources {
		c.TokenSources[i].applyDefaults()
	}
	for i := range c.Upstreams {
		c.Upstreams[i].applyDefaults()
	}
	c.Cache.applyDefaults()
	c.normalize()
}

// normalize rewrites values that have one canonical form. It runs after
// defaults, on every value the file writes.
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
			c.Upstreams[i].MaxIdleConns = defaultMaxIdleConns
		}
	}
}

func (s *Server) applyDefaults() {
	setDefault(&s.Listen, defaultListen)
	setDefault(&s.AdminListen, defaultAdminListen)
	setDefault(&s.ReadHeaderTimeout, Duration(defaultReadHeaderTimeout))
	setDefault(&s.IdleTimeout, Duration(defaultIdleTimeout))
	setDefault(&s.ShutdownTimeout, Duration(defaultShutdownTimeout))
	setDefault(&s.MaxHeaderBytes, defaultMaxHeaderBytes)
	setDefault(&s.MaxBodyBytes, defaultMaxBodyBytes)
	// nil, not empty: "strip_inbound_headers: []" strips nothing.
	if s.StripInboundHeaders == nil {
		s.StripInboundHeaders = defaultStripInboundHeaders()
	}
}

func (in *Inbound) applyDefaults() {
	for i := range in.Issuers {
		in.Issuers[i].applyDefaults()
	}
	setDefault(&in.JWKSRefreshInterval, Duration(defaultJWKSRefresh))
	setDefault(&in.JWKSMinRefetchInterval, Duration(defaultJWKSMinRefetch))
	setDefault(&in.VerifiedCacheSize, defaultVerifiedCacheSize)
}

func (is *Issuer) applyDefaults() {
	if is.Algorithms == nil {
		is.Algorithms = defaultAlgorithms()
	}
	setDefault(&is.Leeway, Duration(defaultLeeway))
	if is.Typ == nil {
		is.Typ = defaultTyp()
	}
}

func (p *Policy) applyDefaults() {
	setDefault(&p.Query, defaultQuery)
	setDefault(&p.Timeout, Duration(defaultPolicyTimeout))
	p.DecisionLog.applyDefaults()
}

func (l *DecisionLog) applyDefaults() {
	setDefault(&l.Output, defaultDecisionLogOutput)
}

// applyDefaults sets only the fields that ts's type uses, so that a field
// the type ignores stays empty and Validate can refuse it when it is set.
func (ts *TokenSource) applyDefaults() {
	switch ts.Type {
	case SourceTokenExchange, SourceClientCredentials, SourceJWTBearer:
		setDefault(&ts.ClientAuth, defaultClientAuth)
		setDefault(&ts.AudienceParam, defaultAudienceParam)
		setDefault(&ts.Timeout, Duration(defaultSourceTimeout))
		if ts.Type == SourceTokenExchange {
			setDefault(&ts.SubjectTokenType, defaultTokenType)
			setDefault(&ts.RequestedTokenType, defaultTokenType)
			if ts.ActorToken != "" {
				setDefault(&ts.ActorTokenType, defaultTokenType)
			}
		}
	case SourceSelfSigned:
		setDefault(&ts.Algorithm, defaultSelfSignedAlgorithm)
		setDefault(&ts.TTL, Duration(defaultSelfSignedTTL))
	}
}

func (u *Upstream) applyDefaults() {
	setDefault(&u.Timeout, Duration(defaultUpstreamTimeout))
	setDefault(&u.MaxIdleConns, defaultMaxIdleConns)
}

func (c *Cache) applyDefaults() {
	setDefault(&c.MaxEntries, defaultCacheMaxEntries)
	setDefault(&c.RefreshBeforeExpiry, Duration(defaultRefreshBeforeExpiry))
	setDefault(&c.DefaultTTL, Duration(defaultCacheTTL))
	setDefault(&c.NegativeTTL, Duration(defaultNegativeTTL))
}

// setDefault sets *v to def when *v is the zero value.
func setDefault[T comparable](v *T, def T) {
	var zero T
	if *v == zero {
		*v = def
	}
}
