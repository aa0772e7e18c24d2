package policies_test

import (
	"os"
	"strings"
	"testing"
)

// TestDocsShowTheShippedPolicy keeps docs/policy.md's copy of the default
// policy identical to policies/audgate.rego.
func TestDocsShowTheShippedPolicy(t *testing.T) {
	doc, err := os.ReadFile("../docs/policy.md")
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile("audgate.rego")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n## The default policy\n")
	if !ok {
		t.Fatal(`docs/policy.md has no "## The default policy" section`)
	}
	_, block, ok := strings.Cut(section, "```rego\n")
	if !ok {
		t.Fatal("docs/policy.md: the default policy section has no ```rego block")
	}
	got, _, ok := strings.Cut(block, "```\n")
	if !ok {
		t.Fatal("docs/policy.md: the default policy's ```rego block is not closed")
	}
	if got != string(want) {
		t.Errorf("docs/policy.md shows a policy that is not policies/audgate.rego; copy the file into the ```rego block of \"The default policy\"\n--- docs\n%s\n--- audgate.rego\n%s", got, want)
	}
}
