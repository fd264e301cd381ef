// Package openpgp implements cryptmilter's OpenPGP layer on top of
// github.com/ProtonMail/gopenpgp/v3 (and the go-crypto packet layer it
// wraps): decryption of messages addressed to the gateway, signature
// verification (embedded, detached RFC 3156, cleartext and inline), a
// secret-free classifier for armored or binary blobs, and outbound
// sign+encrypt and detached signing in a profile GnuPG 2.2 reads.
//
// The package works on the OpenPGP bytes only: callers walk the MIME tree,
// decode transfer encodings, canonicalize signed entities and build the
// result headers.
//
// Security rules it enforces:
//   - Plaintext is never handed out before the whole message was read, the
//     MDC/AEAD integrity check passed and the signatures were checked: it is
//     kept in memory up to Limits.Spool's threshold, beyond it in an
//     already unlinked 0600 file in the spool directory.
//   - Messages without integrity protection are refused.
//   - Every decryption failure is the same ErrDecrypt (no padding, format or
//     key oracle); ErrNotForUs is decided from the public key IDs alone.
//   - A signature is StatusValid only when it is cryptographically good and
//     the signing key is usable for signing at the verification time.
//
// Keys from the keystore may be shared between goroutines: call Prepare on
// each key once when a keyring snapshot is built, so that go-crypto's lazy
// self-signature caches are filled before concurrent use (see Prepare).
package openpgp

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"strings"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// Errors returned by this package. Callers tell them apart with errors.Is.
var (
	// ErrDecrypt is the single, uniform outcome of every failed decryption
	// of a message that names one of the gateway keys (or a hidden
	// recipient): wrong key, bad padding, bad format, failed integrity
	// check, missing integrity protection, too much decompressed data.
	ErrDecrypt = errors.New("openpgp: decryption failed")
	// ErrNotForUs means the message is encrypted, but none of its recipients
	// is a gateway key and none is hidden (key ID 0).
	ErrNotForUs = errors.New("openpgp: message is not encrypted to a gateway key")
	// ErrNotEncrypted is returned by Decrypt for an OpenPGP message that is
	// not encrypted (signed or literal only): use VerifyInline.
	ErrNotEncrypted = errors.New("openpgp: message is not encrypted")
	// ErrMalformed means the input is not the kind of OpenPGP data the
	// function expects (no armor block of the right type, no signature).
	ErrMalformed = errors.New("openpgp: malformed input")
	// ErrTooLarge means inline-signed literal data exceeded
	// Limits.MaxDecompressed (VerifyInline only; Decrypt says ErrDecrypt).
	ErrTooLarge = errors.New("openpgp: data exceeds the size limit")
)

// Limits bounds the resources one message may use.
type Limits struct {
	// MaxDecompressed caps the size of the plaintext (after decompression)
	// in bytes. Zero means DefaultMaxDecompressed.
	MaxDecompressed int64
	// Spool, when set, holds plaintext in memory up to its threshold
	// (limits.memory_spool) and beyond that in an unlinked 0600 file in
	// its directory. It takes precedence over SpoolDir.
	Spool *spool.Dir
	// SpoolDir is the directory (mode 0700) where plaintext is spooled
	// when Spool is nil: always in a file, created 0600 and unlinked at
	// once, so nothing is left behind by a crash. Empty means
	// os.TempDir(), for tests only.
	SpoolDir string
}

// newBuffer returns an empty plaintext buffer as the limits say.
func (l Limits) newBuffer() (*spool.Buffer, error) {
	if l.Spool != nil {
		return l.Spool.New(), nil
	}
	dir := l.SpoolDir
	if dir == "" {
		dir = os.TempDir()
	}
	return spool.NewFile(dir)
}

// DefaultMaxDecompressed is the plaintext cap used when
// Limits.MaxDecompressed is zero.
const DefaultMaxDecompressed = 256 << 20

func (l Limits) maxDecompressed() int64 {
	if l.MaxDecompressed <= 0 {
		return DefaultMaxDecompressed
	}
	return l.MaxDecompressed
}

// KeyLookup finds the public keys that may have made a signature. It must
// return every key holding a primary key or subkey with that 64-bit key ID,
// including keys that are expired, revoked or not signing-capable now, so
// that the verdict can say so (StatusExpired, StatusRevoked).
type KeyLookup interface {
	ByKeyID(id uint64) []*pgpcrypto.Key
}

// KeyRingLookup adapts a gopenpgp key ring to KeyLookup. It returns keys
// regardless of their validity. A nil ring finds nothing.
func KeyRingLookup(kr *pgpcrypto.KeyRing) KeyLookup { return ringLookup{kr} }

type ringLookup struct{ kr *pgpcrypto.KeyRing }

func (r ringLookup) ByKeyID(id uint64) []*pgpcrypto.Key {
	if r.kr == nil {
		return nil
	}
	var out []*pgpcrypto.Key
	for _, k := range r.kr.GetKeys() {
		e := k.GetEntity()
		if e.PrimaryKey.KeyId == id {
			out = append(out, k)
			continue
		}
		for _, sk := range e.Subkeys {
			if sk.PublicKey.KeyId == id {
				out = append(out, k)
				break
			}
		}
	}
	return out
}

// Status is the verdict on a signature.
type Status int

// Signature verdicts.
const (
	// StatusNone: the data carries no signature.
	StatusNone Status = iota
	// StatusValid: cryptographically good and the key is usable for signing
	// at the verification time.
	StatusValid
	// StatusBad: the signature does not verify, is malformed, uses a
	// rejected algorithm, or the key may not sign.
	StatusBad
	// StatusUntrusted: the signer's key is not in the lookup.
	StatusUntrusted
	// StatusExpired: good, but the key (or the signature) has expired.
	StatusExpired
	// StatusRevoked: good, but the key has been revoked.
	StatusRevoked
)

var statusNames = [...]string{"none", "valid", "bad", "untrusted", "expired", "revoked"}

// String returns the lowercase token used in X-Cryptmilter-Signature.
func (s Status) String() string {
	if int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// SigResult is the verdict on the signatures over one piece of data. When
// several signatures are present the best one is reported, in the order
// valid, expired, revoked, bad, untrusted.
type SigResult struct {
	Status Status
	// KeyFingerprint is the uppercase hex fingerprint of the signer's
	// primary key, set only when the key was found in the lookup.
	KeyFingerprint string
	// KeyID is the issuer key ID named by the signature (possibly a
	// subkey); for StatusUntrusted it is only the signature's claim.
	KeyID uint64
	// SignerAddresses are the addr-specs of the signer key's valid user
	// IDs: syntax-checked, no control characters, domain lowercased.
	SignerAddresses []string
	// HashAlgo is the RFC 3156 micalg name of the signature's hash, such as
	// "pgp-sha256".
	HashAlgo string
	// Reason is a short token saying why the status is not valid, such as
	// "bad-signature", "key-expired", "unknown-key"; empty when valid.
	Reason string
}

// KeyIDHex returns KeyID as 16 uppercase hex digits, or "" when zero.
func (r SigResult) KeyIDHex() string {
	if r.KeyID == 0 {
		return ""
	}
	return fmt.Sprintf("%016X", r.KeyID)
}

var micalgNames = map[crypto.Hash]string{
	crypto.MD5:       "pgp-md5",
	crypto.SHA1:      "pgp-sha1",
	crypto.RIPEMD160: "pgp-ripemd160",
	crypto.SHA224:    "pgp-sha224",
	crypto.SHA256:    "pgp-sha256",
	crypto.SHA384:    "pgp-sha384",
	crypto.SHA512:    "pgp-sha512",
	crypto.SHA3_256:  "pgp-sha3-256",
	crypto.SHA3_512:  "pgp-sha3-512",
}

// Micalg returns the RFC 3156 micalg parameter for a hash, or "" if the
// hash has none.
func Micalg(h crypto.Hash) string { return micalgNames[h] }

func fingerprintHex(fp []byte) string { return strings.ToUpper(fmt.Sprintf("%x", fp)) }
