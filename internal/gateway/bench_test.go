package gateway

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/audgate/audgate/internal/policy"
)

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// benchTarget sends GETs to url in parallel with one shared keep-alive
// client, and reports CPU time per request (client, proxy and upstream
// together: they share this process).
func benchTarget(url, token string, out *benchResult) func(b *testing.B) {
	return func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256}}
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		b.SetParallelism(8)
		cpu0 := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set("Authorization", "Bearer "+token)
				resp, err := client.Do(req)
				if err != nil {
					b.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
		b.StopTimer()
		cpu := float64(cpuTime()-cpu0) / float64(b.N)
		b.ReportMetric(cpu, "cpu-ns/op")
		// The last (largest) run is the one the benchmark reports.
		*out = benchResult{ns: float64(b.Elapsed()) / float64(b.N), cpu: cpu}
	}
}

type benchResult struct{ ns, cpu float64 }

// BenchmarkRequest runs the same loopback request through a plain
// httputil.ReverseProxy and through audgate (warm caches: verified token,
// downstream token), and reports audgate's cost as a ratio of the plain
// proxy's, for wall time and for CPU time.
func BenchmarkRequest(b *testing.B) {
	e := newEnv(b, nil)
	token := e.issuer.mint(b, nil)
	target, _ := url.Parse(e.upstream.srv.URL)
	plain := httptest.NewServer(&httputil.ReverseProxy{
		Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256},
	})
	defer plain.Close()
	// The recorder keeps every request; a benchmark upstream must not.
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})

	var plainR, gwR benchResult
	b.Run("plain", benchTarget(plain.URL+"/orders/42", token, &plainR))
	b.Run("audgate", benchTarget(e.srv.URL+"/orders/42", token, &gwR))
	b.Logf("audgate/plain: wall %.2fx (%.0f vs %.0f ns/op), cpu %.2fx (%.0f vs %.0f cpu-ns/op)",
		gwR.ns/plainR.ns, gwR.ns, plainR.ns, gwR.cpu/plainR.cpu, gwR.cpu, plainR.cpu)
}

// decisionFixture is one allowed request's call and verdict, for the
// decision log benchmarks.
func decisionFixture(b *testing.B, e *env) (*call, verdict) {
	b.Helper()
	r := httptest.NewRequest("GET", "/orders/1", nil)
	r.Header.Set("X-Request-Id", "bench-1")
	in := &policy.Input{
		Request:  policy.Request{Method: "GET", Path: "/orders/1", Segments: []string{"orders", "1"}, Headers: map[string]string{"accept": "*/*", "cookie": "s=1"}, Host: "gw", RemoteIP: "127.0.0.1"},
		Route:    policy.Route{Path: "/orders/:id", Params: map[string]string{"id": "1"}, Upstream: "orders"},
		Upstream: policy.Upstream{Name: "orders", TokenSource: "self", Audiences: []string{"https://orders.test"}},
		Token: policy.Token{Issuer: "https://idp", Subject: "alice", ClientID: "spa", Audience: []string{"gw"}, ExpiresAt: 1999999999,
			Claims: map[string]any{"sub": "alice", "email": "alice@example.com", "permissions": []any{"orders:read"}}},
	}
	engine := e.gw.policy.Engine()
	d, err := engine.Decide(context.Background(), in)
	if err != nil {
		b.Fatal(err)
	}
	return &call{r: r, input: in}, verdict{decision: d, decided: true, engine: engine, took: time.Microsecond}
}

// BenchmarkLogDecisionRequestPath is what the decision log costs a
// request: building the record and queueing it. Masking, encoding and
// writing happen on the log's own goroutine.
func BenchmarkLogDecisionRequestPath(b *testing.B) {
	path := filepath.Join(b.TempDir(), "decisions.log")
	e := newEnv(b, func(doc string) string {
		return strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "`+path+`", mask: [/input/token/claims/email]}`, 1)
	})
	cl, v := decisionFixture(b, e)
	to := &tokenOutcome{name: "self", outcome: "hit"}
	b.ReportAllocs()
	for b.Loop() {
		e.gw.logDecision(cl, v, nil, 200, to)
	}
}

// BenchmarkDecisionLogEvent is the work each decision costs off the
// request path: OPA's decision log plugin building the event, running the
// drop and mask rules, and the writer encoding it to a file.
func BenchmarkDecisionLogEvent(b *testing.B) {
	path := filepath.Join(b.TempDir(), "decisions.log")
	e := newEnv(b, func(doc string) string {
		return strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "`+path+`", mask: [/input/token/claims/email]}`, 1)
	})
	cl, v := decisionFixture(b, e)
	rec := &policy.Record{DecisionID: "bench", Timestamp: time.Now(), Engine: v.engine, Input: cl.input,
		Decision: v.decision, Eval: v.took, Custom: map[string]any{"request_id": "bench-1", "http_status": 200}}
	b.ReportAllocs()
	for b.Loop() {
		if err := e.gw.policy.LogNow(context.Background(), rec); err != nil {
			b.Fatal(err)
		}
	}
}
