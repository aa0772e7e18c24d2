package gateway

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/audgate/audgate/internal/devidp"
)

// TestSteadyLoadIdPRequests drives 100 users × 3 audiences (token
// exchange to orders and to billing, jwt-bearer to orders: 300 keys)
// through the gateway for a minute and reports how many IdP requests it
// took per 10,000 gateway requests. The aim is one per key per token
// lifetime. It runs only when asked:
//
//	AUDGATE_LOAD=1 go test -run TestSteadyLoadIdPRequests -v ./internal/gateway/
//
// AUDGATE_LOAD_SECONDS shortens or lengthens the minute.
func TestSteadyLoadIdPRequests(t *testing.T) {
	if os.Getenv("AUDGATE_LOAD") == "" {
		t.Skip("set AUDGATE_LOAD=1 to run the steady-load measurement")
	}
	secs := 60
	if v, err := strconv.Atoi(os.Getenv("AUDGATE_LOAD_SECONDS")); err == nil && v > 0 {
		secs = v
	}
	users := make([]devidp.User, 100)
	for i := range users {
		users[i] = devidp.User{Subject: fmt.Sprintf("user%03d", i), Entitlements: map[string][]string{
			devidp.AudienceOrders: {"orders:read"}, devidp.AudienceBilling: {"billing:read"},
		}}
	}
	e := newIdPEnv(t, func(o *devidp.Options) { o.Users = users }, func(doc string) string {
		doc = strings.Replace(doc, "    token_source: m2m\n", "    token_source: exchange\n", 1)
		return strings.Replace(doc, "audiences: [https://billing.example.com]", "audiences: [https://billing.example.com]\n    scopes: [billing:read]", 1)
	})
	e.upstream.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) })
	tokens := make([]string, len(users))
	for i, u := range users {
		tokens[i] = e.userToken(t, u.Subject, 2*time.Hour)
	}
	paths := []string{"/orders/1?scope=orders:read", "/billing/1?scope=billing:read", "/obo/1?scope=orders:read"}
	var sent, failed atomic.Int64
	deadline := time.Now().Add(time.Duration(secs) * time.Second)
	var wg sync.WaitGroup
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 16}}
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				u := rand.IntN(len(users))
				req, _ := http.NewRequest("GET", e.srv.URL+paths[rand.IntN(len(paths))], nil)
				req.Header.Set("Authorization", "Bearer "+tokens[u])
				resp, err := client.Do(req)
				if err != nil || resp.StatusCode != 200 {
					failed.Add(1)
				}
				if err == nil {
					resp.Body.Close()
				}
				sent.Add(1)
			}
		}()
	}
	wg.Wait()
	n, idp := sent.Load(), e.idp.TokenRequests()
	if failed.Load() > 0 {
		t.Errorf("%d of %d requests failed", failed.Load(), n)
	}
	if idp > 300 {
		t.Errorf("%d IdP requests for 300 keys within one token lifetime, want at most 300", idp)
	}
	t.Logf("%d gateway requests in %ds (%.0f/s), %d IdP requests for 300 keys: %.1f per 10,000 gateway requests",
		n, secs, float64(n)/float64(secs), idp, float64(idp)*10000/float64(n))
}
