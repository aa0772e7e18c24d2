package telemetry

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestEventLogWritesLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "decisions.log")
	l, err := OpenEventLog(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{`{"decision_id":"a"}`, `{"decision_id":"b"}`} {
		if err := l.WriteEvent([]byte(e)); err != nil {
			t.Fatal(err)
		}
	}
	if raw, _ := os.ReadFile(path); len(raw) != 0 {
		t.Errorf("written before Flush: %q", raw)
	}
	if err := l.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(path)
	if got, want := string(raw), "{\"decision_id\":\"a\"}\n{\"decision_id\":\"b\"}\n"; got != want {
		t.Errorf("file = %q, want %q", got, want)
	}
	info, _ := os.Stat(path)
	if info.Mode().Perm() != 0o600 {
		t.Errorf("mode %v: decision logs hold callers' claims, the file must be private", info.Mode().Perm())
	}
}

func TestEventLogOutputs(t *testing.T) {
	for _, off := range []string{"off", ""} {
		if l, err := OpenEventLog(off); l != nil || err != nil {
			t.Errorf("%q: %v, %v", off, l, err)
		}
	}
	dir := t.TempDir()
	tests := []struct {
		output, wantErr string
	}{
		{"stdout", ""},
		{filepath.Join(dir, "new.log"), ""},
		{dir, "is a directory"},
		{filepath.Join(dir, "missing", "x.log"), "does not exist"},
	}
	for _, tc := range tests {
		err := CheckOutput(tc.output)
		if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("CheckOutput(%q) = %v, want %q", tc.output, err, tc.wantErr)
		}
	}
	if _, err := os.Stat(filepath.Join(dir, "new.log")); err == nil {
		t.Error("CheckOutput created the file")
	}
}
