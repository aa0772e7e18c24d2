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
	o.metrics.Requests.WithLabelValues(route, upstream, statusLabel(status)).Inc()
	o.metrics.Duration.WithLabelValues(route, upstream).Observe(d.Seconds())
}

// statusLabels are the status codes' labels, made once.
var statusLabels = func() []string {
	l := make([]string, 600)
	for i := range l {
		l[i] = strconv.Itoa(i)
	}
	return l
}()

func statusLabel(status int) string {
	if status >= 0 && status < len(statusLabels) {
		return statusLabels[status]
	}
	return strconv.Itoa(status)
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

// DecisionCached records whether a decision came from the decision cache
// (hit) or was evaluated for it (miss).
func (o *Observer) DecisionCached(hit bool) {
	if hit {
		o.metrics.DecisionCache.WithLabelValues("hit").Inc()
	} else {
		o.metrics.DecisionCache.WithLabelValues("miss").Inc()
	}
}

// DecisionCacheState exports whether the decision cache is on, and when
// it is off why (disabled, or not_pure: the policy calls something
// non-deterministic or prints), read at each scrape.
func (o *Observer) DecisionCacheState(state func() (on bool, offReason string)) {
	o.metrics.Registry.MustRegister(cacheState{
		desc:  prometheus.NewDesc("audgate_decision_cache_enabled", "1 when decisions are cached; when 0, reason says why not (disabled, not_pure).", []string{"reason"}, nil),
		state: state,
	})
}

type cacheState struct {
	desc  *prometheus.Desc
	state func() (bool, string)
}

func (c cacheState) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c cacheState) Collect(ch chan<- prometheus.Metric) {
	on, reason := c.state()
	v := 0.0
	if on {
		v, reason = 1, ""
	}
	ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, v, reason)
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

// OPACounters exports the counters of OPA's plugins that an operator
// watches: decision log events dropped by OPA's upload buffer (it is full
// while the decision log service is down), and chunks uploaded or failed.
// counters is read at each scrape.
func (o *Observer) OPACounters(counters func() map[string]uint64) {
	sum := func(names ...string) func() float64 {
		return func() float64 {
			c := counters()
			var n uint64
			for _, name := range names {
				n += c[name]
			}
			return float64(n)
		}
	}
	o.metrics.Registry.MustRegister(
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "audgate_decision_log_upload_dropped_total",
			Help: "Decision log events dropped before upload to OPA's decision log service (buffer or rate limit exceeded).",
		}, sum("decision_logs_dropped_buffer_size_limit_exceeded", "decision_logs_dropped_buffer_size_limit_bytes_exceeded",
			"decision_logs_dropped_rate_limit_exceeded")),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "audgate_decision_log_chunks_uploaded_total", Help: "Decision log chunks uploaded to OPA's decision log service.",
		}, sum("decision_logs_chunks_uploaded")),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "audgate_decision_log_chunks_upload_failed_total", Help: "Decision log chunk uploads that failed (retried later).",
		}, sum("decision_logs_chunks_upload_failed")),
	)
}
