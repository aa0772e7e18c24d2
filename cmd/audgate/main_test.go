package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwk"

	"github.com/audgate/audgate/internal/config"
)

func TestVersion(t *testing.T) {
	var out bytes.Buffer
	cmd := newRootCmd()
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"version"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.String(), "audgate ") {
		t.Errorf("version printed %q", out.String())
	}
}

func TestRunRefusesBadConfig(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audgate.yaml")
	if err := os.WriteFile(path, []byte("server:\n  listn: x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newRootCmd()
	cmd.SetArgs([]string{"run", "--config", path})
	err := cmd.Execute()
	if err == nil || !strings.Contains(err.Error(), "server.listn") {
		t.Fatalf("err = %v, want it to name server.listn", err)
	}
}

// freePort returns a loopback address nothing listens on.
func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// TestServeShutsDownGracefully starts the gateway and admin listeners,
// checks that both answer, cancels the context as SIGTERM does, and checks
// that serve returns nil and the listener is closed.
func TestServeShutsDownGracefully(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	pub, _ := jwk.FromRaw(&key.PublicKey)
	set := jwk.NewSet()
	_ = set.AddKey(pub)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(set)
	}))
	defer idp.Close()
	listen, admin := freePort(t), freePort(t)
	doc := `
server: {listen: "` + listen + `", admin_listen: "` + admin + `", shutdown_timeout: 5s}
inbound:
  issuers: [{issuer: "https://idp.test", audiences: [gw], jwks_uri: "` + idp.URL + `"}]
token_sources: [{name: self, type: self_signed, issuer: "https://gw.test"}]
upstreams: [{name: u, url: "http://127.0.0.1:1", token_source: self, audiences: [a]}]
routes: [{path: /u/*, upstream: u}]
`
	cfg, err := config.Parse([]byte(doc), func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, cfg, slog.New(slog.DiscardHandler)) }()

	waitFor(t, "http://"+admin+"/readyz", 200)
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), "audgate_token_cache_entries") {
		t.Errorf("metrics lack audgate_token_cache_entries")
	}
	resp, err = http.Get("http://" + listen + "/u/x")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("gateway answered %d without a token, want 401", resp.StatusCode)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v, want nil after shutdown", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after the context ended")
	}
	if _, err := http.Get("http://" + listen + "/u/x"); err == nil {
		t.Error("the gateway still accepts connections after shutdown")
	}
}

func waitFor(t *testing.T, url string, status int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == status {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not answer %d in time (last: %v)", url, status, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
