package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// baseYAML is a valid config; each bad case changes one thing in it.
const baseYAML = `
server:
  listen: 0.0.0.0:8080
  admin_listen: 127.0.0.1:9090
  max_header_bytes: 16384

inbound:
  issuers:
    - issuer: https://idp.example.com/
      audiences: [https://gateway.example.com]
      algorithms: [RS256, ES256]
      leeway: 30s
  jwks_refresh_interval: 15m

policy:
  query: data.audgate.decision
  decision_log:
    output: /var/log/audgate-$${HOSTNAME}.log
    mask: [/input/token/claims/email]
  opa:
    services:
      acme:
        url: https://bundles.example.com
        credentials:
          bearer:
            token: ${OPA_TOKEN}

token_sources:
  - name: idp
    type: token_exchange
    issuer: https://idp.example.com/
    client_id: audgate
    client_secret: ${AUDGATE_CLIENT_SECRET}
  - name: m2m
    type: client_credentials
    token_endpoint: https://idp.example.com/oauth/token
    client_id: audgate-m2m
    client_secret: ${AUDGATE_M2M_SECRET}
    audience_param: resource
  - name: self
    type: self_signed
    issuer: https://audgate.internal
    ttl: 2m

upstreams:
  - name: orders
    url: http://orders:8080
    token_source: idp
    audiences: [https://orders.example.com]
    scopes: [orders:read, orders:write]
  - name: billing
    url: https://billing:8443
    token_source: m2m
    audiences: [https://billing.example.com]
    timeout: 10s
  - name: profile
    url: http://profile:8080
    token_source: self
    audiences: [https://profile.example.com]

routes:
  - path: /orders/*
    methods: [get, POST]
    upstream: orders
  - path: /billing/*
    upstream: billing
    strip_prefix: /billing
  - path: /profile/:id
    methods: [GET]
    upstream: profile

cache:
  max_entries: 1000
  negative_ttl: 0s
`

// clientSecret looks like YAML structure on purpose: expansion must not
// parse it.
const clientSecret = "s3cr3t: {not: [yaml"

func testEnv() map[string]string {
	return map[string]string{
		"AUDGATE_CLIENT_SECRET": clientSecret,
		"AUDGATE_M2M_SECRET":    "m2m-secret",
		"OPA_TOKEN":             "opa-token",
	}
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
}

// edit replaces old with new in s, exactly once.
func edit(t *testing.T, s, old, new string) string {
	t.Helper()
	if n := strings.Count(s, old); n != 1 {
		t.Fatalf("edit: %q occurs %d times in the base config, want 1", old, n)
	}
	return strings.Replace(s, old, new, 1)
}

func mustParse(t *testing.T, doc string, env map[string]string) *Config {
	t.Helper()
	cfg, err := Parse([]byte(doc), lookup(env))
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return cfg
}

func TestParseRefusesBadConfig(t *testing.T) {
	tests := []struct {
		name     string
		old, new string // one edit of baseYAML
		path     string // the field path the error must name
		word     string // and a word of its message
	}{
		{"alg none", "algorithms: [RS256, ES256]", "algorithms: [RS256, none]", "inbound.issuers[0].algorithms[1]", "unsigned"},
		{"alg None", "algorithms: [RS256, ES256]", "algorithms: [None]", "inbound.issuers[0].algorithms[0]", "unsigned"},
		{"alg NONE", "algorithms: [RS256, ES256]", "algorithms: [ES256, NONE]", "inbound.issuers[0].algorithms[1]", "unsigned"},
		{"alg HS256", "algorithms: [RS256, ES256]", "algorithms: [RS256, HS256]", "inbound.issuers[0].algorithms[1]", "symmetric"},
		{"alg hs512", "algorithms: [RS256, ES256]", "algorithms: [hs512]", "inbound.issuers[0].algorithms[0]", "symmetric"},
		{"alg unknown", "algorithms: [RS256, ES256]", "algorithms: [RS257]", "inbound.issuers[0].algorithms[0]", "not a supported algorithm"},
		{"alg wrong case", "algorithms: [RS256, ES256]", "algorithms: [rs256]", "inbound.issuers[0].algorithms[0]", "case-sensitive"},
		{"algorithms empty", "algorithms: [RS256, ES256]", "algorithms: []", "inbound.issuers[0].algorithms", "no token"},
		{"no issuers", "  issuers:\n    - issuer: https://idp.example.com/\n      audiences: [https://gateway.example.com]\n      algorithms: [RS256, ES256]\n      leeway: 30s\n", "  issuers: []\n", "inbound.issuers", "no issuer"},
		{"issuer not a URL", "- issuer: https://idp.example.com/", "- issuer: idp.example.com", "inbound.issuers[0].issuer", "not an absolute"},
		{"issuer with query", "- issuer: https://idp.example.com/", "- issuer: https://idp.example.com/?tenant=1", "inbound.issuers[0].issuer", "query"},
		{"issuer audiences empty", "audiences: [https://gateway.example.com]", "audiences: []", "inbound.issuers[0].audiences", "empty"},
		{"duplicate issuer", "      leeway: 30s\n", "      leeway: 30s\n    - issuer: https://idp.example.com/\n      audiences: [x]\n", "inbound.issuers[1].issuer", "already configured"},
		{"leeway too long", "leeway: 30s", "leeway: 10m", "inbound.issuers[0].leeway", "more than 5m"},
		{"leeway negative", "leeway: 30s", "leeway: -1s", "inbound.issuers[0].leeway", "negative"},
		{"jwks_uri malformed", "      leeway: 30s\n", "      leeway: 30s\n      jwks_uri: /keys\n", "inbound.issuers[0].jwks_uri", "not an absolute"},
		{"jwks refresh zero", "jwks_refresh_interval: 15m", "jwks_refresh_interval: 0s", "inbound.jwks_refresh_interval", "less than 1s"},
		{"jwks refresh below a second", "jwks_refresh_interval: 15m", "jwks_refresh_interval: 500ms", "inbound.jwks_refresh_interval", "less than 1s"},
		{"token source type null", "type: self_signed", "type: ~", "token_sources[2].type", "empty"},
		{"jwks min refetch too short", "jwks_refresh_interval: 15m", "jwks_min_refetch_interval: 500ms", "inbound.jwks_min_refetch_interval", "less than 1s"},
		{"listen not host:port", "listen: 0.0.0.0:8080", "listen: 8080", "server.listen", "host:port"},
		{"admin_listen bad port", "admin_listen: 127.0.0.1:9090", "admin_listen: 127.0.0.1:http", "server.admin_listen", "port"},
		{"admin_listen same as listen", "admin_listen: 127.0.0.1:9090", "admin_listen: 0.0.0.0:8080", "server.admin_listen", "also server.listen"},
		{"max_header_bytes zero", "max_header_bytes: 16384", "max_header_bytes: 0", "server.max_header_bytes", "positive"},
		{"max_header_bytes not a number", "max_header_bytes: 16384", "max_header_bytes: lots", "server.max_header_bytes", "not an integer"},
		{"max_header_bytes quoted", "max_header_bytes: 16384", `max_header_bytes: "16384"`, "server.max_header_bytes", "without quotes"},
		{"strip header with space", "max_header_bytes: 16384", "max_header_bytes: 16384\n  strip_inbound_headers: [X-User-*, X User]", "server.strip_inbound_headers[1]", "header name"},
		{"strip header empty", "max_header_bytes: 16384", `max_header_bytes: 16384` + "\n  strip_inbound_headers: [\"\"]", "server.strip_inbound_headers[0]", "empty"},
		{"duplicate key", "max_header_bytes: 16384", "max_header_bytes: 16384\n  max_header_bytes: 1", "server.max_header_bytes", "twice"},
		{"unknown key top level", "\ncache:", "\nlisten: 0.0.0.0:80\ncache:", "listen", "unknown key"},
		{"unknown key nested", "listen: 0.0.0.0:8080", "listn: 0.0.0.0:8080", "server.listn", "did you mean listen"},
		{"unknown key in list item", "client_secret: ${AUDGATE_CLIENT_SECRET}", "secret: ${AUDGATE_CLIENT_SECRET}", "token_sources[0].secret", "client_secret"},
		{"merge key", "  - name: profile\n", "  - name: profile\n    <<: {timeout: 5s}\n", "upstreams[2].<<", "merge keys"},
		{"section not a mapping", "cache:\n  max_entries: 1000\n  negative_ttl: 0s\n", "cache: [1000]\n", "cache", "mapping"},
		{"list not a list", "audiences: [https://orders.example.com]", "audiences: https://orders.example.com", "upstreams[0].audiences", "list"},
		{"unset env var", "${AUDGATE_CLIENT_SECRET}", "${AUDGATE_UNSET}", "token_sources[0].client_secret", "AUDGATE_UNSET is not set"},
		{"actor token on client credentials", "    audience_param: resource\n", "    audience_param: resource\n    actor_token: x\n", "token_sources[1].actor_token", "client_credentials"},
		{"actor_token_type alone", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n    actor_token_type: urn:x\n", "token_sources[0].actor_token_type", "without actor_token"},
		{"on_behalf_of on token exchange", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n    on_behalf_of: true\n", "token_sources[0].on_behalf_of", "token_exchange"},
		{"assertion audience with a secret", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n", "    client_secret: ${AUDGATE_CLIENT_SECRET}\n    client_assertion_audience: https://idp\n", "token_sources[0].client_assertion_audience", "private_key_jwt"},
		{"jwt_bearer without client_id", "    type: token_exchange\n    issuer: https://idp.example.com/\n    client_id: audgate\n", "    type: jwt_bearer\n    issuer: https://idp.example.com/\n", "token_sources[0].client_id", "empty"},
		{"unset env var in opa", "${OPA_TOKEN}", "${OPA_UNSET}", "policy.opa.services.acme.credentials.bearer.token", "OPA_UNSET is not set"},
		{"unterminated env var", "${AUDGATE_CLIENT_SECRET}", "${AUDGATE_CLIENT_SECRET", "token_sources[0].client_secret", "no closing"},
		{"bad env var name", "${AUDGATE_CLIENT_SECRET}", "${SECRET:-x}", "token_sources[0].client_secret", "not an environment variable name"},
		{"policy query", "query: data.audgate.decision", "query: audgate.decision", "policy.query", "under data"},
		{"policy query empty", "query: data.audgate.decision", `query: ""`, "policy.query", "empty"},
		{"policy timeout", "query: data.audgate.decision", "query: data.audgate.decision\n  timeout: 0s", "policy.timeout", "positive"},
		{"decision log output empty", "output: /var/log/audgate-$${HOSTNAME}.log", `output: ""`, "policy.decision_log.output", "empty"},
		{"trusted proxy not a CIDR", "max_header_bytes: 16384", "max_header_bytes: 16384\n  trusted_proxies: [10.0.0.0/8, lb.internal]", "server.trusted_proxies[1]", "not a CIDR"},
		{"client ip header unknown", "max_header_bytes: 16384", "max_header_bytes: 16384\n  client_ip_header: X-Client-IP", "server.client_ip_header", "use one of: X-Forwarded-For, Forwarded, X-Real-IP"},
		{"tls without key", "max_header_bytes: 16384", "max_header_bytes: 16384\n  tls: {cert_file: tls.crt}", "server.tls", "both required"},
		{"tls version", "max_header_bytes: 16384", "max_header_bytes: 16384\n  tls: {cert_file: a, key_file: b, min_version: \"1.1\"}", "server.tls.min_version", "use one of: 1.2, 1.3"},
		{"tls require without CA", "max_header_bytes: 16384", "max_header_bytes: 16384\n  tls: {cert_file: a, key_file: b, client_auth: require}", "server.tls.client_auth", "needs client_ca_file"},
		{"tls unknown key", "max_header_bytes: 16384", "max_header_bytes: 16384\n  tls: {cert: a}", "server.tls.cert", "unknown key"},
		{"tracing protocol", "\ncache:", "\ntelemetry:\n  tracing: {endpoint: http://collector:4318, protocol: zipkin}\ncache:", "telemetry.tracing.protocol", "use one of: http/protobuf, grpc"},
		{"tracing sample ratio", "\ncache:", "\ntelemetry:\n  tracing: {endpoint: http://collector:4318, sample_ratio: 5}\ncache:", "telemetry.tracing.sample_ratio", "between 0 and 1"},
		{"tracing endpoint", "\ncache:", "\ntelemetry:\n  tracing: {endpoint: collector:4318}\ncache:", "telemetry.tracing.endpoint", "http or https base URL"},
		{"body read timeout zero", "max_header_bytes: 16384", "max_header_bytes: 16384\n  body_read_timeout: 0s", "server.body_read_timeout", "positive"},
		{"mask not a pointer", "mask: [/input/token/claims/email]", "mask: [token/claims/email]", "policy.decision_log.mask[0]", "JSON pointer"},
		{"mask rooted at the input, as before", "mask: [/input/token/claims/email]", "mask: [/token/claims/email]", "policy.decision_log.mask[0]", "write /input/token/claims/email"},
		{"verification without a bundle file", "mask: [/input/token/claims/email]", "mask: [/input/token/claims/email]\n  verification: {keyid: k}", "policy.verification", "not a bundle file"},
		{"opa not a mapping", "  opa:\n    services:", "  opa: [1]\n  x_opa:\n    services:", "policy.opa", "mapping"},
		{"token source name empty", "  - name: m2m\n", "  - name: \"\"\n", "token_sources[1].name", "empty"},
		{"duplicate token source name", "  - name: m2m\n", "  - name: idp\n", "token_sources[1].name", "already the name of token_sources[0]"},
		{"token source type unknown", "type: self_signed", "type: selfsigned", "token_sources[2].type", "not a token source type"},
		{"no endpoint and no issuer", "    issuer: https://idp.example.com/\n    client_id: audgate\n", "    client_id: audgate\n", "token_sources[0].token_endpoint", "no issuer"},
		{"token endpoint malformed", "token_endpoint: https://idp.example.com/oauth/token", "token_endpoint: idp/oauth/token", "token_sources[1].token_endpoint", "not an absolute"},
		{"token endpoint fragment", "token_endpoint: https://idp.example.com/oauth/token", "token_endpoint: https://idp.example.com/oauth/token#x", "token_sources[1].token_endpoint", "fragment"},
		{"client_id empty", "client_id: audgate-m2m", `client_id: ""`, "token_sources[1].client_id", "empty"},
		{"client_auth unknown", "client_id: audgate\n", "client_id: audgate\n    client_auth: mtls\n", "token_sources[0].client_auth", "not a client authentication method"},
		{"private_key_jwt without key file", "client_id: audgate\n", "client_id: audgate\n    client_auth: private_key_jwt\n", "token_sources[0].private_key_file", "private_key_jwt"},
		{"client secret empty", "client_secret: ${AUDGATE_M2M_SECRET}", `client_secret: ""`, "token_sources[1].client_secret", "client_secret_basic"},
		{"audience_param unknown", "audience_param: resource", "audience_param: aud", "token_sources[1].audience_param", "audience, resource, both"},
		{"source timeout zero", "audience_param: resource", "audience_param: resource\n    timeout: 0s", "token_sources[1].timeout", "positive"},
		{"self_signed without issuer", "    issuer: https://audgate.internal\n", "", "token_sources[2].issuer", "empty"},
		{"self_signed algorithm", "ttl: 2m", "ttl: 2m\n    algorithm: ES512", "token_sources[2].algorithm", "cannot sign"},
		{"self_signed ttl zero", "ttl: 2m", "ttl: 0s", "token_sources[2].ttl", "positive"},
		{"self_signed with client_id", "ttl: 2m", "ttl: 2m\n    client_id: x", "token_sources[2].client_id", "do not use"},
		{"extra_params sets the grant type", "audience_param: resource", "audience_param: resource\n    extra_params: {organization: org_1, grant_type: password}", "token_sources[1].extra_params.grant_type", "sets grant_type itself"},
		{"extra_params sets the audience", "audience_param: resource", "audience_param: resource\n    extra_params: {audience: https://x}", "token_sources[1].extra_params.audience", "from the policy"},
		{"extra_params on self_signed", "ttl: 2m", "ttl: 2m\n    extra_params: {organization: org_1}", "token_sources[2].extra_params", "do not use"},
		{"certificate_file without private_key_jwt", "audience_param: resource", "audience_param: resource\n    certificate_file: client.crt", "token_sources[1].certificate_file", "sends no assertion"},
		{"exchange with ttl", "client_id: audgate\n", "client_id: audgate\n    ttl: 1m\n", "token_sources[0].ttl", "do not use"},
		{"duration in words", "ttl: 2m", "ttl: 5 minutes", "token_sources[2].ttl", "not a duration"},
		{"duration without unit", "timeout: 10s", "timeout: 10", "upstreams[1].timeout", "write a unit"},
		{"duration a list", "timeout: 10s", "timeout: [10s]", "upstreams[1].timeout", "single value"},
		{"upstream name empty", "  - name: orders\n", "  - name: \"\"\n", "upstreams[0].name", "empty"},
		{"duplicate upstream name", "  - name: billing\n", "  - name: orders\n", "upstreams[1].name", "already the name of upstreams[0]"},
		{"upstream url malformed", "url: http://orders:8080", "url: orders:8080", "upstreams[0].url", "not an absolute"},
		{"upstream url ftp", "url: http://orders:8080", "url: ftp://orders", "upstreams[0].url", "http or https"},
		{"upstream url with query", "url: http://orders:8080", "url: http://orders:8080/?a=1", "upstreams[0].url", "query"},
		{"upstream url with credentials", "url: http://orders:8080", "url: http://u:p@orders:8080", "upstreams[0].url", "credentials"},
		{"upstream token source unknown", "token_source: m2m", "token_source: m2x", "upstreams[1].token_source", "not a defined token source"},
		{"upstream token source empty", "token_source: m2m", `token_source: ""`, "upstreams[1].token_source", "empty"},
		{"upstream without audiences", "audiences: [https://orders.example.com]", "audiences: []", "upstreams[0].audiences", "empty"},
		{"upstream empty audience", "audiences: [https://orders.example.com]", `audiences: [https://orders.example.com, ""]`, "upstreams[0].audiences[1]", "empty string"},
		{"upstream bad scope", "scopes: [orders:read, orders:write]", `scopes: [orders:read, "orders write"]`, "upstreams[0].scopes[1]", "not a scope"},
		{"tls cert without key", "url: https://billing:8443", "url: https://billing:8443\n    tls: {cert_file: client.pem}", "upstreams[1].tls.key_file", "both"},
		{"tls key without cert", "url: https://billing:8443", "url: https://billing:8443\n    tls: {key_file: client.key}", "upstreams[1].tls.cert_file", "both"},
		{"tls on http", "url: http://orders:8080", "url: http://orders:8080\n    tls: {ca_file: ca.pem}", "upstreams[0].tls", "https://"},
		{"upstream timeout zero", "timeout: 10s", "timeout: 0s", "upstreams[1].timeout", "positive"},
		{"max_idle_conns negative", "timeout: 10s", "timeout: 10s\n    max_idle_conns: -1", "upstreams[1].max_idle_conns", "negative"},
		{"no routes", "routes:\n  - path: /orders/*\n    methods: [get, POST]\n    upstream: orders\n  - path: /billing/*\n    upstream: billing\n    strip_prefix: /billing\n  - path: /profile/:id\n    methods: [GET]\n    upstream: profile\n", "routes: []\n", "routes", "no route"},
		{"route path relative", "path: /profile/:id", "path: profile/:id", "routes[2].path", "does not start with /"},
		{"route path empty", "path: /profile/:id", `path: ""`, "routes[2].path", "empty"},
		{"route path dot segment", "path: /profile/:id", "path: /profile/../:id", "routes[2].path", "dot segment"},
		{"route unknown upstream", "upstream: profile", "upstream: profiles", "routes[2].upstream", "not a defined upstream"},
		{"route method invalid", "methods: [GET]", "methods: [GET, \"G T\"]", "routes[2].methods[1]", "not an HTTP method"},
		{"route method TRACE", "methods: [GET]", "methods: [GET, trace]", "routes[2].methods[1]", "TRACE"},
		{"route method CONNECT", "methods: [GET]", "methods: [CONNECT]", "routes[2].methods[0]", "CONNECT"},
		{"route method twice", "methods: [GET]", "methods: [GET, get]", "routes[2].methods[1]", "twice"},
		{"duplicate route", "path: /profile/:id", "path: /orders/*", "routes[2].methods[0]", "already routed by routes[0]"},
		{"duplicate route by param name", "  - path: /profile/:id\n    methods: [GET]\n", "  - path: /profile/:id\n    methods: [GET]\n    upstream: profile\n  - path: /profile/:pid\n    methods: [POST, GET]\n", "routes[3].methods[1]", "already routed by routes[2]"},
		{"duplicate route all methods", "path: /billing/*", "path: /orders/*", "routes[1].path", "every method"},
		{"strip_prefix not a prefix", "strip_prefix: /billing", "strip_prefix: /orders", "routes[1].strip_prefix", "not a prefix"},
		{"strip_prefix inside a segment", "strip_prefix: /billing", "strip_prefix: /bill", "routes[1].strip_prefix", "inside a segment"},
		{"strip_prefix before a wildcard in the segment", "path: /billing/*\n    upstream: billing\n    strip_prefix: /billing", "path: /billing*\n    upstream: billing\n    strip_prefix: /billing", "routes[1].strip_prefix", "inside a segment"},
		{"strip_prefix before a param in the segment", "path: /billing/*\n    upstream: billing\n    strip_prefix: /billing", "path: /billing:id\n    upstream: billing\n    strip_prefix: /billing", "routes[1].strip_prefix", "inside a segment"},
		{"cache max_entries zero", "max_entries: 1000", "max_entries: 0", "cache.max_entries", "positive"},
		{"cache negative_ttl negative", "negative_ttl: 0s", "negative_ttl: -5s", "cache.negative_ttl", "negative"},
		{"cache refresh negative", "negative_ttl: 0s", "refresh_before_expiry: -1s", "cache.refresh_before_expiry", "negative"},
		{"cache default_ttl zero", "negative_ttl: 0s", "default_ttl: 0s", "cache.default_ttl", "positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := edit(t, baseYAML, tt.old, tt.new)
			_, err := Parse([]byte(doc), lookup(testEnv()))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %q, want a *ValidationError", err, err)
			}
			var line string
			for _, p := range ve.Problems {
				if strings.HasPrefix(p, tt.path+": ") {
					line = p
					break
				}
			}
			if line == "" {
				t.Fatalf("no problem names %s; got:\n%v", tt.path, err)
			}
			if !strings.Contains(line, tt.word) {
				t.Errorf("got %q, want it to contain %q", line, tt.word)
			}
		})
	}
}

func TestErrorMessages(t *testing.T) {
	// Messages quoted in README and docs/configuration.md, checked word for
	// word.
	tests := []struct {
		name     string
		old, new string
		want     string
	}{
		{
			name: "undefined token source",
			old:  "  - name: m2m\n    type: client_credentials\n    token_endpoint: https://idp.example.com/oauth/token\n    client_id: audgate-m2m\n    client_secret: ${AUDGATE_M2M_SECRET}\n    audience_param: resource\n",
			new:  "",
			want: `upstreams[1].token_source: "m2m" is not a defined token source; define it under token_sources or use one of: idp, self`,
		},
		{
			name: "symmetric algorithm",
			old:  "algorithms: [RS256, ES256]",
			new:  "algorithms: [RS256, HS256]",
			want: `inbound.issuers[0].algorithms[1]: "HS256" is a symmetric algorithm; audgate accepts only asymmetric algorithms (RS256, ES256, EdDSA, ...)`,
		},
		{
			name: "unset variable",
			old:  "${AUDGATE_CLIENT_SECRET}",
			new:  "${AUDGATE_UNSET}",
			want: `token_sources[0].client_secret: environment variable AUDGATE_UNSET is not set`,
		},
		{
			name: "unknown key",
			old:  "listen: 0.0.0.0:8080",
			new:  "listn: 0.0.0.0:8080",
			want: `server.listn: unknown key (did you mean listen?); the keys known in server are: listen, admin_listen, read_header_timeout, idle_timeout, shutdown_timeout, max_header_bytes, max_body_bytes, strip_inbound_headers, tls, body_read_timeout, trusted_proxies, client_ip_header`,
		},
		{
			name: "duration without unit",
			old:  "timeout: 10s",
			new:  "timeout: 10",
			want: `upstreams[1].timeout: 10 has no unit; write a unit, e.g. 10s or 10ms`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(edit(t, baseYAML, tt.old, tt.new)), lookup(testEnv()))
			if err == nil {
				t.Fatal("Parse succeeded, want an error")
			}
			if got := err.Error(); got != tt.want {
				t.Errorf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

func TestParseGoodConfig(t *testing.T) {
	cfg := mustParse(t, baseYAML, testEnv())
	opaToken := cfg.Policy.OPA["services"].(map[string]any)["acme"].(map[string]any)["credentials"].(map[string]any)["bearer"].(map[string]any)["token"]
	tests := []struct {
		name      string
		got, want any
	}{
		// ${NAME} expansion.
		{"secret expanded verbatim", cfg.TokenSources[0].ClientSecret.Value(), clientSecret},
		{"secret in opa expanded", opaToken, "opa-token"},
		{"$${ is a literal ${", cfg.Policy.DecisionLog.Output, "/var/log/audgate-${HOSTNAME}.log"},
		// Values written in the file are kept, even 0.
		{"negative_ttl 0 kept", cfg.Cache.NegativeTTL, Duration(0)},
		{"ttl kept", cfg.TokenSources[2].TTL, Duration(2 * time.Minute)},
		{"upstream timeout kept", cfg.Upstreams[1].Timeout, Duration(10 * time.Second)},
		{"audience_param kept", cfg.TokenSources[1].AudienceParam, "resource"},
		// Defaults.
		{"read_header_timeout", cfg.Server.ReadHeaderTimeout, Duration(5 * time.Second)},
		{"idle_timeout", cfg.Server.IdleTimeout, Duration(120 * time.Second)},
		{"shutdown_timeout", cfg.Server.ShutdownTimeout, Duration(15 * time.Second)},
		{"max_body_bytes", cfg.Server.MaxBodyBytes, int64(10 << 20)},
		{"strip_inbound_headers", cfg.Server.StripInboundHeaders, []string{"X-User-*", "X-Forwarded-User", "X-Original-URL", "X-Rewrite-URL", "X-HTTP-Method-Override", "X-HTTP-Method", "X-Method-Override"}},
		{"jwks_min_refetch_interval", cfg.Inbound.JWKSMinRefetchInterval, Duration(10 * time.Second)},
		{"verified_cache_size", cfg.Inbound.VerifiedCacheSize, 100000},
		{"issuer typ", cfg.Inbound.Issuers[0].Typ, []string{"at+jwt", "application/at+jwt", "JWT", ""}},
		{"policy timeout", cfg.Policy.Timeout, Duration(100 * time.Millisecond)},
		{"policy watch", cfg.Policy.Watch, false},
		{"client_auth", cfg.TokenSources[0].ClientAuth, "client_secret_basic"},
		{"audience_param", cfg.TokenSources[0].AudienceParam, "audience"},
		{"subject_token_type", cfg.TokenSources[0].SubjectTokenType, "urn:ietf:params:oauth:token-type:access_token"},
		{"requested_token_type", cfg.TokenSources[0].RequestedTokenType, "urn:ietf:params:oauth:token-type:access_token"},
		{"source timeout", cfg.TokenSources[0].Timeout, Duration(5 * time.Second)},
		{"client_credentials has no subject_token_type", cfg.TokenSources[1].SubjectTokenType, ""},
		{"self_signed algorithm", cfg.TokenSources[2].Algorithm, "ES256"},
		{"self_signed has no client_auth", cfg.TokenSources[2].ClientAuth, ""},
		{"exchange has no ttl", cfg.TokenSources[0].TTL, Duration(0)},
		{"upstream timeout", cfg.Upstreams[0].Timeout, Duration(30 * time.Second)},
		{"max_idle_conns", cfg.Upstreams[0].MaxIdleConns, 256},
		{"methods upper-cased", cfg.Routes[0].Methods, []string{"GET", "POST"}},
		{"methods default all", cfg.Routes[1].Methods, []string(nil)},
		{"refresh_before_expiry", cfg.Cache.RefreshBeforeExpiry, Duration(30 * time.Second)},
		{"default_ttl", cfg.Cache.DefaultTTL, Duration(60 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

func TestParseDefaultsForAbsentSections(t *testing.T) {
	// Only what Validate requires; everything else from defaults.
	const doc = `
inbound:
  issuers: [{issuer: "https://idp/", audiences: [gw]}]
token_sources: [{name: self, type: self_signed, issuer: "https://audgate"}]
upstreams: [{name: u, url: "http://u", token_source: self, audiences: [u]}]
routes: [{path: /, upstream: u}]
`
	cfg := mustParse(t, doc, nil)
	tests := []struct {
		name      string
		got, want any
	}{
		{"listen", cfg.Server.Listen, "0.0.0.0:8080"},
		{"admin_listen", cfg.Server.AdminListen, "127.0.0.1:9090"},
		{"max_header_bytes", cfg.Server.MaxHeaderBytes, 16384},
		{"algorithms", cfg.Inbound.Issuers[0].Algorithms, []string{"RS256", "ES256", "EdDSA"}},
		{"leeway", cfg.Inbound.Issuers[0].Leeway, Duration(30 * time.Second)},
		{"jwks_refresh_interval", cfg.Inbound.JWKSRefreshInterval, Duration(15 * time.Minute)},
		{"query", cfg.Policy.Query, "data.audgate.decision"},
		{"decision_log.output", cfg.Policy.DecisionLog.Output, "stdout"},
		{"ttl", cfg.TokenSources[0].TTL, Duration(5 * time.Minute)},
		{"max_entries", cfg.Cache.MaxEntries, 100000},
		{"negative_ttl", cfg.Cache.NegativeTTL, Duration(5 * time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !reflect.DeepEqual(tt.got, tt.want) {
				t.Errorf("got %#v, want %#v", tt.got, tt.want)
			}
		})
	}
}

func TestParseExplicitValues(t *testing.T) {
	tests := []struct {
		name     string
		old, new string
		check    func(*Config) (got, want any)
	}{
		{"admin_listen off", "admin_listen: 127.0.0.1:9090", "admin_listen: \"off\"",
			func(c *Config) (any, any) { return c.Server.AdminListen, "off" }},
		{"empty strip list strips nothing", "max_header_bytes: 16384", "max_header_bytes: 16384\n  strip_inbound_headers: []",
			func(c *Config) (any, any) { return c.Server.StripInboundHeaders, []string{} }},
		{"null means default", "max_header_bytes: 16384", "max_header_bytes: ~",
			func(c *Config) (any, any) { return c.Server.MaxHeaderBytes, 16384 }},
		{"leeway 0 kept", "leeway: 30s", "leeway: 0",
			func(c *Config) (any, any) { return c.Inbound.Issuers[0].Leeway, Duration(0) }},
		{"max_idle_conns 0 means default", "timeout: 10s", "timeout: 10s\n    max_idle_conns: 0",
			func(c *Config) (any, any) { return c.Upstreams[1].MaxIdleConns, 256 }},
		{"number from env", "max_header_bytes: 16384", "max_header_bytes: ${MAX_HEADER}",
			func(c *Config) (any, any) { return c.Server.MaxHeaderBytes, 2048 }},
		{"duration from env", "ttl: 2m", "ttl: ${TTL}",
			func(c *Config) (any, any) { return c.TokenSources[2].TTL, Duration(90 * time.Second) }},
		{"bool from env", "query: data.audgate.decision", "query: data.audgate.decision\n  watch: ${WATCH}",
			func(c *Config) (any, any) { return c.Policy.Watch, true }},
		{"env value with structure stays a string", "client_id: audgate\n", "client_id: ${INJECT}\n",
			func(c *Config) (any, any) {
				return c.TokenSources[0].ClientID + "|" + c.Server.Listen, "x\nserver: {listen: evil}|0.0.0.0:8080"
			}},
		{"env value is not expanded again", "client_id: audgate\n", "client_id: ${NESTED}\n",
			func(c *Config) (any, any) { return c.TokenSources[0].ClientID, "${AUDGATE_CLIENT_SECRET}" }},
		{"env value null stays a string", "client_id: audgate\n", "client_id: ${NULL}\n",
			func(c *Config) (any, any) { return c.TokenSources[0].ClientID, "null" }},
		{"anchors and aliases", "audiences: [https://profile.example.com]", "audiences: *aud",
			func(c *Config) (any, any) { return c.Upstreams[2].Audiences, []string{"https://orders.example.com"} }},
		{"opa accepts any keys", "        url: https://bundles.example.com", "        url: https://bundles.example.com\n        anything: {goes: [1, 2]}",
			func(c *Config) (any, any) {
				return c.Policy.OPA["services"].(map[string]any)["acme"].(map[string]any)["anything"], map[string]any{"goes": []any{1, 2}}
			}},
	}
	env := testEnv()
	env["MAX_HEADER"] = "2048"
	env["TTL"] = "1m30s"
	env["WATCH"] = "true"
	env["INJECT"] = "x\nserver: {listen: evil}"
	env["NESTED"] = "${AUDGATE_CLIENT_SECRET}"
	env["NULL"] = "null"
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := edit(t, baseYAML, tt.old, tt.new)
			doc = strings.Replace(doc, "audiences: [https://orders.example.com]", "audiences: &aud [https://orders.example.com]", 1)
			got, want := tt.check(mustParse(t, doc, env))
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got %#v, want %#v", got, want)
			}
		})
	}
}

func TestSecretNeverPrints(t *testing.T) {
	cfg := mustParse(t, baseYAML, testEnv())
	ts := cfg.TokenSources[0]
	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("config", "source", ts, "secret", ts.ClientSecret)
	slog.New(slog.NewTextHandler(&logged, nil)).Info("config", "source", ts, "secret", ts.ClientSecret)
	asJSON, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	asYAML, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		out  string
	}{
		{"fmt", fmt.Sprintf("%v %+v %#v %s %q %x %d", ts.ClientSecret, ts, ts, ts.ClientSecret, ts.ClientSecret, ts.ClientSecret, ts.ClientSecret)},
		{"fmt whole config", fmt.Sprintf("%v %+v %#v", cfg, *cfg, cfg.TokenSources)},
		{"error", fmt.Errorf("source %v: %w", ts, errors.New("x")).Error()},
		{"slog", logged.String()},
		{"json", string(asJSON)},
		{"yaml", string(asYAML)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if strings.Contains(tt.out, "s3cr3t") {
				t.Errorf("the secret is printed: %s", tt.out)
			}
			if !strings.Contains(tt.out, "[redacted]") {
				t.Errorf("no [redacted] placeholder in: %s", tt.out)
			}
		})
	}
}

func TestAllProblemsAtOnce(t *testing.T) {
	// Three faults, in a file whose sections are not in Config's order:
	// the problems come in file order.
	const doc = `
routes:
  - path: /x
    upstream: nowhere
cache:
  max_entries: -1
inbound:
  issuers:
    - issuer: https://idp/
      audiences: [gw]
      algorithms: [none]
upstreams:
  - name: u
    url: http://u
    token_source: self
    audiences: [u]
token_sources:
  - {name: self, type: self_signed, issuer: "https://audgate"}
`
	_, err := Parse([]byte(doc), lookup(nil))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("got %v, want a *ValidationError", err)
	}
	want := []string{
		`routes[0].upstream: "nowhere" is not a defined upstream; define it under upstreams or use one of: u`,
		`cache.max_entries: -1 is not a positive count; write e.g. 100000`,
		`inbound.issuers[0].algorithms[0]: "none" allows unsigned tokens, which anyone can forge; remove it`,
	}
	if !reflect.DeepEqual(ve.Problems, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(ve.Problems, "\n"), strings.Join(want, "\n"))
	}
}

func TestEmptyDocument(t *testing.T) {
	tests := []struct {
		name string
		doc  string
	}{
		{"empty", ""},
		{"comment only", "# nothing here\n"},
		{"null", "---\n~\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), lookup(nil))
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %v, want a *ValidationError", err)
			}
			want := []string{
				"inbound.issuers: no issuer is configured; add the identity provider whose tokens callers send",
				"routes: no route is configured; add at least one, e.g. {path: /orders/*, upstream: orders}",
			}
			if !reflect.DeepEqual(ve.Problems, want) {
				t.Errorf("got\n%s\nwant\n%s", strings.Join(ve.Problems, "\n"), strings.Join(want, "\n"))
			}
		})
	}
}

func TestParseDocumentErrors(t *testing.T) {
	tests := []struct {
		name string
		doc  string
		want string
	}{
		{"syntax error", "server:\n  listen: [\n", "yaml: line"},
		{"two documents", baseYAML + "---\nserver: {}\n", "a second YAML document"},
		{"not a mapping", "- server\n", "expected a mapping"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.doc), lookup(testEnv()))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func TestTrailingEmptyDocument(t *testing.T) {
	mustParse(t, baseYAML+"---\n", testEnv())
}

func TestValidateBuiltInCode(t *testing.T) {
	// A Config built in code from the defaults is checked the same way.
	c := Default()
	is := DefaultIssuer()
	is.Issuer, is.Audiences = "https://idp/", []string{"gw"}
	ts := DefaultTokenSource(SourceClientCredentials)
	ts.Name, ts.TokenEndpoint, ts.ClientID, ts.ClientSecret = "cc", "https://idp/token", "a", "s"
	up := DefaultUpstream()
	up.Name, up.URL, up.TokenSource, up.Audiences = "u", "http://u", "cc", []string{"u"}
	c.Inbound.Issuers, c.TokenSources, c.Upstreams = []Issuer{is}, []TokenSource{ts}, []Upstream{up}
	c.Routes = []Route{{Path: "/u/*", Methods: []string{"GET"}, Upstream: "u"}}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate: %v", err)
	}
	c.Upstreams[0].TokenSource = "idp"
	c.Cache.DefaultTTL = -1
	err := c.Validate()
	var ve *ValidationError
	if !errors.As(err, &ve) || len(ve.Problems) != 2 {
		t.Fatalf("got %v, want 2 problems", err)
	}
}

func TestDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    Duration
		wantErr string
	}{
		{in: "30s", want: Duration(30 * time.Second)},
		{in: "1m30s", want: Duration(90 * time.Second)},
		{in: "250ms", want: Duration(250 * time.Millisecond)},
		{in: "0", want: 0},
		{in: "0s", want: 0},
		{in: "0.0", want: 0},
		{in: `"30s"`, want: Duration(30 * time.Second)},
		{in: "10", wantErr: "10 has no unit; write a unit, e.g. 10s"},
		{in: `"10"`, wantErr: "10 has no unit"},
		{in: "1.5", wantErr: "1.5 has no unit"},
		{in: "5 minutes", wantErr: `"5 minutes" is not a duration`},
		{in: `""`, wantErr: `"" is not a duration`},
		{in: "[1s]", wantErr: "expected a duration"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var got struct {
				D Duration `yaml:"d"`
			}
			err := yaml.Unmarshal([]byte("d: "+tt.in), &got)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.D != tt.want {
				t.Errorf("got %v, want %v", got.D, tt.want)
			}
			// What MarshalYAML writes reads back the same.
			out, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var back struct {
				D Duration `yaml:"d"`
			}
			if err := yaml.Unmarshal(out, &back); err != nil || back.D != got.D {
				t.Errorf("round trip: %q gave %v, %v", out, back.D, err)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "a", "B": "b", "EMPTY": "", "REF": "${A}"}
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "plain", want: "plain"},
		{in: "${A}", want: "a"},
		{in: "x${A}y${B}z", want: "xaybz"},
		{in: "${EMPTY}", want: ""},
		{in: "${REF}", want: "${A}"},
		{in: "$${A}", want: "${A}"},
		{in: "$$${A}", want: "$${A}"},
		{in: "cost: $5 and $$", want: "cost: $5 and $$"},
		{in: "$A", want: "$A"},
		{in: "${UNSET}", wantErr: "environment variable UNSET is not set"},
		{in: "${A", wantErr: "no closing }"},
		{in: "${}", wantErr: "not an environment variable name"},
		{in: "${1A}", wantErr: "not an environment variable name"},
		{in: "${A:-x}", wantErr: "not an environment variable name"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := expand(tt.in, lookup(env))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %q, %v; want an error containing %q", got, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestLoad(t *testing.T) {
	for k, v := range testEnv() {
		t.Setenv(k, v)
	}
	t.Run("good file", func(t *testing.T) {
		cfg, err := Load(filepath.Join("testdata", "audgate.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if got, want := cfg.TokenSources[0].ClientSecret.Value(), clientSecret; got != want {
			t.Errorf("client_secret: got %q, want %q", got, want)
		}
	})
	t.Run("bad file", func(t *testing.T) {
		path := filepath.Join("testdata", "bad.yaml")
		_, err := Load(path)
		var ve *ValidationError
		if !errors.As(err, &ve) || len(ve.Problems) != 3 {
			t.Fatalf("got %v, want 3 problems", err)
		}
		for _, line := range strings.Split(err.Error(), "\n") {
			if !strings.HasPrefix(line, path+": ") {
				t.Errorf("line %q does not start with the file path", line)
			}
		}
	})
	t.Run("missing file", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "none.yaml")
		_, err := Load(path)
		if !errors.Is(err, fs.ErrNotExist) || err.Error() != path+": no such file or directory" {
			t.Errorf("got %v, want %s: no such file or directory", err, path)
		}
	})
	t.Run("syntax error", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "broken.yaml")
		if err := os.WriteFile(path, []byte("server: [\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := Load(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+": yaml: line") {
			t.Errorf("got %v, want an error starting with %s: yaml: line", err, path)
		}
	})
}
