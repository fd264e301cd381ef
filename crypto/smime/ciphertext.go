package smime

import (
	"bytes"

	casn1 "golang.org/x/crypto/cryptobyte/asn1"

	"github.com/cryptmilter/cryptmilter/internal/entropy"
)

// Bounds on what an envelope holds in clear besides identifiers: an
// RSA-16384 encrypted key is 2 KiB, an EC key agreement recipient info a
// few hundred bytes, algorithm parameters (an IV, GCM nonce and tag
// length) a few dozen.
const (
	maxEncryptedKey = 2 << 10
	maxKeyAgreement = 1 << 10
	maxAlgParams    = 64
	maxKeyParams    = 128 // RSA-OAEP parameters
	maxAuthAttrs    = 1 << 10
)

// IsEnvelope reports whether der is exactly one complete CMS EnvelopedData
// or AuthEnvelopedData (RFC 5652, RFC 5083) with at least one key
// transport recipient and encrypted content that looks like ciphertext
// throughout. Outbound mail that is "already encrypted" must pass this
// before it is sent as it is: data that merely begins with the right OID
// is not enough, and nothing may travel in clear beside the ciphertext.
// Elements decryption passes over are refused (originatorInfo,
// unprotected and unauthenticated attributes, KEK, password and other
// recipient infos) except key agreement recipient infos of at most 1 KiB;
// encrypted keys must be at most 2 KiB and look random; algorithm
// and key transport parameters and authenticated attributes are bounded. What is left in
// clear is the recipients' identifiers (issuer names, serial numbers).
func IsEnvelope(der []byte) bool {
	norm, err := toDER(der)
	if err != nil {
		return false
	}
	env, ok := parseEnvelope(norm)
	if !ok || len(env.recipients) == 0 || len(env.ciphertext) == 0 ||
		len(env.contentAlg.params) > maxAlgParams || len(env.authAttrs) > maxAuthAttrs {
		return false
	}
	for _, u := range env.unread {
		if u.field != "recipientInfo" || u.tag != casn1.Tag(1).Constructed().ContextSpecific() || u.size > maxKeyAgreement {
			return false
		}
	}
	for _, r := range env.recipients {
		if len(r.encryptedKey) > maxEncryptedKey || len(r.alg.params) > maxKeyParams || !entropy.LooksRandom(r.encryptedKey) {
			return false
		}
	}
	random, err := entropy.AllLookRandom(bytes.NewReader(env.ciphertext))
	return err == nil && random
}
