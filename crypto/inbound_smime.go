package crypto

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
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
// data, read from the part's decoded body as a stream into a spool
// buffer. EnvelopedData (AES-CBC) has no integrity check: tampered
// ciphertext with valid padding decrypts to garbage, with bad padding it
// fails. A reply that told the two apart would be a padding oracle, so
// the step says unauthenticated and [actions] on_decrypt_error never
// refuses it. AuthEnvelopedData's content is released only once its GCM
// tag was checked.
func (a *analyzer) decryptCMS(e *mime.Entity, l layer) (step, error) {
	authenticated := l.kind == layerCMSAuthEnveloped
	content, info, err := smime.DecryptReader(e.Decoded, a.smimeIdentities(), a.e.spool)
	switch {
	case errors.Is(err, smime.ErrNotForUs):
		return notForUsStep(SMIME), nil
	case errors.Is(err, smime.ErrDecrypt), errors.Is(err, mime.ErrTransferEncoding):
		return failedStep(SMIME, authenticated), nil
	case err != nil:
		return step{}, fmt.Errorf("crypto: smime plaintext: %w", err)
	}
	a.hold(content)
	st := step{enc: &verdict.Encryption{Status: verdict.Decrypted, Protocol: SMIME, Key: info.Serial}, authenticated: authenticated}
	st.next, err = a.parseInner(content, content.Size())
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

// cmsMalformed tells a signature that cannot be read (the message's
// fault) from a failure to read the bytes (a local one).
func cmsMalformed(err error) bool {
	return errors.Is(err, smime.ErrMalformed) || errors.Is(err, smime.ErrNoContent) || errors.Is(err, mime.ErrTransferEncoding)
}

// verifyCMSDetached verifies multipart/signed with a pkcs7-signature over
// the exact bytes of its first part, streamed through the digest.
func (a *analyzer) verifyCMSDetached(e *mime.Entity) (step, error) {
	if len(e.Parts) != 2 {
		return step{sig: malformedSig(SMIME)}, nil
	}
	der, err := decodedUpTo(e.Parts[1], maxSignaturePart)
	if mt := e.Parts[1].MediaType; err != nil || (mt != "application/pkcs7-signature" && mt != "application/x-pkcs7-signature") ||
		len(e.Parts[1].Header.Values("Content-Type")) != 1 {
		// The signature part must be nothing but the signature.
		return step{sig: malformedSig(SMIME)}, nil
	}
	signed := func() io.Reader { return newCRLFReader(e.Parts[0].Raw()) }
	signers, err := smime.VerifyDetached(der, signed, a.smimeOptions())
	switch {
	case cmsMalformed(err):
		return step{sig: malformedSig(SMIME)}, nil
	case err != nil:
		return step{}, fmt.Errorf("crypto: smime signature: %w", err)
	}
	s := a.smimeSig(signers)
	if s.Reason == "digest-mismatch" {
		// Some signers hash the entity with LF line ends instead of the
		// canonical CRLF (NSS's own test messages do). The content is the
		// same either way, so that form is accepted too.
		lf := func() io.Reader { return newLFReader(signed()) }
		if signers, err := smime.VerifyDetached(der, lf, a.smimeOptions()); err == nil {
			if alt := a.smimeSig(signers); alt.Reason != "digest-mismatch" {
				s = alt
			}
		}
	}
	return step{sig: &s, next: e.Parts[0]}, nil
}

// verifyCMSOpaque verifies opaque signed-data, read from the part's
// decoded body as a stream; its content, spooled on the way, can only be
// shown unwrapped.
func (a *analyzer) verifyCMSOpaque(e *mime.Entity) (step, error) {
	content, signers, err := smime.VerifyOpaque(e.Decoded(), a.e.spool, a.smimeOptions())
	switch {
	case cmsMalformed(err):
		return step{sig: malformedSig(SMIME)}, nil
	case err != nil:
		return step{}, fmt.Errorf("crypto: smime signature: %w", err)
	}
	a.hold(content)
	s := a.smimeSig(signers)
	inner, err := a.parseInner(content, content.Size())
	switch {
	case errors.Is(err, mime.ErrLimits):
		return step{sig: malformedSig(SMIME)}, nil
	case err != nil:
		return step{}, err
	}
	return step{sig: &s, next: inner, opaque: true}, nil
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
