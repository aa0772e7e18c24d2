package gateway

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
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
	return benchClient(&http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256}}, url, token, out)
}

// benchClient is benchTarget with a given client. Its connections are
// opened before the clock starts: TLS handshakes are not measured.
func benchClient(client *http.Client, url, token string, out *benchResult) func(b *testing.B) {
	return func(b *testing.B) {
		defer client.CloseIdleConnections()
		b.ReportAllocs()
		b.SetParallelism(8)
		warm(b, client, url, token, 8*runtime.GOMAXPROCS(0))
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

// warm sends n concurrent requests, so that the client holds n open
// connections.
func warm(b *testing.B, client *http.Client, url, token string, n int) {
	var wg sync.WaitGroup
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", url, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := client.Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
}

// quietUpstream makes e's upstream answer without recording: a
// benchmark's must not keep every request.
func quietUpstream(e *env) {
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
}

// BenchmarkRequestTLS is BenchmarkRequest's audgate run over plain HTTP
// and over TLS (HTTP/1.1 and HTTP/2), handshakes excluded.
func BenchmarkRequestTLS(b *testing.B) {
	plain := newEnv(b, nil)
	quietUpstream(plain)
	te := newTLSEnv(b, "", nil)
	quietUpstream(te.env)
	token := plain.issuer.mint(b, nil)
	tlsToken := te.issuer.mint(b, nil)
	client := func(h2 bool) *http.Client {
		return &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256, ForceAttemptHTTP2: h2,
			TLSClientConfig: &tls.Config{RootCAs: te.pki.pool()}}}
	}
	var p, h1, h2 benchResult
	b.Run("http", benchTarget(plain.srv.URL+"/orders/42", token, &p))
	b.Run("https-http1.1", benchClient(client(false), te.url+"/orders/42", tlsToken, &h1))
	b.Run("https-h2", benchClient(client(true), te.url+"/orders/42", tlsToken, &h2))
	b.Logf("TLS/plain: HTTP/1.1 cpu %.2fx (%.0f vs %.0f cpu-ns/op), HTTP/2 cpu %.2fx (%.0f)", h1.cpu/p.cpu, h1.cpu, p.cpu, h2.cpu/p.cpu, h2.cpu)
}

// BenchmarkRequestTracing is BenchmarkRequest's audgate run with tracing
// off, on at sample_ratio 0 (every span unsampled) and on at 1 (every
// request exported to a loopback collector that discards it).
func BenchmarkRequestTracing(b *testing.B) {
	collector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer collector.Close()
	results := map[string]*benchResult{}
	for _, tc := range []struct{ name, yaml string }{
		{"off", ""},
		{"ratio0", "telemetry:\n  tracing: {endpoint: " + collector.URL + ", sample_ratio: 0}\n"},
		{"ratio1", "telemetry:\n  tracing: {endpoint: " + collector.URL + ", sample_ratio: 1}\n"},
	} {
		e := newEnv(b, func(doc string) string { return doc + tc.yaml })
		quietUpstream(e)
		results[tc.name] = &benchResult{}
		b.Run(tc.name, benchTarget(e.srv.URL+"/orders/42", e.issuer.mint(b, nil), results[tc.name]))
	}
	off := results["off"].cpu
	b.Logf("tracing/off cpu: ratio 0 %.2fx, ratio 1 %.2fx (off %.0f cpu-ns/op)", results["ratio0"].cpu/off, results["ratio1"].cpu/off, off)
}

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
	quietUpstream(e)

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
	return &call{r: r, input: in, logged: true}, verdict{decision: d, decided: true, engine: engine, took: time.Microsecond}
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

// BenchmarkRequestNewCaller is a request from a caller the gateway has not
// seen: its token verified, its downstream token signed, its decision
// evaluated; with the decision cache off and on, to show what a miss
// costs the cache.
func BenchmarkRequestNewCaller(b *testing.B) {
	for _, cache := range []bool{false, true} {
		b.Run(map[bool]string{false: "cache-off", true: "cache-on"}[cache], func(b *testing.B) {
			e := newEnv(b, func(doc string) string {
				return strings.Replace(doc, `decision_log: {output: "off"}`, fmt.Sprintf(`decision_log: {output: "off"}`+"\n  decision_cache: {enabled: %v}", cache), 1)
			})
			quietUpstream(e)
			tokens := make([]string, b.N+64)
			for i := range tokens {
				tokens[i] = e.issuer.mint(b, map[string]any{"sub": fmt.Sprintf("new-%d", i)})
			}
			var next atomic.Int64
			rot := rotation{path: func(int) string { return "/orders/1" }, token: func(int) string { return tokens[next.Add(1)-1] }}
			benchRotation(e, rot)(b)
		})
	}
}
