// Package policies embeds audgate's default Rego policy, the one the
// gateway runs when policy.path is not set. Tests (*_test.rego) are not
// embedded; `opa test policies/` runs them.
package policies

import "embed"

// FS holds the default policy modules (*.rego, without tests).
//
//go:embed audgate.rego
var FS embed.FS
