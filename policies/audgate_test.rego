package audgate_test

import data.audgate

_input(method, upstream, scopes, claims) := {
	"request": {"method": method, "path": sprintf("/%s/1", [upstream]), "segments": [upstream, "1"], "query": {}, "headers": {}, "host": "gw", "remote_ip": "127.0.0.1"},
	"route": {"path": sprintf("/%s/*", [upstream]), "params": {"*": "1"}, "upstream": upstream},
	"upstream": {"name": upstream, "token_source": "idp", "audiences": [sprintf("https://%s.example.com", [upstream]), "https://other.example.com"]},
	"token": {"issuer": "https://idp.example.com/", "subject": object.get(claims, "sub", ""), "client_id": "spa", "audience": ["https://gw"], "scopes": scopes, "expires_at": 1767225600, "claims": claims},
}

# The shared fixtures in fixtures/data.json are also run by the Go tests
# of internal/policy, so that the Go types and this policy cannot drift apart.
test_fixtures[tc.note] if {
	some tc in data.fixtures.decisions
	audgate.decision == tc.want with input as tc.input
}

test_method_needs_permission[tc.note] if {
	some tc in [
		{"note": "GET needs read", "method": "GET", "want": "orders:read"},
		{"note": "HEAD needs read", "method": "HEAD", "want": "orders:read"},
		{"note": "OPTIONS needs read", "method": "OPTIONS", "want": "orders:read"},
		{"note": "POST needs write", "method": "POST", "want": "orders:write"},
		{"note": "PUT needs write", "method": "PUT", "want": "orders:write"},
		{"note": "PATCH needs write", "method": "PATCH", "want": "orders:write"},
		{"note": "DELETE needs write", "method": "DELETE", "want": "orders:write"},
	]
	d := audgate.decision with input as _input(tc.method, "orders", [], {"sub": "alice", "permissions": ["orders:read", "orders:write"]})
	d.allow == true
	d.scopes == [tc.want]
}

test_permission_sources[tc.note] if {
	some tc in [
		{"note": "permissions claim", "scopes": [], "claims": {"sub": "a", "permissions": ["orders:read"]}, "allow": true},
		{"note": "scope", "scopes": ["orders:read"], "claims": {"sub": "a"}, "allow": true},
		{"note": "other upstream's permission", "scopes": ["billing:read"], "claims": {"sub": "a", "permissions": ["billing:read"]}, "allow": false},
		{"note": "write does not imply read", "scopes": ["orders:write"], "claims": {"sub": "a"}, "allow": false},
		{"note": "non-string permissions ignored", "scopes": [], "claims": {"sub": "a", "permissions": [1, {"orders:read": true}]}, "allow": false},
		{"note": "permissions not an array", "scopes": [], "claims": {"sub": "a", "permissions": "orders:read"}, "allow": false},
		{"note": "permissions an object", "scopes": [], "claims": {"sub": "a", "permissions": {"x": "orders:read"}}, "allow": false},
		{"note": "permissions a set-like object", "scopes": [], "claims": {"sub": "a", "permissions": {"orders:read": "orders:read"}}, "allow": false},
		{"note": "nothing granted", "scopes": [], "claims": {"sub": "a"}, "allow": false},
	]
	d := audgate.decision with input as _input("GET", "orders", tc.scopes, tc.claims)
	d.allow == tc.allow
}

test_allow_uses_first_audience if {
	d := audgate.decision with input as _input("GET", "orders", ["orders:read"], {"sub": "alice"})
	d.audience == "https://orders.example.com"
}

test_allow_sets_user_header if {
	d := audgate.decision with input as _input("GET", "orders", ["orders:read"], {"sub": "alice"})
	d.headers == {"X-User-Id": "alice"}
}

test_allow_without_subject_sets_no_header if {
	d := audgate.decision with input as _input("GET", "orders", ["orders:read"], {})
	d.allow == true
	d.headers == {}
}

test_tenant_claim[tc.note] if {
	some tc in [
		{"note": "string tenant carried", "claims": {"sub": "a", "tenant": "acme"}, "want": {"tenant": "acme"}},
		{"note": "non-string tenant dropped", "claims": {"sub": "a", "tenant": 7}, "want": null},
		{"note": "no tenant", "claims": {"sub": "a"}, "want": null},
	]
	d := audgate.decision with input as _input("GET", "orders", ["orders:read"], tc.claims)
	object.get(d, "claims", null) == tc.want
}

test_deny_explains_missing_permission if {
	d := audgate.decision with input as _input("DELETE", "orders", ["orders:read"], {"sub": "bob"})
	d == {"allow": false, "status": 403, "reason": "DELETE on orders needs the permission orders:write"}
}

test_default_deny_without_input if {
	audgate.decision == {"allow": false, "reason": "no rule matched"}
}
