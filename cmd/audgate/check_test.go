package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeConfig writes a configuration using a policy directory.
func writeConfig(t *testing.T, policyDir string) string {
	t.Helper()
	dir := t.TempDir()
	doc := `
inbound:
  issuers: [{issuer: "https://idp.test", audiences: [gw], jwks_uri: "http://127.0.0.1:1/jwks"}]
policy: {path: "` + policyDir + `", decision_log: {output: "off"}}
token_sources: [{name: self, type: self_signed, issuer: "https://gw.test"}]
upstreams: [{name: orders, url: "http://127.0.0.1:1", token_source: self, audiences: [https://orders.test], scopes: [orders:read]}]
routes: [{path: /orders/:id, upstream: orders}]
`
	path := filepath.Join(dir, "audgate.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writePolicy(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

const evalPolicy = `package audgate

default decision := {"allow": false}

decision := {"allow": true, "audience": "https://orders.test", "scopes": ["orders:read"]} if {
	input.route.params.id == "1"
	input.token.subject == "alice"
}
`

func TestCheck(t *testing.T) {
	tests := []struct {
		name    string
		test    string
		wantErr string
		wantOut string
	}{
		{name: "tests pass", test: "package audgate_test\n\nimport data.audgate\n\ntest_alice if audgate.decision.allow with input as {\"route\": {\"params\": {\"id\": \"1\"}}, \"token\": {\"subject\": \"alice\"}}\n", wantOut: "1 passed, 0 failed"},
		{name: "a test fails", test: "package audgate_test\n\nimport data.audgate\n\ntest_bob if audgate.decision.allow with input as {\"route\": {\"params\": {\"id\": \"1\"}}, \"token\": {\"subject\": \"bob\"}}\n", wantErr: "1 policy tests failed", wantOut: "FAIL data.audgate_test.test_bob"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy, "p_test.rego": tc.test}))
			var out bytes.Buffer
			err := check(context.Background(), cfg, &out)
			if (tc.wantErr == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("err = %v, want %q", err, tc.wantErr)
			}
			if !strings.Contains(out.String(), tc.wantOut) {
				t.Errorf("output %q lacks %q", out.String(), tc.wantOut)
			}
		})
	}
	t.Run("a misspelled input field", func(t *testing.T) {
		cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": "package audgate\n\ndecision := {\"allow\": input.request.methd == \"GET\"}\n"}))
		err := check(context.Background(), cfg, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), "p.rego:3") || !strings.Contains(err.Error(), "input.request.methd") {
			t.Errorf("err = %v, want the schema's error naming p.rego:3", err)
		}
	})
	t.Run("policy does not compile", func(t *testing.T) {
		cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": "package audgate\n\ndecision := {"}))
		if err := check(context.Background(), cfg, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "p.rego") {
			t.Errorf("err = %v, want a compile error naming p.rego", err)
		}
	})
}

func TestEval(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
	claims := filepath.Join(t.TempDir(), "claims.json")
	_ = os.WriteFile(claims, []byte(`{"sub": "alice", "scope": "a b", "exp": 1999999999}`), 0o600)
	tests := []struct {
		name, path string
		wantAllow  bool
		wantErr    string
	}{
		{name: "allowed", path: "/orders/1", wantAllow: true},
		{name: "denied", path: "/orders/2"},
		{name: "no route", path: "/nowhere", wantErr: "no route"},
		{name: "not canonical", path: "/orders/%61", wantErr: "needs no encoding"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			err := eval(context.Background(), evalFlags{config: cfg, claims: claims, method: "GET", path: tc.path,
				headers: []string{"X-User-Id: admin", "Accept: application/json"}}, &out, &errOut)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc struct {
				Input struct {
					Token struct {
						Subject string   `json:"subject"`
						Scopes  []string `json:"scopes"`
					} `json:"token"`
					Route struct {
						Params map[string]string `json:"params"`
					} `json:"route"`
				} `json:"input"`
				Decision struct {
					Allow bool `json:"allow"`
				} `json:"decision"`
			}
			if err := json.Unmarshal(out.Bytes(), &doc); err != nil {
				t.Fatalf("output is not JSON: %s", out.String())
			}
			if doc.Decision.Allow != tc.wantAllow || doc.Input.Token.Subject != "alice" || len(doc.Input.Token.Scopes) != 2 {
				t.Errorf("output: %s", out.String())
			}
			if strings.Contains(out.String(), `"x-user-id"`) || !strings.Contains(out.String(), `"accept"`) {
				t.Errorf("eval's input headers differ from the gateway's (X-User-Id must be stripped): %s", out.String())
			}
		})
	}
}

// TestCheckValidatesOPAConfig: check validates policy.opa as OPA does,
// without downloading anything.
func TestCheckValidatesOPAConfig(t *testing.T) {
	tests := []struct {
		name, opa, wantErr, wantOut string
	}{
		{name: "a bundle from a service", opa: `{services: {acme: {url: "https://bundles.example.com"}}, bundles: {authz: {service: acme, resource: bundles/authz.tar.gz}}}`,
			wantOut: "the policy comes from bundles"},
		{name: "a bundle from an unknown service", opa: `{services: {acme: {url: "https://bundles.example.com"}}, bundles: {authz: {service: nope}}}`,
			wantErr: "nope"},
		{name: "decision logs to a service", opa: `{services: {acme: {url: "https://logs.example.com"}}, decision_logs: {service: acme}}`,
			wantOut: "policy: compiled"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
			raw, _ := os.ReadFile(cfg)
			doc := string(raw)
			if strings.Contains(tc.opa, "bundles:") {
				doc = strings.Replace(doc, `policy: {path: "`, `policy: {opa: `+tc.opa+`, x: "`, 1)
				doc = strings.Replace(doc, `, x: "`, `, y: "`, 1)
				doc = strings.Replace(doc, `policy: {opa: `+tc.opa+`, y: "`, `policy: {opa: `+tc.opa+`, decision_log: {output: "off"}}`+"\n#", 1)
			} else {
				doc = strings.Replace(doc, `policy: {path:`, `policy: {opa: `+tc.opa+`, path:`, 1)
			}
			_ = os.WriteFile(cfg, []byte(doc), 0o600)
			var out bytes.Buffer
			err := check(context.Background(), cfg, &out)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || !strings.Contains(out.String(), tc.wantOut) {
				t.Fatalf("err = %v, output %q, want %q", err, out.String(), tc.wantOut)
			}
		})
	}
}

// TestCheckRefusesWhatRunRefuses: check fails where run would fail to
// start, though it opens no file and fetches no keys.
func TestCheckRefusesWhatRunRefuses(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
	raw, _ := os.ReadFile(cfg)
	missing := filepath.Join(t.TempDir(), "no", "such", "dir", "decisions.log")
	doc := strings.Replace(string(raw), `decision_log: {output: "off"}`, `decision_log: {output: "`+missing+`"}`, 1)
	_ = os.WriteFile(cfg, []byte(doc), 0o600)
	if err := check(context.Background(), cfg, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("err = %v, want the decision log's missing directory refused", err)
	}
	if _, err := os.Stat(filepath.Dir(missing)); err == nil {
		t.Error("check created the decision log's directory")
	}
}

// loggedInput is an input as the decision log records it.
const loggedInput = `{"request":{"method":"GET","path":"/orders/1","segments":["orders","1"],"query":{},"headers":{},"host":"gw","remote_ip":"127.0.0.1"},"route":{"path":"/orders/:id","params":{"id":"1"},"upstream":"orders"},"upstream":{"name":"orders","token_source":"self","audiences":["https://orders.test"]},"token":{"issuer":"https://idp.test","subject":"alice","client_id":"spa","audience":["gw"],"scopes":[],"expires_at":1999999999,"claims":{"sub":"alice"}}}`

func TestEvalInput(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
	dir := t.TempDir()
	bare, event := filepath.Join(dir, "input.json"), filepath.Join(dir, "event.json")
	_ = os.WriteFile(bare, []byte(loggedInput), 0o600)
	_ = os.WriteFile(event, []byte(`{"decision_id":"d1","path":"audgate/decision","input":`+loggedInput+`,"result":{"allow":false}}`), 0o600)
	for _, file := range []string{bare, event} {
		var out bytes.Buffer
		if err := eval(context.Background(), evalFlags{config: cfg, input: file}, &out, &bytes.Buffer{}); err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		if !strings.Contains(out.String(), `"allow": true`) || !strings.Contains(out.String(), `"status": 200`) {
			t.Errorf("%s: %s", file, out.String())
		}
	}
}

func TestReplayCommand(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
	log := filepath.Join(t.TempDir(), "decisions.jsonl")
	allowed := `{"decision_id":"a","input":` + loggedInput + `,"result":{"allow":true,"audience":"https://orders.test","scopes":["orders:read"]},"custom":{"request_id":"r1"}}`
	denied := `{"decision_id":"b","input":` + strings.Replace(loggedInput, `"subject":"alice"`, `"subject":"bob"`, 1) + `,"result":{"allow":false},"custom":{"request_id":"r2"}}`
	_ = os.WriteFile(log, []byte(allowed+"\n"+denied+"\n"), 0o600)
	var out bytes.Buffer
	if err := replay(context.Background(), replayFlags{config: cfg, log: log}, &out, &bytes.Buffer{}); err != nil {
		t.Fatalf("replay against the logged policy: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "unchanged      2") {
		t.Errorf("report: %s", out.String())
	}
	// A candidate that denies everyone.
	candidate := writePolicy(t, map[string]string{"p.rego": "package audgate\n\ndefault decision := {\"allow\": false}\n"})
	out.Reset()
	err := replay(context.Background(), replayFlags{config: cfg, log: log, policy: candidate}, &out, &bytes.Buffer{})
	if !errors.Is(err, errChanges) || !strings.Contains(out.String(), "allow → deny   1") || !strings.Contains(out.String(), "request r1") {
		t.Errorf("replay against a deny-all candidate: %v\n%s", err, out.String())
	}
}

// TestShippedFleetConfigChecks: the Kubernetes fleet variant passes check
// (OPA's configuration, keys and services included).
func TestShippedFleetConfigChecks(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "..", "deploy", "kubernetes", "bundle-service", "configmap.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	_, doc, _ := strings.Cut(string(raw), "audgate.yaml: |\n")
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimPrefix(l, "    ")
	}
	path := filepath.Join(t.TempDir(), "audgate.yaml")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("AUDGATE_CLIENT_SECRET", "s")
	t.Setenv("AUDGATE_LOG_TOKEN", "t")
	var out bytes.Buffer
	if err := check(context.Background(), path, &out); err != nil || !strings.Contains(out.String(), "comes from bundles") {
		t.Errorf("check: %v\n%s", err, out.String())
	}
}

// TestEvalExplainShowsReads: --explain names the input paths the decision
// reads, and whether its decisions are cached.
func TestEvalExplainShowsReads(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy}))
	claims := filepath.Join(t.TempDir(), "claims.json")
	_ = os.WriteFile(claims, []byte(`{"sub": "alice", "exp": 1999999999}`), 0o600)
	var out, errOut bytes.Buffer
	if err := eval(context.Background(), evalFlags{config: cfg, claims: claims, method: "GET", path: "/orders/1", explain: true}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "the decision reads: input.route.params.id, input.token.subject\n") || !strings.Contains(errOut.String(), "cached by those values") {
		t.Errorf("--explain: %s", errOut.String())
	}
}

// TestEvalInputPrints: print() in the policy reaches eval's stderr for a
// logged input too.
func TestEvalInputPrints(t *testing.T) {
	cfg := writeConfig(t, writePolicy(t, map[string]string{"p.rego": evalPolicy + "\n_seen if print(\"subject is\", input.token.subject)\n\ndecision := {\"allow\": false} if {\n\t_seen\n\tfalse\n}\n"}))
	file := filepath.Join(t.TempDir(), "input.json")
	_ = os.WriteFile(file, []byte(loggedInput), 0o600)
	var out, errOut bytes.Buffer
	if err := eval(context.Background(), evalFlags{config: cfg, input: file}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut.String(), "subject is alice") {
		t.Errorf("print output not on stderr: %q", errOut.String())
	}
}
