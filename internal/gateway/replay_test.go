package gateway

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/audgate/audgate/policies"
)

// TestReplay: 1,000 mixed decisions, logged by the served gateway, replay
// unchanged against the same policy; against a candidate that revokes
// orders:write, exactly the writes it allowed turn to denies.
func TestReplay(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "decisions.jsonl")
	e := newEnv(t, func(doc string) string {
		return strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "`+logFile+`"}`, 1)
	})
	users := []map[string]any{
		{"sub": "alice", "permissions": []string{"orders:read", "orders:write", "profile:read"}},
		{"sub": "bob", "permissions": []string{"orders:read"}},
		{"sub": "carol", "permissions": []string{"profile:read", "profile:write"}},
		{"sub": "dave", "permissions": nil, "scope": "orders:read orders:write"},
		{"sub": "erin", "permissions": map[string]any{"x": "orders:write"}},
		{"sub": "frank", "permissions": []string{}},
	}
	tokens := make([]string, len(users))
	for i, u := range users {
		tokens[i] = e.issuer.mint(t, u)
	}
	requests := []struct{ method, path string }{
		{"GET", "/orders"}, {"POST", "/orders"}, {"GET", "/orders/7"}, {"PUT", "/orders/7"},
		{"DELETE", "/orders/9"}, {"GET", "/profile/me"}, {"PATCH", "/profile/me"},
	}
	rnd := rand.New(rand.NewPCG(1, 2))
	allowedWrites, allowed := 0, 0
	for i := range 1000 {
		u, r := rnd.IntN(len(users)), requests[rnd.IntN(len(requests))]
		hdr := http.Header{"X-Request-Id": {fmt.Sprintf("replay-%d", i)}}
		resp := e.do(t, r.method, r.path, tokens[u], hdr, "")
		switch resp.StatusCode {
		case 200:
			allowed++
			if strings.HasPrefix(r.path, "/orders") && r.method != "GET" {
				allowedWrites++
			}
		case 403:
		default:
			t.Fatalf("%s %s as %s: %d", r.method, r.path, users[u]["sub"], resp.StatusCode)
		}
	}
	e.gw.Close() // flushes the decision log
	if allowedWrites == 0 || allowed == 1000 {
		t.Fatalf("the traffic is not mixed: %d allowed, %d writes to orders", allowed, allowedWrites)
	}
	log, err := os.ReadFile(logFile)
	if err != nil {
		t.Fatal(err)
	}

	replayWith := func(policyPath string) *ReplayReport {
		t.Helper()
		cfg := *e.cfg
		cfg.Policy.Path, cfg.Policy.Watch = policyPath, false
		gw, err := New(context.Background(), &cfg, Options{EvalOnly: true, Policies: policies.FS, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer gw.Close()
		r, err := gw.Replay(context.Background(), bytes.NewReader(log), nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	same := replayWith("")
	if same.Evaluated != 1000 || same.Unchanged != 1000 || same.Changes() != 0 {
		t.Errorf("replay against the same policy: %+v", same)
	}

	// The candidate: the default policy, but orders:write is never granted.
	src, _ := policies.FS.ReadFile("audgate.rego")
	candidate := strings.Replace(string(src), "_granted if {\n", "_granted if {\n\t_required_permission != \"orders:write\"\n", 1)
	candidate = strings.Replace(candidate, "_granted if input.token.scopes[_] == _required_permission",
		"_granted if {\n\t_required_permission != \"orders:write\"\n\tinput.token.scopes[_] == _required_permission\n}", 1)
	if candidate == string(src) {
		t.Fatal("the candidate policy is the default one")
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "audgate.rego"), []byte(candidate), 0o600); err != nil {
		t.Fatal(err)
	}
	revoked := replayWith(dir)
	if revoked.AllowToDeny != allowedWrites || revoked.DenyToAllow != 0 || revoked.Changed != 0 || revoked.Errors != 0 ||
		revoked.Unchanged != 1000-allowedWrites {
		t.Errorf("replay against the candidate: %+v; want %d allow→deny", revoked, allowedWrites)
	}
	if len(revoked.Differences) == 0 || !strings.HasPrefix(revoked.Differences[0].Was, "allow") ||
		!strings.HasPrefix(revoked.Differences[0].Now, "deny 403") || revoked.Differences[0].RequestID == "" {
		t.Errorf("first difference: %+v", revoked.Differences)
	}
}

// TestSameOutcome: an error then and an error now is no change, however
// each is worded; a deny's reason is not compared; an allow's token is.
func TestSameOutcome(t *testing.T) {
	for _, tc := range []struct {
		a, b outcome
		same bool
	}{
		{outcome{kind: "error", detail: "evaluation error: {...}"}, outcome{kind: "error", detail: "policy_error x"}, true},
		{outcome{kind: "deny", status: 403, detail: "a"}, outcome{kind: "deny", status: 401, detail: "b"}, true},
		{outcome{kind: "error"}, outcome{kind: "deny"}, false},
		{outcome{kind: "allow", aud: "a"}, outcome{kind: "allow", aud: "b"}, false},
		{outcome{kind: "allow", aud: "a", scopes: []string{"x"}}, outcome{kind: "allow", aud: "a", scopes: []string{"x"}}, true},
	} {
		if got := sameOutcome(tc.a, tc.b); got != tc.same {
			t.Errorf("sameOutcome(%v, %v) = %v", tc.a, tc.b, got)
		}
	}
}
