package gateway

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/audgate/audgate/internal/devidp"
)

func TestIdPSources(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	keys := e.idpKeys(t)
	alice := e.userToken(t, "alice", time.Hour)
	tests := []struct {
		name, path, audience, scope string
		wantSub, wantAct            string
	}{
		{name: "token exchange", path: "/orders/1?scope=orders:read", audience: devidp.AudienceOrders, scope: "orders:read", wantSub: "alice", wantAct: "audgate"},
		{name: "token exchange, two scopes", path: "/orders/1?scope=orders:write+orders:read", audience: devidp.AudienceOrders, scope: "orders:read orders:write", wantSub: "alice", wantAct: "audgate"},
		{name: "client credentials", path: "/billing/1?scope=billing:read", audience: devidp.AudienceBilling, scope: "billing:read", wantSub: "audgate-m2m"},
		{name: "jwt-bearer on behalf of", path: "/obo/1?scope=orders:read", audience: devidp.AudienceOrders, scope: "orders:read", wantSub: "alice"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(e.upstream.requests())
			resp := e.do(t, "GET", tc.path, alice, nil, "")
			if resp.StatusCode != 200 {
				body, _ := io.ReadAll(resp.Body)
				t.Fatalf("status %d: %s\nlogs: %s", resp.StatusCode, body, e.logs.String())
			}
			got := e.upstream.requests()
			if len(got) != before+1 {
				t.Fatalf("upstream got %d requests, want 1", len(got)-before)
			}
			tok := e.downstream(t, keys, got[len(got)-1], tc.audience)
			if tok.Subject() != tc.wantSub || claim(tok, "scope") != tc.scope {
				t.Errorf("sub %q scope %q, want %q %q", tok.Subject(), claim(tok, "scope"), tc.wantSub, tc.scope)
			}
			act, _ := tok.Get("act")
			if tc.wantAct != "" && fmt.Sprint(act) != fmt.Sprintf("map[sub:%s]", tc.wantAct) {
				t.Errorf("act = %v, want sub %s", act, tc.wantAct)
			}
			if strings.Contains(fmt.Sprint(got[len(got)-1].Header), alice) {
				t.Error("the upstream received the caller's token")
			}
		})
	}
}

// TestIsolation: 50 users call at once; every upstream token belongs to
// its caller and has exactly the scopes asked for.
func TestIsolation(t *testing.T) {
	users := make([]devidp.User, 50)
	for i := range users {
		users[i] = devidp.User{Subject: fmt.Sprintf("user%02d", i),
			Entitlements: map[string][]string{devidp.AudienceOrders: {"orders:read", "orders:write"}}}
	}
	e := newIdPEnv(t, func(o *devidp.Options) { o.Users = append(o.Users, users...) }, nil)
	keys := e.idpKeys(t)
	tokens := map[string]string{}
	for _, u := range users {
		tokens[u.Subject] = e.userToken(t, u.Subject, time.Hour)
	}
	scopes := []string{"orders:read", "orders:read orders:write", "orders:write orders:read"}
	var wg sync.WaitGroup
	for round := range 4 {
		for _, u := range users {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sc := scopes[round%len(scopes)]
				resp := e.do(t, "GET", "/orders/1?scope="+url.QueryEscape(sc), tokens[u.Subject], http.Header{"X-Caller": {u.Subject}}, "")
				if resp.StatusCode != 200 {
					t.Errorf("%s: status %d", u.Subject, resp.StatusCode)
				}
			}()
		}
	}
	wg.Wait()
	got := e.upstream.requests()
	if len(got) != 200 {
		t.Fatalf("upstream got %d requests, want 200", len(got))
	}
	for _, r := range got {
		tok := e.downstream(t, keys, r, devidp.AudienceOrders)
		caller := r.Header.Get("X-Caller")
		if tok.Subject() != caller || r.Header.Get("X-User-Id") != caller {
			t.Errorf("caller %s received a token for %s", caller, tok.Subject())
		}
		want := "orders:read orders:write"
		if strings.Contains(r.URI, "scope=orders%3Aread&") || strings.HasSuffix(r.URI, "scope=orders%3Aread") {
			want = "orders:read"
		}
		if claim(tok, "scope") != want {
			t.Errorf("%s asked %s, token has scope %q", caller, r.URI, claim(tok, "scope"))
		}
	}
	// Per user: one exchange for {read}, one for {read, write} in either
	// order.
	if n := e.idp.TokenRequests(); n != 100 {
		t.Errorf("IdP token requests = %d, want 100 (two keys per user)", n)
	}
}

// TestCoalescing: 500 callers on one cold key make one IdP request, and
// callers on other keys get their own tokens.
func TestCoalescing(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	keys := e.idpKeys(t)
	alice, bob := e.userToken(t, "alice", time.Hour), e.userToken(t, "bob", time.Hour)
	e.idp.SetFault(devidp.Fault{Kind: devidp.FaultStall, Stall: 300 * time.Millisecond})
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range 510 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tok, who := alice, "alice"
			if i >= 500 {
				tok, who = bob, "bob"
			}
			<-start
			resp := e.do(t, "GET", "/orders/1?scope=orders:read", tok, http.Header{"X-Caller": {who}}, "")
			if resp.StatusCode != 200 {
				t.Errorf("%s: status %d", who, resp.StatusCode)
			}
		}()
	}
	close(start)
	wg.Wait()
	if n := e.idp.TokenRequests(); n != 2 {
		t.Errorf("IdP token requests = %d, want 2 (one per key)", n)
	}
	for _, r := range e.upstream.requests() {
		if tok := e.downstream(t, keys, r, devidp.AudienceOrders); tok.Subject() != r.Header.Get("X-Caller") {
			t.Fatalf("caller %s received %s's token", r.Header.Get("X-Caller"), tok.Subject())
		}
	}
}

func TestLifetime(t *testing.T) {
	tests := []struct {
		name      string
		fault     devidp.Fault
		wantCalls int64 // IdP requests for two gateway requests
	}{
		{name: "expires_in as issued", fault: devidp.Fault{}, wantCalls: 1},
		{name: "expires_in absent", fault: devidp.Fault{OmitExpiresIn: true}, wantCalls: 1},
		{name: "expires_in 0", fault: devidp.Fault{ExpiresIn: "0"}, wantCalls: 2},
		{name: "expires_in negative", fault: devidp.Fault{ExpiresIn: "-60"}, wantCalls: 2},
		{name: "shorter than refresh_before_expiry", fault: devidp.Fault{ExpiresIn: "10"}, wantCalls: 2},
		{name: "expires_in 1e10", fault: devidp.Fault{ExpiresIn: "1e10"}, wantCalls: 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newIdPEnv(t, nil, nil)
			alice := e.userToken(t, "alice", time.Hour)
			e.idp.SetFault(tc.fault)
			for range 2 {
				if resp := e.do(t, "GET", "/orders/1?scope=orders:read", alice, nil, ""); resp.StatusCode != 200 {
					t.Fatalf("status %d", resp.StatusCode)
				}
			}
			if n := e.idp.TokenRequests(); n != tc.wantCalls {
				t.Errorf("IdP token requests = %d, want %d", n, tc.wantCalls)
			}
		})
	}
}

// TestCallerTokenExpiresWhileCached: the exchanged token is cached only
// until the caller's token expires; afterwards (within the gateway's
// leeway) the request misses the cache, the IdP refuses the expired
// subject token, and the caller gets 401 with nothing proxied.
func TestCallerTokenExpiresWhileCached(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	short := e.userToken(t, "alice", 2*time.Second)
	if resp := e.do(t, "GET", "/orders/1?scope=orders:read", short, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	e.clock.Advance(2100 * time.Millisecond)
	calls := e.idp.TokenRequests()
	checkError(t, e.do(t, "GET", "/orders/1?scope=orders:read", short, nil, ""), 401, "invalid_token", `error="invalid_token"`)
	if e.idp.TokenRequests() != calls+1 {
		t.Errorf("the expired caller was served from cache (IdP requests %d → %d)", calls, e.idp.TokenRequests())
	}
	if n := len(e.upstream.requests()); n != 1 {
		t.Errorf("upstream got %d requests, want only the first", n)
	}
}

func TestIdPFaults(t *testing.T) {
	tests := []struct {
		name      string
		fault     devidp.Fault
		down      bool
		path      string
		token     string // user; "" = alice
		status    int
		code      string
		challenge string
		retry     string
	}{
		{name: "IdP down", down: true, status: 503, code: "temporarily_unavailable", retry: "1"},
		{name: "500", fault: devidp.Fault{Kind: devidp.FaultServerError}, status: 503, code: "temporarily_unavailable", retry: "1"},
		{name: "429", fault: devidp.Fault{Kind: devidp.FaultTooManyRequests, RetryAfter: 7 * time.Second}, status: 503, code: "temporarily_unavailable", retry: "7"},
		{name: "stall past the timeout", fault: devidp.Fault{Kind: devidp.FaultStall, Stall: 30 * time.Second}, status: 503, code: "temporarily_unavailable", retry: "1"},
		{name: "malformed JSON", fault: devidp.Fault{Kind: devidp.FaultMalformedJSON}, status: 503, code: "temporarily_unavailable", retry: "1"},
		{name: "no access_token", fault: devidp.Fault{Kind: devidp.FaultNoAccessToken}, status: 503, code: "temporarily_unavailable", retry: "1"},
		{name: "invalid_grant", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_grant"}, status: 401, code: "invalid_token", challenge: `error="invalid_token"`},
		{name: "invalid_target", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_target"}, status: 403, code: "insufficient_scope", challenge: `error="insufficient_scope"`},
		{name: "invalid_client", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_client"}, status: 502, code: "token_source_misconfigured"},
		{name: "jwt-bearer invalid_request", path: "/obo/1", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_request"}, status: 401, code: "invalid_token", challenge: `error="invalid_token"`},
		// Client credentials never send the caller's token: these codes
		// are about audgate's own request.
		{name: "client credentials invalid_grant", path: "/billing/1", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_grant"}, status: 502, code: "token_source_misconfigured"},
		{name: "client credentials invalid_request", path: "/billing/1", fault: devidp.Fault{Kind: devidp.FaultOAuthError, ErrorCode: "invalid_request"}, status: 502, code: "token_source_misconfigured"},
		{name: "real refusal: bob may not write", path: "/orders/1?scope=orders:write", token: "bob", status: 403, code: "insufficient_scope", challenge: `error="insufficient_scope"`},
		{name: "real refusal: audience not entitled", token: "carol", status: 403, code: "insufficient_scope", challenge: `error="insufficient_scope"`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newIdPEnv(t, func(o *devidp.Options) {
				o.Users = append(o.Users, devidp.User{Subject: "carol", Entitlements: map[string][]string{devidp.AudienceBilling: {"billing:read"}}})
			}, nil)
			who := tc.token
			if who == "" {
				who = "alice"
			}
			tok := e.userToken(t, who, time.Hour)
			if tc.down {
				// The gateway has the IdP's keys; the token endpoint is gone.
				e.closeIdP()
			} else {
				e.idp.SetFault(tc.fault)
			}
			path := tc.path
			if path == "" {
				path = "/orders/1?scope=orders:read"
			}
			start := time.Now()
			resp := e.do(t, "GET", path, tok, nil, "")
			checkError(t, resp, tc.status, tc.code, tc.challenge)
			if tc.retry != "" && resp.Header.Get("Retry-After") != tc.retry {
				t.Errorf("Retry-After = %q, want %q", resp.Header.Get("Retry-After"), tc.retry)
			}
			if time.Since(start) > 10*time.Second {
				t.Errorf("took %v: the source's timeout did not bound the stall", time.Since(start))
			}
			if n := len(e.upstream.requests()); n != 0 {
				t.Errorf("the upstream received %d requests", n)
			}
			if tc.code != "temporarily_unavailable" && !tc.down && !strings.Contains(e.logs.String(), "identity provider refused") && tc.token == "" {
				t.Errorf("the IdP's error code is not in the log: %s", e.logs.String())
			}
		})
	}
}

// TestUpstream401ReExchange: an upstream 401 drops the exchanged token;
// a GET is re-exchanged and retried once, a POST with a body is not.
func TestUpstream401ReExchange(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	alice := e.userToken(t, "alice", time.Hour)
	var mu sync.Mutex
	refuse := 0
	var seen []string
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		mu.Lock()
		defer mu.Unlock()
		seen = append(seen, r.Method)
		if refuse > 0 {
			refuse--
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	})
	refuse = 1
	if resp := e.do(t, "GET", "/orders/1?scope=orders:read", alice, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("GET status %d, want 200 after one retry", resp.StatusCode)
	}
	if n := e.idp.TokenRequests(); n != 2 || len(seen) != 2 {
		t.Errorf("IdP requests %d, upstream requests %d; want 2 and 2", n, len(seen))
	}
	refuse, seen = 1, nil
	resp := e.do(t, "POST", "/orders/1?scope=orders:write", alice, nil, `{"x":1}`)
	if resp.StatusCode != http.StatusUnauthorized || len(seen) != 1 {
		t.Errorf("POST: status %d after %d upstream requests; want the upstream's 401 after 1", resp.StatusCode, len(seen))
	}
	if n := e.idp.TokenRequests(); n != 3 {
		t.Errorf("IdP requests %d, want 3 (no re-exchange for the POST)", n)
	}
	// The refused token was dropped all the same: the next POST exchanges.
	if resp := e.do(t, "POST", "/orders/1?scope=orders:write", alice, nil, `{"x":1}`); resp.StatusCode != 200 {
		t.Errorf("second POST: status %d", resp.StatusCode)
	}
	if n := e.idp.TokenRequests(); n != 4 {
		t.Errorf("IdP requests %d, want 4: the token the upstream refused must not be reused", n)
	}
}

// TestUpstreamRefusingEverything: an upstream that answers 401 to every
// token costs one refetch per key per few seconds, not one per request.
func TestUpstreamRefusingEverything(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	alice := e.userToken(t, "alice", time.Hour)
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
	})
	for range 20 {
		if resp := e.do(t, "GET", "/billing/1?scope=billing:read", alice, nil, ""); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("status %d, want the upstream's 401", resp.StatusCode)
		}
	}
	if n := e.idp.TokenRequests(); n != 2 {
		t.Errorf("IdP requests = %d for 20 refused requests, want 2 (the first token and one refetch)", n)
	}
}

func TestMetrics(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	alice := e.userToken(t, "alice", time.Hour)
	for range 3 {
		e.do(t, "GET", "/orders/1?scope=orders:read", alice, nil, "")
	}
	e.do(t, "GET", "/orders/1", "", nil, "")
	admin := httptest.NewServer(e.gw.AdminHandler())
	defer admin.Close()
	resp, err := http.Get(admin.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		`audgate_requests_total{code="200",route="/orders/*",upstream="orders"} 3`,
		`audgate_requests_total{code="401",route="/orders/*",upstream="orders"} 1`,
		`audgate_token_source_requests_total{result="hit",source="exchange"} 2`,
		`audgate_token_source_requests_total{result="miss",source="exchange"} 1`,
		`audgate_token_source_request_duration_seconds_count{source="exchange"} 1`,
		`audgate_policy_decisions_total{result="allow"} 3`,
		`audgate_jwks_fetches_total{issuer="` + e.idpURL + `",result="ok"}`,
		`audgate_token_cache_entries 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

// TestConcurrent401: requests in flight on a token the upstream revoked
// are all retried with the one fresh token.
func TestConcurrent401(t *testing.T) {
	e := newIdPEnv(t, nil, nil)
	alice := e.userToken(t, "alice", time.Hour)
	var mu sync.Mutex
	revoked, last := "", ""
	arrived := make(chan struct{}, 2)
	release := make(chan struct{})
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		mu.Lock()
		isRevoked := authz == revoked
		if !isRevoked {
			last = authz
		}
		mu.Unlock()
		if isRevoked {
			arrived <- struct{}{}
			<-release // both in flight before either is answered
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		_, _ = w.Write([]byte(`{}`))
	})
	if resp := e.do(t, "GET", "/billing/1?scope=billing:read", alice, nil, ""); resp.StatusCode != 200 {
		t.Fatalf("warm-up status %d", resp.StatusCode)
	}
	mu.Lock()
	revoked = last
	mu.Unlock()
	statuses := make(chan int, 2)
	for range 2 {
		go func() {
			resp := e.do(t, "GET", "/billing/1?scope=billing:read", alice, nil, "")
			statuses <- resp.StatusCode
		}()
	}
	<-arrived
	<-arrived
	close(release)
	for range 2 {
		if s := <-statuses; s != 200 {
			t.Errorf("a request in flight on the revoked token got %d, want 200 after a retry", s)
		}
	}
	if n := e.idp.TokenRequests(); n != 2 {
		t.Errorf("IdP requests = %d, want 2 (the first token and one refresh)", n)
	}
}
