package crypto

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/keystore"
)

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
	return openpgp.Limits{MaxDecompressed: int64(a.e.cfg.Limits.MaxDecompressedSize), Spool: a.e.spool}
}

// pgpDecrypt decrypts an OpenPGP message for the gateway. On a decryption
// failure it records the uniform verdict and returns nil; a local failure
// (spool, read) is an error, so that the message is tempfailed.
func (a *analyzer) pgpDecrypt(ct []byte, res *inboundResult) ([]byte, error) {
	res.enc.protocol = protoOpenPGP
	var gw *pgpcrypto.KeyRing
	if a.keys != nil {
		gw = a.keys.GatewayDecryptionKeyRing()
	}
	pt, err := openpgp.Decrypt(bytes.NewReader(ct), gw, a.lookup(), a.in.Now, a.pgpLimits())
	switch {
	case errors.Is(err, openpgp.ErrNotForUs):
		res.enc.status, res.enc.reason = encFailed, "not-for-gateway"
		return nil, nil
	case errors.Is(err, openpgp.ErrDecrypt), errors.Is(err, openpgp.ErrNotEncrypted):
		// Every decryption failure looks the same from outside.
		res.enc.status, res.enc.reason, res.failure = encFailed, "decrypt-failed", true
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("crypto: openpgp plaintext: %w", err)
	}
	defer pt.Close()
	data, err := pt.Bytes()
	if err != nil {
		return nil, fmt.Errorf("crypto: openpgp plaintext: %w", err)
	}
	res.enc = encResult{status: encDecrypted, protocol: protoOpenPGP, key: pt.DecryptedWith}
	if pt.Signature.Status != openpgp.StatusNone {
		res.sig = pgpSig(pt.Signature)
	}
	return data, nil
}

// decryptPGPMIME decrypts an RFC 3156 multipart/encrypted message.
func (a *analyzer) decryptPGPMIME(root *mime.Entity, res *inboundResult) (*mime.Entity, error) {
	res.enc.protocol = protoOpenPGP
	if len(root.Parts) != 2 {
		res.enc.status, res.enc.reason, res.failure = encFailed, "decrypt-failed", true
		return nil, nil
	}
	ct, err := root.Parts[1].Decoded()
	if err != nil {
		res.enc.status, res.enc.reason, res.failure = encFailed, "decrypt-failed", true
		return nil, nil
	}
	data, err := a.pgpDecrypt(ct, res)
	if data == nil || err != nil {
		return nil, err
	}
	return a.parseInner(data)
}

// parseInner parses decrypted content as a MIME entity.
func (a *analyzer) parseInner(data []byte) (*mime.Entity, error) {
	inner, err := mime.Parse(toCRLF(data), a.lim)
	if errors.Is(err, mime.ErrLimits) {
		return nil, err
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: decrypted content: %w", err)
	}
	return inner, nil
}

// verifyPGPMIME verifies an RFC 3156 multipart/signed entity over the
// exact bytes of its first part.
func (a *analyzer) verifyPGPMIME(e *mime.Entity, res *inboundResult) {
	if len(e.Parts) != 2 {
		res.sig = sigResult{status: sigBad, protocol: protoOpenPGP, reason: "malformed"}
		return
	}
	sig, err := e.Parts[1].Decoded()
	if err != nil || !pgpSignaturePart(e.Parts[1], sig) {
		// The signature part must be nothing but the signature: text
		// around an armored block would be shown, unsigned.
		res.sig = sigResult{status: sigBad, protocol: protoOpenPGP, reason: "malformed"}
		return
	}
	r := openpgp.VerifyDetached(bytes.NewReader(toCRLF(e.Parts[0].Raw)), sig, a.lookup(), a.in.Now)
	res.sig = pgpSig(r)
	if res.sig.status == sigNone {
		res.sig = sigResult{status: sigBad, protocol: protoOpenPGP, reason: "malformed"}
	}
	a.signedContent(e, res)
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
		bytes.HasSuffix(t, []byte("-----END PGP SIGNATURE-----")) &&
		bytes.Count(t, []byte("-----BEGIN ")) == 1 && bytes.Count(t, []byte("-----END ")) == 1
}

// inlinePGP handles a text/plain body that is one armored message or one
// cleartext-signed block. Armor with other text around it is never
// spliced: it is reported partial.
func (a *analyzer) inlinePGP(e *mime.Entity, res *inboundResult) {
	data, err := e.Decoded()
	if err != nil {
		return
	}
	t := bytes.TrimSpace(data)
	const (
		beginMsg = "-----BEGIN PGP MESSAGE-----"
		endMsg   = "-----END PGP MESSAGE-----"
		beginSig = "-----BEGIN PGP SIGNED MESSAGE-----"
		endSig   = "-----END PGP SIGNATURE-----"
	)
	// single: the text is exactly one armored block (a cleartext-signed
	// block holds its signature block too).
	single := func(begin, end string) bool {
		blocks := 1
		if begin == beginSig {
			blocks = 2
		}
		return bytes.HasPrefix(t, []byte(begin)) && bytes.HasSuffix(t, []byte(end)) &&
			bytes.Count(t, []byte(begin)) == 1 && bytes.Count(t, []byte("-----BEGIN PGP")) == blocks &&
			bytes.Count(t, []byte("-----END PGP")) == 1
	}
	charset := e.Params["charset"]
	switch {
	case single(beginMsg, endMsg):
		info, err := openpgp.Inspect(t)
		if err == nil && info.Kind != openpgp.KindEncrypted {
			pt, err := openpgp.VerifyInline(bytes.NewReader(t), a.lookup(), a.in.Now, a.pgpLimits())
			if errors.Is(err, openpgp.ErrMalformed) || errors.Is(err, openpgp.ErrTooLarge) {
				res.sig = sigResult{status: sigBad, protocol: protoOpenPGP, reason: "malformed"}
				return
			}
			if err != nil {
				a.fail(err)
				return
			}
			defer pt.Close()
			res.sig = pgpSig(pt.Signature)
			if r, err := pt.Open(); err == nil {
				text, _ := io.ReadAll(r)
				r.Close()
				res.content = textEntity(text, charset)
			}
			return
		}
		text, err := a.pgpDecrypt(t, res)
		if err != nil {
			a.fail(err)
			return
		}
		if text == nil {
			return
		}
		res.content = textEntity(text, charset)
	case single(beginSig, endSig):
		text, r, err := openpgp.VerifyCleartext(t, a.lookup(), a.in.Now)
		if err != nil {
			res.sig = sigResult{status: sigBad, protocol: protoOpenPGP, reason: "malformed"}
			return
		}
		res.sig = pgpSig(r)
		if a.e.cfg.Inbound.UnwrapSigned {
			res.content = textEntity(text, charset)
		}
	default:
		embeddedArmor(data, res)
	}
}

// armorInHTML reports armor inside a text/html root as partial: it is
// never decrypted or verified.
func (a *analyzer) armorInHTML(e *mime.Entity, res *inboundResult) {
	if data, err := e.Decoded(); err == nil {
		embeddedArmor(data, res)
	}
}

// embeddedArmor marks armored blocks that are not the whole text partial.
func embeddedArmor(data []byte, res *inboundResult) {
	if bytes.Contains(data, []byte("-----BEGIN PGP MESSAGE-----")) {
		res.enc = encResult{status: encPartial, protocol: protoOpenPGP, reason: "embedded-armor"}
	}
	if bytes.Contains(data, []byte("-----BEGIN PGP SIGNED MESSAGE-----")) || bytes.Contains(data, []byte("-----BEGIN PGP SIGNATURE-----")) {
		res.sig = sigResult{status: sigPartial, protocol: protoOpenPGP, reason: "embedded-armor"}
	}
}

// textEntity builds a text/plain entity holding text, quoted-printable
// when it is not plain ASCII.
func textEntity(text []byte, charset string) *mime.Entity {
	switch strings.ToLower(charset) {
	case "", "us-ascii", "ascii":
		// Armor is ASCII, so clients label the part us-ascii whatever the
		// plaintext is: 8-bit text that is valid UTF-8 is UTF-8.
		if charset == "" || !isASCII(text) && utf8.Valid(text) {
			charset = "utf-8"
		}
	}
	body, cte := mime.EncodeTextBody(toCRLF(text))
	h := mime.Header{
		{Name: "Content-Type", Value: "text/plain; charset=" + quoteParam(charset)},
		{Name: "Content-Transfer-Encoding", Value: cte},
	}
	return &mime.Entity{Header: h, MediaType: "text/plain", Params: map[string]string{"charset": charset}, Body: body}
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

func quoteParam(v string) string {
	if strings.ContainsAny(v, " ()<>@,;:\\\"/[]?=") || v == "" {
		return `"` + strings.ReplaceAll(strings.ReplaceAll(v, `\`, `\\`), `"`, `\"`) + `"`
	}
	return v
}

// pgpSig converts an OpenPGP verdict (before the From rule).
func pgpSig(r openpgp.SigResult) sigResult {
	s := sigResult{protocol: protoOpenPGP, reason: r.Reason, candidates: r.SignerAddresses}
	s.key = r.KeyFingerprint
	if s.key == "" {
		s.key = r.KeyIDHex()
	}
	if len(r.SignerAddresses) > 0 {
		s.signer = r.SignerAddresses[0]
	}
	switch r.Status {
	case openpgp.StatusValid:
		s.status = sigValid
	case openpgp.StatusBad:
		s.status = sigBad
	case openpgp.StatusUntrusted:
		s.status = sigUntrusted
	case openpgp.StatusExpired:
		s.status = sigExpired
	case openpgp.StatusRevoked:
		s.status = sigRevoked
	default:
		s.status = sigNone
	}
	return s
}

// toCRLF makes every line end CRLF.
func toCRLF(b []byte) []byte {
	if bytes.Count(b, []byte("\n")) == bytes.Count(b, []byte("\r\n")) {
		return b // already CRLF: no copy (plaintext can be large)
	}
	lf := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	return bytes.ReplaceAll(lf, []byte("\n"), []byte("\r\n"))
}
