package crypto

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
)

// The S/MIME adapter: each function handles one kind of layer and returns
// a step.

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

// decryptCMS decrypts application/pkcs7-mime enveloped or authEnveloped
// data. EnvelopedData (AES-CBC) has no integrity check: tampered
// ciphertext with valid padding decrypts to garbage, with bad padding it
// fails. A reply that told the two apart would be a padding oracle, so
// the step says unauthenticated and [actions] on_decrypt_error never
// refuses it.
func (a *analyzer) decryptCMS(e *mime.Entity, l layer) (step, error) {
	authenticated := l.kind == layerCMSAuthEnveloped
	der, err := io.ReadAll(e.Decoded())
	if err != nil {
		return failedStep(SMIME, authenticated), nil
	}
	content, info, err := smime.Decrypt(der, a.smimeIdentities())
	switch {
	case errors.Is(err, smime.ErrNotForUs):
		return notForUsStep(SMIME), nil
	case err != nil:
		return failedStep(SMIME, authenticated), nil
	}
	st := step{enc: &verdict.Encryption{Status: verdict.Decrypted, Protocol: SMIME, Key: info.Serial}, authenticated: authenticated}
	st.next, err = a.parseInner(bytes.NewReader(content), int64(len(content)))
	return st, err
}

func (a *analyzer) smimeOptions() smime.VerifyOptions {
	o := smime.VerifyOptions{Now: a.in.Now, AllowSHA1: a.e.pol.Inbound.AllowSHA1}
	if a.keys != nil {
		o.Roots = a.keys.TrustAnchors()
		o.CRLs = a.keys.CRLs()
	}
	return o
}

// verifyCMSDetached verifies multipart/signed with a pkcs7-signature over
// the exact bytes of its first part.
func (a *analyzer) verifyCMSDetached(e *mime.Entity) step {
	if len(e.Parts) != 2 {
		return step{sig: malformedSig(SMIME)}
	}
	der, err := decodedUpTo(e.Parts[1], maxSignaturePart)
	if mt := e.Parts[1].MediaType; err != nil || (mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature") ||
		len(e.Parts[1].Header.Values("Content-Type")) != 1 {
		// The signature part must be nothing but the signature.
		return step{sig: malformedSig(SMIME)}
	}
	signed, err := io.ReadAll(newCRLFReader(e.Parts[0].Raw()))
	if err != nil {
		return step{sig: malformedSig(SMIME)}
	}
	_, signers, err := smime.Verify(der, signed, a.smimeOptions())
	if err != nil {
		return step{sig: malformedSig(SMIME)}
	}
	s := a.smimeSig(signers)
	if s.Reason == "digest-mismatch" {
		// Some signers hash the entity with LF line ends instead of the
		// canonical CRLF (NSS's own test messages do). The content is the
		// same either way, so that form is accepted too.
		if _, lf, err := smime.Verify(der, bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), a.smimeOptions()); err == nil {
			if alt := a.smimeSig(lf); alt.Reason != "digest-mismatch" {
				s = alt
			}
		}
	}
	return step{sig: &s, next: e.Parts[0]}
}

// verifyCMSOpaque verifies opaque signed-data; its content can only be
// shown unwrapped.
func (a *analyzer) verifyCMSOpaque(e *mime.Entity) step {
	der, err := io.ReadAll(e.Decoded())
	if err != nil {
		return step{sig: malformedSig(SMIME)}
	}
	content, signers, err := smime.Verify(der, nil, a.smimeOptions())
	if err != nil {
		return step{sig: malformedSig(SMIME)}
	}
	s := a.smimeSig(signers)
	inner, err := a.parseInner(bytes.NewReader(content), int64(len(content)))
	if err != nil {
		return step{sig: malformedSig(SMIME)}
	}
	return step{sig: &s, next: inner, opaque: true}
}

// smimeSig picks the verdict to show among the signerInfos, by the one
// ranking of verdicts. Zero signerInfos is unsigned, never valid.
func (a *analyzer) smimeSig(signers []smime.SignerResult) verdict.Signature {
	if len(signers) == 0 {
		return verdict.Signature{Status: verdict.SigNone, Protocol: SMIME, Reason: "no-signerinfo"}
	}
	var best verdict.Signature
	for i := range signers {
		s := &signers[i]
		a.trustImported(s)
		v := smimeVerdict(*s)
		if i == 0 || v.Status.Rank() > best.Status.Rank() {
			best = v
		}
	}
	return best
}

// smimeVerdict converts one signerInfo's result (before the From rule).
func smimeVerdict(s smime.SignerResult) verdict.Signature {
	v := verdict.Signature{Protocol: SMIME, Reason: s.Reason, Candidates: s.Addresses, Key: s.Serial,
		SMIME: &verdict.SMIMESigner{Serial: s.Serial, Issuer: s.Issuer}}
	if len(s.Addresses) > 0 {
		v.Signer = s.Addresses[0]
	}
	switch s.Status {
	case smime.Valid:
		v.Status = verdict.Valid
	case smime.Expired:
		v.Status = verdict.Expired
	case smime.Revoked:
		v.Status = verdict.Revoked
	case smime.Untrusted:
		v.Status = verdict.Untrusted
	case smime.Weak:
		v.Status, v.Reason = verdict.Bad, "weak-digest"
	default:
		v.Status = verdict.Bad
	}
	return v
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
