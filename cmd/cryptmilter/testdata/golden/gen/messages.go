package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"mime/quotedprintable"
	"os"
	"path/filepath"
	"strings"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// Texts the messages carry.
const (
	utf8Text   = "Grüße aus Köln: ½ € ✓ — naïve façade"
	latin1Text = "Grüße aus Köln, ½ Stück für 3 £"
	secretSubj = "Secret subject ✓"
)

// msgs collects the messages by case directory (relative to golden/).
type msgs struct {
	g   *gen
	out map[string][]byte
	err error
}

// must records the first error of a tool run and returns its output.
func (m *msgs) must(out []byte, err error) []byte {
	if err != nil && m.err == nil {
		m.err = err
	}
	return out
}

// header is the outer header of an inbound message (CRLF).
func header(id, from, subject string, extra ...string) string {
	h := "From: " + from + "\r\nTo: RT <rt@example.org>\r\nSubject: " + subject + "\r\n" +
		"Date: Mon, 01 Sep 2025 10:00:00 +0000\r\nMessage-ID: <" + id + "@example.net>\r\nMIME-Version: 1.0\r\n"
	for _, e := range extra {
		h += e + "\r\n"
	}
	return h
}

func crlf(s string) string {
	s = strings.ReplaceAll(s, "\r\n", "\n")
	return strings.ReplaceAll(s, "\n", "\r\n")
}

// trimCRLF is s with CRLF line ends and no final line end.
func trimCRLF(s string) string { return crlf(strings.TrimRight(s, "\r\n")) }

// textPart is a text/plain entity (8bit UTF-8).
func textPart(text string) string {
	return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n"
}

// qpPart is a text/plain entity, quoted-printable.
func qpPart(text string) string {
	return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp(text) + "\r\n"
}

func qp(s string) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return crlf(b.String())
}

func b64lines(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s + "\r\n")
	return b.String()
}

func armorMsg(bin []byte) string {
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		panic(err)
	}
	w.Write(bin)
	w.Close()
	return b.String() + "\n"
}

// pgpEncrypted is an RFC 3156 multipart/encrypted entity (header and body).
func pgpEncrypted(armored string) string {
	return "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\n" +
		"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
		"--enc-b\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n" +
		"--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n" +
		trimCRLF(armored) + "\r\n--enc-b--\r\n"
}

// pgpSigned is an RFC 3156 multipart/signed entity over part (CRLF),
// with the given boundary.
func pgpSigned(part, armoredSig, boundary string) string {
	return "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"" + boundary + "\"\r\n\r\n" +
		"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n" +
		"--" + boundary + "\r\n" + part + "\r\n" +
		"--" + boundary + "\r\nContent-Type: application/pgp-signature; name=\"OpenPGP_signature.asc\"\r\nContent-Disposition: attachment; filename=\"OpenPGP_signature.asc\"\r\n\r\n" +
		trimCRLF(armoredSig) + "\r\n--" + boundary + "--\r\n"
}

// pkcs7 is an application/pkcs7-mime entity holding der.
func pkcs7(smimeType string, der []byte) string {
	return "Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=\"smime.p7m\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n" + b64lines(der)
}

// smimeSigned is a multipart/signed entity over content (CRLF) with a DER
// signature.
func smimeSigned(content string, sig []byte, boundary string) string {
	return "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"" + boundary + "\"\r\n\r\n" +
		"This is an S/MIME signed message\r\n--" + boundary + "\r\n" + content + "\r\n--" + boundary + "\r\n" +
		"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" +
		b64lines(sig) + "--" + boundary + "--\r\n"
}

// OpenPGP operations as the senders' client.

func (m *msgs) enc(pt []byte, to ...string) string {
	args := []string{"--armor", "--encrypt"}
	for _, t := range to {
		args = append(args, "--recipient", m.g.fpr[t])
	}
	return string(m.must(m.g.gpgAt(signTime, pt, args...)))
}

func (m *msgs) encBinary(pt []byte, to string) []byte {
	return m.must(m.g.gpgAt(signTime, pt, "--encrypt", "--recipient", m.g.fpr[to]))
}

func (m *msgs) signEnc(pt []byte, from, to string) string {
	return string(m.must(m.g.gpgAt(signTime, pt, "--armor", "--sign", "--digest-algo", "SHA256", "--local-user", m.g.fpr[from],
		"--encrypt", "--recipient", m.g.fpr[to])))
}

func (m *msgs) detachAt(t string, part []byte, from string) string {
	return string(m.must(m.g.gpgAt(t, part, "--armor", "--detach-sign", "--digest-algo", "SHA256", "--local-user", m.g.fpr[from])))
}

func (m *msgs) detach(part []byte, from string) string { return m.detachAt(signTime, part, from) }

func (m *msgs) clearsign(text []byte, from string, extra ...string) string {
	args := append([]string{"--clearsign", "--digest-algo", "SHA256", "--local-user", m.g.fpr[from]}, extra...)
	return crlf(string(m.must(m.g.gpgAt(signTime, text, args...))))
}

// S/MIME operations as the senders' client (openssl cms).

func (m *msgs) cmsEnc(content []byte, to, cipher string) []byte {
	return m.must(m.g.ossl(content, "cms", "-encrypt", "-binary", "-outform", "DER", "-"+cipher, "-recip", m.g.crt[to]))
}

func (m *msgs) cmsSign(content []byte, signer string, opaque bool) []byte {
	args := []string{"cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER", "-signer", m.g.crt[signer], "-inkey", m.g.key[signer]}
	if opaque {
		args = append(args, "-nodetach")
	}
	return m.must(m.g.ossl(content, args...))
}

func latin1(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r))
	}
	return b
}

// messages makes every message that holds cryptography and writes it to
// its case directory as message.eml.
func (g *gen) messages() error {
	m := &msgs{g: g, out: map[string][]byte{}}
	text := []byte(textPart(utf8Text))
	part0 := qpPart(utf8Text)
	alice := func(id, subject string) string { return header(id, "Alice <alice@example.net>", subject) }
	carol := func(id, subject string) string { return header(id, "Carol <carol@example.com>", subject) }
	put := func(dir, msg string) { m.out[dir] = []byte(msg) }

	// Signers that are expired or revoked at the clock signed while their
	// keys were good; then the revoked key is revoked and the public keys
	// imported.
	put("in/26-pgp-expired", header("26", "Expired <expired@example.net>", "Signed")+pgpSigned(part0, m.detachAt(oldSignTime, []byte(part0), "expired"), "sig-b"))
	put("in/28-pgp-revoked", header("28", "Revoked <revoked@example.net>", "Signed")+pgpSigned(part0, m.detachAt(oldSignTime, []byte(part0), "revoked"), "sig-b"))
	if m.err != nil {
		return m.err
	}
	if err := g.importPGPPublic(); err != nil {
		return err
	}

	// Encryption to the gateway.
	put("in/03-pgp-encrypted", alice("03", "Encrypted")+pgpEncrypted(m.enc(text, "rt")))
	put("in/04-pgp-signed-encrypted", alice("04", "Signed and encrypted")+pgpEncrypted(m.signEnc(text, "alice", "rt")))
	protected := "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
		"Subject: " + secretSubj + "\r\nFrom: Alice <alice@example.net>\r\nTo: RT <rt@example.org>\r\n\r\n" + qp(utf8Text) + "\r\n"
	put("in/05-pgp-protected-headers", alice("05", "...")+pgpEncrypted(m.enc([]byte(pgpSigned(protected, m.detach([]byte(protected), "alice"), "sig-b")), "rt")))
	spoofed := strings.Replace(protected, "From: Alice <alice@example.net>", "From: Boss <boss@example.org>", 1)
	put("in/06-pgp-inner-from-differs", alice("06", "...")+pgpEncrypted(m.enc([]byte(pgpSigned(spoofed, m.detach([]byte(spoofed), "alice"), "sig-b")), "rt")))
	put("in/07-pgp-inline", alice("07", "Inline")+"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n"+
		trimCRLF(m.signEnc([]byte(utf8Text+"\n"), "alice", "rt"))+"\r\n")
	put("in/08-pgp-exchange", alice("08", "Exchange")+"Content-Type: multipart/mixed; boundary=\"ex-b\"\r\n\r\n"+
		"--ex-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\r\n"+
		"--ex-b\r\nContent-Type: application/pgp-encrypted; name=\"PGPMIME Versions Identification\"\r\nContent-Disposition: attachment; filename=\"PGPMIME Versions Identification\"\r\n\r\nVersion: 1\r\n\r\n"+
		"--ex-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Disposition: attachment; filename=\"encrypted.asc\"\r\n\r\n"+
		trimCRLF(m.signEnc(text, "alice", "rt"))+"\r\n--ex-b--\r\n")
	bin := m.encBinary(text, "rt")
	tampered := bytes.Clone(bin)
	if len(tampered) > 30 {
		tampered[len(tampered)-30] ^= 0x40
	}
	failed := alice("09", "Failure") + pgpEncrypted(armorMsg(tampered))
	put("in/09-pgp-decrypt-failed", failed)
	for _, d := range []string{"in/53-decrypt-error-reject", "in/54-decrypt-error-tempfail", "in/55-decrypt-error-quarantine", "in/58-decrypt-error-inbound-alias"} {
		put(d, failed)
	}
	put("in/10-pgp-not-for-gateway", alice("10", "For Alice's own key")+pgpEncrypted(m.enc(text, "alice")))
	put("in/11-pgp-inner-not-for-gateway", alice("11", "Nested")+pgpEncrypted(m.enc([]byte(pgpEncrypted(m.enc(text, "alice"))), "rt")))

	// S/MIME encryption to the gateway.
	scontent := []byte(textPart(utf8Text))
	put("in/12-smime-enveloped", carol("12", "Enveloped")+pkcs7("enveloped-data", m.cmsEnc(scontent, "rt", "aes-256-cbc")))
	put("in/13-smime-authenveloped", carol("13", "AuthEnveloped")+pkcs7("authEnveloped-data", m.cmsEnc(scontent, "rt", "aes-256-gcm")))
	signedEnt := smimeSigned(string(scontent), m.cmsSign(scontent, "carol", false), "smime-b")
	put("in/14-smime-signed-enveloped", carol("14", "Signed and enveloped")+pkcs7("enveloped-data", m.cmsEnc([]byte(signedEnt), "rt", "aes-256-cbc")))
	short := []byte("Content-Type: text/plain\r\n\r\n0123456789abcdef0123456789abcdef0123456789\r\n")
	cbc := bytes.Clone(m.cmsEnc(short, "rt", "aes-128-cbc"))
	if len(cbc) > 17 {
		cbc[len(cbc)-17] ^= byte(16 - len(short)%16) // the padding length byte becomes 0
	}
	put("in/15-smime-decrypt-failed", carol("15", "Failure")+pkcs7("enveloped-data", cbc))
	put("in/56-decrypt-error-reject-cbc", carol("56", "Failure")+pkcs7("enveloped-data", cbc))
	gcm := bytes.Clone(m.cmsEnc(scontent, "rt", "aes-256-gcm"))
	gcm[len(gcm)-1] ^= 0x01 // the GCM tag
	put("in/57-decrypt-error-reject-gcm", carol("57", "Failure")+pkcs7("authEnveloped-data", gcm))
	put("in/16-smime-not-for-gateway", carol("16", "For Carol's own key")+pkcs7("enveloped-data", m.cmsEnc(scontent, "carol", "aes-256-cbc")))
	opaqueEnt := pkcs7("signed-data", m.cmsSign(scontent, "carol", true))
	put("in/60-smime-opaque-in-enveloped", carol("60", "Outlook's form")+pkcs7("enveloped-data", m.cmsEnc([]byte(opaqueEnt), "rt", "aes-256-cbc")))

	// Encrypted or signed content below the root.
	fwd := "From: Alice <alice@example.net>\r\nTo: RT <rt@example.org>\r\nSubject: Forwarded\r\nMIME-Version: 1.0\r\n" + pgpEncrypted(m.enc(text, "rt"))
	put("in/17-partial-nested-part", alice("17", "Forwarding an encrypted message")+"Content-Type: multipart/mixed; boundary=\"mix-b\"\r\n\r\n"+
		"--mix-b\r\n"+textPart("See the attached message.")+"--mix-b\r\nContent-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n"+
		fwd+"\r\n--mix-b--\r\n")
	put("in/18-partial-embedded-armor", alice("18", "Armor in the text")+"Content-Type: text/plain; charset=us-ascii\r\n\r\n"+
		"Here is the note, encrypted:\r\n\r\n"+trimCRLF(m.enc([]byte("the note\n"), "rt"))+"\r\n\r\nThanks, Alice\r\n")
	signedPart := pgpSigned(part0, m.detach([]byte(part0), "alice"), "inner-sig-b")
	put("in/33-partial-nested-signed", alice("33", "Signed part below the root")+"Content-Type: multipart/mixed; boundary=\"mix-b\"\r\n\r\n"+
		"--mix-b\r\n"+textPart("A signed part follows.")+"--mix-b\r\n"+signedPart+"\r\n--mix-b--\r\n")

	// Signatures at the root.
	aliceSig := m.detach([]byte(part0), "alice")
	put("in/19-pgp-signed", alice("19", "Signed")+pgpSigned(part0, aliceSig, "sig-b"))
	put("in/48-unwrap-signed", alice("48", "Signed")+pgpSigned(part0, aliceSig, "sig-b"))
	carolSig := m.cmsSign(scontent, "carol", false)
	put("in/20-smime-signed", carol("20", "Signed")+smimeSigned(string(scontent), carolSig, "smime-b"))
	put("in/21-smime-opaque", carol("21", "Opaque signed")+pkcs7("signed-data", m.cmsSign(scontent, "carol", true)))
	put("in/22-mismatch-signer-not-from", header("22", "Bob <bob@example.net>", "Not from Alice")+pgpSigned(part0, aliceSig, "sig-b"))
	put("in/23-mismatch-from-count", header("23", "Alice <alice@example.net>, Bob <bob@example.net>", "Two authors")+pgpSigned(part0, aliceSig, "sig-b"))
	put("in/24-pgp-untrusted", header("24", "Mallory <mallory@example.net>", "Signed")+pgpSigned(part0, m.detach([]byte(part0), "mallory"), "sig-b"))
	put("in/25-smime-untrusted", header("25", "Eve <eve@example.com>", "Signed")+smimeSigned(string(scontent), m.cmsSign(scontent, "eve", false), "smime-b"))
	put("in/27-smime-expired", header("27", "Frank <frank@example.com>", "Signed")+smimeSigned(string(scontent), m.cmsSign(scontent, "frank", false), "smime-b"))
	put("in/29-smime-revoked", header("29", "Grace <grace@example.com>", "Signed")+smimeSigned(string(scontent), m.cmsSign(scontent, "grace", false), "smime-b"))
	put("in/30-pgp-bad", alice("30", "Tampered")+pgpSigned(strings.Replace(part0, "K", "C", 1), aliceSig, "sig-b"))
	put("in/31-smime-bad", carol("31", "Tampered")+smimeSigned(strings.Replace(string(scontent), "Köln", "Bonn", 1), carolSig, "smime-b"))
	put("in/32-partial-charset-not-signed", alice("32", "Clear")+"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"+
		m.clearsign(latin1(latin1Text+"\n"), "alice"))
	// The same signature under a boundary given twice, plainly and as an
	// RFC 2231 continuation: Go and MIME-tools take the continuation,
	// Python's email the plain value, so readers disagree on the parts.
	ambiguous := strings.Replace(pgpSigned(part0, aliceSig, "sig-b"), "boundary=\"sig-b\"", "boundary=\"other\"; boundary*0=\"sig-b\"", 1)
	put("in/34-ambiguous-mime", alice("34", "Ambiguous")+ambiguous)

	// Nested layers (RFC 9787's Cryptographic Envelope).
	encEntity := pgpEncrypted(m.enc(text, "rt"))
	put("in/35-covers-ciphertext", alice("35", "Relayed")+pgpSigned(encEntity, m.detach([]byte(encEntity), "mallory"), "sig-b"))
	put("in/36-signed-ciphertext-for-gateway", alice("36", "Encrypt, then sign")+pgpSigned(encEntity, m.detach([]byte(encEntity), "alice"), "sig-b"))
	innerEnc := pgpEncrypted(m.enc([]byte(signedPart), "rt"))
	put("in/37-transport-signature-over-encrypted", alice("37", "Relayed")+pgpSigned(innerEnc, m.detach([]byte(innerEnc), "mallory"), "sig-b"))
	put("in/38-pgp-triple-wrap", alice("38", "Triple wrap")+pgpSigned(innerEnc, m.detach([]byte(innerEnc), "alice"), "sig-b"))
	envEntity := pkcs7("enveloped-data", m.cmsEnc([]byte(signedEnt), "rt", "aes-256-cbc"))
	put("in/39-smime-triple-wrap", carol("39", "Triple wrap")+smimeSigned(envEntity, m.cmsSign([]byte(envEntity), "carol", false), "outer-b"))

	// Headers a signature covers, or not.
	hpPart := "Content-Type: text/plain; charset=utf-8; hp=\"clear\"\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
		"Subject: Signed subject\r\nFrom: Alice <alice@example.net>\r\nTo: RT <rt@example.org>\r\n\r\n" + qp(utf8Text) + "\r\n"
	hpSigned := pgpSigned(hpPart, m.detach([]byte(hpPart), "alice"), "sig-b")
	put("in/40-headers-protected", alice("40", "Signed subject")+hpSigned)
	put("in/41-headers-replaced", alice("41", "URGENT: new bank account")+hpSigned)

	// Cleartext and inline signatures.
	plainClear := m.clearsign([]byte("Pay invoice 42 only.\nThen stop.\n"), "alice")
	put("in/42-cleartext-signed", alice("42", "Clear")+"Content-Type: text/plain; charset=us-ascii\r\n\r\n"+plainClear)
	put("in/43-cleartext-armor-header", alice("43", "Clear")+"Content-Type: text/plain; charset=us-ascii\r\n\r\n"+
		m.clearsign([]byte("Pay invoice 42 only.\n"), "alice", "--comment", "Also pay invoice 666"))
	put("in/44-cleartext-flowed", alice("44", "Clear")+"Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes\r\n\r\n"+
		strings.Replace(plainClear, "Pay invoice 42 only.\r\n", "Pay invoice 42 only. \r\n", 1))
	put("in/45-pgp-inline-signed", alice("45", "Inline signed")+"Content-Type: text/plain; charset=utf-8\r\n\r\n"+
		trimCRLF(string(m.must(g.gpgAt(signTime, []byte(utf8Text+"\n"), "--armor", "--sign", "--local-user", g.fpr["alice"]))))+"\r\n")

	// Options.
	put("in/46-rt-headers", alice("46", "Signed and encrypted")+pgpEncrypted(m.signEnc(text, "alice", "rt")))
	put("in/47-keep-original", alice("47", "Encrypted")+pgpEncrypted(m.enc(text, "rt")))
	attachment := make([]byte, 600)
	for i := range attachment {
		attachment[i] = byte(i * 7)
	}
	mixed := "Content-Type: multipart/mixed; boundary=\"mix-b\"\r\n\r\n--mix-b\r\n" + textPart(utf8Text) +
		"--mix-b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64lines(attachment) + "--mix-b--\r\n"
	put("in/59-pgp-encrypted-attachment", alice("59", "With an attachment")+pgpEncrypted(m.signEnc([]byte(mixed), "alice", "rt")))

	// More layers and malformed ones.
	put("in/61-pgp-double-encrypted", alice("61", "Encrypted twice")+pgpEncrypted(m.enc([]byte(pgpEncrypted(m.enc(text, "rt"))), "rt")))
	deep := part0
	for i := range 7 {
		deep = pgpSigned(deep, m.detach([]byte(deep), "alice"), fmt.Sprintf("sig-%d", i))
	}
	put("in/62-too-many-layers", alice("62", "Seven signatures deep")+deep)
	withText := strings.Replace(pgpSigned(part0, aliceSig, "sig-b"), "-----BEGIN PGP SIGNATURE-----", "Also read this.\r\n-----BEGIN PGP SIGNATURE-----", 1)
	put("in/63-pgp-signature-malformed", alice("63", "Text around the signature")+withText)
	degenerate := m.must(g.ossl(nil, "crl2pkcs7", "-nocrl", "-certfile", g.crt["carol"], "-outform", "DER"))
	put("in/64-smime-no-signerinfo", carol("64", "No signer")+smimeSigned(string(scontent), degenerate, "smime-b"))
	put("in/65-partial-embedded-signed", alice("65", "Signed text quoted")+"Content-Type: text/plain; charset=us-ascii\r\n\r\n"+
		"Alice wrote earlier:\r\n\r\n"+plainClear+"\r\nI agree.\r\n")
	put("in/66-pgp-hidden-recipient", alice("66", "Hidden recipient")+pgpEncrypted(string(m.must(g.gpgAt(signTime, text, "--armor", "--encrypt", "--hidden-recipient", g.fpr["rt"])))))
	put("in/67-pgp-symmetric", alice("67", "Passphrase only")+pgpEncrypted(string(m.must(g.gpgAt(signTime, text, "--armor", "--symmetric", "--passphrase", "secret", "--cipher-algo", "AES256")))))

	// Outbound mail that is already encrypted (by the user's own client).
	outHdr := "From: Example RT <rt@example.org>\r\nTo: Alice <alice@example.net>\r\nSubject: Already encrypted\r\n" +
		"Date: Mon, 01 Sep 2025 10:00:00 +0000\r\nMessage-ID: <out-19@example.org>\r\nMIME-Version: 1.0\r\n"
	put("out/19-already-encrypted-openpgp", outHdr+pgpEncrypted(m.enc(text, "alice")))
	outHdrS := strings.Replace(outHdr, "Alice <alice@example.net>", "Carol <carol@example.com>", 1)
	outHdrS = strings.Replace(outHdrS, "out-19", "out-20", 1)
	put("out/20-already-encrypted-smime", outHdrS+pkcs7("enveloped-data", m.cmsEnc(scontent, "carol", "aes-256-cbc")))

	if m.err != nil {
		return m.err
	}
	for dir, msg := range m.out {
		p := filepath.Join(g.golden, dir)
		if err := os.MkdirAll(p, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(p, "message.eml"), msg, 0o644); err != nil {
			return err
		}
	}
	fmt.Printf("gen: %d messages\n", len(m.out))
	return nil
}
