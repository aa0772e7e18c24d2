package loadtest

import (
	"bufio"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
	"github.com/lestrrat-go/jwx/v2/jws"

	"github.com/audgate/audgate/internal/config"
	"github.com/audgate/audgate/internal/gateway"
	"github.com/audgate/audgate/internal/gctune"
	"github.com/audgate/audgate/policies"
)

// TestMain lets the test binary serve as a proxy process: the parent
// starts it again with AUDGATE_LOAD_CHILD set.
func TestMain(m *testing.M) {
	switch os.Getenv("AUDGATE_LOAD_CHILD") {
	case "":
		os.Exit(m.Run())
	case "plain":
		target, _ := url.Parse(os.Getenv("AUDGATE_LOAD_UPSTREAM"))
		serveChild(&http.Server{Handler: &httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256},
		}})
	case "audgate":
		cfg, err := config.Parse([]byte(os.Getenv("AUDGATE_LOAD_CONFIG")), os.LookupEnv)
		if err != nil {
			fmt.Println("config:", err)
			os.Exit(1)
		}
		gw, err := gateway.New(context.Background(), cfg, gateway.Options{Logger: slog.New(slog.DiscardHandler), Policies: policies.FS})
		if err != nil {
			fmt.Println("gateway:", err)
			os.Exit(1)
		}
		for gw.Ready() != nil {
			time.Sleep(10 * time.Millisecond)
		}
		srv := gw.Server()
		admin := gw.AdminHandler()
		h := srv.Handler
		srv.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/metrics": // the load test reads the decision cache's counters
				admin.ServeHTTP(w, r)
				return
			case "/memory":
				serveMemory(w)
				return
			}
			h.ServeHTTP(w, r)
		})
		serveChild(srv)
	}
	os.Exit(2)
}

func serveChild(srv *http.Server) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	if _, set := os.LookupEnv("GOGC"); !set {
		gctune.Start(gctune.Default) // as audgate run does, for both proxies
	}
	fmt.Println("ready", ln.Addr().String())
	srv.ReadHeaderTimeout = 5 * time.Second
	if path := os.Getenv("AUDGATE_LOAD_CPUPROFILE"); path != "" && os.Getenv("AUDGATE_LOAD_CHILD") == "audgate" {
		f, err := os.Create(path)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
		}
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent closing stdin ends the child
		pprof.StopCPUProfile()
		if path := os.Getenv("AUDGATE_LOAD_HEAPPROFILE"); path != "" && os.Getenv("AUDGATE_LOAD_CHILD") == "audgate" {
			if f, err := os.Create(path); err == nil {
				runtime.GC()
				_ = pprof.WriteHeapProfile(f)
				f.Close()
			}
		}
		os.Exit(0)
	}()
	_ = srv.Serve(ln)
	os.Exit(0)
}

// memorySamples are what /memory reports, in this order.
var memorySamples = []string{"/gc/heap/live:bytes", "/gc/heap/goal:bytes", "/gc/gogc:percent", "/memory/classes/total:bytes", "/memory/classes/heap/released:bytes"}

// serveMemory writes the child's memory samples, space-separated.
func serveMemory(w io.Writer) {
	s := make([]metrics.Sample, len(memorySamples))
	for i, name := range memorySamples {
		s[i].Name = name
	}
	metrics.Read(s)
	for _, x := range s {
		fmt.Fprintf(w, "%d ", x.Value.Uint64())
	}
}

// memory is the child's live heap, heap goal, GOGC and memory mapped
// from the OS less what it released, in MiB but for GOGC.
func (c *child) memory(t *testing.T) (live, goal, gogc, mapped uint64) {
	resp, err := http.Get("http://" + c.addr + "/memory")
	if err != nil {
		return
	}
	defer resp.Body.Close()
	var released uint64
	_, _ = fmt.Fscan(resp.Body, &live, &goal, &gogc, &mapped, &released)
	return live >> 20, goal >> 20, gogc, (mapped - released) >> 20
}

// child is a proxy process.
type child struct {
	cmd  *exec.Cmd
	addr string
	in   io.WriteCloser
}

func startChild(t *testing.T, kind string, env ...string) *child {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	if taskset, err := exec.LookPath("taskset"); err == nil {
		cmd = exec.Command(taskset, "-c", "1", os.Args[0], "-test.run=^$") // the proxy's own CPU
	}
	cmd.Env = append(os.Environ(), append(env, "AUDGATE_LOAD_CHILD="+kind)...)
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(out).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready ") {
		t.Fatalf("%s child: %q, %v", kind, line, err)
	}
	c := &child{cmd: cmd, addr: strings.TrimSpace(strings.TrimPrefix(line, "ready ")), in: in}
	t.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	return c
}

// cpu returns the child's user+system CPU time from /proc.
func (c *child) cpu(t *testing.T) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", c.cmd.Process.Pid))
	if err != nil {
		t.Fatalf("read child CPU: %v", err)
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 14th and 15th fields, in clock ticks (100 per second on Linux).
	fields := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// rss is the child's resident set in bytes.
func (c *child) rss(t *testing.T) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", c.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// touchAll sends one request with each of w's tokens.
func touchAll(t *testing.T, c *child, w workload, conns int) {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
	defer client.CloseIdleConnections()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < len(w.tokens); i = int(next.Add(1)) - 1 {
				req, _ := http.NewRequest("GET", "http://"+c.addr+w.paths[i%len(w.paths)], nil)
				req.Header.Set("Authorization", "Bearer "+w.tokens[i])
				if resp, err := client.Do(req); err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		}()
	}
	wg.Wait()
}

// metric reads one sample of the child's /metrics, 0 when absent.
func (c *child) metric(t *testing.T, series string) float64 {
	resp, err := http.Get("http://" + c.addr + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return f
		}
	}
	return 0
}

// result is one measurement.
type result struct {
	reqs      int64
	rps       float64
	cpuPerReq time.Duration
	p50, p99  time.Duration
	errs      int64
}

// workload is what the load sends: each request takes a random caller's
// token and a random path.
type workload struct {
	name   string
	tokens []string
	paths  []string
}

// load sends GETs on conns connections for d; with rate > 0 it paces
// the total to rate requests per second.
func load(t *testing.T, c *child, w workload, conns int, d time.Duration, rate float64) result {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
	defer client.CloseIdleConnections()
	base := "http://" + c.addr
	var (
		n, errs   atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		wg        sync.WaitGroup
	)
	cpu0 := c.cpu(t)
	start := time.Now()
	deadline := start.Add(d)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(conns) / rate * float64(time.Second))
	}
	for i := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(i), uint64(time.Now().UnixNano())))
			var mine []time.Duration
			next := time.Now()
			for time.Now().Before(deadline) {
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					}
					next = next.Add(interval)
				}
				req, _ := http.NewRequest("GET", base+w.paths[rng.IntN(len(w.paths))], nil)
				req.Header.Set("Authorization", "Bearer "+w.tokens[rng.IntN(len(w.tokens))])
				t0 := time.Now()
				resp, err := client.Do(req)
				if err != nil {
					errs.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					errs.Add(1)
				}
				mine = append(mine, time.Since(t0))
				n.Add(1)
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := result{reqs: n.Load(), errs: errs.Load()}
	r.rps = float64(r.reqs) / elapsed.Seconds()
	if r.reqs > 0 {
		r.cpuPerReq = (c.cpu(t) - cpu0) / time.Duration(r.reqs)
	}
	slices.Sort(latencies)
	if len(latencies) > 0 {
		r.p50 = latencies[len(latencies)/2]
		r.p99 = latencies[len(latencies)*99/100]
	}
	return r
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// median is the median of xs.
func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

// TestLoad compares audgate with the plain proxy on two workloads: one
// caller on one path, and the varied one (AUDGATE_LOAD_USERS callers ×
// AUDGATE_LOAD_PATHS paths, random pairs), both with the shipped default
// policy. Each proxy is its own process on its own CPU (taskset, when
// present), the load generator and the upstream on the other; rounds
// alternate which proxy goes first, and the report is the median of the
// rounds. It runs only with AUDGATE_LOAD set.
func TestLoad(t *testing.T) {
	if os.Getenv("AUDGATE_LOAD") == "" {
		t.Skip("set AUDGATE_LOAD=1 to run the load comparison")
	}
	secs := time.Duration(envInt("AUDGATE_LOAD_SECONDS", 5)) * time.Second
	conns := envInt("AUDGATE_LOAD_CONNS", 32)
	rounds := envInt("AUDGATE_LOAD_ROUNDS", 3)
	users, paths := envInt("AUDGATE_LOAD_USERS", 500), envInt("AUDGATE_LOAD_PATHS", 200)
	pin(t, 0) // the generator and the upstream; each proxy gets CPU 1

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer upstream.Close()
	issuer, mint := newIssuer(t)
	defer issuer.Close()

	single := workload{name: "one caller, one path", tokens: []string{mint("alice")}, paths: []string{"/orders/42"}}
	varied := workload{name: fmt.Sprintf("%d callers × %d paths", users, paths)}
	for i := range users {
		varied.tokens = append(varied.tokens, mint(fmt.Sprintf("user-%d", i)))
	}
	for i := range paths {
		varied.paths = append(varied.paths, fmt.Sprintf("/orders/%d", i))
	}

	cache := os.Getenv("AUDGATE_LOAD_DECISION_CACHE") != "off"
	cfg := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", admin_listen: "off"}
inbound:
  issuers: [{issuer: %q, audiences: [https://gateway.test], algorithms: [ES256]}]
policy: {decision_log: {output: "off"}, decision_cache: {enabled: %v}}
token_sources: [{name: self, type: self_signed, issuer: "https://audgate.test"}]
upstreams: [{name: orders, url: %q, token_source: self, audiences: [https://orders.test]}]
routes: [{path: /orders/*, upstream: orders}]
`, issuer.URL, cache, upstream.URL)
	plain := startChild(t, "plain", "AUDGATE_LOAD_UPSTREAM="+upstream.URL)
	gw := startChild(t, "audgate", "AUDGATE_LOAD_CONFIG="+cfg)
	proxies := []struct {
		name string
		ch   *child
	}{{"plain", plain}, {"audgate", gw}}

	t.Logf("decision cache %v; %d rounds of %v, %d connections", map[bool]string{true: "on", false: "off"}[cache], rounds, secs, conns)
	for _, w := range []workload{single, varied} {
		for _, p := range proxies {
			touchAll(t, p.ch, w, conns)               // every caller's token verified and cached once
			load(t, p.ch, w, conns, 2*time.Second, 0) // warm connections
		}
		hits0 := gw.metric(t, `audgate_decision_cache_requests_total{result="hit"}`)
		miss0 := gw.metric(t, `audgate_decision_cache_requests_total{result="miss"}`)
		rps := map[string][]float64{}
		cpu := map[string][]time.Duration{}
		for round := range rounds {
			order := proxies
			if round%2 == 1 {
				order = []struct {
					name string
					ch   *child
				}{proxies[1], proxies[0]}
			}
			for _, p := range order {
				r := load(t, p.ch, w, conns, secs, 0)
				if r.errs > 0 {
					t.Errorf("%s, %s: %d failed requests", w.name, p.name, r.errs)
				}
				rps[p.name] = append(rps[p.name], r.rps)
				cpu[p.name] = append(cpu[p.name], r.cpuPerReq)
			}
		}
		hits := gw.metric(t, `audgate_decision_cache_requests_total{result="hit"}`) - hits0
		misses := gw.metric(t, `audgate_decision_cache_requests_total{result="miss"}`) - miss0
		pr, ar := median(rps["plain"]), median(rps["audgate"])
		pc, ac := median(cpu["plain"]), median(cpu["audgate"])
		// Each round's two runs are back to back, so their ratio is
		// steadier than the ratio of medians on a machine whose speed
		// drifts.
		var rr, cr []float64
		for i := range rounds {
			rr = append(rr, rps["audgate"][i]/rps["plain"][i])
			cr = append(cr, float64(cpu["audgate"][i])/float64(cpu["plain"][i]))
		}
		live, goal, gogc, mapped := gw.memory(t)
		t.Logf("%s: plain %.0f req/s %.1f µs CPU/req; audgate %.0f req/s %.1f µs CPU/req; audgate/plain throughput %.2fx, CPU per request %.2fx; "+
			"per round: throughput %.2fx (%.2f–%.2f), CPU per request %.2fx (%.2f–%.2f); decision cache hit rate %.1f%%; "+
			"audgate's resident set %d MiB, live heap %d MiB, heap goal %d MiB at GOGC %d, mapped %d MiB",
			w.name, pr, us(pc), ar, us(ac), ar/pr, float64(ac)/float64(pc),
			median(rr), slices.Min(rr), slices.Max(rr), median(cr), slices.Min(cr), slices.Max(cr),
			100*hits/max(hits+misses, 1), gw.rss(t)>>20, live, goal, gogc, mapped)
	}
}

// pin keeps this process on cpu, when taskset is there to do it.
func pin(t *testing.T, cpu int) {
	if _, err := exec.LookPath("taskset"); err != nil {
		t.Log("taskset not found: processes are not pinned to CPUs")
		return
	}
	if out, err := exec.Command("taskset", "-a", "-p", "-c", strconv.Itoa(cpu), strconv.Itoa(os.Getpid())).CombinedOutput(); err != nil {
		t.Logf("taskset: %v: %s", err, out)
	}
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// newIssuer serves a JWKS and returns it with a function that mints a
// caller's token for a subject.
func newIssuer(t *testing.T) (*httptest.Server, func(sub string) string) {
	t.Helper()
	raw, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	key, _ := jwk.FromRaw(raw)
	_ = key.Set(jwk.KeyIDKey, "k1")
	pub, _ := key.PublicKey()
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "openid-configuration") {
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/jwks"})
			return
		}
		_ = json.NewEncoder(w).Encode(set)
	}))
	mint := func(sub string) string {
		payload, _ := json.Marshal(map[string]any{
			"iss": srv.URL, "aud": "https://gateway.test", "sub": sub, "client_id": "spa",
			"exp": time.Now().Add(time.Hour).Unix(), "permissions": []string{"orders:read"},
		})
		hdr := jws.NewHeaders()
		_ = hdr.Set(jws.TypeKey, "at+jwt")
		signed, err := jws.Sign(payload, jws.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr)))
		if err != nil {
			t.Fatal(err)
		}
		return string(signed)
	}
	return srv, mint
}
