package gateway

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestPolicyReload(t *testing.T) {
	dir := policyDir(t, `decision := {"allow": true, "audience": "https://orders.test"}`)
	e := newEnvWith(t, func(doc string) string {
		return strings.Replace(doc, "policy:\n", "policy:\n  watch: true\n  path: "+dir+"\n", 1)
	}, Options{PolicyWatchInterval: 20 * time.Millisecond})
	tok := e.issuer.mint(t, nil)
	status := func() int { return e.do(t, "GET", "/orders/1", tok, nil, "").StatusCode }
	waitStatus := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for status() != want {
			if time.Now().After(deadline) {
				t.Fatalf("status did not become %d; logs: %s", want, e.logs.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	write := func(rego string) {
		t.Helper()
		path := filepath.Join(dir, "p.rego")
		if err := os.WriteFile(path, []byte("package audgate\n\n"+rego), 0o600); err != nil {
			t.Fatal(err)
		}
		// Make the change visible even on file systems with coarse mtimes.
		future := time.Now().Add(time.Duration(len(rego)) * time.Second)
		_ = os.Chtimes(path, future, future)
	}
	if got := status(); got != 200 {
		t.Fatalf("initial status %d", got)
	}
	write(`decision := {"allow": false, "status": 404, "reason": "gone"}`)
	waitStatus(404)

	write(`decision := {`) // broken: the last good policy stays
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(e.logs.String(), "policy reload failed") {
		if time.Now().After(deadline) {
			t.Fatal("no reload failure logged")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := status(); got != 404 {
		t.Errorf("after a broken policy, status %d; want the last good policy's 404", got)
	}
	write(`decision := {"allow": true, "audience": "https://orders.test", "headers": {"X-Policy": "v3"}}`)
	waitStatus(200)
	reqs := e.upstream.requests()
	if got := reqs[len(reqs)-1].Header.Get("X-Policy"); got != "v3" {
		t.Errorf("X-Policy = %q, want v3", got)
	}
}
