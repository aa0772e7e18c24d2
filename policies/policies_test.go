package policies_test

import (
	"context"
	"testing"

	"github.com/open-policy-agent/opa/v1/tester"
)

// TestRego runs every *_test.rego in this directory, as `opa test
// policies/` does, so that `go test ./...` covers the policy too.
func TestRego(t *testing.T) {
	results, err := tester.Run(context.Background(), ".")
	if err != nil {
		t.Fatalf("load policies: %v", err)
	}
	if len(results) == 0 {
		t.Fatal("no Rego tests found")
	}
	for _, r := range results {
		t.Run(r.Package+"."+r.Name, func(t *testing.T) {
			switch {
			case r.Error != nil:
				t.Errorf("%s: error: %v", r.Location, r.Error)
			case r.Fail:
				t.Errorf("%s: failed at %v", r.Location, r.FailedAt)
				for name, sub := range r.SubResults {
					if sub.Fail {
						t.Errorf("  case %q failed", name)
					}
				}
			}
		})
	}
}
