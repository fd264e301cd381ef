package openpgp

import (
	"bufio"
	"bytes"
	"crypto"
	"errors"
	"hash"
	"io"
	"net/mail"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

// Bounds on untrusted signature input.
const (
	maxSignatures   = 16      // signature packets considered per message
	maxSigBytes     = 1 << 20 // size of a detached signature block
	maxFutureSkew   = 10 * time.Minute
	maxCleartextLen = 64 << 20
)

// sigCheck verifies one signature packet (known only at the end for
// one-pass signatures) against the data hashed in one pass. Create it with
// newSigCheck before the data is read, feed the data through writer(), then
// call result.
type sigCheck struct {
	// What the data must be hashed with (from the one-pass signature or the
	// signature itself).
	hashAlgo crypto.Hash
	sigType  packet.SignatureType
	issuer   uint64
	prepErr  string // reason token if the signature cannot be checked at all

	keys []*candidateKey // keys from the lookup that hold the issuer key ID
}

type candidateKey struct {
	entity *openpgp.Entity
	pub    *packet.PublicKey
	subkey *openpgp.Subkey // nil when pub is the primary key
	direct hash.Hash       // plain hash, receives the trailer
	wrap   hash.Hash       // what the data is written to (canonicalizing for text)
}

// newSigCheck prepares hashing for a signature with the given parameters.
// salt is the v6 signature salt (nil otherwise).
func newSigCheck(hashAlgo crypto.Hash, sigType packet.SignatureType, issuer uint64, fpr, salt []byte, lookup KeyLookup, canonicalizeBinary bool) *sigCheck {
	sc := &sigCheck{hashAlgo: hashAlgo, sigType: sigType, issuer: issuer}
	if sigType != packet.SigTypeBinary && sigType != packet.SigTypeText {
		sc.prepErr = "unsupported-signature-type"
		return sc
	}
	if !hashAlgo.Available() {
		sc.prepErr = "unsupported-hash"
		return sc
	}
	if lookup == nil {
		return sc
	}
	for _, k := range lookup.ByKeyID(issuer) {
		if k == nil || k.GetEntity() == nil {
			continue
		}
		e := k.GetEntity()
		for _, ck := range keyComponents(e, issuer) {
			if len(fpr) > 0 && !bytes.Equal(fpr, ck.pub.Fingerprint) {
				continue
			}
			ck.direct = hashAlgo.New()
			if len(salt) > 0 {
				ck.direct.Write(salt)
			}
			ck.wrap = ck.direct
			if sigType == packet.SigTypeText || canonicalizeBinary {
				ck.wrap = openpgp.NewCanonicalTextHash(ck.direct)
			}
			sc.keys = append(sc.keys, ck)
		}
	}
	return sc
}

// keyComponents returns the primary key and subkeys of e with key ID id.
func keyComponents(e *openpgp.Entity, id uint64) []*candidateKey {
	var out []*candidateKey
	if e.PrimaryKey != nil && e.PrimaryKey.KeyId == id {
		out = append(out, &candidateKey{entity: e, pub: e.PrimaryKey})
	}
	for i := range e.Subkeys {
		if e.Subkeys[i].PublicKey.KeyId == id {
			out = append(out, &candidateKey{entity: e, pub: e.Subkeys[i].PublicKey, subkey: &e.Subkeys[i]})
		}
	}
	return out
}

// writers returns where the signed data must be written.
func (sc *sigCheck) writers() []io.Writer {
	var ws []io.Writer
	for _, k := range sc.keys {
		ws = append(ws, k.wrap)
	}
	return ws
}

// result judges sig (the packet that belongs to this check; nil when it
// was missing) at time now. recipientFpr, when not nil, is the primary
// fingerprint of the gateway key that decrypted the message, checked
// against the signature's intended recipients.
func (sc *sigCheck) result(sig *packet.Signature, now time.Time, recipientFpr []byte) SigResult {
	res := SigResult{KeyID: sc.issuer, HashAlgo: Micalg(sc.hashAlgo)}
	bad := func(reason string) SigResult {
		res.Status, res.Reason = StatusBad, reason
		return res
	}
	if sig == nil {
		return bad("malformed")
	}
	if sc.prepErr != "" {
		return bad(sc.prepErr)
	}
	if sig.SigType != sc.sigType || sig.Hash != sc.hashAlgo || sig.IssuerKeyId == nil || *sig.IssuerKeyId != sc.issuer {
		return bad("malformed")
	}
	if len(sc.keys) == 0 {
		res.Status, res.Reason = StatusUntrusted, "unknown-key"
		return res
	}
	// The first key whose math verifies decides; else the signature is bad.
	var good *candidateKey
	for _, k := range sc.keys {
		if err := k.pub.VerifySignature(k.direct, sig); err == nil {
			good = k
			break
		}
	}
	if good == nil {
		res.KeyFingerprint = fingerprintHex(sc.keys[0].entity.PrimaryKey.Fingerprint)
		res.SignerAddresses = entityAddresses(sc.keys[0].entity)
		return bad("bad-signature")
	}
	res.KeyFingerprint = fingerprintHex(good.entity.PrimaryKey.Fingerprint)
	res.SignerAddresses = entityAddresses(good.entity)
	cfg := &packet.Config{Time: func() time.Time { return now }}
	if cfg.RejectMessageHashAlgorithm(sig.Hash) {
		return bad("weak-hash")
	}
	for _, n := range sig.Notations {
		if n.IsCritical {
			return bad("critical-notation")
		}
	}
	if sig.CreationTime.Before(good.pub.CreationTime) {
		return bad("signature-predates-key")
	}
	if sig.CreationTime.After(now.Add(maxFutureSkew)) {
		return bad("signature-in-future")
	}
	if recipientFpr != nil && len(sig.IntendedRecipients) > 0 {
		found := false
		for _, r := range sig.IntendedRecipients {
			if bytes.Equal(r.Fingerprint, recipientFpr) {
				found = true
			}
		}
		if !found {
			return bad("intended-recipient-mismatch")
		}
	}
	// Key state at now.
	e := good.entity
	if e.Revoked(now) {
		res.Status, res.Reason = StatusRevoked, "key-revoked"
		return res
	}
	if good.subkey != nil {
		if selfSig, err := good.subkey.LatestValidBindingSignature(time.Time{}, cfg); err == nil && good.subkey.Revoked(selfSig, now) {
			res.Status, res.Reason = StatusRevoked, "key-revoked"
			return res
		}
	}
	// keyState turns a key validity error into the verdict.
	keyState := func(err error) SigResult {
		switch {
		case errors.Is(err, pgperrors.ErrKeyRevoked):
			res.Status, res.Reason = StatusRevoked, "key-revoked"
		case errors.Is(err, pgperrors.ErrKeyExpired):
			res.Status, res.Reason = StatusExpired, "key-expired"
		default:
			return bad("unusable-key")
		}
		return res
	}
	if _, err := e.VerifyPrimaryKey(now, cfg); err != nil {
		return keyState(err)
	}
	if good.subkey != nil {
		if _, err := good.subkey.Verify(now, cfg); err != nil {
			return keyState(err)
		}
	}
	if _, ok := e.SigningKeyById(now, sc.issuer, cfg); !ok {
		return bad("not-a-signing-key")
	}
	if sig.SigLifetimeSecs != nil && *sig.SigLifetimeSecs != 0 &&
		now.After(sig.CreationTime.Add(time.Duration(*sig.SigLifetimeSecs)*time.Second)) {
		res.Status, res.Reason = StatusExpired, "signature-expired"
		return res
	}
	res.Status = StatusValid
	return res
}

var statusRank = map[Status]int{StatusValid: 5, StatusExpired: 4, StatusRevoked: 3, StatusBad: 2, StatusUntrusted: 1}

// best picks the verdict reported for several signatures.
func best(results []SigResult) SigResult {
	if len(results) == 0 {
		return SigResult{Status: StatusNone}
	}
	out := results[0]
	for _, r := range results[1:] {
		if statusRank[r.Status] > statusRank[out.Status] {
			out = r
		}
	}
	return out
}

// entityAddresses returns the sanitized addr-specs of e's user IDs that
// carry a valid, unrevoked self-certification (expiry is not considered:
// an expired key still names its owner).
func entityAddresses(e *openpgp.Entity) []string {
	var out []string
	cfg := &packet.Config{}
	names := make([]string, 0, len(e.Identities))
	for name := range e.Identities {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		id := e.Identities[name]
		if _, err := id.Verify(time.Time{}, cfg); err != nil {
			continue
		}
		candidate := ""
		if id.UserId != nil {
			candidate = id.UserId.Email
		}
		if candidate == "" {
			candidate = strings.TrimSpace(name)
		}
		if a, ok := SanitizeAddress(candidate); ok && !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out
}

// SanitizeAddress returns s as a bare addr-spec with the domain lowercased
// if s is one (no display name, no comments, no control or space
// characters, at most 254 bytes); ok is false otherwise.
func SanitizeAddress(s string) (addr string, ok bool) {
	if s == "" || len(s) > 254 {
		return "", false
	}
	for _, r := range s {
		if r < 0x21 || r == 0x7f || unicode.IsControl(r) || unicode.IsSpace(r) || r == '<' || r == '>' || r == '(' || r == ')' || r == ',' || r == ';' || r == '"' || r == '\\' {
			return "", false
		}
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Name != "" || a.Address != s {
		return "", false
	}
	at := strings.LastIndexByte(s, '@')
	if at <= 0 || at == len(s)-1 {
		return "", false
	}
	return s[:at] + "@" + strings.ToLower(s[at+1:]), true
}

// readSignaturePackets parses armored or binary signature data and returns
// its signature packets (at most maxSignatures).
func readSignaturePackets(sig []byte) ([]*packet.Signature, error) {
	var r io.Reader = bytes.NewReader(sig)
	if isArmored(sig) {
		blk, err := armor.Decode(bytes.NewReader(sig))
		if err != nil || blk.Type != "PGP SIGNATURE" {
			return nil, ErrMalformed
		}
		r = blk.Body
	}
	pr := packet.NewReader(io.LimitReader(r, maxSigBytes))
	var sigs []*packet.Signature
	for len(sigs) < maxSignatures {
		p, err := pr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			if len(sigs) > 0 {
				break
			}
			return nil, ErrMalformed
		}
		s, ok := p.(*packet.Signature)
		if !ok {
			return nil, ErrMalformed
		}
		sigs = append(sigs, s)
	}
	if len(sigs) == 0 {
		return nil, ErrMalformed
	}
	return sigs, nil
}

// isArmored reports whether data looks like ASCII armor rather than binary
// packets (binary OpenPGP always starts with a byte with the high bit set).
func isArmored(data []byte) bool {
	trimmed := bytes.TrimLeft(data, " \t\r\n")
	return len(trimmed) > 0 && trimmed[0]&0x80 == 0
}

// VerifyDetached verifies an RFC 3156 detached signature (armored or
// binary, possibly several signature packets) over data at time now. data
// must be the CRLF-canonical bytes of the signed MIME entity; bare LF line
// ends are nevertheless canonicalized to CRLF before hashing, for binary
// (0x00) and text (0x01) signatures alike. A signature that cannot be
// parsed gives StatusBad with reason "malformed". Errors reading data give
// StatusBad with reason "read-error".
func VerifyDetached(data io.Reader, sig []byte, verify KeyLookup, now time.Time) SigResult {
	sigs, err := readSignaturePackets(sig)
	if err != nil {
		return SigResult{Status: StatusBad, Reason: "malformed"}
	}
	checks := make([]*sigCheck, len(sigs))
	var ws []io.Writer
	for i, s := range sigs {
		var issuer uint64
		if s.IssuerKeyId != nil {
			issuer = *s.IssuerKeyId
		}
		checks[i] = newSigCheck(s.Hash, s.SigType, issuer, s.IssuerFingerprint, s.Salt(), verify, true)
		ws = append(ws, checks[i].writers()...)
	}
	if len(ws) > 0 {
		if _, err := io.Copy(io.MultiWriter(ws...), bufio.NewReaderSize(data, 32<<10)); err != nil {
			return SigResult{Status: StatusBad, Reason: "read-error"}
		}
	}
	results := make([]SigResult, len(sigs))
	for i, s := range sigs {
		results[i] = checks[i].result(s, now, nil)
	}
	return best(results)
}

// VerifyCleartext verifies a cleartext-signed block ("-----BEGIN PGP
// SIGNED MESSAGE-----") and returns the text the signature covers:
// dash-unescaped, CRLF line ends, trailing whitespace removed from each
// line (RFC 4880 section 7.1), with no final line break. Text before or
// after the block is ignored: callers decide whether the block was the
// whole body (see Info.Surrounded). The Hash armor header is not trusted.
func VerifyCleartext(block []byte, verify KeyLookup, now time.Time) (text []byte, res SigResult, err error) {
	if len(block) > maxCleartextLen {
		return nil, SigResult{}, ErrTooLarge
	}
	b, _ := clearsign.Decode(block)
	if b == nil || b.ArmoredSignature == nil || b.ArmoredSignature.Type != "PGP SIGNATURE" {
		return nil, SigResult{}, ErrMalformed
	}
	sigBytes, err := io.ReadAll(io.LimitReader(b.ArmoredSignature.Body, maxSigBytes))
	if err != nil {
		return nil, SigResult{}, ErrMalformed
	}
	sigs, err := readSignaturePackets(sigBytes)
	if err != nil {
		return nil, SigResult{}, ErrMalformed
	}
	checks := make([]*sigCheck, len(sigs))
	var ws []io.Writer
	for i, s := range sigs {
		var issuer uint64
		if s.IssuerKeyId != nil {
			issuer = *s.IssuerKeyId
		}
		// b.Bytes is already canonical: never canonicalize it again.
		checks[i] = newSigCheck(s.Hash, s.SigType, issuer, s.IssuerFingerprint, s.Salt(), verify, false)
		ws = append(ws, checks[i].writers()...)
	}
	for _, w := range ws {
		w.Write(b.Bytes)
	}
	results := make([]SigResult, len(sigs))
	for i, s := range sigs {
		results[i] = checks[i].result(s, now, nil)
	}
	return b.Bytes, best(results), nil
}
