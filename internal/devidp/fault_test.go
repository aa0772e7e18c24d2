package devidp

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

func TestFaults(t *testing.T) {
	idp := startIdP(t, nil)
	cc := url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}

	tests := []struct {
		name  string
		fault Fault
		check func(t *testing.T, got answer)
	}{
		{"server error", Fault{Kind: FaultServerError}, func(t *testing.T, got answer) {
			wantError(t, got, http.StatusInternalServerError, "server_error")
		}},
		{"429, default Retry-After", Fault{Kind: FaultTooManyRequests}, func(t *testing.T, got answer) {
			wantError(t, got, http.StatusTooManyRequests, "temporarily_unavailable")
			wantHeader(t, got, "Retry-After", "1")
		}},
		{"429, Retry-After rounded up", Fault{Kind: FaultTooManyRequests, RetryAfter: 1500 * time.Millisecond}, func(t *testing.T, got answer) {
			wantHeader(t, got, "Retry-After", "2")
		}},
		{"malformed JSON", Fault{Kind: FaultMalformedJSON}, func(t *testing.T, got answer) {
			wantHeader(t, got, "Content-Type", "application/json")
			if got.status != http.StatusOK || json.Valid([]byte(got.raw)) {
				t.Errorf("got %d %s, want 200 and invalid JSON", got.status, got.raw)
			}
		}},
		{"no access_token", Fault{Kind: FaultNoAccessToken}, func(t *testing.T, got answer) {
			if _, ok := got.body["access_token"]; got.status != http.StatusOK || ok || got.body["token_type"] != "Bearer" {
				t.Errorf("got %d %s, want 200 and a token response without access_token", got.status, got.raw)
			}
		}},
		{"invalid_grant", Fault{Kind: FaultOAuthError, ErrorCode: "invalid_grant"}, func(t *testing.T, got answer) {
			checkRefusal(t, got, "invalid_grant")
		}},
		{"invalid_client", Fault{Kind: FaultOAuthError, ErrorCode: "invalid_client"}, func(t *testing.T, got answer) {
			checkRefusal(t, got, "invalid_client")
		}},
		{"expires_in absent", Fault{OmitExpiresIn: true}, func(t *testing.T, got answer) {
			idp.verify(t, got.token(t))
			if _, ok := got.body["expires_in"]; ok {
				t.Errorf("expires_in present: %s", got.raw)
			}
		}},
		{"expires_in 0", Fault{ExpiresIn: "0"}, wantRawExpiresIn(idp, `"expires_in":0`)},
		{"expires_in negative", Fault{ExpiresIn: "-60"}, wantRawExpiresIn(idp, `"expires_in":-60`)},
		{"expires_in 30", Fault{ExpiresIn: "30"}, wantRawExpiresIn(idp, `"expires_in":30,`)},
		{"expires_in 1e10", Fault{ExpiresIn: "1e10"}, wantRawExpiresIn(idp, `"expires_in":1e10`)},
		{"stall for a while, then answer", Fault{Kind: FaultStall, Stall: 150 * time.Millisecond}, func(t *testing.T, got answer) {
			idp.verify(t, got.token(t))
		}},
		{"no fault again", Fault{}, func(t *testing.T, got answer) {
			checkClaims(t, got.body, map[string]any{"expires_in": 300, "scope": "billing:read"})
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			idp.SetFault(tc.fault)
			before := idp.TokenRequests()
			start := time.Now()
			got := idp.postToken(t, cc, m2mClient)
			if tc.fault.Kind == FaultStall && time.Since(start) < tc.fault.Stall {
				t.Errorf("answered after %v, want at least %v", time.Since(start), tc.fault.Stall)
			}
			tc.check(t, got)
			if n := idp.TokenRequests() - before; n != 1 {
				t.Errorf("TokenRequests grew by %d, want 1", n)
			}
		})
	}
}

func wantError(t *testing.T, got answer, status int, code string) {
	t.Helper()
	if got.status != status || got.body["error"] != code {
		t.Errorf("got %d %s, want %d error %s", got.status, got.raw, status, code)
	}
}

func wantHeader(t *testing.T, got answer, name, want string) {
	t.Helper()
	if h := got.header.Get(name); h != want {
		t.Errorf("%s = %q, want %q", name, h, want)
	}
}

// wantRawExpiresIn checks a valid token comes with expires_in written as want.
func wantRawExpiresIn(idp *testIdP, want string) func(*testing.T, answer) {
	return func(t *testing.T, got answer) {
		t.Helper()
		idp.verify(t, got.token(t))
		if !strings.Contains(got.raw, want) {
			t.Errorf("body %s, want it to contain %s", got.raw, want)
		}
	}
}

// A stall without a bound lasts until the client gives up, and the
// server is then free: nothing hangs.
func TestFaultStallUntilClientGivesUp(t *testing.T) {
	idp := startIdP(t, nil)
	idp.SetFault(Fault{Kind: FaultStall})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	form := url.Values{"grant_type": {GrantClientCredentials}, "audience": {AudienceBilling}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, idp.TokenEndpoint(), strings.NewReader(form.Encode()))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.SetBasicAuth("audgate-m2m", "audgate-m2m-dev-secret")
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatalf("got %d, want the client to time out", resp.StatusCode)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error %v, want a deadline", err)
	}
	if got := idp.TokenRequests(); got != 1 {
		t.Errorf("TokenRequests = %d, want 1", got)
	}
	idp.SetFault(Fault{})
	idp.clientToken(t) // the server still answers
}
