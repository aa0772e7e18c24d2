package loadtest

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
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
		serveChild(&httputil.ReverseProxy{
			Rewrite:   func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
			Transport: &http.Transport{MaxIdleConns: 256, MaxIdleConnsPerHost: 256},
		})
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
		serveChild(gw.Handler())
	}
	os.Exit(2)
}

func serveChild(h http.Handler) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println("listen:", err)
		os.Exit(1)
	}
	fmt.Println("ready", ln.Addr().String())
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 16384}
	if path := os.Getenv("AUDGATE_LOAD_CPUPROFILE"); path != "" && os.Getenv("AUDGATE_LOAD_CHILD") == "audgate" {
		f, err := os.Create(path)
		if err == nil {
			_ = pprof.StartCPUProfile(f)
		}
	}
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin) // the parent closing stdin ends the child
		pprof.StopCPUProfile()
		os.Exit(0)
	}()
	_ = srv.Serve(ln)
	os.Exit(0)
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

// result is one measurement.
type result struct {
	reqs      int64
	rps       float64
	cpuPerReq time.Duration
	p50, p99  time.Duration
	errs      int64
}

// load sends GETs on conns connections for d; with rate > 0 it paces
// the total to rate requests per second.
func load(t *testing.T, c *child, token string, conns int, d time.Duration, rate float64) result {
	t.Helper()
	client := &http.Client{Transport: &http.Transport{MaxIdleConns: conns, MaxIdleConnsPerHost: conns}}
	defer client.CloseIdleConnections()
	u := "http://" + c.addr + "/orders/42"
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
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []time.Duration
			next := time.Now()
			for time.Now().Before(deadline) {
				if interval > 0 {
					if wait := time.Until(next); wait > 0 {
						time.Sleep(wait)
					}
					next = next.Add(interval)
				}
				req, _ := http.NewRequest("GET", u, nil)
				req.Header.Set("Authorization", "Bearer "+token)
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

func TestLoad(t *testing.T) {
	if os.Getenv("AUDGATE_LOAD") == "" {
		t.Skip("set AUDGATE_LOAD=1 to run the load comparison")
	}
	secs := time.Duration(envInt("AUDGATE_LOAD_SECONDS", 8)) * time.Second
	conns := envInt("AUDGATE_LOAD_CONNS", 32)

	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"ok":true}`))
	}))
	defer upstream.Close()
	issuer, token := newIssuer(t)
	defer issuer.Close()

	cfg := fmt.Sprintf(`
server: {listen: "127.0.0.1:0", admin_listen: "off"}
inbound:
  issuers: [{issuer: %q, audiences: [https://gateway.test], algorithms: [ES256]}]
policy: {decision_log: {output: "off"}}
token_sources: [{name: self, type: self_signed, issuer: "https://audgate.test"}]
upstreams: [{name: orders, url: %q, token_source: self, audiences: [https://orders.test]}]
routes: [{path: /orders/*, upstream: orders}]
`, issuer.URL, upstream.URL)
	plain := startChild(t, "plain", "AUDGATE_LOAD_UPSTREAM="+upstream.URL)
	gw := startChild(t, "audgate", "AUDGATE_LOAD_CONFIG="+cfg)

	results := map[string][2]result{}
	for _, c := range []struct {
		name string
		ch   *child
	}{{"plain", plain}, {"audgate", gw}} {
		load(t, c.ch, token, conns, 2*time.Second, 0) // warm caches and connections
		full := load(t, c.ch, token, conns, secs, 0)
		results[c.name] = [2]result{full}
	}
	half := results["plain"][0].rps / 2
	for _, c := range []struct {
		name string
		ch   *child
	}{{"plain", plain}, {"audgate", gw}} {
		r := results[c.name]
		r[1] = load(t, c.ch, token, conns, secs, half)
		results[c.name] = r
	}
	p, a := results["plain"], results["audgate"]
	for name, r := range results {
		if r[0].errs+r[1].errs > 0 {
			t.Errorf("%s: %d failed requests", name, r[0].errs+r[1].errs)
		}
		t.Logf("%-8s max load: %8.0f req/s, %6.1f µs CPU/req (proxy process), p50 %v p99 %v | half load (%0.f req/s): p50 %v p99 %v",
			name, r[0].rps, us(r[0].cpuPerReq), r[0].p50, r[0].p99, half, r[1].p50, r[1].p99)
	}
	t.Logf("audgate/plain: throughput %.2fx, CPU per request %.2fx, added p50 at half load %v",
		a[0].rps/p[0].rps, float64(a[0].cpuPerReq)/float64(p[0].cpuPerReq), a[1].p50-p[1].p50)
}

func us(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// newIssuer serves a JWKS and returns it with a caller's token.
func newIssuer(t *testing.T) (*httptest.Server, string) {
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
	payload, _ := json.Marshal(map[string]any{
		"iss": srv.URL, "aud": "https://gateway.test", "sub": "alice", "client_id": "spa",
		"exp": time.Now().Add(time.Hour).Unix(), "permissions": []string{"orders:read"},
	})
	hdr := jws.NewHeaders()
	_ = hdr.Set(jws.TypeKey, "at+jwt")
	signed, err := jws.Sign(payload, jws.WithKey(jwa.ES256, key, jws.WithProtectedHeaders(hdr)))
	if err != nil {
		t.Fatal(err)
	}
	return srv, string(signed)
}
