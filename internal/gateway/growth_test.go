package gateway

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
)

// How cost grows: each benchmark below runs the whole request, every
// cache warm, against a gateway scaled along one axis, and reports CPU
// per request (cpu-ns/op, client and upstream included, as in
// BenchmarkRequest), the heap in use after a collection and the process's
// resident set. Run:
//
//	go test -run '^$' -bench 'BenchmarkGrowth' -benchtime 5000x -timeout 30m ./internal/gateway/
//
// AUDGATE_HEAPPROFILE names a file for a heap profile taken with the
// measurement.

// rotation is what request i sends.
type rotation struct {
	path   func(i int) string
	token  func(i int) string
	header func(i int) (string, string)
}

// request is request i of the rotation, to base.
func (rot rotation) request(base string, i int) *http.Request {
	req, _ := http.NewRequest("GET", base+rot.path(i), nil)
	req.Header.Set("Authorization", "Bearer "+rot.token(i))
	if rot.header != nil {
		k, v := rot.header(i)
		req.Header.Set(k, v)
	}
	return req
}

func benchRotation(e *env, rot rotation) func(b *testing.B) {
	return func(b *testing.B) {
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 256, MaxIdleConns: 256}}
		defer client.CloseIdleConnections()
		var next atomic.Int64
		do := func() error {
			resp, err := client.Do(rot.request(e.srv.URL, int(next.Add(1))))
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				return fmt.Errorf("status %d", resp.StatusCode)
			}
			return nil
		}
		b.ReportAllocs()
		b.SetParallelism(8)
		cpu0 := cpuTime()
		b.ResetTimer()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if err := do(); err != nil {
					b.Error(err)
					return
				}
			}
		})
		b.StopTimer()
		b.ReportMetric(float64(cpuTime()-cpu0)/float64(b.N), "cpu-ns/op")
		reportMemory(b)
	}
}

// reportMemory reports the heap in use after a collection, and the
// resident set, in MiB.
func reportMemory(b *testing.B) {
	runtime.GC()
	if p := os.Getenv("AUDGATE_HEAPPROFILE"); p != "" {
		f, _ := os.Create(p)
		_ = pprof.WriteHeapProfile(f)
		f.Close()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MiB")
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), " kB"))
				b.ReportMetric(float64(kb)/1024, "rss-MiB")
			}
		}
	}
}

// warmAll sends every request of the rotation once, so that every cache
// holds it.
func warmAll(b *testing.B, e *env, rot rotation, n int) {
	b.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	defer client.CloseIdleConnections()
	sem := make(chan struct{}, 16)
	var failed atomic.Int64
	for i := range n {
		sem <- struct{}{}
		go func() {
			defer func() { <-sem }()
			resp, err := client.Do(rot.request(e.srv.URL, i))
			if err != nil || resp.StatusCode != 200 {
				failed.Add(1)
			}
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	for range cap(sem) {
		sem <- struct{}{}
	}
	if failed.Load() > 0 {
		b.Fatalf("%d of %d warm-up requests failed", failed.Load(), n)
	}
}

// BenchmarkGrowthRoutes: 1, 100 and 1,000 routes; the request takes the
// last.
func BenchmarkGrowthRoutes(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := newEnv(b, func(doc string) string {
				var routes strings.Builder
				routes.WriteString("routes:\n")
				for i := range n {
					fmt.Fprintf(&routes, "  - {path: /r%d/*, upstream: orders}\n", i)
				}
				return doc[:strings.Index(doc, "routes:\n")] + routes.String()
			})
			quietUpstream(e)
			token := e.issuer.mint(b, nil)
			rot := rotation{path: func(int) string { return fmt.Sprintf("/r%d/x", n-1) }, token: func(int) string { return token }}
			warmAll(b, e, rot, 1)
			benchRotation(e, rot)(b)
		})
	}
}

// BenchmarkGrowthPolicy: a policy of 10, 100 and 1,000 rules, every one
// evaluated for the request, with the decision cache off (on, a repeated
// request costs the same whatever the policy's size).
func BenchmarkGrowthPolicy(b *testing.B) {
	for _, n := range []int{10, 100, 1000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			var rego strings.Builder
			rego.WriteString(`decision := {"allow": true, "audience": "https://orders.test", "scopes": ["orders:read"]} if not _refused` + "\n")
			for i := range n {
				fmt.Fprintf(&rego, "\n_refused if input.token.claims.permissions[_] == \"blocked:%d\"\n", i)
			}
			e := newEnv(b, func(doc string) string {
				doc = withPolicy(b, rego.String())(doc)
				return strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "off"}`+"\n  decision_cache: {enabled: false}", 1)
			})
			quietUpstream(e)
			token := e.issuer.mint(b, nil)
			rot := rotation{path: func(int) string { return "/orders/1" }, token: func(int) string { return token }}
			warmAll(b, e, rot, 1)
			benchRotation(e, rot)(b)
		})
	}
}

// BenchmarkGrowthCallers: 1,000, 10,000 and 100,000 distinct callers,
// each with its own token, verified once and then cached with its
// downstream token and its decision; the requests cycle through them.
func BenchmarkGrowthCallers(b *testing.B) {
	for _, n := range []int{1000, 10000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := newEnv(b, nil)
			quietUpstream(e)
			tokens := make([]string, n)
			for i := range tokens {
				tokens[i] = e.issuer.mint(b, map[string]any{"sub": fmt.Sprintf("user-%d", i)})
			}
			rot := rotation{path: func(int) string { return "/orders/1" }, token: func(i int) string { return tokens[i%n] }}
			warmAll(b, e, rot, n)
			benchRotation(e, rot)(b)
		})
	}
}

// BenchmarkGrowthDecisionCache: a policy whose decision depends on a
// header, with 0 (cache off), 1,000 and 100,000 distinct values cached;
// the requests cycle through them.
func BenchmarkGrowthDecisionCache(b *testing.B) {
	for _, n := range []int{0, 1000, 100000} {
		b.Run(strconv.Itoa(n), func(b *testing.B) {
			e := newEnv(b, func(doc string) string {
				doc = withPolicy(b, `decision := {"allow": true, "audience": "https://orders.test", "headers": {"X-Tenant": input.request.headers["x-tenant"]}}`)(doc)
				if n == 0 {
					doc = strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "off"}`+"\n  decision_cache: {enabled: false}", 1)
				}
				return doc
			})
			quietUpstream(e)
			token := e.issuer.mint(b, nil)
			values := max(n, 1)
			rot := rotation{path: func(int) string { return "/orders/1" }, token: func(int) string { return token },
				header: func(i int) (string, string) { return "X-Tenant", "t" + strconv.Itoa(i%values) }}
			warmAll(b, e, rot, values)
			benchRotation(e, rot)(b)
		})
	}
}
