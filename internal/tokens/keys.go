package tokens

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/lestrrat-go/jwx/v2/jwa"
	"github.com/lestrrat-go/jwx/v2/jwk"
)

// signingKey is a private key with its kid and the time that orders it
// among the other keys (the newest signs).
type signingKey struct {
	key  jwk.Key
	name string
	mod  time.Time
}

// loadKeys reads every PEM or JWK private key in path (a file or a
// directory; dot files such as Kubernetes' ..data links are skipped) and
// returns them oldest first.
func loadKeys(path string) ([]signingKey, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	files := []string{path}
	if info.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, err
		}
		files = files[:0]
		for _, e := range entries {
			if !strings.HasPrefix(e.Name(), ".") {
				files = append(files, filepath.Join(path, e.Name()))
			}
		}
	}
	var keys []signingKey
	for _, f := range files {
		st, err := os.Stat(f) // follows links, as mounted secrets need
		if err != nil || st.IsDir() {
			continue
		}
		k, err := readKey(f)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		keys = append(keys, signingKey{key: k, name: filepath.Base(f), mod: st.ModTime()})
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s: no key files found; put PEM or JWK private keys there", path)
	}
	slices.SortStableFunc(keys, func(a, b signingKey) int {
		if c := a.mod.Compare(b.mod); c != 0 {
			return c
		}
		return strings.Compare(a.name, b.name)
	})
	return keys, nil
}

func readKey(file string) (jwk.Key, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	isPEM := !strings.HasPrefix(strings.TrimSpace(string(b)), "{")
	k, err := jwk.ParseKey(b, jwk.WithPEM(isPEM))
	if err != nil {
		return nil, fmt.Errorf("parse key (want a PEM or JWK private key): %w", err)
	}
	switch k.(type) {
	case jwk.RSAPrivateKey, jwk.ECDSAPrivateKey, jwk.OKPPrivateKey:
	default:
		return nil, fmt.Errorf("not a private RSA, EC or Ed25519 key (got %s); audgate needs the private key to sign", k.KeyType())
	}
	if k.KeyID() == "" {
		if err := setThumbprintKID(k); err != nil {
			return nil, err
		}
	}
	return k, nil
}

// setThumbprintKID sets kid to the key's RFC 7638 thumbprint.
func setThumbprintKID(k jwk.Key) error {
	tp, err := k.Thumbprint(cryptoSHA256)
	if err != nil {
		return fmt.Errorf("thumbprint: %w", err)
	}
	return k.Set(jwk.KeyIDKey, base64.RawURLEncoding.EncodeToString(tp))
}

// signingAlgorithm is an algorithm a self_signed source signs with, with
// how to make a key for it and whether a key fits it.
type signingAlgorithm struct {
	alg      jwa.SignatureAlgorithm
	keyHint  string
	generate func() (any, error)
	fits     func(key any) bool
}

var signingAlgorithms = []signingAlgorithm{
	{jwa.ES256, "a P-256 key", func() (any, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }, curve(elliptic.P256())},
	{jwa.ES384, "a P-384 key", func() (any, error) { return ecdsa.GenerateKey(elliptic.P384(), rand.Reader) }, curve(elliptic.P384())},
	{jwa.RS256, "an RSA key", generateRSA, isRSA},
	{jwa.PS256, "an RSA key", generateRSA, isRSA},
	{jwa.EdDSA, "an Ed25519 key", func() (any, error) { _, k, err := ed25519.GenerateKey(rand.Reader); return k, err }, isEd25519},
}

// SigningAlgorithms lists the algorithms a self_signed source can sign
// with.
func SigningAlgorithms() []string {
	names := make([]string, len(signingAlgorithms))
	for i, a := range signingAlgorithms {
		names[i] = a.alg.String()
	}
	return names
}

// DefaultSigningAlgorithm is a self_signed source's algorithm when none is
// configured.
const DefaultSigningAlgorithm = "ES256"

func curve(c elliptic.Curve) func(any) bool {
	return func(k any) bool { ek, ok := k.(*ecdsa.PrivateKey); return ok && ek.Curve == c }
}

func isRSA(k any) bool { _, ok := k.(*rsa.PrivateKey); return ok }

func isEd25519(k any) bool { _, ok := k.(ed25519.PrivateKey); return ok }

func generateRSA() (any, error) { return rsa.GenerateKey(rand.Reader, 2048) }

// generateKey makes an ephemeral key for alg.
func generateKey(alg jwa.SignatureAlgorithm) (jwk.Key, error) {
	i := slices.IndexFunc(signingAlgorithms, func(a signingAlgorithm) bool { return a.alg == alg })
	if i < 0 {
		return nil, fmt.Errorf("algorithm %q is not supported; use one of %s", alg, strings.Join(SigningAlgorithms(), ", "))
	}
	raw, err := signingAlgorithms[i].generate()
	if err != nil {
		return nil, err
	}
	k, err := jwk.FromRaw(raw)
	if err != nil {
		return nil, err
	}
	return k, setThumbprintKID(k)
}

// checkKeyFits reports whether k can sign with alg.
func checkKeyFits(k jwk.Key, alg jwa.SignatureAlgorithm) error {
	var raw any
	if err := k.Raw(&raw); err != nil {
		return err
	}
	if rk, ok := raw.(*rsa.PrivateKey); ok && rk.N.BitLen() < 2048 {
		return fmt.Errorf("RSA key of %d bits is too small; use at least 2048", rk.N.BitLen())
	}
	var hints []string
	for _, a := range signingAlgorithms {
		if a.alg == alg && a.fits(raw) {
			return nil
		}
		hints = append(hints, a.keyHint+" for "+a.alg.String())
	}
	return errors.New("the newest key does not fit algorithm " + alg.String() + "; use " + strings.Join(hints, ", "))
}
