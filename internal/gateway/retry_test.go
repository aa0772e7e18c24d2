package gateway

import (
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestUpstream401Retry: the upstream refuses the first token it sees. A
// GET is sent once more with a fresh token; a POST with a body is not.
func TestUpstream401Retry(t *testing.T) {
	e := newEnv(t, nil)
	var refuseNext atomic.Bool
	var seen []string
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		e.upstream.mu.Lock()
		seen = append(seen, r.Method+" "+r.Header.Get("Authorization"))
		e.upstream.mu.Unlock()
		if refuseNext.CompareAndSwap(true, false) {
			w.WriteHeader(http.StatusUnauthorized)
			_, _ = w.Write([]byte(`{"error":"invalid_token"}`))
			return
		}
		_, _ = w.Write([]byte(`{"ok":true}`))
	})
	tok := e.issuer.mint(t, nil)

	refuseNext.Store(true)
	if resp := e.do(t, "GET", "/orders/1", tok, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("GET after an upstream 401: status %d, want 200 from the retry", resp.StatusCode)
	}
	if len(seen) != 2 || seen[0] == seen[1] {
		t.Fatalf("upstream saw %d GETs (tokens differ: %v), want 2 with a fresh token", len(seen), len(seen) == 2 && seen[0] != seen[1])
	}
	// The fresh token replaced the dropped one in the cache.
	if resp := e.do(t, "GET", "/orders/1", tok, nil, ""); resp.StatusCode != 200 || seen[2] != seen[1] {
		t.Errorf("the next GET did not reuse the fresh token")
	}

	seen = nil
	refuseNext.Store(true)
	resp := e.do(t, "POST", "/orders", tok, http.Header{"Content-Type": {"application/json"}}, `{"a":1}`)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("POST with a body: status %d, want the upstream's 401", resp.StatusCode)
	}
	if len(seen) != 1 || !strings.HasPrefix(seen[0], "POST ") {
		t.Errorf("upstream saw %v, want exactly one POST", seen)
	}
}
