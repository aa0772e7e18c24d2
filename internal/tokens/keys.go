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

// generateKey makes an ephemeral key for alg.
func generateKey(alg jwa.SignatureAlgorithm) (jwk.Key, error) {
	var raw any
	var err error
	switch alg {
	case jwa.ES256:
		raw, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	case jwa.ES384:
		raw, err = ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	case jwa.RS256, jwa.PS256:
		raw, err = rsa.GenerateKey(rand.Reader, 2048)
	case jwa.EdDSA:
		_, raw, err = ed25519.GenerateKey(rand.Reader)
	default:
		return nil, fmt.Errorf("algorithm %q is not supported; use ES256, ES384, RS256, PS256 or EdDSA", alg)
	}
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
	ok := false
	switch key := raw.(type) {
	case *ecdsa.PrivateKey:
		ok = (alg == jwa.ES256 && key.Curve == elliptic.P256()) || (alg == jwa.ES384 && key.Curve == elliptic.P384())
	case *rsa.PrivateKey:
		if (alg == jwa.RS256 || alg == jwa.PS256) && key.N.BitLen() < 2048 {
			return fmt.Errorf("RSA key of %d bits is too small; use at least 2048", key.N.BitLen())
		}
		ok = alg == jwa.RS256 || alg == jwa.PS256
	case ed25519.PrivateKey:
		ok = alg == jwa.EdDSA
	}
	if !ok {
		return errors.New("the newest key does not fit algorithm " + alg.String() + "; use a P-256 key for ES256, P-384 for ES384, RSA for RS256/PS256, Ed25519 for EdDSA")
	}
	return nil
}
