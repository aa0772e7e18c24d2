package policy

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writeVersion writes a policy that allows only when the data it reads is
// from the same change as the rule itself.
func writeVersion(t *testing.T, dir string, v int) {
	t.Helper()
	rego := fmt.Sprintf("package audgate\n\ndecision := {\"allow\": data.version == %d, \"audience\": \"a\", \"reason\": sprintf(\"policy %d, data %%v\", [data.version])}\n", v, v)
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte(rego), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "data.json"), fmt.Appendf(nil, `{"version": %d}`, v), 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestDecideSeesOneChange: while the policy and its data change together,
// every decision reads the data of the change its rules came from, and
// logging decisions (whose mask rule OPA prepares again after each
// change) never deadlocks with a change being committed.
func TestDecideSeesOneChange(t *testing.T) {
	dir := t.TempDir()
	writeVersion(t, dir, 0)
	buf := newEventBuffer()
	buf.seen = make(chan struct{}, 1<<20)
	rt, err := startRuntime(t, Options{Path: dir, DecisionLog: buf, Workers: NewWorkers(4)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var stop atomic.Bool
	var decided, logged atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				dd, err := rt.Decide(ctx, sampleInput())
				e, d := dd.Engine, dd.Decision
				if err != nil || !d.Allow {
					select {
					case errs <- fmt.Sprintf("decision %+v, %v", d.Reason, err):
					default:
					}
					return
				}
				decided.Add(1)
				if err := rt.LogNow(ctx, &Record{DecisionID: "d", Timestamp: time.Now(), Engine: e, Input: sampleInput(), Decision: d}); err != nil {
					errs <- err.Error()
					return
				}
				logged.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for v := 1; v <= 100 && !stop.Load(); v++ {
			writeVersion(t, dir, v)
			if err := rt.Reload(ctx); err != nil {
				errs <- err.Error()
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("reloads stalled: a commit and the decision log wait on each other")
	}
	stop.Store(true)
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if decided.Load() == 0 || logged.Load() == 0 {
		t.Errorf("%d decisions, %d logged", decided.Load(), logged.Load())
	}
}

// TestReloadRefusesAPolicyTheQueryCannotRun: a policy that compiles but on
// which the decision query does not is refused before it is committed.
func TestReloadRefusesAPolicyTheQueryCannotRun(t *testing.T) {
	dir := policyDir(t, map[string]string{"p.rego": "package audgate\n\ndecision := {\"allow\": false, \"reason\": \"v1\"}\n"})
	rt, err := startRuntime(t, Options{Path: dir})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "p.rego"), []byte("package audgate\n\ndecision(x) := {\"allow\": x}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := rt.Reload(context.Background()); err == nil || !strings.Contains(err.Error(), "data.audgate.decision") {
		t.Fatalf("reload: %v, want a refusal naming the query", err)
	}
	dd, err := rt.Decide(context.Background(), sampleInput())
	d := dd.Decision
	if err != nil || d.Reason != "v1" {
		t.Errorf("after the refused reload: %+v, %v; want v1 in force", d, err)
	}
	// The manager runs on the store's strict compiler, not one of its own.
	if rt.Manager().GetCompiler() != rt.store.compiler {
		t.Error("the plugin manager's compiler is not the one the store checked")
	}
}

func TestDiscoveryRefused(t *testing.T) {
	_, err := startRuntime(t, Options{Modules: os.DirFS(t.TempDir()), OPA: map[string]any{
		"services":  map[string]any{"acme": map[string]any{"url": "http://127.0.0.1:1"}},
		"discovery": map[string]any{"resource": "/discovery.tar.gz"},
	}})
	if err == nil || !strings.Contains(err.Error(), "policy.opa.discovery") {
		t.Errorf("err = %v", err)
	}
}

// TestCustomMaskRuleSeesTheEvent: a mask rule in a package of its own,
// named by decision_logs.mask_decision, reads the event, not the input,
// and the input schema does not apply to it.
func TestCustomMaskRuleSeesTheEvent(t *testing.T) {
	dir := policyDir(t, map[string]string{
		"p.rego":    "package audgate\n\ndecision := {\"allow\": true, \"audience\": \"a\"}\n",
		"mask.rego": "package acme.log\n\nmask contains \"/input/token/claims/email\" if input.input.token.subject == \"alice\"\n",
	})
	buf := newEventBuffer()
	rt, err := startRuntime(t, Options{Path: dir, DecisionLog: buf, InputSchema: inputSchema(t),
		OPA: map[string]any{"decision_logs": map[string]any{"mask_decision": "acme/log/mask"}}})
	if err != nil {
		t.Fatal(err)
	}
	in := sampleInput()
	in.Token.Subject = "alice"
	in.Token.Claims = map[string]any{"email": "a@example.com"}
	dd, err := rt.Decide(context.Background(), in)
	e, d := dd.Engine, dd.Decision
	if err != nil {
		t.Fatal(err)
	}
	rt.Log(&Record{DecisionID: "1", Timestamp: time.Now(), Engine: e, Input: in, Decision: d})
	ev := buf.wait(t, 1)[0]
	claims := ev["input"].(map[string]any)["token"].(map[string]any)["claims"].(map[string]any)
	if _, ok := claims["email"]; ok {
		t.Errorf("the custom mask rule did not apply: %v", ev["input"])
	}
}
