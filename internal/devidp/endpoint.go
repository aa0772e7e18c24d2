package devidp

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strconv"
)

// The token endpoint is served here, in front of op's, for all three grants,
// because op cannot issue what a real IdP issues:
//
//   - op signs every JWT access token with header typ "JWT" (op.SignerFromKey
//     hard-codes it) and aud as an array; RFC 9068 access tokens carry typ
//     at+jwt, and the gateway checks typ.
//   - op authenticates client_credentials and token-exchange clients by
//     secret only: no private_key_jwt for them.
//   - op's ClientCredentialsStorage never sees the audience or resource
//     parameter, so a client_credentials token cannot be aimed at a service.
//   - op answers every unusable subject_token with invalid_request (as RFC
//     8693 §2.2.2 has it) and cannot say why; Okta answers invalid_grant
//     ("subject token is invalid"), which tells the client its token, not
//     its request, is at fault.
//   - op's jwt-bearer grant is the RFC 7523 JWT-profile flavour (the client
//     signs its own assertion); Entra's on-behalf-of sends a user's token.
//
// op still serves discovery (with the grants and auth methods it reads from
// the storage and config), the JWKS, and its other endpoints.

const (
	tokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token" // RFC 8693 §3
	tokenTypeJWT         = "urn:ietf:params:oauth:token-type:jwt"
	maxTokenRequestBytes = 64 << 10
)

// tokenResponse is RFC 6749 §5.1's success response, with RFC 8693 §2.2.1's
// issued_token_type. ExpiresIn is a json.Number so a Fault can write any
// number verbatim.
type tokenResponse struct {
	AccessToken     string      `json:"access_token"`
	IssuedTokenType string      `json:"issued_token_type,omitempty"`
	TokenType       string      `json:"token_type"`
	ExpiresIn       json.Number `json:"expires_in,omitempty"`
	Scope           string      `json:"scope,omitempty"`
}

// oauthError is RFC 6749 §5.2's error response.
type oauthError struct {
	Code        string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

func (e *oauthError) Error() string { return e.Code + ": " + e.Description }

func refuse(code, description string) *oauthError {
	return &oauthError{Code: code, Description: description}
}

// tokenRequest is one request to the token endpoint, as it is logged.
type tokenRequest struct {
	grant, client, subject, audience string
}

// serveToken is the token endpoint: count, fault, grant, answer.
func (p *Provider) serveToken(w http.ResponseWriter, r *http.Request) {
	p.tokenRequests.Add(1)
	// RFC 6749 §5.1: token responses must not be cached.
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, refuse("invalid_request", "the token endpoint takes POST"))
		return
	}
	// Read the form before any fault: until the body is consumed, net/http
	// does not notice a client hanging up, and a stall would outlast it.
	r.Body = http.MaxBytesReader(w, r.Body, maxTokenRequestBytes)
	formErr := r.ParseForm()
	fault := p.fault.Load()
	if fault.inject(w, r) {
		p.logger.Info("token request faulted", "fault", fault.Kind.String())
		return
	}
	var req tokenRequest
	resp, err := p.token(r, formErr, &req)
	attrs := []any{"grant", req.grant, "client", req.client, "sub", req.subject, "aud", req.audience}
	if err != nil {
		var oe *oauthError
		if !errors.As(err, &oe) {
			oe = refuse("server_error", err.Error())
		}
		p.logger.Info("token request refused", append(attrs, "error", oe.Code, "error_description", oe.Description)...)
		writeOAuthError(w, oe)
		return
	}
	p.logger.Info("token issued", append(attrs, "scope", resp.Scope)...)
	fault.applyExpiresIn(resp)
	writeJSON(w, http.StatusOK, resp)
}

// token authenticates the client and runs the grant it asks for.
func (p *Provider) token(r *http.Request, formErr error, req *tokenRequest) (*tokenResponse, error) {
	if formErr != nil {
		return nil, refuse("invalid_request", "unreadable form: "+formErr.Error())
	}
	form, err := normalizeForm(r.PostForm)
	if err != nil {
		return nil, err
	}
	req.grant = form.Get("grant_type")
	switch req.grant {
	case "":
		return nil, refuse("invalid_request", "grant_type is required")
	case GrantClientCredentials, GrantTokenExchange, GrantJWTBearer:
	default:
		return nil, refuse("unsupported_grant_type", strconv.Quote(req.grant)+" is not supported")
	}
	client, err := p.authenticate(r, form)
	if err != nil {
		return nil, err
	}
	req.client = client.ID
	if !slices.Contains(client.Grants, req.grant) {
		return nil, refuse("unauthorized_client", "client "+client.ID+" may not use "+req.grant)
	}
	switch req.grant {
	case GrantClientCredentials:
		return p.clientCredentials(client, form, req)
	case GrantTokenExchange:
		return p.tokenExchange(client, form, req)
	default:
		return p.jwtBearer(client, form, req)
	}
}

// normalizeForm drops empty parameters, which RFC 6749 §3.1 says are
// omitted ones (zitadel's client sends actor_token=""), and refuses a
// repeated one (§3.2) but for those RFC 8693 §2.1 lets repeat.
func normalizeForm(in url.Values) (url.Values, error) {
	form := url.Values{}
	for name, values := range in {
		for _, v := range values {
			if v != "" {
				form.Add(name, v)
			}
		}
		if len(form[name]) > 1 && name != "audience" && name != "resource" {
			return nil, refuse("invalid_request", "parameter "+name+" is repeated")
		}
	}
	return form, nil
}

// issue signs c and answers with it.
func (p *Provider) issue(c accessClaims, extra map[string]any, issuedTokenType string) (*tokenResponse, error) {
	raw, err := p.signer.sign(c, extra)
	if err != nil {
		return nil, err
	}
	return &tokenResponse{
		AccessToken:     raw,
		IssuedTokenType: issuedTokenType,
		TokenType:       "Bearer",
		ExpiresIn:       json.Number(strconv.FormatInt(c.Expiry-c.IssuedAt, 10)),
		Scope:           c.Scope,
	}, nil
}

// writeOAuthError answers with e: 400, or 401 with a Basic challenge for
// invalid_client (RFC 6749 §5.2), or 500 for server_error.
func writeOAuthError(w http.ResponseWriter, e *oauthError) {
	status := http.StatusBadRequest
	switch e.Code {
	case "invalid_client":
		w.Header().Set("WWW-Authenticate", `Basic realm="devidp"`)
		status = http.StatusUnauthorized
	case "server_error":
		status = http.StatusInternalServerError
	}
	writeJSON(w, status, e)
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"error":"server_error","error_description":"unencodable response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
