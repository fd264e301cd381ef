// Package smime implements the S/MIME cryptographic layer of cryptmilter:
// CMS (RFC 5652) decryption of EnvelopedData and AuthEnvelopedData,
// verification of SignedData, and the outbound detached signature and
// EnvelopedData.
//
// The inbound CMS reader is written by hand on top of
// golang.org/x/crypto/cryptobyte because github.com/smallstep/pkcs7 lacks
// what real clients send: it cannot decrypt AES-192, recipients named by
// subject key identifier, messages that also carry a key-agreement (EC)
// recipient (its whole parse fails), or AuthEnvelopedData (AES-GCM, RFC
// 5083/5084); it cannot verify RSA-PSS, checks chains at the signer's
// claimed signing time, ignores the content-type attribute and has no CRL
// support. BER input (indefinite lengths, constructed OCTET STRINGs, as
// `openssl cms -stream` and Thunderbird produce) is read as a stream
// (berstream.go): the small elements are normalised to definite lengths
// by toDER, the content is read as it comes.
//
// The package works on DER/BER; MIME parsing, canonicalisation and result
// headers belong to the callers. Both sides stream: DecryptReader and
// VerifyOpaque read a message as a stream into a spool buffer,
// VerifyDetached hashes the signed content as it reads it,
// SignDetachedReader hashes its content as it reads it and EncryptTo
// encrypts from a reader into a writer, so that none holds a message in
// memory.
package smime

import (
	"crypto"
	"crypto/sha1"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"fmt"
	"math/big"
	"strings"

	"golang.org/x/crypto/cryptobyte"

	"github.com/cryptmilter/cryptmilter/internal/ber"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// Identity is one gateway S/MIME identity: a certificate and its private
// key. Only *rsa.PrivateKey keys can decrypt; signing also accepts
// *ecdsa.PrivateKey.
type Identity struct {
	Cert *x509.Certificate
	Key  crypto.PrivateKey
}

// Object identifiers used by the package.
var (
	oidData              = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}
	oidSignedData        = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 2}
	oidEnvelopedData     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 3}
	oidAuthEnvelopedData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 1, 23}

	oidAttrContentType   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 3}
	oidAttrMessageDigest = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 4}
	oidAttrSigningTime   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 5}
	oidEmailAddress      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

	oidRSAEncryption = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidRSAESOAEP     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 7}
	oidMGF1          = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 8}
	oidPSpecified    = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 9}
	oidRSASSAPSS     = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 10}

	oidAES128CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 2}
	oidAES192CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 22}
	oidAES256CBC  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidAES128GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 6}
	oidAES192GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 26}
	oidAES256GCM  = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 46}
	oidDESEDE3CBC = asn1.ObjectIdentifier{1, 2, 840, 113549, 3, 7}

	oidMD5    = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 5}
	oidSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	oidSHA224 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	oidSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	oidSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	oidSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}
)

// digestByOID maps digest algorithm OIDs to hashes.
func digestByOID(oid asn1.ObjectIdentifier) (crypto.Hash, bool) {
	switch {
	case oid.Equal(oidMD5):
		return crypto.MD5, true
	case oid.Equal(oidSHA1):
		return crypto.SHA1, true
	case oid.Equal(oidSHA224):
		return crypto.SHA224, true
	case oid.Equal(oidSHA256):
		return crypto.SHA256, true
	case oid.Equal(oidSHA384):
		return crypto.SHA384, true
	case oid.Equal(oidSHA512):
		return crypto.SHA512, true
	}
	return 0, false
}

// AddressesOf returns the e-mail addresses a certificate names: its SAN
// rfc822Name entries, or, when it has none, the subject's emailAddress
// attributes (OID 1.2.840.113549.1.9.1), as written in the certificate.
// Compare them with a From address case-insensitively.
func AddressesOf(cert *x509.Certificate) []string {
	if cert == nil {
		return nil
	}
	if len(cert.EmailAddresses) > 0 {
		return append([]string(nil), cert.EmailAddresses...)
	}
	var out []string
	for _, atv := range cert.Subject.Names {
		if !atv.Type.Equal(oidEmailAddress) {
			continue
		}
		if s, ok := atv.Value.(string); ok && s != "" {
			out = append(out, s)
		}
	}
	return out
}

// formatSerial renders a certificate serial number as upper-case hex, the
// way `openssl x509 -serial` prints it.
func formatSerial(n *big.Int) string {
	if n == nil {
		return ""
	}
	s := strings.ToUpper(n.Text(16))
	if len(s)%2 == 1 {
		s = "0" + s
	}
	return s
}

// formatName renders a DER Name in RFC 2253 form; unparsable names are
// rendered as hex.
func formatName(der []byte) string {
	var rdn pkix.RDNSequence
	if rest, err := asn1.Unmarshal(der, &rdn); err != nil || len(rest) != 0 {
		return fmt.Sprintf("%x", der)
	}
	var n pkix.Name
	n.FillFromRDNSequence(&rdn)
	return n.String()
}

// certificateID is a SignerIdentifier or RecipientIdentifier: either
// issuer and serial number, or subject key identifier.
type certificateID struct {
	issuer []byte // DER Name, nil when ski is set
	serial *big.Int
	ski    []byte
}

// matches reports whether cert is the certificate id names.
func (id certificateID) matches(cert *x509.Certificate) bool {
	if cert == nil {
		return false
	}
	if id.ski != nil {
		if len(cert.SubjectKeyId) > 0 {
			return string(cert.SubjectKeyId) == string(id.ski)
		}
		return string(computedSKI(cert)) == string(id.ski)
	}
	return id.serial != nil && string(cert.RawIssuer) == string(id.issuer) &&
		cert.SerialNumber != nil && cert.SerialNumber.Cmp(id.serial) == 0
}

// computedSKI is the RFC 5280 method-1 key identifier (SHA-1 of the
// subjectPublicKey bits), used when a certificate has no SKI extension.
func computedSKI(cert *x509.Certificate) []byte {
	var spki struct {
		Algorithm asn1.RawValue
		PublicKey asn1.BitString
	}
	if _, err := asn1.Unmarshal(cert.RawSubjectPublicKeyInfo, &spki); err != nil {
		return nil
	}
	sum := sha1.Sum(spki.PublicKey.Bytes)
	return sum[:]
}

// readCertificateID reads a SignerIdentifier/RecipientIdentifier:
// IssuerAndSerialNumber, or [0] IMPLICIT SubjectKeyIdentifier.
func readCertificateID(s *cryptobyte.String) (certificateID, bool) {
	var id certificateID
	switch {
	case s.PeekASN1Tag(casn1.SEQUENCE):
		var ias cryptobyte.String
		var issuer cryptobyte.String
		id.serial = new(big.Int)
		if !s.ReadASN1(&ias, casn1.SEQUENCE) ||
			!ias.ReadASN1Element(&issuer, casn1.SEQUENCE) ||
			!ias.ReadASN1Integer(id.serial) || !ias.Empty() {
			return id, false
		}
		id.issuer = issuer
	case s.PeekASN1Tag(casn1.Tag(0).ContextSpecific()):
		var ski cryptobyte.String
		if !s.ReadASN1(&ski, casn1.Tag(0).ContextSpecific()) {
			return id, false
		}
		id.ski = append([]byte{}, ski...)
	default:
		return id, false
	}
	return id, true
}

// algorithmIdentifier is a parsed AlgorithmIdentifier; params holds the
// full parameters element, or nil when absent.
type algorithmIdentifier struct {
	oid    asn1.ObjectIdentifier
	params cryptobyte.String
}

func readAlgorithmIdentifier(s *cryptobyte.String) (algorithmIdentifier, bool) {
	var a algorithmIdentifier
	var seq cryptobyte.String
	if !s.ReadASN1(&seq, casn1.SEQUENCE) || !seq.ReadASN1ObjectIdentifier(&a.oid) {
		return a, false
	}
	if !seq.Empty() {
		var tag casn1.Tag
		if !seq.ReadAnyASN1Element(&a.params, &tag) || !seq.Empty() {
			return a, false
		}
		if tag == casn1.NULL {
			if len(a.params) != 2 { // a NULL has no content
				return a, false
			}
			a.params = nil
		}
	}
	return a, true
}

// toDER normalizes BER input to DER (see package ber).
func toDER(b []byte) ([]byte, error) { return ber.ToDER(b) }
