package fingerprint

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"
)

// A fingerprint's commitment says what the defender recorded; a signature
// by the defender's ed25519 key says who recorded it. Neither says when:
// publish the commitment (or have it timestamped) before any suspect is
// judged to prove that the fingerprint predates the suspect.

// signed is what a signature covers: the commitment, with a domain tag so
// that the key signs nothing else by accident.
func signed(commitment string) []byte {
	return []byte("conferral-fingerprint-commitment/1:" + commitment)
}

// Sign signs f's commitment with the defender's key.
func (f *Fingerprint) Sign(key ed25519.PrivateKey) error {
	com, err := f.Commitment()
	if err != nil {
		return err
	}
	f.Signer = hex.EncodeToString(key.Public().(ed25519.PublicKey))
	f.Signature = hex.EncodeToString(ed25519.Sign(key, signed(com)))
	return nil
}

// ErrBadSignature says a fingerprint's signature does not verify.
var ErrBadSignature = errors.New("the signature does not verify: the fingerprint was altered or not signed by its signer")

// checkSignature verifies f's signature by its signer.
func (f *Fingerprint) checkSignature() error {
	pub, err := hex.DecodeString(f.Signer)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return fmt.Errorf("signer %q is not an ed25519 public key", f.Signer)
	}
	sig, err := hex.DecodeString(f.Signature)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fmt.Errorf("signature %q is not an ed25519 signature", f.Signature)
	}
	com, err := f.Commitment()
	if err != nil {
		return err
	}
	if !ed25519.Verify(pub, signed(com), sig) {
		return ErrBadSignature
	}
	return nil
}

// GenerateKey writes a new ed25519 key: the private key as PKCS #8 PEM to
// path (mode 0600) and the public key in hex to path+".pub". It refuses to
// overwrite a key.
func GenerateKey(path string) (ed25519.PublicKey, error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, fmt.Errorf("writing key: %w", err)
	}
	if err := pem.Encode(f, &pem.Block{Type: "PRIVATE KEY", Bytes: der}); err != nil {
		f.Close()
		return nil, fmt.Errorf("writing key: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("writing key: %w", err)
	}
	if err := os.WriteFile(path+".pub", []byte(hex.EncodeToString(pub)+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("writing public key: %w", err)
	}
	return pub, nil
}

// ReadKey reads a private key written by GenerateKey.
func ReadKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading key: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("reading key %s: not a PEM private key", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("reading key %s: %w", path, err)
	}
	priv, ok := k.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("reading key %s: not an ed25519 key", path)
	}
	return priv, nil
}

// ParsePublicKey reads an ed25519 public key given in hex, or the name of
// a file holding it (a key's .pub file).
func ParsePublicKey(s string) (string, error) {
	v := strings.TrimSpace(s)
	if b, err := os.ReadFile(v); err == nil {
		v = strings.TrimSpace(string(b))
	}
	pub, err := hex.DecodeString(v)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return "", fmt.Errorf("public key %q: want %d bytes in hex, or a file holding them", s, ed25519.PublicKeySize)
	}
	return hex.EncodeToString(pub), nil
}
