package tokens

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jws"
	"github.com/lestrrat-go/jwx/v2/jwt"

	"github.com/audgate/audgate/internal/oauth"
)

func TestExtraParamsOnEveryGrant(t *testing.T) {
	idp := newWireIdP(t, 200, okBody)
	opts := IdPOptions{Name: "auth0", TokenEndpoint: idp.srv.URL + "/token", ClientID: "c", ClientSecret: "s",
		ExtraParams: map[string]string{"organization": "org_123", "x-tenant": "acme"}}
	ex, err1 := NewTokenExchange(ExchangeOptions{IdPOptions: opts})
	jb, err2 := NewJWTBearer(JWTBearerOptions{IdPOptions: opts})
	cc, err3 := NewClientCredentials(opts)
	for _, err := range []error{err1, err2, err3} {
		if err != nil {
			t.Fatal(err)
		}
	}
	for name, src := range map[string]Source{"token_exchange": ex, "jwt_bearer": jb, "client_credentials": cc} {
		if _, err := src.Token(context.Background(), exchangeReq()); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		form, _ := idp.last(t)
		if form.Get("organization") != "org_123" || form.Get("x-tenant") != "acme" {
			t.Errorf("%s: form %v lacks the extra parameters", name, form)
		}
	}
}

func TestExtraParamsCannotSetGrantFields(t *testing.T) {
	for _, name := range []string{"grant_type", "scope", "audience", "resource", "client_id", "client_secret",
		"client_assertion", "subject_token", "requested_token_type", "assertion", "requested_token_use"} {
		_, err := NewClientCredentials(IdPOptions{Name: "m2m", TokenEndpoint: "https://idp.example.com/token", ClientID: "c", ClientSecret: "s",
			ExtraParams: map[string]string{name: "x"}})
		if err == nil || !strings.Contains(err.Error(), name) {
			t.Errorf("extra parameter %s: err = %v, want a refusal naming it", name, err)
		}
	}
}

// writeCertificate writes a self-signed PEM certificate for key.
func writeCertificate(t *testing.T, path string, key *rsa.PrivateKey) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "audgate"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert
}

// TestCertificateCredentials checks the client assertion Microsoft Entra ID
// documents for certificate credentials: x5t#S256 of the certificate in
// the header, PS256 for an RSA key, and iss = sub = the client, aud the
// token endpoint, with nbf, exp and jti.
func TestCertificateCredentials(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	keyFile, certFile := filepath.Join(dir, "client.key"), filepath.Join(dir, "client.crt")
	writePEM(t, keyFile, key)
	cert := writeCertificate(t, certFile, key)
	idp := newWireIdP(t, 200, `{"access_token":"obo","token_type":"Bearer","expires_in":60}`)
	clock := newClock()
	src, err := NewJWTBearer(JWTBearerOptions{OnBehalfOf: true, IdPOptions: IdPOptions{Name: "entra", TokenEndpoint: idp.srv.URL + "/token",
		ClientID: "app-id", ClientAuth: oauth.AuthPrivateKeyJWT, PrivateKeyFile: keyFile, CertificateFile: certFile,
		AudienceParam: AudienceParamScope, Now: clock.Now}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.Token(context.Background(), exchangeReq()); err != nil {
		t.Fatal(err)
	}
	form, authz := idp.last(t)
	if authz != "" || form.Get("client_secret") != "" || form.Get("client_id") != "app-id" {
		t.Errorf("client authentication on the wire: authz %q, form %v", authz, form)
	}
	assertion := form.Get("client_assertion")
	msg, err := jws.Parse([]byte(assertion), jws.WithCompact())
	if err != nil {
		t.Fatal(err)
	}
	hdr := msg.Signatures()[0].ProtectedHeaders()
	sum := sha256.Sum256(cert.Raw)
	if got, want := hdr.X509CertThumbprintS256(), base64.RawURLEncoding.EncodeToString(sum[:]); got != want {
		t.Errorf("x5t#S256 = %q, want %q", got, want)
	}
	if hdr.Algorithm() != jwa.PS256 || hdr.Type() != "JWT" || hdr.KeyID() != "" {
		t.Errorf("header alg %s typ %q kid %q, want PS256, JWT and no kid", hdr.Algorithm(), hdr.Type(), hdr.KeyID())
	}
	a, err := jwt.Parse([]byte(assertion), jwt.WithKey(jwa.PS256, &key.PublicKey), jwt.WithClock(jwt.ClockFunc(clock.Now)),
		jwt.WithAudience(idp.srv.URL+"/token"), jwt.WithIssuer("app-id"), jwt.WithSubject("app-id"))
	if err != nil {
		t.Fatalf("assertion: %v", err)
	}
	if a.JwtID() == "" || a.NotBefore().IsZero() || a.Expiration().Sub(clock.Now()) > 5*time.Minute {
		t.Errorf("assertion jti %q nbf %v exp %v", a.JwtID(), a.NotBefore(), a.Expiration())
	}
	var payload map[string]any
	_ = json.Unmarshal(msg.Payload(), &payload)
	for _, claim := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
		if _, ok := payload[claim]; !ok {
			t.Errorf("assertion lacks %s", claim)
		}
	}
}

func TestCertificateMustFitTheKey(t *testing.T) {
	dir := t.TempDir()
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	keyFile, certFile := filepath.Join(dir, "client.key"), filepath.Join(dir, "client.crt")
	writePEM(t, keyFile, key)
	writeCertificate(t, certFile, other)
	_, err := NewClientCredentials(IdPOptions{Name: "entra", TokenEndpoint: "https://login.example.com/token", ClientID: "app",
		ClientAuth: oauth.AuthPrivateKeyJWT, PrivateKeyFile: keyFile, CertificateFile: certFile})
	if err == nil || !strings.Contains(err.Error(), "not for the private key") {
		t.Errorf("err = %v, want a refusal of the mismatched certificate", err)
	}
	if err := os.WriteFile(certFile, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = NewClientCredentials(IdPOptions{Name: "entra", TokenEndpoint: "https://login.example.com/token", ClientID: "app",
		ClientAuth: oauth.AuthPrivateKeyJWT, PrivateKeyFile: keyFile, CertificateFile: certFile})
	if err == nil || !strings.Contains(err.Error(), "certificate_file") {
		t.Errorf("err = %v, want a refusal naming certificate_file", err)
	}
}
