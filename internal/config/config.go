// Package config loads and validates audgate's YAML configuration file.
//
// The file is YAML; ${NAME} in any scalar value expands from the
// environment so that secrets need not be written in the file. Durations
// are Go durations ("30s"). Unknown keys are an error. Every error names
// the field path, e.g. `upstreams[1].token_source: "m2m" is not a defined
// token source`.
package config

import "time"

// Config is the whole configuration file. It is read-only once Load returns.
type Config struct {
	Server       Server        `yaml:"server"`
	Inbound      Inbound       `yaml:"inbound"`
	Policy       Policy        `yaml:"policy"`
	TokenSources []TokenSource `yaml:"token_sources"`
	Upstreams    []Upstream    `yaml:"upstreams"`
	Routes       []Route       `yaml:"routes"`
	Cache        Cache         `yaml:"cache"`
	Telemetry    Telemetry     `yaml:"telemetry"`
}

// Telemetry configures what audgate reports beyond metrics and logs.
type Telemetry struct {
	Tracing Tracing `yaml:"tracing"`
}

// Tracing configures OpenTelemetry traces, exported with OTLP.
type Tracing struct {
	// Endpoint is the collector's OTLP base URL, as
	// OTEL_EXPORTER_OTLP_ENDPOINT (http/protobuf posts to
	// <endpoint>/v1/traces). Default: empty: the standard OTEL_EXPORTER_OTLP_*
	// environment variables, and without them tracing is off.
	Endpoint string `yaml:"endpoint"`
	// Protocol is http/protobuf or grpc. Default: http/protobuf.
	Protocol string `yaml:"protocol"`
	// SampleRatio is the share of new traces sampled, 0 to 1; a caller's
	// sampled traceparent is always followed. Default: 0.05.
	SampleRatio float64 `yaml:"sample_ratio"`
	// Headers are sent to the collector (${ENV} for secrets). Default: none.
	Headers map[string]string `yaml:"headers"`
}

// Server configures the gateway and admin listeners.
type Server struct {
	// Listen is the gateway's address. Default: 0.0.0.0:8080.
	Listen string `yaml:"listen"`
	// AdminListen serves /healthz, /readyz and /metrics. Default:
	// 127.0.0.1:9090. "off" disables the admin listener.
	AdminListen string `yaml:"admin_listen"`
	// ReadHeaderTimeout bounds reading a request's headers. Default: 5s.
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"`
	// IdleTimeout closes idle client keep-alive connections. Default: 120s.
	IdleTimeout Duration `yaml:"idle_timeout"`
	// ShutdownTimeout bounds how long in-flight requests may finish after
	// SIGTERM. Default: 15s.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"`
	// MaxHeaderBytes is the largest request header block, in bytes; larger
	// requests get 431. Default: 16384.
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxBodyBytes is the largest request body, in bytes; larger requests
	// get 413. Default: 10485760 (10 MiB).
	MaxBodyBytes int64 `yaml:"max_body_bytes"`
	// StripInboundHeaders are removed from every inbound request before the
	// policy sees it. Glob patterns (* only), case-insensitive. Default:
	// X-User-*, X-Forwarded-User, X-Original-URL, X-Rewrite-URL,
	// X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override (see
	// defaultStripInboundHeaders); an empty list ([]) strips nothing.
	StripInboundHeaders []string `yaml:"strip_inbound_headers"`
	// TLS serves the gateway listener over TLS (and HTTP/2). Default: none
	// (plain HTTP).
	TLS *ServerTLS `yaml:"tls"`
	// BodyReadTimeout is the longest wait between two reads of a request
	// body; then the upstream request is cancelled and the caller gets
	// 408. Default: 30s.
	BodyReadTimeout Duration `yaml:"body_read_timeout"`
	// TrustedProxies are the CIDRs of load balancers whose client IP
	// header is believed. Default: none.
	TrustedProxies []string `yaml:"trusted_proxies"`
	// ClientIPHeader is where a trusted proxy names the caller:
	// X-Forwarded-For, Forwarded (RFC 7239) or X-Real-IP. Default:
	// X-Forwarded-For.
	ClientIPHeader string `yaml:"client_ip_header"`
}

// ServerTLS configures TLS on the gateway listener.
type ServerTLS struct {
	// CertFile is the PEM certificate chain; it and KeyFile are read again
	// when either changes. Required.
	CertFile string `yaml:"cert_file"`
	// KeyFile is the PEM private key. Required.
	KeyFile string `yaml:"key_file"`
	// MinVersion is the oldest TLS version accepted: "1.2" or "1.3".
	// Default: "1.2".
	MinVersion string `yaml:"min_version"`
	// ClientCAFile, when set, is the PEM bundle of CAs whose client
	// certificates are verified and shown to the policy. Default: none.
	ClientCAFile string `yaml:"client_ca_file"`
	// ClientAuth is request (a client certificate is verified if given)
	// or require (no verified client certificate, no TLS session).
	// Default: request. Only with ClientCAFile.
	ClientAuth string `yaml:"client_auth"`
}

// Inbound configures validation of the callers' access tokens.
type Inbound struct {
	// Issuers whose tokens the gateway accepts. At least one is required.
	Issuers []Issuer `yaml:"issuers"`
	// JWKSRefreshInterval is how often each issuer's JWKS is refetched in the
	// background. Default: 15m.
	JWKSRefreshInterval Duration `yaml:"jwks_refresh_interval"`
	// JWKSMinRefetchInterval is the shortest time between two refetches
	// caused by an unknown kid. Default: 10s.
	JWKSMinRefetchInterval Duration `yaml:"jwks_min_refetch_interval"`
	// VerifiedCacheSize bounds the number of verified tokens remembered by
	// their SHA-256 until they expire. Default: authn.DefaultCacheSize
	// (100000).
	VerifiedCacheSize int `yaml:"verified_cache_size"`
}

// Issuer is one trusted token issuer.
type Issuer struct {
	// Issuer must equal the token's iss exactly. Required.
	Issuer string `yaml:"issuer"`
	// Audiences: the token's aud must contain one of them. Required.
	Audiences []string `yaml:"audiences"`
	// JWKSURI overrides discovery. Default: jwks_uri from the issuer's
	// /.well-known/openid-configuration.
	JWKSURI string `yaml:"jwks_uri"`
	// Algorithms allow-lists the JWS alg, each one of authn.Algorithms (so
	// never none or HS*). Default: authn.DefaultAlgorithms (RS256, ES256,
	// EdDSA).
	Algorithms []string `yaml:"algorithms"`
	// Leeway tolerates clock skew on exp, nbf and iat. Default:
	// authn.DefaultLeeway (30s); at most 5m.
	Leeway Duration `yaml:"leeway"`
	// Typ lists accepted JOSE typ header values, compared case-insensitively,
	// "" meaning absent. Default: authn.DefaultTyp (at+jwt,
	// application/at+jwt, JWT, "").
	Typ []string `yaml:"typ"`
}

// Policy configures the Rego policy.
type Policy struct {
	// Path is a directory of .rego and .json files, or a bundle file
	// (.tar.gz). Default: the embedded policies, unless OPA bundles are
	// configured under opa.
	Path string `yaml:"path"`
	// Verification is OPA's bundle verification block for a signed local
	// bundle file: keys (as OPA's keys section), keyid, scope,
	// exclude_files. Default: none (the bundle is read unverified).
	Verification map[string]any `yaml:"verification"`
	// AllowNetwork lets the policy call http.send and net.lookup_ip_addr,
	// with OPA's inter-query cache. Default: false (refused at compile).
	AllowNetwork bool `yaml:"allow_network"`
	// Query is the decision's Rego reference. Default: data.audgate.decision.
	Query string `yaml:"query"`
	// Watch reloads the policy when Path changes; a broken policy keeps the
	// last good one. Default: false.
	Watch bool `yaml:"watch"`
	// Timeout bounds one evaluation. Default: 100ms.
	Timeout Duration `yaml:"timeout"`
	// DecisionCache configures the decision cache.
	DecisionCache DecisionCache `yaml:"decision_cache"`
	// DecisionLog configures the decision log.
	DecisionLog DecisionLog `yaml:"decision_log"`
	// OPA is OPA's own configuration, exactly as OPA documents it
	// (services, bundles, decision_logs, status, discovery, keys, labels,
	// caching), run by OPA's plugin manager inside audgate. With bundles,
	// the policy comes from them. Default: none.
	OPA map[string]any `yaml:"opa"`
}

// DecisionCache configures the cache of decisions, used only where the
// policy is provably a pure function of the input it reads.
type DecisionCache struct {
	// Enabled turns the cache on. Default: true.
	Enabled bool `yaml:"enabled"`
	// MaxEntries bounds it. Default: 100000.
	MaxEntries int `yaml:"max_entries"`
}

// DecisionLog configures the one-line-per-decision log.
type DecisionLog struct {
	// Output is stdout, a file path, or off. Default: stdout.
	Output string `yaml:"output"`
	// Mask lists JSON pointers, rooted at the decision log event, erased
	// from every event, e.g. /input/token/claims/email. Default: none.
	Mask []string `yaml:"mask"`
}

// Token source types.
const (
	SourceTokenExchange     = "token_exchange"
	SourceClientCredentials = "client_credentials"
	SourceSelfSigned        = "self_signed"
	SourceJWTBearer         = "jwt_bearer"
)

// TokenSource is where downstream tokens come from.
type TokenSource struct {
	// Name is how upstreams refer to this source. Required, unique.
	Name string `yaml:"name"`
	// Type is token_exchange, client_credentials, jwt_bearer or
	// self_signed. Required.
	Type string `yaml:"type"`
	// Issuer: for token_exchange and client_credentials, the IdP's issuer,
	// used to discover token_endpoint; for self_signed, the iss of the
	// tokens audgate signs (required).
	Issuer string `yaml:"issuer"`
	// TokenEndpoint overrides discovery from Issuer.
	TokenEndpoint string `yaml:"token_endpoint"`
	// ClientID authenticates audgate at the IdP.
	ClientID string `yaml:"client_id"`
	// ClientSecret authenticates audgate at the IdP; use ${ENV}.
	ClientSecret Secret `yaml:"client_secret"`
	// ClientAuth is client_secret_basic, client_secret_post or
	// private_key_jwt. Default: client_secret_basic.
	ClientAuth string `yaml:"client_auth"`
	// PrivateKeyFile signs client assertions for private_key_jwt.
	PrivateKeyFile string `yaml:"private_key_file"`
	// CertificateFile (private_key_jwt) is the PEM certificate of the
	// private key: assertions then carry its x5t#S256 thumbprint and an
	// RSA key signs PS256, as Microsoft Entra ID's certificate credentials
	// require. Default: none (assertions carry the key's kid).
	CertificateFile string `yaml:"certificate_file"`
	// ClientAssertionAudience is the aud of private_key_jwt assertions.
	// Default: the token endpoint; Zitadel wants its issuer.
	ClientAssertionAudience string `yaml:"client_assertion_audience"`
	// ExtraParams are form fields added to every token request of this
	// source, e.g. {organization: org_123} for Auth0; a field the grant or
	// client authentication sets is refused. Default: none.
	ExtraParams map[string]string `yaml:"extra_params"`
	// AudienceParam is how the audience is sent: audience (Auth0, Okta,
	// Keycloak), resource (RFC 8707), both, or scope (Microsoft Entra ID:
	// each scope sent as <audience>/<scope>, or <audience>/.default when
	// there is none). Default: audience.
	AudienceParam string `yaml:"audience_param"`
	// SubjectTokenType is RFC 8693's subject_token_type. Default:
	// urn:ietf:params:oauth:token-type:access_token.
	SubjectTokenType string `yaml:"subject_token_type"`
	// RequestedTokenType is RFC 8693's requested_token_type. Default:
	// urn:ietf:params:oauth:token-type:access_token.
	RequestedTokenType string `yaml:"requested_token_type"`
	// ActorToken (token_exchange) is sent as RFC 8693 actor_token, naming
	// audgate as the actor; use ${ENV}. Default: none.
	ActorToken Secret `yaml:"actor_token"`
	// ActorTokenType is the actor token's type URI. Default, when
	// actor_token is set: urn:ietf:params:oauth:token-type:access_token
	// (tokens.NewTokenExchange applies it).
	ActorTokenType string `yaml:"actor_token_type"`
	// OnBehalfOf (jwt_bearer) sends requested_token_use=on_behalf_of, as
	// Microsoft Entra ID's On-Behalf-Of flow requires. Default: false.
	OnBehalfOf bool `yaml:"on_behalf_of"`
	// Timeout bounds one request to the IdP. Default: 5s.
	Timeout Duration `yaml:"timeout"`
	// SigningKeys (self_signed) is a directory of PEM or JWK private keys,
	// or one file; the newest signs, all are published. Default: an
	// ephemeral key, with a warning.
	SigningKeys string `yaml:"signing_keys"`
	// Algorithm (self_signed) signs the tokens: ES256, ES384, RS256, PS256
	// or EdDSA. Default: ES256.
	Algorithm string `yaml:"algorithm"`
	// TTL (self_signed) is the tokens' lifetime, never past the inbound
	// token's exp. Default: 5m.
	TTL Duration `yaml:"ttl"`
}

// Upstream is one downstream service.
type Upstream struct {
	// Name is how routes refer to this upstream. Required, unique.
	Name string `yaml:"name"`
	// URL is the upstream's base URL, http or https. Required.
	URL string `yaml:"url"`
	// TokenSource names the source of this upstream's tokens. Required.
	TokenSource string `yaml:"token_source"`
	// Audiences are the only audiences a decision may ask for. Required.
	Audiences []string `yaml:"audiences"`
	// Scopes, when set, are the only scopes a decision may ask for.
	Scopes []string `yaml:"scopes"`
	// Timeout bounds the upstream's response headers. Default: 30s.
	Timeout Duration `yaml:"timeout"`
	// MaxIdleConns is how many idle keep-alive connections are kept to this
	// upstream. Default: 256; 0 also means the default.
	MaxIdleConns int `yaml:"max_idle_conns"`
	// TLS configures (m)TLS to the upstream.
	TLS TLS `yaml:"tls"`
}

// TLS configures the client side of TLS to an upstream.
type TLS struct {
	// CAFile is a PEM bundle of roots. Default: the system roots.
	CAFile string `yaml:"ca_file"`
	// CertFile and KeyFile are the client certificate for mTLS. Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Route maps requests to an upstream.
type Route struct {
	// Path uses Echo syntax: /orders/:id, /orders/*. Required.
	Path string `yaml:"path"`
	// Methods the route accepts. Default: all.
	Methods []string `yaml:"methods"`
	// Upstream names the upstream. Required.
	Upstream string `yaml:"upstream"`
	// StripPrefix is removed from the path sent upstream. Default: "".
	StripPrefix string `yaml:"strip_prefix"`
}

// Cache configures the downstream token cache.
type Cache struct {
	// MaxEntries bounds the number of cached downstream tokens. Default: 100000.
	MaxEntries int `yaml:"max_entries"`
	// RefreshBeforeExpiry: a cached token is not used in its last this-long.
	// Default: 30s.
	RefreshBeforeExpiry Duration `yaml:"refresh_before_expiry"`
	// DefaultTTL applies when the IdP sends no expires_in. Default: 60s.
	DefaultTTL Duration `yaml:"default_ttl"`
	// NegativeTTL: an IdP refusal is remembered this long per key; 0 turns
	// it off. Default: 5s.
	NegativeTTL Duration `yaml:"negative_ttl"`
}

// Duration is a time.Duration written as a Go duration string ("30s").
type Duration time.Duration

// D returns d as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Secret is a string that never prints: fmt and logs show "[redacted]".
type Secret string

// String hides the value.
func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// GoString hides the value from %#v.
func (s Secret) GoString() string { return s.String() }

// Value returns the secret itself.
func (s Secret) Value() string { return string(s) }
