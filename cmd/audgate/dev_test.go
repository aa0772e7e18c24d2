package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestDev runs audgate dev on free loopback ports and walks through what
// it prints: each route answers with a token made for its upstream.
func TestDev(t *testing.T) {
	o := devOptions{listen: freePort(t), admin: freePort(t), idp: freePort(t)}
	var out bytes.Buffer
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- runDev(ctx, o, &out, slog.New(slog.DiscardHandler)) }()
	waitFor(t, "http://"+o.admin+"/readyz", 200)

	token := func(sub string) string {
		t.Helper()
		var buf bytes.Buffer
		cmd := newRootCmd()
		cmd.SetOut(&buf)
		cmd.SetArgs([]string{"dev", "token", "--sub", sub, "--idp", "http://" + o.idp})
		if err := cmd.Execute(); err != nil {
			t.Fatalf("dev token: %v", err)
		}
		return strings.TrimSpace(buf.String())
	}
	alice, bob := token("alice"), token("bob")
	call := func(method, path, tok string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+o.listen+path, nil)
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		var doc map[string]any
		_ = json.Unmarshal(body, &doc)
		return resp.StatusCode, doc
	}
	tests := []struct {
		path, tok, wantAud, wantSub, wantScope string
	}{
		{"/orders/42", alice, "https://orders.example.com", "alice", "orders:read"},
		{"/billing/7", alice, "https://billing.example.com", "audgate-m2m", "billing:read"},
		{"/profile/me", bob, devProfileAudience, "bob", "profile:read"},
	}
	for _, tc := range tests {
		status, doc := call("GET", tc.path, tc.tok)
		claims, _ := doc["token_claims"].(map[string]any)
		if status != 200 || claims["aud"] != tc.wantAud || claims["sub"] != tc.wantSub || claims["scope"] != tc.wantScope {
			t.Errorf("%s: status %d, claims %v; want aud %s sub %s scope %s", tc.path, status, claims, tc.wantAud, tc.wantSub, tc.wantScope)
		}
	}
	if status, _ := call("POST", "/orders", bob); status != 403 {
		t.Errorf("bob POST /orders: %d, want 403", status)
	}
	if status, _ := call("GET", "/orders/42", ""); status != 401 {
		t.Errorf("no token: %d, want 401", status)
	}
	if !strings.Contains(out.String(), "ALICE=ey") || !strings.Contains(out.String(), "curl -s") {
		t.Errorf("dev printed no tokens or commands:\n%s", out.String())
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("runDev returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("runDev did not return")
	}
}

func TestDevRefusesNonLoopback(t *testing.T) {
	for _, o := range []devOptions{
		{listen: "127.0.0.1:0", admin: "127.0.0.1:0", idp: "0.0.0.0:9400"},
		{listen: ":8080", admin: "127.0.0.1:0", idp: "127.0.0.1:0"},
	} {
		err := runDev(context.Background(), o, io.Discard, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), "loopback only") {
			t.Errorf("%+v: err = %v, want a loopback-only refusal", o, err)
		}
	}
}
