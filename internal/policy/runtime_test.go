package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
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

	"github.com/audgate/audgate/policies"
)

// inputSchema is the shipped input schema.
func inputSchema(t testing.TB) []byte {
	t.Helper()
	b, err := fs.ReadFile(policies.FS, "schemas/input.json")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// policyDir writes files into a new directory.
func policyDir(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func startRuntime(t testing.TB, opts Options) (*Runtime, error) {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	rt, err := Start(context.Background(), opts)
	if err == nil {
		t.Cleanup(func() { rt.Close(context.Background()) })
	}
	return rt, err
}

// TestCompileRules: a policy is compiled against the input schema, and
// network builtins are refused unless allowed; errors name file and line.
func TestCompileRules(t *testing.T) {
	tests := []struct {
		name    string
		rego    string
		network bool
		wantErr []string
	}{
		{name: "a misspelled input field", rego: "decision := {\"allow\": input.request.methd == \"GET\"}\n",
			wantErr: []string{"p.rego:3", "undefined ref: input.request.methd"}},
		{name: "a misspelled nested field", rego: "decision := {\"allow\": input.token.subjct == \"a\"}\n",
			wantErr: []string{"p.rego:3", "input.token.subjct"}},
		{name: "claims are open", rego: "decision := {\"allow\": input.token.claims.anything == \"a\"}\n"},
		{name: "headers are open", rego: "decision := {\"allow\": input.request.headers[\"x-any\"] == \"a\"}\n"},
		{name: "http.send refused", rego: "decision := http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"})\n",
			wantErr: []string{"p.rego:3", "http.send", "policy.allow_network"}},
		{name: "net.lookup_ip_addr refused", rego: "decision := {\"allow\": count(net.lookup_ip_addr(\"localhost\")) > 0}\n",
			wantErr: []string{"p.rego:3", "net.lookup_ip_addr", "policy.allow_network"}},
		{name: "http.send allowed", network: true, rego: "decision := http.send({\"method\": \"GET\", \"url\": \"http://127.0.0.1:1\"})\n"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\n" + tc.rego})
			_, err := startRuntime(t, Options{Path: dir, InputSchema: inputSchema(t), AllowNetwork: tc.network})
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("Start: %v", err)
				}
				return
			}
			for _, want := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("err = %v, want it to contain %q", err, want)
				}
			}
		})
	}
}

// TestEveryFixtureFitsTheSchema: the shared decision fixtures, and an
// input built by the Go type, validate against the shipped schema.
func TestEveryFixtureFitsTheSchema(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "policies", "fixtures", "data.json"))
	if err != nil {
		t.Fatal(err)
	}
	var fx struct {
		Decisions []struct {
			Note  string          `json:"note"`
			Input json.RawMessage `json:"input"`
		} `json:"decisions"`
	}
	if err := json.Unmarshal(raw, &fx); err != nil {
		t.Fatal(err)
	}
	inputs := map[string]json.RawMessage{}
	for _, d := range fx.Decisions {
		inputs["fixture: "+d.Note] = d.Input
	}
	goInput, _ := json.Marshal(sampleInput())
	inputs["the Go Input type"] = goInput
	sparse, _ := json.Marshal(&Input{})
	inputs["an empty Input"] = sparse
	e := newEngine(t, "decision := json.match_schema(input.doc, input.schema)")
	var schema any
	_ = json.Unmarshal(inputSchema(t), &schema)
	fits := func(doc json.RawMessage) (bool, any) {
		var v any
		_ = json.Unmarshal(doc, &v)
		match := evalRaw(t, e, map[string]any{"doc": v, "schema": schema})
		res, ok := match.([]any)
		return ok && res[0] == true, match
	}
	for name, doc := range inputs {
		if ok, match := fits(doc); !ok {
			t.Errorf("%s does not fit the schema: %v", name, match)
		}
	}
	// The schema is closed where the contract is: a field it does not
	// know makes a document not fit.
	odd := bytes.Replace(goInput, []byte(`"method"`), []byte(`"methd"`), 1)
	if ok, _ := fits(odd); ok {
		t.Error("an input with request.methd fits the schema")
	}
}

// TestPrint: print() output reaches Options.Print with the evaluation's
// context.
func TestPrint(t *testing.T) {
	type key struct{}
	var mu sync.Mutex
	var got []string
	dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\ndecision := {\"allow\": false} if {\n\tprint(\"method is\", input.request.method)\n}\n"})
	rt, err := startRuntime(t, Options{Path: dir, Print: func(ctx context.Context, loc, msg string) {
		mu.Lock()
		defer mu.Unlock()
		got = append(got, ctx.Value(key{}).(string)+" "+loc+" "+msg)
	}})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.WithValue(context.Background(), key{}, "req-7")
	if _, err := rt.Engine().Decide(ctx, sampleInput()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 1 || !strings.HasPrefix(got[0], "req-7 ") || !strings.Contains(got[0], "p.rego:4") || !strings.HasSuffix(got[0], "method is GET") {
		t.Errorf("print output %q", got)
	}
}

// TestInterQueryCache: with the network allowed, http.send's cache keeps
// an answer between requests.
func TestInterQueryCache(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "max-age=60")
		_, _ = w.Write([]byte(`{"ok": true}`))
	}))
	defer srv.Close()
	dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\ndecision := {\"allow\": http.send({\"method\": \"GET\", \"url\": \"" + srv.URL + "\", \"cache\": true}).body.ok}\n"})
	rt, err := startRuntime(t, Options{Path: dir, AllowNetwork: true})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		d, err := rt.Engine().Decide(context.Background(), sampleInput())
		if err != nil || !d.Allow {
			t.Fatalf("request %d: %+v, %v", i, d, err)
		}
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("the policy's server got %d requests for 3 decisions, want 1", n)
	}
}

// eventBuffer collects decision log events.
type eventBuffer struct {
	mu     sync.Mutex
	events [][]byte
	seen   chan struct{}
}

func newEventBuffer() *eventBuffer { return &eventBuffer{seen: make(chan struct{}, 100)} }

func (b *eventBuffer) WriteEvent(e []byte) error {
	b.mu.Lock()
	b.events = append(b.events, bytes.Clone(e))
	b.mu.Unlock()
	b.seen <- struct{}{}
	return nil
}

func (b *eventBuffer) Flush() error { return nil }

func (b *eventBuffer) wait(t *testing.T, n int) []map[string]any {
	t.Helper()
	for range n {
		select {
		case <-b.seen:
		case <-time.After(5 * time.Second):
			t.Fatalf("fewer than %d events", n)
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []map[string]any
	for _, e := range b.events {
		var m map[string]any
		if err := json.Unmarshal(e, &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}

// TestDecisionLogMasksAndDrops: events are OPA's EventV1; the configured
// pointers and the policy's own system.log.mask erase, system.log.drop
// drops, and the caller's shared claims are never changed.
func TestDecisionLogMasksAndDrops(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"p.rego":   "package audgate\n\ndecision := {\"allow\": true, \"audience\": \"a\"} if input.request.method != \"PUT\"\n\ndecision := {\"allow\": to_number(\"x\")} if input.request.method == \"PUT\"\n",
		"log.rego": "package system.log\n\nmask contains \"/input/token/claims/secret\"\n\ndrop if input.input.request.method == \"HEAD\"\n",
	})
	buf := newEventBuffer()
	rt, err := startRuntime(t, Options{Path: dir, DecisionLog: buf, InstanceID: "replica-1", Version: "v9",
		Masks: []string{"/input/request/headers/cookie", "/input/token/claims/email"}})
	if err != nil {
		t.Fatal(err)
	}
	e := rt.Engine()
	log := func(method string) {
		in := sampleInput()
		in.Request.Method = method
		in.Request.Headers = map[string]string{"cookie": "s=1", "accept": "*/*"}
		in.Token.Claims = map[string]any{"sub": "alice", "email": "a@example.com", "secret": "x"}
		d, err := e.Decide(context.Background(), in)
		rt.Log(&Record{DecisionID: method, Timestamp: time.Unix(1, 0), Engine: e, Input: in, Decision: d, Err: err,
			Eval: time.Millisecond, Custom: map[string]any{"request_id": "r-" + method}})
		if in.Token.Claims["email"] != "a@example.com" {
			t.Error("masking changed the caller's claims")
		}
	}
	log("GET")
	log("HEAD") // dropped
	log("PUT")  // an evaluation error
	events := buf.wait(t, 2)
	if len(events) != 2 {
		t.Fatalf("%d events, want 2 (HEAD dropped)", len(events))
	}
	get, put := events[0], events[1]
	input := get["input"].(map[string]any)
	claims := input["token"].(map[string]any)["claims"].(map[string]any)
	headers := input["request"].(map[string]any)["headers"].(map[string]any)
	if _, ok := claims["email"]; ok || claims["secret"] != nil || headers["cookie"] != nil || headers["accept"] != "*/*" {
		t.Errorf("masked input: %v", input)
	}
	erased := get["erased"].([]any)
	for _, p := range []string{"/input/token/claims/email", "/input/request/headers/cookie", "/input/token/claims/secret"} {
		if !slices.Contains(erased, any(p)) {
			t.Errorf("erased %v lacks %s", erased, p)
		}
	}
	labels := get["labels"].(map[string]any)
	bundles := get["bundles"].(map[string]any)
	if get["path"] != "audgate/decision" || labels["id"] != "replica-1" || labels["version"] != "v9" ||
		bundles[LocalBundle] == nil || get["result"].(map[string]any)["allow"] != true ||
		get["custom"].(map[string]any)["request_id"] != "r-GET" || get["metrics"].(map[string]any)["timer_rego_query_eval_ns"] != float64(1e6) {
		t.Errorf("event: %v", get)
	}
	if put["result"] != nil || put["error"].(map[string]any)["code"] != "eval_builtin_error" {
		t.Errorf("evaluation error event: result %v, error %v", put["result"], put["error"])
	}
}

// TestReloadKeepsTheLastGood: a change that does not compile (here, a
// misspelled input field) leaves the last good policy in force.
func TestReloadKeepsTheLastGood(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\ndecision := {\"allow\": false, \"reason\": \"v1\"}\n"})
	var mu sync.Mutex
	var reloads []error
	rt, err := startRuntime(t, Options{Path: dir, InputSchema: inputSchema(t), OnReload: func(_, _ string, err error) {
		mu.Lock()
		reloads = append(reloads, err)
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	reason := func() string {
		d, err := rt.Engine().Decide(context.Background(), sampleInput())
		if err != nil {
			t.Fatal(err)
		}
		return d.Reason
	}
	write := func(body string) {
		if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package audgate\n\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("decision := {\"allow\": false, \"reason\": input.request.methd}\n")
	if err := rt.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "p.rego:3") {
		t.Fatalf("reload of a broken policy: %v", err)
	}
	if got := reason(); got != "v1" {
		t.Errorf("after a failed reload the reason is %q, want v1", got)
	}
	write("decision := {\"allow\": false, \"reason\": \"v2\"}\n")
	if err := rt.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := reason(); got != "v2" {
		t.Errorf("after a good reload the reason is %q, want v2", got)
	}
}
