// Package verdict implements the vocabulary of cryptmilter's inbound
// results: one status type each for encryption and signatures, one ranking
// for both protocols, the result header fields (X-Cryptmilter-*, RT's,
// Authentication-Results) formatted in one place, and the one list of
// result fields that both directions strip.
package verdict

import "github.com/cryptmilter/cryptmilter/internal/enum"

// Protocol is OpenPGP or S/MIME.
type Protocol int

// The protocols.
const (
	OpenPGP Protocol = iota + 1
	SMIME
)

var protocolWords = enum.Words{OpenPGP: "openpgp", SMIME: "smime"}

// String is the protocol's word ("" when unset).
func (p Protocol) String() string {
	if !p.Valid() {
		return ""
	}
	return protocolWords.String(int(p))
}

// MarshalText spells the protocol as in headers and configuration.
func (p Protocol) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses "openpgp" or "smime".
func (p *Protocol) UnmarshalText(b []byte) error { return protocolWords.Parse(b, (*int)(p)) }

// Valid reports whether p is a protocol.
func (p Protocol) Valid() bool { return p == OpenPGP || p == SMIME }

// Words lists the protocol words.
func (Protocol) Words() []string { return protocolWords.List() }

// EncStatus is the verdict on the encryption of a message.
type EncStatus int

// The encryption verdicts.
const (
	// EncNone: the message was not encrypted.
	EncNone EncStatus = iota
	// Decrypted: every encryption layer for the gateway was decrypted.
	Decrypted
	// EncPartial: encrypted content below the root, left alone.
	EncPartial
	// EncFailed: an encryption layer could not be decrypted (or was for
	// other keys); the message passes as it came.
	EncFailed
)

var encWords = []string{EncNone: "none", Decrypted: "decrypted", EncPartial: "partial", EncFailed: "failed"}

func (s EncStatus) String() string { return encWords[s] }

// SigStatus is the verdict on the signature over the displayed message.
type SigStatus int

// The signature verdicts.
const (
	SigNone SigStatus = iota
	Valid
	// Mismatch: a good signature, but the signer is not the From address
	// (or the signed headers disagree with the outer ones).
	Mismatch
	Untrusted
	Expired
	Revoked
	Bad
	// SigPartial: signed content below the root, or a signature that does
	// not cover what is displayed.
	SigPartial
)

var sigWords = []string{SigNone: "none", Valid: "valid", Mismatch: "mismatch", Untrusted: "untrusted",
	Expired: "expired", Revoked: "revoked", Bad: "bad", SigPartial: "partial"}

func (s SigStatus) String() string { return sigWords[s] }

// Rank orders signature verdicts for choosing the one to show among
// several signatures over the same content (several OpenPGP signature
// packets, several S/MIME signerInfos): higher is shown first. It is the
// one ranking for both protocols.
func (s SigStatus) Rank() int {
	return [...]int{SigNone: 0, SigPartial: 1, Untrusted: 2, Bad: 3, Revoked: 4, Expired: 5, Mismatch: 6, Valid: 7}[s]
}

// Encryption is the verdict on the encryption layers.
type Encryption struct {
	Status   EncStatus
	Protocol Protocol
	// Key is the fingerprint (OpenPGP) or certificate serial (S/MIME) of
	// the gateway key that decrypted the message.
	Key    string
	Reason string
	// Unauthenticated is set when the ciphertext had no integrity check
	// (CBC EnvelopedData) and no valid signature inside covers the
	// content: it may have been altered in transit.
	Unauthenticated bool
}

// Signature is the verdict on one signature layer.
type Signature struct {
	Status   SigStatus
	Protocol Protocol
	// Signer is the signer's address matched against From (or the first
	// address of the key or certificate).
	Signer string
	Key    string
	Reason string
	// Candidates are all addresses of the signer's key or certificate.
	Candidates []string
	// Headers says what the signature covers of the header: "protected"
	// (the displayed Subject, To, … come from inside the signature),
	// "replaced" (they did, and outer ones that differed were replaced),
	// "unprotected" (they are not covered), "" when not applicable.
	Headers string
	// SMIME holds the S/MIME signer's serial and issuer, for
	// Authentication-Results.
	SMIME *SMIMESigner
}

// SMIMESigner identifies an S/MIME signer's certificate.
type SMIMESigner struct {
	Serial string
	Issuer string
}

// Result is the verdict on one message.
type Result struct {
	Enc Encryption
	// Sig is the signature over the displayed content: the innermost
	// signature over the plaintext.
	Sig Signature
	// Outer are signatures that cover only ciphertext (encrypt-then-sign,
	// a relay's transport signature, the outer layer of a triple wrap),
	// outermost first. They are reported, never as the content's.
	Outer []Signature
}

// Reason joins reason tokens with a comma.
func Reason(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "" || a == b:
		return a
	}
	return a + "," + b
}
