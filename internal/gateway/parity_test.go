package gateway

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/audgate/audgate/policies"
)

// parityPolicy allows GET on orders for a caller whose permissions claim
// is an array holding orders:read, denies others, returns an audience
// outside the upstream's allow-list when the request has X-Fail and fails
// to evaluate when it has X-Eval-Error.
const parityPolicy = `
default decision := {"allow": false, "reason": "no rule matched"}

decision := {"allow": true, "audience": "https://nowhere.test"} if {
	input.request.headers["x-fail"]
} else := {"allow": true, "audience": to_number("x")} if {
	input.request.headers["x-eval-error"]
} else := {
	"allow": true,
	"audience": input.upstream.audiences[0],
	"scopes": ["orders:read"],
	"headers": {"X-User-Id": input.token.subject},
} if {
	is_array(input.token.claims.permissions)
	"orders:read" in input.token.claims.permissions
} else := {"allow": false, "status": 403, "reason": "needs orders:read"}
`

// TestRunAndEvalAgree sends each request through the served gateway over
// HTTP and through Eval, and compares the policy input, the decision and
// the status: eval must decide exactly what run decides.
func TestRunAndEvalAgree(t *testing.T) {
	logFile := filepath.Join(t.TempDir(), "decisions.log")
	e := newEnv(t, func(doc string) string {
		doc = withPolicy(t, parityPolicy)(doc)
		return strings.Replace(doc, `decision_log: {output: "off"}`, `decision_log: {output: "`+logFile+`"}`, 1)
	})
	// eval's gateway: the same configuration, built for eval only.
	evalGW, err := New(context.Background(), e.cfg, Options{EvalOnly: true, Policies: policies.FS, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(evalGW.Close)
	exp := time.Now().Add(time.Hour).Unix()
	tests := []struct {
		name   string
		method string
		path   string
		claims map[string]any
		header http.Header
		status int
	}{
		{name: "allow", claims: nil, status: 200},
		{name: "allow with a query", path: "/orders/7?expand=items&expand=notes", status: 200},
		{name: "deny", claims: map[string]any{"permissions": []string{"billing:read"}}, status: 403},
		{name: "decision outside the allow-list", header: http.Header{"X-Fail": {"1"}}, status: 500},
		{name: "evaluation error", header: http.Header{"X-Eval-Error": {"1"}}, status: 500},
		{name: "scope an array", claims: map[string]any{"scope": []string{"orders:read"}}, status: 401},
		{name: "fractional exp", claims: map[string]any{"exp": json.Number(fmt.Sprintf("%d.5", exp))}, status: 200},
		{name: "client_id not a string", claims: map[string]any{"client_id": 7}, status: 401},
		{name: "permissions an object", claims: map[string]any{"permissions": map[string]any{"x": "orders:read"}}, status: 403},
		{name: "scp as a list", claims: map[string]any{"scp": []string{"a", "b"}}, status: 200},
		{name: "no route", path: "/elsewhere", status: 404},
		{name: "not canonical", path: "/orders/%61", status: 400},
		{name: "stripped header", header: http.Header{"X-User-Id": {"mallory"}}, status: 200},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			method, path := cmpOr(tc.method, "GET"), cmpOr(tc.path, "/orders/1")
			tok := e.issuer.mint(t, tc.claims)
			id := fmt.Sprintf("parity-%d", i)
			header := http.Header{"X-Request-Id": {id}, "User-Agent": {"parity"}, "Accept-Encoding": {"identity"}}
			for k, v := range tc.header {
				header[k] = v
			}
			host := strings.TrimPrefix(e.srv.URL, "http://")

			resp := e.do(t, method, path, tok, header, "")
			if resp.StatusCode != tc.status {
				t.Fatalf("run: status %d, want %d", resp.StatusCode, tc.status)
			}
			ev, err := evalGW.Eval(context.Background(), EvalRequest{Method: method, Target: path, Host: host, Header: header, Token: tok})
			if err != nil {
				t.Fatal(err)
			}
			if ev.Status != resp.StatusCode {
				t.Errorf("eval: status %d, run: %d (%s)", ev.Status, resp.StatusCode, ev.Cause)
			}
			logged := loggedDecision(t, logFile, id, tc.status < 400 || tc.status == 403 || tc.status == 500)
			if logged == nil {
				if ev.Input != nil || ev.Decision != nil {
					t.Errorf("run decided nothing; eval has input %v, decision %v", ev.Input != nil, ev.Decision != nil)
				}
				return
			}
			if got, want := jsonOf(t, ev.Input), jsonOf(t, logged["input"]); got != want {
				t.Errorf("input\n eval %s\n  run %s", got, want)
			}
			var evDecision any
			if ev.Decision != nil {
				evDecision = ev.Decision
			}
			if got, want := jsonOf(t, evDecision), jsonOf(t, logged["result"]); got != want {
				t.Errorf("decision\n eval %s\n  run %s", got, want)
			}
		})
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// jsonOf is v's JSON with object keys sorted, numbers as written.
func jsonOf(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		t.Fatal(err)
	}
	b, _ = json.Marshal(generic)
	return string(b)
}

// loggedDecision waits for the decision log event of request id; when
// want is false (the request ends before the policy), it returns nil.
func loggedDecision(t *testing.T, file, id string, want bool) map[string]any {
	t.Helper()
	if !want {
		return nil
	}
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		if event := findEvent(file, id); event != nil {
			return event
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no decision log event for %s", id)
	return nil
}

// findEvent returns the event in file whose custom.request_id is id.
func findEvent(file, id string) map[string]any {
	f, err := os.Open(file)
	if err != nil {
		return nil
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		dec := json.NewDecoder(strings.NewReader(sc.Text()))
		dec.UseNumber()
		var event map[string]any
		if dec.Decode(&event) != nil {
			continue
		}
		if custom, _ := event["custom"].(map[string]any); custom["request_id"] == id {
			return event
		}
	}
	return nil
}
