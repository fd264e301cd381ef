package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// The OpenPGP adapter: each function handles one kind of layer and
// returns a step.

// snapLookup finds signer keys in a keyring snapshot, including keys that
// are not usable now (so that the verdict can say expired or revoked).
type snapLookup struct{ s *keystore.Snapshot }

func (l snapLookup) ByKeyID(id uint64) []*pgpcrypto.Key {
	if l.s == nil {
		return nil
	}
	return l.s.OpenPGPByKeyID(id)
}

func (a *analyzer) lookup() openpgp.KeyLookup { return snapLookup{a.keys} }

func (a *analyzer) pgpLimits() openpgp.Limits {
	return openpgp.Limits{MaxDecompressed: a.e.pol.Limits.MaxDecompressedSize, Spool: a.e.spool}
}

// pgpDecrypt decrypts an OpenPGP message read from ct for the gateway.
// The plaintext is returned only after the integrity check and the
// signature check, spooled and held until the message is done; every
// decryption failure gives the same step, and so does ciphertext whose
// transfer encoding is damaged. A local failure (spool, read) is an
// error, so that the message is tempfailed.
func (a *analyzer) pgpDecrypt(ct io.Reader) (*openpgp.Plaintext, step, error) {
	var gw *pgpcrypto.KeyRing
	if a.keys != nil {
		gw = a.keys.GatewayDecryptionKeyRing()
	}
	pt, err := openpgp.Decrypt(ct, gw, a.lookup(), a.in.Now, a.pgpLimits())
	switch {
	case errors.Is(err, openpgp.ErrNotForUs):
		return nil, notForUsStep(OpenPGP), nil
	case errors.Is(err, openpgp.ErrDecrypt), errors.Is(err, openpgp.ErrNotEncrypted), errors.Is(err, mime.ErrTransferEncoding):
		return nil, failedStep(OpenPGP, true), nil
	case err != nil:
		return nil, step{}, fmt.Errorf("crypto: openpgp plaintext: %w", err)
	}
	a.hold(pt)
	st := step{enc: &verdict.Encryption{Status: verdict.Decrypted, Protocol: OpenPGP, Key: pt.DecryptedWith}, authenticated: true}
	if pt.Signature.Status != openpgp.StatusNone {
		s := pgpSig(pt.Signature)
		st.sig = &s
	}
	return pt, st, nil
}

// decryptPGPMIME decrypts RFC 3156 multipart/encrypted (or Exchange's
// rearrangement of it).
func (a *analyzer) decryptPGPMIME(l layer) (step, error) {
	if l.ciphertext == nil {
		return failedStep(OpenPGP, true), nil
	}
	pt, st, err := a.pgpDecrypt(l.ciphertext.Decoded())
	if err != nil || pt == nil {
		return st, err
	}
	st.next, err = a.parseInner(pt, pt.Size)
	return st, err
}

// decryptPGPInline decrypts a text/plain body that is one armored message.
func (a *analyzer) decryptPGPInline(e *mime.Entity, l layer) (step, error) {
	pt, st, err := a.pgpDecrypt(l.armorText())
	if err != nil || pt == nil {
		return st, err
	}
	st.next, err = a.textEntity(pt, pt.Size, e.Params["charset"])
	return st, err
}

// parseInner parses decrypted or signed content (size bytes in src, where
// it was spooled) as a MIME entity. Content with bare LF line ends is
// first copied with CRLF ones to a spool buffer.
func (a *analyzer) parseInner(src io.ReaderAt, size int64) (*mime.Entity, error) {
	bare, err := hasBareLF(io.NewSectionReader(src, 0, size))
	if err != nil {
		return nil, fmt.Errorf("crypto: decrypted content: %w", err)
	}
	if bare {
		buf := a.newBuffer()
		if _, err := io.Copy(buf, newCRLFReader(io.NewSectionReader(src, 0, size))); err != nil {
			return nil, fmt.Errorf("crypto: decrypted content: %w", err)
		}
		src, size = buf, buf.Size()
	}
	inner, err := mime.ParseAt(a.source(src, size), size, a.lim)
	if errors.Is(err, mime.ErrLimits) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: decrypted content: %w", err)
	}
	return inner, nil
}

// maxSignaturePart bounds the signature part of a multipart/signed read
// into memory (a signature is a few hundred bytes; certificates make a
// CMS one a few kilobytes).
const maxSignaturePart = 1 << 20

// verifyPGPMIME verifies RFC 3156 multipart/signed over the exact bytes of
// its first part, streamed through the hash.
func (a *analyzer) verifyPGPMIME(e *mime.Entity) step {
	if len(e.Parts) != 2 {
		return step{sig: malformedSig(OpenPGP)}
	}
	sig, err := decodedUpTo(e.Parts[1], maxSignaturePart)
	if err != nil || !pgpSignaturePart(e.Parts[1], sig) {
		// The signature part must be nothing but the signature: text
		// around an armored block would be shown, unsigned.
		return step{sig: malformedSig(OpenPGP)}
	}
	s := pgpSig(openpgp.VerifyDetached(newCRLFReader(e.Parts[0].Raw()), sig, a.lookup(), a.in.Now))
	if s.Status == verdict.SigNone {
		return step{sig: malformedSig(OpenPGP)}
	}
	return step{sig: &s, next: e.Parts[0]}
}

// pgpSignaturePart reports whether p is an application/pgp-signature part
// holding exactly one armored signature block (or binary signature data)
// and nothing else.
func pgpSignaturePart(p *mime.Entity, sig []byte) bool {
	if p.MediaType != "application/pgp-signature" || len(p.Header.Values("Content-Type")) != 1 {
		return false
	}
	t := bytes.TrimSpace(sig)
	if !bytes.HasPrefix(t, []byte("-----BEGIN PGP")) {
		return len(t) > 0 && t[0]&0x80 != 0 // binary OpenPGP packets
	}
	return bytes.HasPrefix(t, []byte("-----BEGIN PGP SIGNATURE-----")) &&
		bytes.HasSuffix(t, []byte(armorEndSig)) &&
		bytes.Count(t, []byte("-----BEGIN ")) == 1 && bytes.Count(t, []byte("-----END ")) == 1
}

// verifyPGPInline verifies a text/plain body that is one armored signed
// (not encrypted) message; its text can only be shown unwrapped.
func (a *analyzer) verifyPGPInline(e *mime.Entity, l layer) (step, error) {
	pt, err := openpgp.VerifyInline(l.armorText(), a.lookup(), a.in.Now, a.pgpLimits())
	if errors.Is(err, openpgp.ErrMalformed) || errors.Is(err, openpgp.ErrTooLarge) || errors.Is(err, mime.ErrTransferEncoding) {
		return step{sig: malformedSig(OpenPGP)}, nil
	}
	if err != nil {
		return step{}, err
	}
	a.hold(pt)
	s := pgpSig(pt.Signature)
	st := step{sig: &s, opaque: true}
	st.next, err = a.textEntity(pt, pt.Size, e.Params["charset"])
	return st, err
}

// verifyCleartext verifies a text/plain body that is one cleartext-signed
// block, read as a stream (the signed text spooled, see readCleartext).
// What is shown must be exactly what was signed: the armor headers of the
// signature block (Comment:, Version:, …) are not signed and are removed,
// and so are the outer Content-Type's format=flowed and delsp (they would
// reflow the signed lines); the charset is not signed either, so 8-bit
// text that is neither UTF-8 nor ASCII cannot be vouched for.
func (a *analyzer) verifyCleartext(e *mime.Entity, l layer) (step, error) {
	text := a.newBuffer()
	cb, err := readCleartext(l.armorText(), text)
	switch {
	case errors.Is(err, errClearFormat), errors.Is(err, mime.ErrTransferEncoding):
		return step{sig: malformedSig(OpenPGP)}, nil
	case err != nil:
		return step{}, fmt.Errorf("crypto: cleartext-signed text: %w", err)
	}
	sig, err := clearSignature(cb.sig)
	if err != nil {
		return step{sig: malformedSig(OpenPGP)}, nil
	}
	r := openpgp.VerifyDetached(text.Reader(), sig, a.lookup(), a.in.Now)
	if r.Status == openpgp.StatusBad && r.Reason == "malformed" {
		return step{sig: malformedSig(OpenPGP)}, nil
	}
	s := pgpSig(r)
	var k textKind
	if err := mime.Scan(text.Reader(), func(b []byte) bool { k.write(b); return true }); err != nil {
		return step{}, fmt.Errorf("crypto: cleartext-signed text: %w", err)
	}
	k.finish()
	declared := strings.ToLower(e.Params["charset"])
	charset, same := "us-ascii", asciiCompatible[declared]
	switch {
	case k.ascii:
	case k.utf8:
		charset, same = "utf-8", declared == "utf-8"
	default:
		charset, same = e.Params["charset"], true
		if s.Status == verdict.Valid {
			s.Status, s.Reason = verdict.SigPartial, verdict.Reason(s.Reason, "charset-not-signed")
		}
	}
	st := step{sig: &s}
	if st.next, err = a.textEntity(text, text.Size(), charset); err != nil {
		return step{}, err
	}
	if s.Status != verdict.Valid {
		return st, nil
	}
	// What is shown: the block as it came, but for the armor headers of
	// the signature and with CRLF line ends.
	shownSig := cleartextShown(cb.sig)
	textPart := func() io.Reader { return io.LimitReader(l.armorText(), cb.sigAt) }
	bare, err := hasBareLF(textPart())
	if err != nil {
		return step{}, fmt.Errorf("crypto: cleartext-signed text: %w", err)
	}
	if !same || bare || !bytes.Equal(shownSig, cb.sig) || e.Params["format"] != "" || e.Params["delsp"] != "" {
		shown := a.newBuffer()
		if _, err := io.Copy(shown, newCRLFReader(textPart())); err != nil {
			return step{}, fmt.Errorf("crypto: cleartext-signed text: %w", err)
		}
		if _, err := shown.Write(shownSig); err != nil {
			return step{}, err
		}
		if st.show, err = a.textEntity(shown, shown.Size(), charset); err != nil {
			return step{}, err
		}
	}
	return st, nil
}

// asciiCompatible are charsets that show ASCII text as ASCII (unlike
// UTF-7 or UTF-16, which would show signed ASCII as other text).
var asciiCompatible = map[string]bool{
	"": true, "us-ascii": true, "ascii": true, "utf-8": true, "utf8": true,
	"iso-8859-1": true, "iso-8859-2": true, "iso-8859-15": true, "windows-1252": true, "windows-1250": true,
}

// cleartextShown returns a cleartext-signed block (or its signature
// block) as it is shown: CRLF line ends, the armor header lines of its
// signature block removed.
func cleartextShown(block []byte) []byte {
	lines := bytes.SplitAfter(toCRLF(block), []byte("\n"))
	var out bytes.Buffer
	inSigHeader := false
	for _, ln := range lines {
		t := bytes.TrimRight(ln, "\r\n")
		switch {
		case bytes.Equal(t, []byte("-----BEGIN PGP SIGNATURE-----")):
			inSigHeader = true
		case inSigHeader && len(bytes.TrimSpace(t)) == 0:
			inSigHeader = false
		case inSigHeader && bytes.IndexByte(t, ':') > 0:
			continue // an armor header line: not signed
		case inSigHeader:
			inSigHeader = false
		}
		out.Write(ln)
	}
	return bytes.TrimRight(out.Bytes(), "\r\n")
}

func quoteParam(v string) string {
	if strings.ContainsAny(v, " ()<>@,;:\\\"/[]?=") || v == "" {
		return `"` + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `"`, `\"`) + `"`
	}
	return v
}

// pgpSig converts an OpenPGP verdict (before the From rule).
func pgpSig(r openpgp.SigResult) verdict.Signature {
	s := verdict.Signature{Protocol: OpenPGP, Reason: r.Reason, Candidates: r.SignerAddresses, Key: r.KeyFingerprint}
	if s.Key == "" {
		s.Key = r.KeyIDHex()
	}
	if len(r.SignerAddresses) > 0 {
		s.Signer = r.SignerAddresses[0]
	}
	switch r.Status {
	case openpgp.StatusValid:
		s.Status = verdict.Valid
	case openpgp.StatusBad:
		s.Status = verdict.Bad
	case openpgp.StatusUntrusted:
		s.Status = verdict.Untrusted
	case openpgp.StatusExpired:
		s.Status = verdict.Expired
	case openpgp.StatusRevoked:
		s.Status = verdict.Revoked
	default:
		s.Status = verdict.SigNone
	}
	return s
}

// toCRLF makes every line end CRLF (newCRLFReader as a function, for
// small data).
func toCRLF(b []byte) []byte {
	if bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b // already CRLF: no copy
	}
	lf := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
}
