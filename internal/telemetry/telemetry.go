// Package telemetry holds audgate's Prometheus metrics and decision log,
// recorded through one Observer.
package telemetry

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Metrics are the gateway's Prometheus metrics, all prefixed audgate_.
type Metrics struct {
	Registry *prometheus.Registry

	// Requests counts requests by route, upstream and status code.
	Requests *prometheus.CounterVec
	// Duration observes request latency by route and upstream.
	Duration *prometheus.HistogramVec
	// Decisions counts policy decisions by result (allow, deny, error).
	Decisions *prometheus.CounterVec
	// PolicyDuration observes policy evaluation latency.
	PolicyDuration prometheus.Histogram
	// TokenRequests counts downstream token lookups by source and result
	// (hit, miss, shared, error).
	TokenRequests *prometheus.CounterVec
	// IdPDuration observes identity-provider token requests by source.
	IdPDuration *prometheus.HistogramVec
	// JWKSFetches counts fetches of issuers' key sets by issuer and result
	// (ok, error).
	JWKSFetches *prometheus.CounterVec
	// PolicyReloads counts policy reloads by result (ok, error).
	PolicyReloads *prometheus.CounterVec
	// PolicyRevision is 1 for each bundle's revision in force.
	PolicyRevision *prometheus.GaugeVec
	// DecisionLogDropped counts decision log entries dropped because the
	// writer fell behind.
	DecisionLogDropped prometheus.Counter
	// DecisionCache counts decisions served from the decision cache (hit)
	// and evaluated to fill it (miss).
	DecisionCache *prometheus.CounterVec
}

// NewMetrics registers the metrics, and Go and process collectors, in a
// new registry. cacheEntries reports the token cache's size.
func NewMetrics(cacheEntries func() float64) *Metrics {
	reg := prometheus.NewRegistry()
	m := &Metrics{
		Registry: reg,
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audgate_requests_total", Help: "Requests by route, upstream and status code.",
		}, []string{"route", "upstream", "code"}),
		Duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "audgate_request_duration_seconds", Help: "Request latency, including the upstream's.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route", "upstream"}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audgate_policy_decisions_total", Help: "Policy decisions by result (allow, deny, error).",
		}, []string{"result"}),
		PolicyDuration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "audgate_policy_eval_duration_seconds", Help: "Policy evaluation latency.",
			Buckets: []float64{.00001, .000025, .00005, .0001, .00025, .0005, .001, .0025, .01, .1},
		}),
		TokenRequests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audgate_token_source_requests_total", Help: "Downstream token lookups by source and result (hit, miss, shared, error).",
		}, []string{"source", "result"}),
		IdPDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "audgate_token_source_request_duration_seconds", Help: "Token requests to the identity provider, or self-signing, by source.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"source"}),
		JWKSFetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audgate_jwks_fetches_total", Help: "Fetches of issuers' key sets by issuer and result (ok, error).",
		}, []string{"issuer", "result"}),
		PolicyReloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "audgate_policy_reloads_total", Help: "Attempts to bring a new policy in force (a local change or a bundle) by result (ok, error).",
		}, []string{"result"}),
		PolicyRevision: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "audgate_policy_revision", Help: "1 for the revision in force of each bundle (audgate for a local policy).",
		}, []string{"bundle", "revision"}),
		DecisionLogDropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "audgate_decision_log_dropped_total", Help: "Decision log entries dropped because the writer fell behind.",
		}),
	}
	m.DecisionCache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "audgate_decision_cache_requests_total", Help: "Decisions served from the decision cache (hit) or evaluated for it (miss).",
	}, []string{"result"})
	reg.MustRegister(m.DecisionCache)
	reg.MustRegister(m.Requests, m.Duration, m.Decisions, m.PolicyDuration, m.TokenRequests, m.IdPDuration, m.JWKSFetches, m.PolicyReloads, m.PolicyRevision, m.DecisionLogDropped,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "audgate_token_cache_entries", Help: "Downstream tokens in the cache.",
		}, cacheEntries),
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}
