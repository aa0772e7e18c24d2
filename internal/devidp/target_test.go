package devidp

import (
	"errors"
	"net/url"
	"slices"
	"testing"
)

func TestParseTarget(t *testing.T) {
	const billing = AudienceBilling
	tests := []struct {
		name       string
		form       url.Values
		wantAud    string
		wantScopes []string
		wantCode   string
	}{
		{"audience", url.Values{"audience": {billing}}, billing, nil, ""},
		{"resource", url.Values{"resource": {billing}, "scope": {"a b"}}, billing, []string{"a", "b"}, ""},
		{"audience repeated, resource the same", url.Values{"audience": {billing, billing}, "resource": {billing}}, billing, nil, ""},
		{"scopes de-duplicated in order", url.Values{"audience": {billing}, "scope": {"b a b"}}, billing, []string{"b", "a"}, ""},
		{"qualified scopes", url.Values{"scope": {billing + "/a " + billing + "/b"}}, billing, []string{"a", "b"}, ""},
		{"qualified scope and same audience", url.Values{"audience": {billing}, "scope": {billing + "/a"}}, billing, []string{"a"}, ""},
		{".default", url.Values{"scope": {billing + "/.default"}}, billing, nil, ""},
		{"api:// audience", url.Values{"scope": {"api://billing/.default"}}, "api://billing", nil, ""},

		{"two audiences", url.Values{"audience": {billing, AudienceOrders}}, "", nil, "invalid_target"},
		{"audience and resource differ", url.Values{"audience": {billing}, "resource": {AudienceOrders}}, "", nil, "invalid_target"},
		{"scopes of two audiences", url.Values{"scope": {billing + "/a " + AudienceOrders + "/b"}}, "", nil, "invalid_target"},
		{"qualified scope and other audience", url.Values{"audience": {AudienceOrders}, "scope": {billing + "/a"}}, "", nil, "invalid_target"},
		{"qualified and plain", url.Values{"scope": {billing + "/a b"}}, "", nil, "invalid_scope"},
		{".default and more", url.Values{"scope": {billing + "/.default " + billing + "/a"}}, "", nil, "invalid_scope"},
		{"empty qualified name", url.Values{"scope": {billing + "/"}}, "", nil, "invalid_scope"},
		{"no audience", url.Values{"scope": {"a"}}, "", nil, "invalid_request"},
		{"nothing", url.Values{}, "", nil, "invalid_request"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseTarget(tc.form)
			var oe *oauthError
			switch {
			case tc.wantCode != "":
				if !errors.As(err, &oe) || oe.Code != tc.wantCode {
					t.Errorf("parseTarget: %v, want %s", err, tc.wantCode)
				}
			case err != nil:
				t.Errorf("parseTarget: %v", err)
			case got.audience != tc.wantAud || !slices.Equal(got.scopes, tc.wantScopes):
				t.Errorf("got %q %q, want %q %q", got.audience, got.scopes, tc.wantAud, tc.wantScopes)
			}
		})
	}
}
