package telemetry

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Observer records what happens to requests, policies and key sets in
// the metrics, each event through one typed method, so that label values
// are written in one place. It is safe for concurrent use; its methods
// never block on I/O.
type Observer struct {
	metrics *Metrics
}

// NewObserver registers the metrics. cacheEntries reports the downstream
// token cache's size; nil reports 0.
func NewObserver(cacheEntries func() float64) *Observer {
	if cacheEntries == nil {
		cacheEntries = func() float64 { return 0 }
	}
	return &Observer{metrics: NewMetrics(cacheEntries)}
}

// Registry is the Prometheus registry the metrics are in.
func (o *Observer) Registry() *prometheus.Registry { return o.metrics.Registry }

// Request records one request: the route pattern that matched ("" for
// none), its upstream ("" for none), the status sent and how long it took.
func (o *Observer) Request(route, upstream string, status int, d time.Duration) {
	o.metrics.Requests.WithLabelValues(route, upstream, strconv.Itoa(status)).Inc()
	o.metrics.Duration.WithLabelValues(route, upstream).Observe(d.Seconds())
}

// DecisionResult is what a policy evaluation ended in.
type DecisionResult int

// Decision results.
const (
	Allowed DecisionResult = iota
	Denied
	PolicyFailed // an evaluation error or a decision outside the contract
)

func (r DecisionResult) String() string {
	switch r {
	case Allowed:
		return "allow"
	case Denied:
		return "deny"
	case PolicyFailed:
		return "error"
	}
	return fmt.Sprintf("DecisionResult(%d)", int(r))
}

// Decision records one policy evaluation and how long it took.
func (o *Observer) Decision(r DecisionResult, d time.Duration) {
	o.metrics.Decisions.WithLabelValues(r.String()).Inc()
	o.metrics.PolicyDuration.Observe(d.Seconds())
}

// TokenLookup records one downstream token lookup of source and how it
// went (hit, miss, shared, refused, error).
func (o *Observer) TokenLookup(source, outcome string) {
	o.metrics.TokenRequests.WithLabelValues(source, outcome).Inc()
}

// IdPRequest records how long one token request of source took.
func (o *Observer) IdPRequest(source string, d time.Duration) {
	o.metrics.IdPDuration.WithLabelValues(source).Observe(d.Seconds())
}

// JWKSFetch records one fetch of issuer's key set and its result.
func (o *Observer) JWKSFetch(issuer string, err error) {
	o.metrics.JWKSFetches.WithLabelValues(issuer, okOrError(err)).Inc()
}

// PolicyReload records one attempt to bring a new policy in force (a
// local change or a bundle) and its result; on success, revision is the
// bundle's new revision.
func (o *Observer) PolicyReload(bundle, revision string, err error) {
	o.metrics.PolicyReloads.WithLabelValues(okOrError(err)).Inc()
	if err == nil {
		o.metrics.PolicyRevision.DeletePartialMatch(prometheus.Labels{"bundle": bundle})
		o.metrics.PolicyRevision.WithLabelValues(bundle, revision).Set(1)
	}
}

// DecisionLogDropped records one decision dropped because the decision
// log fell behind.
func (o *Observer) DecisionLogDropped() { o.metrics.DecisionLogDropped.Inc() }

func okOrError(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
