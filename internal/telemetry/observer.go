package telemetry

import (
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Observer records what happens to requests, policies and key sets: the
// metrics and the decision log, each event through one typed method, so
// that label values are written in one place. It is safe for concurrent
// use; its methods never block on I/O.
type Observer struct {
	metrics *Metrics
	log     *DecisionLog // nil: decisions are not logged
}

// DefaultDecisionLog is where decisions are logged unless configured
// otherwise.
const DefaultDecisionLog = "stdout"

// ObserverOptions configure an Observer.
type ObserverOptions struct {
	// DecisionLog is where decisions are logged: "stdout"
	// (DefaultDecisionLog), a file path, or "off"; "" is off too.
	DecisionLog string
	// Masks are JSON pointers removed from every logged input.
	Masks []string
	// CacheEntries reports the downstream token cache's size. Default: 0.
	CacheEntries func() float64
}

// NewObserver registers the metrics and opens the decision log.
func NewObserver(opts ObserverOptions) (*Observer, error) {
	if opts.CacheEntries == nil {
		opts.CacheEntries = func() float64 { return 0 }
	}
	o := &Observer{metrics: NewMetrics(opts.CacheEntries)}
	var err error
	if o.log, err = NewDecisionLog(opts.DecisionLog, opts.Masks, o.metrics.DecisionLogDropped.Inc); err != nil {
		return nil, err
	}
	return o, nil
}

// Registry is the Prometheus registry the metrics are in.
func (o *Observer) Registry() *prometheus.Registry { return o.metrics.Registry }

// Close writes what the decision log holds and closes it.
func (o *Observer) Close() error { return o.log.Close() }

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

// PolicyReload records one policy reload and its result.
func (o *Observer) PolicyReload(err error) {
	o.metrics.PolicyReloads.WithLabelValues(okOrError(err)).Inc()
}

// LogDecision queues one decision log entry; the entry must not change
// afterwards. It never blocks: when the log falls behind, the entry is
// dropped and counted.
func (o *Observer) LogDecision(e *DecisionEntry) { o.log.Log(e) }

// LogsDecisions reports whether decisions are logged at all, so callers
// can skip building entries.
func (o *Observer) LogsDecisions() bool { return o.log != nil }

func okOrError(err error) string {
	if err != nil {
		return "error"
	}
	return "ok"
}
