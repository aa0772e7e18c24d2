package gateway

import (
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// claimsPolicy reads the claims whole (object.get), nested claims, numbers,
// a header, a path segment, a route parameter and the query; its decisions differ with each
// of them.
const claimsPolicy = `
default decision := {"allow": false, "reason": "no rule matched"}

decision := {
	"allow": true,
	"audience": input.upstream.audiences[0],
	"headers": {
		"X-Level": sprintf("%v", [input.token.claims.level]),
		"X-Org": sprintf("%v", [object.get(input.token.claims, ["org", "name"], "none")]),
		"X-Sub": input.token.subject,
	},
} if {
	input.token.claims.level >= 1
	input.token.claims.org.tier == input.request.headers["x-tier"]
} else := {"allow": false, "status": 404, "reason": sprintf("level %v on %s %s %v", [input.token.claims.level, input.request.segments[1], input.route.params.id, object.get(input.request.query, "q", [])])} if {
	input.token.claims.level < 1
}
`

// TestDecisionCacheAgreesWithEvaluation sends the same random requests,
// from tokens with random claims, through a gateway with the decision
// cache and one without: every answer, and every header the upstream
// got, must be the same.
func TestDecisionCacheAgreesWithEvaluation(t *testing.T) {
	envs := map[bool]*env{}
	for _, on := range []bool{true, false} {
		envs[on] = newEnv(t, func(doc string) string {
			doc = withPolicy(t, claimsPolicy)(doc)
			return strings.Replace(doc, `decision_log: {output: "off"}`, fmt.Sprintf(`decision_log: {output: "off"}`+"\n  decision_cache: {enabled: %v}", on), 1)
		})
	}
	rng := rand.New(rand.NewPCG(9, 9))
	levels := []any{json.Number("1"), json.Number("1.0"), json.Number("10e-1"), json.Number("0.5"), json.Number("2"), "1", nil}
	orgs := []any{
		map[string]any{"name": "acme", "tier": "gold"}, map[string]any{"name": "globex", "tier": "silver"},
		map[string]any{"tier": "gold"}, map[string]any{"name": json.Number("7"), "tier": "gold"}, "acme", nil,
	}
	type caller struct{ tokens map[bool]string }
	var callers []caller
	for i := range 24 {
		claims := map[string]any{"sub": []string{"alice", "bob", ""}[i%3], "level": levels[rng.IntN(len(levels))], "org": orgs[rng.IntN(len(orgs))]}
		c := caller{tokens: map[bool]string{}}
		for on, e := range envs {
			c.tokens[on] = e.issuer.mint(t, claims)
		}
		callers = append(callers, c)
	}
	reasons := ""
	for i := range 600 {
		c := callers[rng.IntN(len(callers))]
		path := "/orders/" + strconv.Itoa(rng.IntN(3)) + []string{"", "?q=1", "?q=1&q=2", "?r=1"}[rng.IntN(4)]
		hdr := http.Header{}
		if tier := []string{"gold", "silver", "GOLD", ""}[rng.IntN(4)]; tier != "" {
			hdr.Set("X-Tier", tier)
		}
		var got [2]string
		for j, on := range []bool{true, false} {
			e := envs[on]
			before := len(e.upstream.requests())
			resp := e.do(t, "GET", path, c.tokens[on], hdr, "")
			body, _ := io.ReadAll(resp.Body)
			got[j] = strconv.Itoa(resp.StatusCode) + " " + strings.ReplaceAll(string(body), resp.Header.Get("X-Request-Id"), "")
			if reqs := e.upstream.requests(); len(reqs) > before {
				r := reqs[len(reqs)-1]
				got[j] += " " + r.Header.Get("X-Level") + " " + r.Header.Get("X-Org") + " " + r.Header.Get("X-Sub")
			}
		}
		if strings.HasPrefix(got[1], "404") {
			reasons += got[1] + "\n"
		}
		if got[0] != got[1] {
			t.Fatalf("request %d (%s, x-tier %q): cached %q, evaluated %q", i, path, hdr.Get("X-Tier"), got[0], got[1])
		}
	}
	m := regexp.MustCompile(`audgate_decision_cache_requests_total\{result="hit"\} (\d+)`).FindStringSubmatch(metricsText(t, envs[true]))
	if !strings.Contains(reasons, `[\"1\", \"2\"]`) || !strings.Contains(reasons, " on 2 2 ") {
		t.Errorf("no deny reason read the query and a segment:\n%s", reasons)
	}
	if m == nil || m[1] == "0" {
		t.Fatalf("the decision cache was never hit: %v\n%s", m, metricsText(t, envs[true]))
	}
}
