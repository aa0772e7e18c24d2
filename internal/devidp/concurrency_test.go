package devidp

import (
	"fmt"
	"net/url"
	"sync"
	"testing"
)

// 50 users exchange at once; run with -race. Each gets a token for itself.
func TestConcurrentExchanges(t *testing.T) {
	const n = 50
	idp := startIdP(t, func(o *Options) {
		for i := range n {
			o.Users = append(o.Users, User{
				Subject:      fmt.Sprintf("user-%02d", i),
				Entitlements: map[string][]string{AudienceOrders: {"orders:read"}},
				Claims:       map[string]any{"n": i},
			})
		}
	})
	forms := make([]url.Values, n)
	for i := range n {
		forms[i] = exchangeForm(idp.userToken(t, fmt.Sprintf("user-%02d", i)), AudienceOrders, "orders:read")
	}
	// Settle the JWKS fetch outside the race.
	idp.jwks(t)

	start := make(chan struct{})
	answers := make([]answer, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = idp.postToken(t, forms[i], gatewayClient)
		})
	}
	close(start)
	wg.Wait()

	for i, got := range answers {
		_, claims := idp.verify(t, got.token(t))
		checkClaims(t, claims, map[string]any{
			"sub": fmt.Sprintf("user-%02d", i), "n": i, "aud": AudienceOrders, "scope": "orders:read",
		})
	}
	if got := idp.TokenRequests(); got != n {
		t.Errorf("TokenRequests = %d, want %d", got, n)
	}
}
