package telemetry

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// DecisionEntry is one line of the decision log.
type DecisionEntry struct {
	DecisionID string    `json:"decision_id"`
	RequestID  string    `json:"request_id"`
	Timestamp  time.Time `json:"timestamp"`
	// Path is the policy query, e.g. data.audgate.decision.
	Path string `json:"path"`
	// Input is the policy input; it is marshaled to JSON and masked in the
	// background, so it must not change once logged.
	Input any `json:"input"`
	// Result is the decision; nil when evaluation failed.
	Result any `json:"result,omitempty"`
	// Error is why no decision was made or why it was refused.
	Error string `json:"error,omitempty"`
	// TokenSource says how the downstream token was obtained.
	TokenSource *TokenOutcome `json:"token_source,omitempty"`
}

// TokenOutcome is the token source step of one decision.
type TokenOutcome struct {
	Name    string `json:"name"`
	Outcome string `json:"outcome"` // hit, miss, shared, error
	Error   string `json:"error,omitempty"`
}

// DecisionLog writes one JSON line per decision. Entries are marshaled,
// masked and written by one background goroutine so that a slow output
// never holds up a request; when the buffer is full an entry is dropped
// and counted. A nil *DecisionLog logs nothing.
type DecisionLog struct {
	entries chan *DecisionEntry
	out     io.Writer
	closer  io.Closer
	masks   [][]string
	dropped func()
	wg      sync.WaitGroup

	mu     sync.RWMutex // guards closed against Log racing Close
	closed bool
}

// NewDecisionLog opens output ("stdout", "off" or a file path, appended
// to) and starts the writer. masks are JSON pointers into the input, e.g.
// /token/claims/email, removed from every entry. dropped, if not nil, is
// called for each entry dropped because the buffer was full.
func NewDecisionLog(output string, masks []string, dropped func()) (*DecisionLog, error) {
	l := &DecisionLog{entries: make(chan *DecisionEntry, 4096), dropped: dropped}
	switch output {
	case "off", "":
		return nil, nil
	case "stdout":
		l.out = os.Stdout
	default:
		f, err := os.OpenFile(output, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			return nil, fmt.Errorf("decision log: %w", err)
		}
		l.out, l.closer = f, f
	}
	for _, m := range masks {
		ptr, err := parsePointer(m)
		if err != nil {
			return nil, fmt.Errorf("decision log: mask %q: %w", m, err)
		}
		l.masks = append(l.masks, ptr)
	}
	l.wg.Add(1)
	go l.run()
	return l, nil
}

// CheckOutput reports, without creating anything, whether NewDecisionLog
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

// Log queues e. It never blocks; after Close it drops e.
func (l *DecisionLog) Log(e *DecisionEntry) {
	if l == nil {
		return
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		return
	}
	select {
	case l.entries <- e:
	default:
		if l.dropped != nil {
			l.dropped()
		}
	}
}

// Close writes what is queued and closes the output. Later calls, and
// later entries, do nothing.
func (l *DecisionLog) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	close(l.entries)
	l.mu.Unlock()
	l.wg.Wait()
	if l.closer != nil {
		return l.closer.Close()
	}
	return nil
}

func (l *DecisionLog) run() {
	defer l.wg.Done()
	w := bufio.NewWriter(l.out)
	for e := range l.entries {
		line, err := l.encode(e)
		if err != nil {
			line, _ = json.Marshal(map[string]string{"decision_id": e.DecisionID, "error": "decision log: " + err.Error()})
		}
		_, _ = w.Write(append(line, '\n'))
		if len(l.entries) == 0 {
			_ = w.Flush()
		}
	}
	_ = w.Flush()
}

// jsonMapper is an input that can give its JSON tree directly, sparing a
// JSON round trip before masking.
type jsonMapper interface {
	JSONMap() map[string]any
}

func (l *DecisionLog) encode(e *DecisionEntry) ([]byte, error) {
	if len(l.masks) > 0 && e.Input != nil {
		var generic any
		if m, ok := e.Input.(jsonMapper); ok {
			generic = m.JSONMap()
		} else {
			raw, err := json.Marshal(e.Input)
			if err != nil {
				return nil, err
			}
			dec := json.NewDecoder(bytes.NewReader(raw))
			dec.UseNumber()
			if err := dec.Decode(&generic); err != nil {
				return nil, err
			}
		}
		for _, ptr := range l.masks {
			generic = remove(generic, ptr)
		}
		copied := *e
		copied.Input = generic
		e = &copied
	}
	return json.Marshal(e)
}

// parsePointer splits an RFC 6901 JSON pointer into its reference tokens.
func parsePointer(p string) ([]string, error) {
	if !strings.HasPrefix(p, "/") {
		return nil, fmt.Errorf("a JSON pointer starts with /")
	}
	parts := strings.Split(p[1:], "/")
	for i, s := range parts {
		parts[i] = strings.ReplaceAll(strings.ReplaceAll(s, "~1", "/"), "~0", "~")
	}
	return parts, nil
}

// remove returns doc without the member ptr names. It copies what it
// changes, along the pointer's path only, so maps shared with the
// request (a token's claims) are never modified. Only object members are
// removed; a pointer through an array names every element.
func remove(doc any, ptr []string) any {
	switch v := doc.(type) {
	case map[string]any:
		next, ok := v[ptr[0]]
		if !ok {
			return doc
		}
		out := make(map[string]any, len(v))
		for k, x := range v {
			out[k] = x
		}
		if len(ptr) == 1 {
			delete(out, ptr[0])
		} else {
			out[ptr[0]] = remove(next, ptr[1:])
		}
		return out
	case []any:
		out := make([]any, len(v))
		for i, el := range v {
			out[i] = remove(el, ptr)
		}
		return out
	}
	return doc
}
