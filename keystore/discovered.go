package keystore

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/armor"
	"github.com/ProtonMail/gopenpgp/v3/constants"
	"github.com/ProtonMail/gopenpgp/v3/crypto"
)

// Pinned reports whether addr is pinned with [keyring.pin]: such an
// address never falls back to another key, discovered ones included.
func (s *Snapshot) Pinned(addr string) bool { return s.pin(s.opts.norm(addr)) != "" }

// CheckedKey is a key or certificate from outside the keystore (found by
// key discovery), checked for encryption to one address by the rules
// keys in openpgp/ and certs/ follow.
type CheckedKey struct {
	OpenPGP     *crypto.Key       // the key, for OpenPGP
	Cert        *x509.Certificate // the certificate, for S/MIME
	Fingerprint string            // OpenPGP fingerprint, or SHA-256 of the certificate (hex, upper case)
	Algorithm   string
	Created     time.Time
	Expires     time.Time // zero: never
	// Armored is the key alone, armored (OpenPGP), or the certificate as
	// PEM: what a cache stores.
	Armored []byte
}

// CheckOpenPGP parses OpenPGP public keys (armored or binary, any number)
// from an untrusted source and returns the one to encrypt to for addr at
// t, chosen as for keys in openpgp/: a validly self-signed user ID for
// addr, not expired or revoked, acceptable algorithms (RSA at least 2048
// bits, no MD5/SHA-1 self-signatures), a usable encryption (sub)key; the
// newest such key. Keys without a user ID for addr are dropped. Secret key
// material is refused. The error wraps ErrNoKey and says why no key
// qualified.
func CheckOpenPGP(data []byte, addr string, fold bool, t time.Time) (*CheckedKey, error) {
	norm := NormalizeAddress(addr, fold)
	if norm == "" {
		return nil, fmt.Errorf("%w: %q is not an address", ErrNoKey, addr)
	}
	ents, err := parseOpenPGP(data)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNoKey, err)
	}
	var best *pgpKey
	var lastErr error
	for _, e := range ents {
		if e.PrivateKey != nil {
			return nil, fmt.Errorf("%w: holds secret key material", ErrNoKey)
		}
		k := newPGPKey("", e, fold)
		if !slices.Contains(k.addrs, norm) {
			if lastErr == nil {
				lastErr = fmt.Errorf("key %s has no user ID for %s", k.fpr, norm)
			}
			continue
		}
		if err := k.usableFor(purposeEncrypt, norm, t); err != nil {
			lastErr = fmt.Errorf("key %s: %w", k.fpr, err)
			continue
		}
		if best == nil || newerPGP(k, best) {
			best = k
		}
	}
	if best == nil {
		if lastErr == nil {
			lastErr = errors.New("no key")
		}
		return nil, fmt.Errorf("%w for %s: %w", ErrNoKey, norm, lastErr)
	}
	pub, err := best.key.Serialize()
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %v", ErrNoKey, best.fpr, err)
	}
	arm, err := armor.ArmorWithTypeChecksum(pub, constants.PublicKeyHeader, true)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %v", ErrNoKey, best.fpr, err)
	}
	exp := best.expiry()
	if ee := best.encryptionExpiry(); !ee.IsZero() && (exp.IsZero() || ee.Before(exp)) {
		exp = ee
	}
	return &CheckedKey{OpenPGP: best.key, Fingerprint: best.fpr, Algorithm: best.algorithm(),
		Created: best.created, Expires: exp, Armored: []byte(arm)}, nil
}

// CheckCertificate checks a correspondent certificate from an untrusted
// source for encryption to addr at t, as for certificates in certs/: an
// e-mail address of the certificate is addr, valid at t, RSA of at least
// 2048 bits, key usage allowing key encipherment, extended key usage
// e-mail protection or none, no weak signature. Chain validation, where
// wanted, is the caller's. The error wraps ErrNoKey.
func CheckCertificate(c *x509.Certificate, addr string, fold bool, t time.Time) (*CheckedKey, error) {
	norm := NormalizeAddress(addr, fold)
	e := newCertEntry("", c, fold)
	if norm == "" || !slices.Contains(e.addrs, norm) {
		return nil, fmt.Errorf("%w: certificate %s is not for %s", ErrNoKey, e.hash, addr)
	}
	if err := e.encryptionUsable(t, nil); err != nil {
		return nil, fmt.Errorf("%w for %s: certificate %s: %w", ErrNoKey, norm, e.hash, err)
	}
	return &CheckedKey{Cert: c, Fingerprint: e.hash, Algorithm: certAlgorithm(c), Created: c.NotBefore,
		Expires: c.NotAfter, Armored: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})}, nil
}
