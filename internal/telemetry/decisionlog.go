package telemetry

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// EventLog writes decision log events, one JSON object a line, to stdout
// or a file (appended to). OPA's decision log plugin hands it each event,
// masked, from one background goroutine: a slow output never holds up a
// request. It is safe for concurrent use.
type EventLog struct {
	mu     sync.Mutex
	w      *bufio.Writer
	closer io.Closer
}

// DefaultDecisionLog is where decisions are logged unless configured
// otherwise.
const DefaultDecisionLog = "stdout"

// OpenEventLog opens output: "stdout", or a file path. "off" and "" give
// nil: no local decision log.
func OpenEventLog(output string) (*EventLog, error) {
	switch output {
	case "off", "":
		return nil, nil
	case "stdout":
		return &EventLog{w: bufio.NewWriterSize(os.Stdout, 64<<10)}, nil
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("decision log: %w", err)
	}
	return &EventLog{w: bufio.NewWriterSize(f, 64<<10), closer: f}, nil
}

// WriteEvent writes one event and a newline.
func (l *EventLog) WriteEvent(event []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, err := l.w.Write(event); err != nil {
		return err
	}
	return l.w.WriteByte('\n')
}

// Flush writes out what is buffered.
func (l *EventLog) Flush() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Flush()
}

// Close flushes and closes the output (stdout stays open).
func (l *EventLog) Close() error {
	if err := l.Flush(); err != nil {
		return err
	}
	if l.closer != nil {
		return l.closer.Close()
	}
	return nil
}

// CheckOutput reports, without creating anything, whether OpenEventLog
// could open output: a file's directory must exist, and an existing file
// must not be a directory.
func CheckOutput(output string) error {
	switch output {
	case "off", "", "stdout":
		return nil
	}
	if info, err := os.Stat(output); err == nil && info.IsDir() {
		return fmt.Errorf("decision log: %s is a directory; give a file path", output)
	}
	dir := filepath.Dir(output)
	if info, err := os.Stat(dir); err != nil || !info.IsDir() {
		return fmt.Errorf("decision log: %s: the directory %s does not exist", output, dir)
	}
	return nil
}
