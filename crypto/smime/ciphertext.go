package smime

import (
	"bytes"
	"encoding/asn1"

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
	maxRecipients   = 64      // key transport and key agreement together
	maxKeyAgreeRIs  = 8       // key agreement recipient infos
	maxIdentifier   = 512     // an issuer name and serial, or a key identifier
	maxIdentifiers  = 8 << 10 // all of them together
	maxOID          = 32      // an OID's DER content
)

// IsEnvelope reports whether der is exactly one complete CMS EnvelopedData
// or AuthEnvelopedData (RFC 5652, RFC 5083) with at least one key
// transport recipient and encrypted content that looks like ciphertext
// throughout. Outbound mail that is "already encrypted" must pass this
// before it is sent as it is: data that merely begins with the right OID
// is not enough, and nothing may travel in clear beside the ciphertext.
// Elements decryption passes over are refused (originatorInfo,
// unprotected and unauthenticated attributes, KEK, password and other
// recipient infos) except key agreement recipient infos of at most 1 KiB
// (8 at most); encrypted keys must be at most 2 KiB and look random;
// recipients (64 at most), identifiers, OIDs, algorithm and key transport
// parameters, authenticated attributes and the GCM tag are bounded. What is
// left in clear is the recipients' identifiers (issuer names, serial
// numbers): a few hundred bytes each, 8 KiB in all. A message to more
// recipients than these bounds allow is encrypted again rather than sent
// as it is. The content is read as a stream, as decryption reads it.
func IsEnvelope(der []byte) bool {
	s, err := readEnvelopeHead(bytes.NewReader(der))
	if err != nil || s.content == nil || len(s.env.recipients) == 0 ||
		len(s.env.contentAlg.params) > maxAlgParams || oidLen(s.env.contentType) > maxOID || oidLen(s.env.contentAlg.oid) > maxOID {
		return false
	}
	ids := 0
	for _, r := range s.env.recipients {
		if ids += idLen(r.id); ids > maxIdentifiers {
			return false
		}
		if len(r.encryptedKey) > maxEncryptedKey || len(r.alg.params) > maxKeyParams || !entropy.LooksRandom(r.encryptedKey) ||
			oidLen(r.alg.oid) > maxOID || idLen(r.id) > maxIdentifier {
			return false
		}
	}
	c := &countingReader{r: s.content}
	random, err := entropy.AllLookRandom(c)
	if err != nil || !random || c.n == 0 || s.finish() != nil || len(s.authAttrs) > maxAuthAttrs {
		return false
	}
	if s.env.auth && (len(s.mac) < 12 || len(s.mac) > 16) { // a GCM tag
		return false
	}
	for _, u := range s.unread {
		if u.field != "recipientInfo" || u.tag != casn1.Tag(1).Constructed().ContextSpecific() || u.size > maxKeyAgreement {
			return false
		}
	}
	kari := len(s.unread)
	return kari <= maxKeyAgreeRIs && len(s.env.recipients)+kari <= maxRecipients
}

// idLen is the size of a recipient identifier.
func idLen(id certificateID) int {
	n := len(id.issuer) + len(id.ski)
	if id.serial != nil {
		n += len(id.serial.Bytes())
	}
	return n
}

// oidLen is the length of an OID's DER content, about.
func oidLen(oid asn1.ObjectIdentifier) int {
	n := 0
	for _, arc := range oid {
		for n++; arc >= 0x80; arc >>= 7 {
			n++
		}
	}
	return n
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r interface{ Read([]byte) (int, error) }
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
