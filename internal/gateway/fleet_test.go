package gateway

import (
	"bytes"
	"compress/gzip"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/audgate/audgate/internal/config"
	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/bundle"
)

// signingKey is an RSA key pair in PEM, for signing bundles.
type signingKey struct{ private, public string }

func newSigningKey(t testing.TB) signingKey {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	return signingKey{
		private: string(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(k)})),
		public:  string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub})),
	}
}

// revPolicy allows every call and names its revision in X-Rev, so the
// upstream shows which revision decided.
func revPolicy(rev string) string {
	return fmt.Sprintf(`package audgate

decision := {
	"allow": true,
	"audience": input.upstream.audiences[0],
	"headers": {"X-Rev": %q},
}
`, rev)
}

// buildBundle writes a bundle with OPA's own bundle package, signed with
// key when it is set. tamper changes the policy after signing.
func buildBundle(t testing.TB, rev string, key *signingKey, tamper bool) []byte {
	t.Helper()
	src := revPolicy(rev)
	b := bundle.Bundle{
		Manifest: bundle.Manifest{Revision: rev, Roots: &[]string{"audgate"}},
		Modules: []bundle.ModuleFile{{
			URL: "/audgate/policy.rego", Path: "/audgate/policy.rego",
			Raw: []byte(src), Parsed: ast.MustParseModule(src),
		}},
		Data: map[string]any{},
	}
	if key != nil {
		if err := b.GenerateSignature(bundle.NewSigningConfig(key.private, "RS256", ""), "fleet", false); err != nil {
			t.Fatal(err)
		}
	}
	if tamper {
		evil := revPolicy(rev + "-tampered")
		b.Modules[0].Raw, b.Modules[0].Parsed = []byte(evil), ast.MustParseModule(evil)
	}
	var buf bytes.Buffer
	if err := bundle.NewWriter(&buf).Write(b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// bundleServer serves one bundle with ETags; the test switches what it
// serves: 404, a bundle, or 500.
type bundleServer struct {
	srv      *httptest.Server
	mu       sync.Mutex
	status   int
	body     []byte
	etag     string
	requests atomic.Int64
}

func newBundleServer(t testing.TB) *bundleServer {
	t.Helper()
	s := &bundleServer{status: http.StatusNotFound}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.requests.Add(1)
		s.mu.Lock()
		status, body, etag := s.status, s.body, s.etag
		s.mu.Unlock()
		switch {
		case status != http.StatusOK:
			w.WriteHeader(status)
		case r.Header.Get("If-None-Match") == etag:
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("ETag", etag)
			w.Header().Set("Content-Type", "application/gzip")
			_, _ = w.Write(body)
		}
	}))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *bundleServer) serve(status int, body []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.status, s.body = status, body
	s.etag = fmt.Sprintf(`"%x"`, len(body)) + fmt.Sprint(time.Now().UnixNano())
}

// fleetPolicy is the policy section of a gateway that takes its policy
// from the signed bundle "authz" of srv, polled every second.
func fleetPolicy(srv string, key signingKey, extra string) string {
	opa := map[string]any{
		"services": map[string]any{"bundles": map[string]any{"url": srv}},
		"bundles": map[string]any{"authz": map[string]any{
			"service": "bundles", "resource": "bundles/authz.tar.gz",
			"polling": map[string]any{"min_delay_seconds": 1, "max_delay_seconds": 1},
			"signing": map[string]any{"keyid": "fleet"},
		}},
		"keys": map[string]any{"fleet": map[string]any{"key": key.public, "algorithm": "RS256"}},
	}
	raw, _ := json.Marshal(opa)
	return "policy:\n  opa: " + string(raw) + "\n" + extra
}

// withFleet replaces the base config's policy section.
func withFleet(policySection string) func(string) string {
	return func(doc string) string {
		return strings.Replace(doc, "policy:\n  decision_log: {output: \"off\"}\n", policySection, 1)
	}
}

// waitUntil polls cond every 20ms for up to limit.
func waitUntil(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// revisionsSeen lists the X-Rev values the upstream received.
func (rec *recorder) revisionsSeen() map[string]int {
	seen := map[string]int{}
	for _, r := range rec.requests() {
		seen[r.Header.Get("X-Rev")]++
	}
	return seen
}

func metricsText(t testing.TB, e *env) string {
	t.Helper()
	rr := httptest.NewRecorder()
	e.gw.AdminHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/metrics", nil))
	return rr.Body.String()
}

func readyz(e *env) (int, string) {
	rr := httptest.NewRecorder()
	e.gw.AdminHandler().ServeHTTP(rr, httptest.NewRequest("GET", "/readyz", nil))
	return rr.Code, rr.Body.String()
}

// TestBundleLifecycle: a fleet replica takes its policy from a signed
// bundle: not ready (and 503, nothing proxied) until it is activated;
// rev1, then rev2 under load with no 5xx; a tampered rev3 never decides
// anything; a 500 from the bundle server keeps rev2.
func TestBundleLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("polls a bundle server for a few seconds")
	}
	key := newSigningKey(t)
	bs := newBundleServer(t)
	e := newEnvNotReady(t, withFleet(fleetPolicy(bs.srv.URL, key, "  decision_log: {output: \"off\"}\n")))
	tok := e.issuer.mint(t, nil)

	// 404: not ready, and requests get 503 with nothing proxied.
	waitUntil(t, 5*time.Second, "the first bundle request", func() bool { return bs.requests.Load() > 0 })
	if code, body := readyz(e); code != 503 || !strings.Contains(body, `bundle "authz"`) {
		t.Errorf("/readyz before activation: %d %q", code, body)
	}
	resp := e.do(t, "GET", "/orders/1", tok, nil, "")
	checkError(t, resp, 503, "temporarily_unavailable", "")
	if resp.Header.Get("Retry-After") == "" || len(e.upstream.requests()) != 0 {
		t.Errorf("before activation: Retry-After %q, upstream got %d", resp.Header.Get("Retry-After"), len(e.upstream.requests()))
	}

	bs.serve(200, buildBundle(t, "rev1", &key, false))
	waitUntil(t, 10*time.Second, "activation of rev1", func() bool { return e.gw.Ready() == nil })
	if resp := e.do(t, "GET", "/orders/1", tok, nil, ""); resp.StatusCode != 200 || e.upstream.revisionsSeen()["rev1"] != 1 {
		t.Fatalf("after rev1: status %d, revisions %v", resp.StatusCode, e.upstream.revisionsSeen())
	}

	// rev1 → rev2 under load: 6 clients, no error, rev2 within a few polls.
	stop := make(chan struct{})
	var failures, total atomic.Int64
	var wg sync.WaitGroup
	for range 6 {
		wg.Go(func() {
			client := e.srv.Client()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("GET", e.srv.URL+"/orders/1", nil)
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := client.Do(req)
				total.Add(1)
				if err != nil || resp.StatusCode != 200 {
					failures.Add(1)
				}
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
		})
	}
	bs.serve(200, buildBundle(t, "rev2", &key, false))
	start := time.Now()
	waitUntil(t, 10*time.Second, "rev2 at the upstream", func() bool { return e.upstream.revisionsSeen()["rev2"] > 0 })
	t.Logf("rev2 decided its first request %s after the server switched (polling every 1s)", time.Since(start).Round(time.Millisecond))
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d requests failed during the switch", n, total.Load())
	}

	// A tampered rev3 fails verification: rev2 stays, rev3 never decides.
	bs.serve(200, buildBundle(t, "rev3", &key, true))
	waitUntil(t, 10*time.Second, "rev3 refused", func() bool {
		_, body := readyz(e)
		return strings.Contains(body, "latest update failed")
	})
	for range 5 {
		if resp := e.do(t, "GET", "/orders/1", tok, nil, ""); resp.StatusCode != 200 {
			t.Fatalf("after rev3: status %d", resp.StatusCode)
		}
	}
	seen := e.upstream.revisionsSeen()
	if seen["rev3"]+seen["rev3-tampered"] != 0 {
		t.Errorf("the tampered bundle decided requests: %v", seen)
	}
	if code, body := readyz(e); code != 200 || !strings.Contains(body, `revision "rev2" in force`) {
		t.Errorf("/readyz after rev3: %d %q", code, body)
	}

	// The bundle server fails: rev2 stays in force.
	bs.serve(500, nil)
	before := bs.requests.Load()
	waitUntil(t, 10*time.Second, "a poll that gets 500", func() bool { return bs.requests.Load() > before+1 })
	last := e.upstream.revisionsSeen()["rev2"]
	if resp := e.do(t, "GET", "/orders/1", tok, nil, ""); resp.StatusCode != 200 || e.upstream.revisionsSeen()["rev2"] != last+1 {
		t.Errorf("after a 500: status %d, revisions %v", resp.StatusCode, e.upstream.revisionsSeen())
	}
	m := metricsText(t, e)
	for _, want := range []string{`audgate_policy_reloads_total{result="error"}`, `audgate_policy_revision{bundle="authz",revision="rev2"} 1`} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m, `revision="rev1"} 1`) {
		t.Error("rev1 is still reported in force")
	}
}

// TestSignedLocalBundle: policy.path may be a signed bundle file; one whose
// signature does not verify stops start-up with a message naming it.
func TestSignedLocalBundle(t *testing.T) {
	key := newSigningKey(t)
	dir := t.TempDir()
	good, bad := filepath.Join(dir, "good.tar.gz"), filepath.Join(dir, "bad.tar.gz")
	_ = os.WriteFile(good, buildBundle(t, "local1", &key, false), 0o600)
	_ = os.WriteFile(bad, buildBundle(t, "local1", &key, true), 0o600)
	verification, _ := json.Marshal(map[string]any{"keyid": "fleet", "keys": map[string]any{"fleet": map[string]any{"key": key.public, "algorithm": "RS256"}}})
	section := func(path string) string {
		return "policy:\n  path: " + path + "\n  verification: " + string(verification) + "\n  decision_log: {output: \"off\"}\n"
	}
	e := newEnv(t, withFleet(section(good)))
	if resp := e.do(t, "GET", "/orders/1", e.issuer.mint(t, nil), nil, ""); resp.StatusCode != 200 || e.upstream.revisionsSeen()["local1"] != 1 {
		t.Fatalf("a signed local bundle: status %d, revisions %v", resp.StatusCode, e.upstream.revisionsSeen())
	}

	issuer := newTestIssuer(t)
	doc := withFleet(section(bad))(baseConfig)
	cfg, err := parseTestConfig(doc, issuer.srv.URL, "http://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	_, err = New(t.Context(), cfg, Options{Logger: discardLogger(), Policies: nil})
	if err == nil || !strings.Contains(err.Error(), "bad.tar.gz") || !strings.Contains(strings.ToLower(err.Error()), "digest mismatch") {
		t.Errorf("a tampered local bundle: err = %v, want a refusal naming the file and the signature's digest", err)
	}
}

// TestDecisionLogService: every decision reaches OPA's decision log
// service as OPA's event, gzip JSON batches, masked, with the request ID
// the caller got; while the service is down events wait in OPA's buffer,
// and beyond it they are dropped and counted.
func TestDecisionLogService(t *testing.T) {
	if testing.Short() {
		t.Skip("waits for uploads")
	}
	var mu sync.Mutex
	var events []map[string]any
	var down atomic.Bool
	var refused atomic.Int64
	logs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			refused.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		zr, err := gzip.NewReader(r.Body)
		if err != nil || r.Header.Get("Content-Encoding") != "gzip" {
			t.Errorf("upload is not gzip: %v %q", err, r.Header.Get("Content-Encoding"))
			w.WriteHeader(400)
			return
		}
		var batch []map[string]any
		if err := json.NewDecoder(zr).Decode(&batch); err != nil {
			t.Errorf("upload is not a JSON array: %v", err)
		}
		mu.Lock()
		events = append(events, batch...)
		mu.Unlock()
	}))
	defer logs.Close()
	opa, _ := json.Marshal(map[string]any{
		"services": map[string]any{"logs": map[string]any{"url": logs.URL}},
		"decision_logs": map[string]any{"service": "logs", "reporting": map[string]any{
			"min_delay_seconds": 1, "max_delay_seconds": 1, "buffer_type": "event", "buffer_size_limit_events": 20}},
	})
	e := newEnv(t, withFleet("policy:\n  opa: "+string(opa)+"\n  decision_log: {output: \"off\", mask: [/input/token/claims/email]}\n"))
	received := func() int { mu.Lock(); defer mu.Unlock(); return len(events) }
	send := func(n int, prefix string) {
		for i := range n {
			tok := e.issuer.mint(t, map[string]any{"email": "alice@example.com"})
			hdr := http.Header{"X-Request-Id": {fmt.Sprintf("%s-%d", prefix, i)}, "Cookie": {"sid=secret"}}
			if resp := e.do(t, "GET", "/orders/1", tok, hdr, ""); resp.StatusCode != 200 {
				t.Fatalf("status %d", resp.StatusCode)
			}
		}
	}
	send(5, "up")
	waitUntil(t, 10*time.Second, "5 events at the service", func() bool { return received() == 5 })
	mu.Lock()
	for i, ev := range events {
		custom, _ := ev["custom"].(map[string]any)
		raw, _ := json.Marshal(ev)
		if custom["request_id"] != fmt.Sprintf("up-%d", i) && !strings.HasPrefix(fmt.Sprint(custom["request_id"]), "up-") {
			t.Errorf("event %d: request_id %v", i, custom["request_id"])
		}
		if ev["path"] != "audgate/decision" || ev["result"] == nil || strings.Contains(string(raw), "alice@example.com") ||
			strings.Contains(string(raw), "sid=secret") || !strings.Contains(string(raw), `"erased"`) {
			t.Errorf("event %d: %s", i, raw)
		}
	}
	mu.Unlock()

	// The service is down: 10 events wait in the buffer (20) and arrive.
	down.Store(true)
	send(10, "held")
	before := refused.Load()
	waitUntil(t, 10*time.Second, "an upload refused", func() bool { return refused.Load() > before })
	down.Store(false)
	waitUntil(t, 15*time.Second, "the held events", func() bool { return received() == 15 })

	// Down again, 30 events for a buffer of 20: the overflow is counted.
	down.Store(true)
	send(30, "over")
	waitUntil(t, 10*time.Second, "dropped events counted", func() bool {
		return !strings.Contains(metricsText(t, e), "audgate_decision_log_upload_dropped_total 0")
	})
	down.Store(false)
	waitUntil(t, 15*time.Second, "the buffered events", func() bool { return received() >= 35 })
}

// parseTestConfig parses a test configuration with its issuer and
// upstream URLs.
func parseTestConfig(doc, issuer, upstream string) (*config.Config, error) {
	vars := map[string]string{"ISSUER": issuer, "UPSTREAM": upstream}
	return config.Parse([]byte(doc), func(k string) (string, bool) { v, ok := vars[k]; return v, ok })
}

func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// TestStatusUpload: OPA's status plugin reports each replica's bundles
// (the active revision, and the error of a failed update) and labels to
// the status service.
func TestStatusUpload(t *testing.T) {
	if testing.Short() {
		t.Skip("polls a bundle server")
	}
	key := newSigningKey(t)
	bs := newBundleServer(t)
	bs.serve(200, buildBundle(t, "rev1", &key, false))
	var mu sync.Mutex
	var reports []map[string]any
	status := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var report map[string]any
		_ = json.NewDecoder(r.Body).Decode(&report)
		mu.Lock()
		reports = append(reports, report)
		mu.Unlock()
	}))
	defer status.Close()
	section := fleetPolicy(bs.srv.URL, key, "  decision_log: {output: \"off\"}\n")
	section = strings.Replace(section, `"services":{"bundles":{"url":"`+bs.srv.URL+`"}}`,
		`"services":{"bundles":{"url":"`+bs.srv.URL+`"},"status":{"url":"`+status.URL+`"}},"status":{"service":"status"},"labels":{"region":"eu"}`, 1)
	newEnv(t, withFleet(section))
	bs.serve(200, buildBundle(t, "rev2", &key, true)) // tampered: refused
	waitUntil(t, 15*time.Second, "a status report of the refused rev2", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, r := range reports {
			bundles, _ := r["bundles"].(map[string]any)
			b, _ := bundles["authz"].(map[string]any)
			labels, _ := r["labels"].(map[string]any)
			if b["active_revision"] == "rev1" && b["code"] != nil && labels["region"] == "eu" && labels["version"] != nil && labels["id"] != nil {
				return true
			}
		}
		return false
	})
}

// TestMeasureBundleSwitch measures, over 10 switches, the time from a new
// revision on the bundle server to the first request it decides, with
// bundles polled every second. AUDGATE_LOAD=1 runs it.
func TestMeasureBundleSwitch(t *testing.T) {
	if os.Getenv("AUDGATE_LOAD") == "" {
		t.Skip("set AUDGATE_LOAD=1 to measure")
	}
	key := newSigningKey(t)
	bs := newBundleServer(t)
	bs.serve(200, buildBundle(t, "rev0", &key, false))
	e := newEnv(t, withFleet(fleetPolicy(bs.srv.URL, key, "  decision_log: {output: \"off\"}\n")))
	tok := e.issuer.mint(t, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
			req, _ := http.NewRequest("GET", e.srv.URL+"/orders/1", nil)
			req.Header.Set("Authorization", "Bearer "+tok)
			if resp, err := e.srv.Client().Do(req); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	})
	var took []time.Duration
	for i := 1; i <= 10; i++ {
		rev := fmt.Sprintf("rev%d", i)
		body := buildBundle(t, rev, &key, false)
		start := time.Now()
		bs.serve(200, body)
		waitUntil(t, 10*time.Second, rev, func() bool { return e.upstream.revisionsSeen()[rev] > 0 })
		took = append(took, time.Since(start))
	}
	close(stop)
	wg.Wait()
	slices.Sort(took)
	t.Logf("new revision → first request decided by it, polling every 1s: median %s, min %s, max %s (10 switches)",
		took[len(took)/2].Round(time.Millisecond), took[0].Round(time.Millisecond), took[len(took)-1].Round(time.Millisecond))
}
