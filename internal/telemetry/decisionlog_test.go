package telemetry

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestDecisionLogMasksAndWrites(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := NewDecisionLog(path, []string{"/token/claims/email", "/request/headers/cookie", "/a~1b"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	input := map[string]any{
		"token":   map[string]any{"subject": "alice", "claims": map[string]any{"email": "alice@example.com", "sub": "alice"}},
		"request": map[string]any{"headers": map[string]any{"cookie": "s=1", "accept": "*/*"}},
		"a/b":     1,
	}
	for i := range 3 {
		l.Log(&DecisionEntry{DecisionID: string(rune('a' + i)), Timestamp: time.Unix(0, 0), Path: "data.audgate.decision",
			Input: input, Result: map[string]any{"allow": true}, TokenSource: &TokenOutcome{Name: "self", Outcome: "hit"}})
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	l.Log(&DecisionEntry{DecisionID: "after close"}) // dropped, no panic
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(path)
	defer f.Close()
	sc := bufio.NewScanner(f)
	lines := 0
	for sc.Scan() {
		lines++
		line := sc.Text()
		if strings.Contains(line, "alice@example.com") || strings.Contains(line, "s=1") || strings.Contains(line, `"a/b"`) {
			t.Errorf("masked value logged: %s", line)
		}
		var e map[string]any
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("not JSON: %s", line)
		}
		if e["path"] != "data.audgate.decision" || e["token_source"].(map[string]any)["outcome"] != "hit" {
			t.Errorf("entry = %s", line)
		}
		if !strings.Contains(line, `"accept":"*/*"`) || !strings.Contains(line, `"sub":"alice"`) {
			t.Errorf("unmasked values missing: %s", line)
		}
	}
	if lines != 3 {
		t.Errorf("%d lines, want 3", lines)
	}
	if _, ok := input["a/b"]; !ok {
		t.Error("masking changed the caller's input")
	}
}

func TestDecisionLogOffAndBadMask(t *testing.T) {
	l, err := NewDecisionLog("off", nil, nil)
	if err != nil || l != nil {
		t.Fatalf("off: %v, %v", l, err)
	}
	l.Log(&DecisionEntry{}) // a nil log accepts and drops entries
	if _, err := NewDecisionLog(filepath.Join(t.TempDir(), "x"), []string{"token"}, nil); err == nil {
		t.Error("a mask without a leading / was accepted")
	}
}

func TestDecisionLogDropsWhenFull(t *testing.T) {
	r, w, _ := os.Pipe() // never read: the writer blocks, the buffer fills
	defer r.Close()
	dropped := 0
	l := &DecisionLog{entries: make(chan *DecisionEntry, 2), out: w, dropped: func() { dropped++ }}
	for range 10 {
		l.Log(&DecisionEntry{})
	}
	if dropped != 8 {
		t.Errorf("dropped %d, want 8", dropped)
	}
	w.Close()
}

// mapped stands for the policy input, whose claims map is shared with the
// verified token.
type mapped struct{ claims map[string]any }

func (m mapped) JSONMap() map[string]any {
	return map[string]any{"token": map[string]any{"claims": m.claims}}
}

func TestDecisionLogNeverModifiesSharedMaps(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.log")
	l, err := NewDecisionLog(path, []string{"/token/claims/email"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	shared := map[string]any{"email": "alice@example.com", "sub": "alice"}
	l.Log(&DecisionEntry{DecisionID: "1", Input: mapped{shared}})
	_ = l.Close()
	raw, _ := os.ReadFile(path)
	if strings.Contains(string(raw), "alice@example.com") || !strings.Contains(string(raw), `"sub":"alice"`) {
		t.Errorf("logged %s", raw)
	}
	if shared["email"] != "alice@example.com" {
		t.Error("masking modified the token's shared claims")
	}
}
