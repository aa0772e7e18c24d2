// Package policies embeds audgate's default Rego policy, the one the
// gateway runs when policy.path is not set, and the JSON Schema of the
// input every policy is compiled against. Tests (*_test.rego) are not
// embedded; `opa test policies/` runs them.
package policies

import "embed"

// FS holds the default policy modules (*.rego, without tests) and
// schemas/input.json.
//
//go:embed audgate.rego schemas/input.json
var FS embed.FS
