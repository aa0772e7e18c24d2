# METADATA
# title: audgate default policy
# description: |
#   Decides whether a call may pass the gateway and which token the upstream
#   gets. A call is allowed when the caller holds the permission
#   "<upstream>:read" (GET, HEAD, OPTIONS) or "<upstream>:write" (other
#   methods), granted either in the token's `permissions` claim (Auth0 RBAC
#   style) or in its scopes. The upstream then receives a token for its
#   first configured audience carrying exactly that one permission as its
#   scope, and the caller's subject in X-User-Id.
#
#   Input: see the policy contract in docs/policy.md (request, route,
#   upstream, token), typed by schemas/input.json. Output:
#   data.audgate.decision.
# schemas:
#   - input: schema.input
# entrypoint: true
package audgate

default decision := {"allow": false, "reason": "no rule matched"}

decision := object.union(_grant, _extra_claims) if {
	_granted
} else := {
	"allow": false,
	"status": 403,
	"reason": sprintf("%s on %s needs the permission %s", [input.request.method, input.upstream.name, _required_permission]),
} if {
	_required_permission
}

_grant := {
	"allow": true,
	"audience": input.upstream.audiences[0],
	"scopes": [_required_permission],
	"headers": _headers,
}

# Identity headers for the upstream. The gateway strips client-sent X-User-*
# headers before the policy runs, so these cannot be spoofed.
default _headers := {}

_headers := {"X-User-Id": input.token.subject} if input.token.subject != ""

# A tenant claim on the caller's token is carried into self-signed
# downstream tokens; the identity provider's token sources ignore claims.
default _extra_claims := {}

_extra_claims := {"claims": {"tenant": input.token.claims.tenant}} if is_string(input.token.claims.tenant)

_safe_methods := {"GET", "HEAD", "OPTIONS"}

_action := "read" if {
	_safe_methods[input.request.method]
} else := "write"

_required_permission := sprintf("%s:%s", [input.upstream.name, _action])

# The caller holds the permission in its permissions claim or its scopes.
# Plain reference lookups, rather than building a set of everything
# granted, keep evaluation cheap on the request path. Only an array grants:
# permissions[_] would also walk an object's values.
_granted if {
	is_array(input.token.claims.permissions)
	input.token.claims.permissions[_] == _required_permission
}

_granted if input.token.scopes[_] == _required_permission
