package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
)

func (a *analyzer) smimeIdentities() []smime.Identity {
	if a.keys == nil {
		return nil
	}
	var ids []smime.Identity
	for _, id := range a.keys.GatewaySMIMEAll() {
		ids = append(ids, smime.Identity{Cert: id.Cert, Key: id.Key})
	}
	return ids
}

// decryptSMIME decrypts an application/pkcs7-mime enveloped-data entity.
func (a *analyzer) decryptSMIME(e *mime.Entity, res *inboundResult) (*mime.Entity, error) {
	a.attempted = true
	res.enc.protocol = protoSMIME
	// EnvelopedData (AES-CBC) has no integrity check: tampered ciphertext
	// with valid padding decrypts to garbage, with bad padding it fails.
	// A reply that told the two apart would be a padding oracle, so
	// [actions] on_decrypt_error applies only to authenticated encryption
	// (AuthEnvelopedData); the others are always tagged.
	res.authenticated = cmsKind(e) == "authenveloped"
	der, err := e.Decoded()
	if err != nil {
		res.enc.status, res.enc.reason, res.failure = encFailed, "decrypt-failed", true
		return nil, nil
	}
	content, info, err := smime.Decrypt(der, a.smimeIdentities())
	switch {
	case errors.Is(err, smime.ErrNotForUs):
		res.enc.status, res.enc.reason = encFailed, "not-for-gateway"
		return nil, nil
	case err != nil:
		res.enc.status, res.enc.reason, res.failure = encFailed, "decrypt-failed", true
		return nil, nil
	}
	res.enc = encResult{status: encDecrypted, protocol: protoSMIME, key: info.Serial}
	return a.parseInner(content)
}

func (a *analyzer) smimeOptions() smime.VerifyOptions {
	o := smime.VerifyOptions{Now: a.in.Now, AllowSHA1: a.e.pol.Inbound.AllowSHA1}
	if a.keys != nil {
		o.Roots = a.keys.TrustAnchors()
		o.CRLs = a.keys.CRLs()
	}
	return o
}

// verifySMIMEDetached verifies a multipart/signed with a pkcs7-signature
// over the exact bytes of its first part.
func (a *analyzer) verifySMIMEDetached(e *mime.Entity, res *inboundResult) {
	if len(e.Parts) != 2 {
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	der, err := e.Parts[1].Decoded()
	if mt := e.Parts[1].MediaType; err != nil || (mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature") ||
		len(e.Parts[1].Header.Values("Content-Type")) != 1 {
		// The signature part must be nothing but the signature.
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	signed := toCRLF(e.Parts[0].Raw)
	_, signers, err := smime.Verify(der, signed, a.smimeOptions())
	if err != nil {
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	res.sig = a.smimeSig(signers)
	if res.sig.reason == "digest-mismatch" {
		// Some signers hash the entity with LF line ends instead of the
		// canonical CRLF (NSS's own test messages do). The content is the
		// same either way, so that form is accepted too.
		if _, lf, err := smime.Verify(der, bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), a.smimeOptions()); err == nil {
			if alt := a.smimeSig(lf); alt.reason != "digest-mismatch" {
				res.sig = alt
			}
		}
	}
	a.signedContent(e, res)
}

// verifySMIMEOpaque verifies an opaque signed-data entity; its content is
// always shown unwrapped (it cannot be read otherwise).
func (a *analyzer) verifySMIMEOpaque(e *mime.Entity, res *inboundResult) {
	der, err := e.Decoded()
	if err != nil {
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	content, signers, err := smime.Verify(der, nil, a.smimeOptions())
	if err != nil {
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	res.sig = a.smimeSig(signers)
	inner, err := mime.Parse(toCRLF(content), a.lim)
	if err != nil {
		res.sig = sigResult{status: sigBad, protocol: protoSMIME, reason: "malformed"}
		return
	}
	res.content = inner
	a.encryptedInsideSignature(inner, res)
}

// smimeSig picks the verdict to show among the signerInfos: a valid one
// whose address is the From address first, then any valid one, then the
// least bad. Zero signerInfos is unsigned, never valid.
func (a *analyzer) smimeSig(signers []smime.SignerResult) sigResult {
	if len(signers) == 0 {
		return sigResult{status: sigNone, protocol: protoSMIME, reason: "no-signerinfo"}
	}
	rank := map[smime.Status]int{smime.Valid: 6, smime.Expired: 5, smime.Revoked: 4, smime.Untrusted: 3, smime.Weak: 2, smime.Bad: 1}
	best := -1
	for i := range signers {
		s := &signers[i]
		a.trustImported(s)
		if best < 0 || rank[s.Status] > rank[signers[best].Status] {
			best = i
		}
	}
	s := signers[best]
	r := sigResult{protocol: protoSMIME, reason: s.Reason, candidates: s.Addresses, key: s.Serial, smime: &s}
	if len(s.Addresses) > 0 {
		r.signer = s.Addresses[0]
	}
	switch s.Status {
	case smime.Valid:
		r.status = sigValid
	case smime.Expired:
		r.status = sigExpired
	case smime.Revoked:
		r.status = sigRevoked
	case smime.Untrusted:
		r.status = sigUntrusted
	case smime.Weak:
		r.status, r.reason = sigBad, "weak-digest"
	default:
		r.status = sigBad
	}
	return r
}

// trustImported treats a signer whose certificate the admin imported into
// the keystore (a correspondent certificate) as trusted even without a
// chain to an anchor, as long as nothing else is wrong with it.
func (a *analyzer) trustImported(s *smime.SignerResult) {
	if s.Status != smime.Untrusted || s.Reason != "no-chain" || s.Cert == nil || a.keys == nil {
		return
	}
	sum := sha256.Sum256(s.Cert.Raw)
	if c, ok := a.keys.CertificateByHash(hex.EncodeToString(sum[:])); !ok || !c.Equal(s.Cert) {
		return
	}
	now := a.in.Now
	switch {
	case now.Before(s.Cert.NotBefore) || now.After(s.Cert.NotAfter):
		s.Status, s.Reason = smime.Expired, "expired"
	case a.keys.IsRevoked(s.Cert, now):
		s.Status, s.Reason = smime.Revoked, "revoked"
	default:
		s.Status, s.Reason = smime.Valid, ""
	}
}
