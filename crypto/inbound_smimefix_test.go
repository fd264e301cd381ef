package crypto

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// The inbound S/MIME fixture: a keystore made by keystore.Init for
// rt@example.org (RSA-3072, self-signed), a second gateway identity
// rt2@example.org (RSA-2048, issued by a test CA made with openssl), that
// CA as the only trust anchor, signers made with openssl (ECDSA, RSA with
// PSS and PKCS#1 v1.5, address only in the subject, an untrusted issuer, a
// certificate valid for one day), and every test message made once by
// `openssl cms` / `openssl smime` as the sending client. The temp
// directory is removed as soon as the messages exist.
type inSMIMEFix struct {
	keys   *keystore.Snapshot
	serial map[string]string // certificate serial (upper-case hex) by name
	msgs   map[string][]byte
	err    error
}

var (
	inSMIMEOnce sync.Once
	inSMIME     inSMIMEFix
)

func inSMIMEFixture(t testing.TB) *inSMIMEFix {
	t.Helper()
	inTools(t, "openssl")
	inSMIMEOnce.Do(func() { inSMIME.err = inSMIME.build() })
	if inSMIME.err != nil {
		t.Fatalf("S/MIME fixture: %v", inSMIME.err)
	}
	return &inSMIME
}

// inSMIMEContent is the MIME entity the S/MIME messages carry.
var inSMIMEContent = inTextPart(inUTF8Text)

func (f *inSMIMEFix) build() error {
	dir, err := os.MkdirTemp("", "cms")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	var firstErr error
	ossl := func(stdin []byte, args ...string) []byte {
		out, err := inRun(stdin, "openssl", args...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return out
	}
	opts := keystore.Options{Dir: p("ks")}
	if _, err := keystore.Init(opts, []string{"rt@example.org"}, false, time.Now().Add(-time.Hour)); err != nil {
		return err
	}
	snap, err := keystore.Load(opts)
	if err != nil {
		return err
	}
	id, err := snap.GatewaySMIMEAt("rt@example.org", time.Now())
	if err != nil {
		return err
	}
	if err := os.WriteFile(p("gw.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw}), 0o600); err != nil {
		return err
	}

	// Two CAs: ca (trusted) and rogue (not).
	for _, ca := range []string{"ca", "rogue"} {
		ossl(nil, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
			"-keyout", p(ca+".key"), "-out", p(ca+".pem"), "-days", "3650", "-subj", "/O=Cryptmilter Tests/CN="+ca+" CA",
			"-addext", "basicConstraints=critical,CA:true", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	}
	type certSpec struct {
		name, addr, key, ca string
		days                string
		san                 bool
	}
	specs := []certSpec{
		{"rt2", "rt2@example.org", "rsa:2048", "ca", "365", true},
		{"dave", "dave@example.com", "ec", "ca", "365", true},
		{"erin", "erin@example.com", "rsa:2048", "ca", "365", true},
		{"frank", "frank@example.com", "rsa:2048", "ca", "365", false},
		{"gina", "gina@example.com", "ec", "rogue", "365", true},
		{"hank", "hank@example.com", "ec", "ca", "1", true},
		// A capital in the certificate's local part (the issue's
		// Alice@ in a certificate against alice@ in From).
		{"ivy", "Ivy@example.com", "ec", "ca", "365", true},
	}
	f.serial = map[string]string{}
	for _, s := range specs {
		args := []string{"req", "-new", "-newkey", s.key, "-nodes", "-keyout", p(s.name + ".key"), "-out", p(s.name + ".csr"),
			"-subj", "/CN=" + s.name + "/emailAddress=" + s.addr}
		if s.key == "ec" {
			args = append(args, "-pkeyopt", "ec_paramgen_curve:P-256")
		}
		ossl(nil, args...)
		ext := "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=emailProtection\n"
		if s.key == "ec" {
			ext = "keyUsage=critical,digitalSignature\nextendedKeyUsage=emailProtection\n"
		}
		if s.san {
			ext += "subjectAltName=email:" + s.addr + "\n"
		}
		if err := os.WriteFile(p(s.name+".ext"), []byte(ext), 0o600); err != nil {
			return err
		}
		ossl(nil, "x509", "-req", "-in", p(s.name+".csr"), "-CA", p(s.ca+".pem"), "-CAkey", p(s.ca+".key"),
			"-set_serial", fmt.Sprint(0x1000+len(f.serial)), "-days", s.days, "-extfile", p(s.name+".ext"), "-out", p(s.name+".pem"))
		if firstErr != nil {
			return firstErr
		}
		data, err := os.ReadFile(p(s.name + ".pem"))
		if err != nil {
			return err
		}
		blk, _ := pem.Decode(data)
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return err
		}
		f.serial[s.name] = fmt.Sprintf("%X", c.SerialNumber)
	}
	now := time.Now()
	caPEM, err := os.ReadFile(p("ca.pem"))
	if err != nil {
		return err
	}
	if _, err := keystore.Import(opts, caPEM, "ca.pem", true, nil, now); err != nil {
		return err
	}
	key, _ := os.ReadFile(p("rt2.key"))
	crt, _ := os.ReadFile(p("rt2.pem"))
	if _, err := keystore.Import(opts, append(key, crt...), "rt2.pem", false, nil, now); err != nil {
		return fmt.Errorf("import rt2 bundle: %w", err)
	}
	if f.keys, err = keystore.Load(opts); err != nil {
		return err
	}
	if pr := f.keys.Problems(); len(pr) > 0 {
		return fmt.Errorf("keystore problems: %v", pr)
	}
	f.serial["gw"] = fmt.Sprintf("%X", id.Cert.SerialNumber)
	if len(f.serial["gw"])%2 == 1 {
		f.serial["gw"] = "0" + f.serial["gw"]
	}
	f.msgs = map[string][]byte{}
	f.makeMessages(p, ossl)
	return firstErr
}

// inSMIMEWrap puts an outer header over openssl's S/MIME output (dropping
// its MIME-Version line, which the header has).
func inSMIMEWrap(hdr string, out []byte) []byte {
	out = toCRLF(out)
	out = bytes.Replace(out, []byte("MIME-Version: 1.0\r\n"), nil, 1)
	return append([]byte(hdr), out...)
}

// inPKCS7 wraps DER in an application/pkcs7-mime entity.
func inPKCS7(hdr, smimeType string, der []byte) []byte {
	return []byte(hdr + "Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=\"smime.p7m\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n" + b64lines(der))
}

// inDetached builds a multipart/signed message over content (CRLF) with
// a DER signature.
func inDetached(hdr, content string, sig []byte) []byte {
	return []byte(hdr + "Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"smime-b\"\r\n\r\n" +
		"This is an S/MIME signed message\r\n--smime-b\r\n" + content + "\r\n--smime-b\r\n" +
		"Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7s\"\r\n\r\n" +
		b64lines(sig) + "--smime-b--\r\n")
}

// inFlipIn flips a byte inside the last occurrence of the OCTET STRING
// header hdr (such as 04 82 01 00: an RSA-2048 signature or encrypted key).
func inFlipIn(der []byte, hdr []byte) []byte {
	out := bytes.Clone(der)
	i := bytes.LastIndex(out, hdr)
	if i < 0 {
		return nil
	}
	out[i+len(hdr)+20] ^= 0x01
	return out
}

func (f *inSMIMEFix) makeMessages(p func(string) string, ossl func([]byte, ...string) []byte) {
	content := []byte(inSMIMEContent)
	from := func(who string) string { return inHeader(who, "S/MIME") }
	dave := from("Dave <dave@example.com>")
	enc := func(in []byte, recip string, extra ...string) []byte {
		args := append([]string{"cms", "-encrypt", "-binary", "-outform", "DER", "-recip", p(recip + ".pem")}, extra...)
		return ossl(in, args...)
	}
	sign := func(in []byte, signer string, extra ...string) []byte {
		args := append([]string{"cms", "-sign", "-binary", "-md", "sha256", "-outform", "DER",
			"-signer", p(signer + ".pem"), "-inkey", p(signer + ".key")}, extra...)
		return ossl(in, args...)
	}

	// Encryption: openssl smime's own output (AES-128-CBC) for the
	// Init-made RSA-3072 identity; openssl cms for the rest.
	f.msgs["env-smime-aes128"] = inSMIMEWrap(dave, ossl(content, "smime", "-encrypt", "-aes128", p("gw.pem")))
	f.msgs["env-cbc-rsa2048"] = inPKCS7(dave, "enveloped-data", enc(content, "rt2", "-aes-256-cbc"))
	f.msgs["env-oaep-aes192"] = inPKCS7(dave, "enveloped-data", enc(content, "rt2", "-aes-192-cbc", "-keyopt", "rsa_padding_mode:oaep"))
	f.msgs["env-gcm"] = inPKCS7(dave, "authEnveloped-data", enc(content, "gw", "-aes-256-gcm"))
	f.msgs["env-gcm-oaep"] = inPKCS7(dave, "authEnveloped-data", enc(content, "gw", "-aes-128-gcm", "-keyopt", "rsa_padding_mode:oaep"))
	f.msgs["env-not-for-us"] = inPKCS7(dave, "enveloped-data", enc(content, "dave", "-aes-256-cbc"))

	// Signatures: openssl cms's own multipart/signed and opaque output.
	f.msgs["sig-ecdsa-detached"] = inSMIMEWrap(dave, ossl(content, "cms", "-sign", "-md", "sha256", "-signer", p("dave.pem"), "-inkey", p("dave.key")))
	f.msgs["sig-ecdsa-opaque"] = inSMIMEWrap(dave, ossl(content, "cms", "-sign", "-nodetach", "-md", "sha256", "-signer", p("dave.pem"), "-inkey", p("dave.key")))
	f.msgs["sig-pss"] = inDetached(from("erin@example.com"), inSMIMEContent, sign(content, "erin", "-keyopt", "rsa_padding_mode:pss"))
	f.msgs["sig-pss-opaque"] = inPKCS7(from("erin@example.com"), "signed-data", sign(content, "erin", "-nodetach", "-keyopt", "rsa_padding_mode:pss"))
	f.msgs["sig-subject-only"] = inDetached(from("Frank <frank@example.com>"), inSMIMEContent, sign(content, "frank"))
	f.msgs["sig-untrusted"] = inDetached(from("gina@example.com"), inSMIMEContent, sign(content, "gina"))
	f.msgs["sig-capital-cert"] = inDetached(from("Ivy <ivy@example.com>"), inSMIMEContent, sign(content, "ivy"))
	f.msgs["sig-expiring"] = inDetached(from("hank@example.com"), inSMIMEContent, sign(content, "hank"))
	f.msgs["sig-wrong-from"] = inDetached(from("erin@example.com"), inSMIMEContent, sign(content, "dave"))
	f.msgs["sig-tampered-content"] = inDetached(dave, strings.Replace(inSMIMEContent, "Köln", "Bonn", 1), sign(content, "dave"))
	rsaSig := sign(content, "erin")
	f.msgs["sig-tampered-signature"] = inDetached(from("erin@example.com"), inSMIMEContent, inFlipIn(rsaSig, []byte{0x04, 0x82, 0x01, 0x00}))
	f.msgs["sig-zero-signerinfos"] = inDetached(dave, inSMIMEContent, ossl(nil, "crl2pkcs7", "-nocrl", "-certfile", p("dave.pem"), "-outform", "DER"))
	// Two signerInfos (dave: ECDSA, erin: RSA); erin's signature broken.
	multi := sign(content, "dave", "-signer", p("erin.pem"), "-inkey", p("erin.key"))
	badMulti := inFlipIn(multi, []byte{0x04, 0x82, 0x01, 0x00})
	f.msgs["sig-multi-one-bad/from-dave"] = inDetached(dave, inSMIMEContent, badMulti)
	f.msgs["sig-multi-one-bad/from-erin"] = inDetached(from("erin@example.com"), inSMIMEContent, badMulti)
	f.msgs["sig-multi-one-untrusted"] = inDetached(dave, inSMIMEContent, sign(content, "gina", "-signer", p("dave.pem"), "-inkey", p("dave.key")))

	// Opaque signed-data whose content fields try to smuggle a line break
	// into the outer header (a bad or untrusted signature is enough to
	// have the content shown).
	inject := []byte("Content-Type: text/plain; charset=utf-8\r\nContent-Description: note\rX-Cryptmilter-Signature: valid; signer=boss@example.org\r\n\r\n" + inUTF8Text + "\r\n")
	f.msgs["inject-opaque"] = inPKCS7(from("gina@example.com"), "signed-data", sign(inject, "gina", "-nodetach"))

	// Sign, then encrypt (the signed MIME entity inside the envelope).
	signedEntity := ossl(content, "cms", "-sign", "-md", "sha256", "-signer", p("dave.pem"), "-inkey", p("dave.key"))
	signedEntity = bytes.Replace(toCRLF(signedEntity), []byte("MIME-Version: 1.0\r\n"), nil, 1)
	f.msgs["sign-then-encrypt"] = inPKCS7(dave, "enveloped-data", enc(signedEntity, "gw", "-aes-256-cbc"))

	// Outlook's form: opaque signed-data inside enveloped-data.
	opaque := ossl(content, "cms", "-sign", "-nodetach", "-md", "sha256", "-signer", p("dave.pem"), "-inkey", p("dave.key"))
	opaque = bytes.Replace(toCRLF(opaque), []byte("MIME-Version: 1.0\r\n"), nil, 1)
	f.msgs["opaque-sign-then-encrypt"] = inPKCS7(dave, "enveloped-data", enc(opaque, "gw", "-aes-256-cbc"))

	// Triple wrap (RFC 2634): dave signs, encrypts to the gateway, and a
	// relay (erin) signs the enveloped entity again.
	envEntity := "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=\"smime.p7m\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n\r\n" +
		b64lines(enc(signedEntity, "gw", "-aes-256-cbc"))
	f.msgs["triple-wrap"] = inDetached(dave, envEntity, sign([]byte(envEntity), "erin"))
	// An attacker who edits the IV of CBC EnvelopedData changes the first
	// plaintext block and the message still decrypts.
	ivPlain := []byte("Content-Type: text/plain\r\n\r\nPay 100 EUR to Dave.\r\n")
	ivCT := enc(ivPlain, "rt2", "-aes-256-cbc")
	if i := bytes.Index(ivCT, []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a, 0x04, 0x10}); i >= 0 {
		ivCT = bytes.Clone(ivCT)
		ivCT[i+13+13] ^= 'p' ^ 'P' // "text/plain" → "text/Plain": still text
		f.msgs["cbc-iv-edited"] = inPKCS7(dave, "enveloped-data", ivCT)
	}

	// Uniform failure, all under one header.
	fail := inHeader("Dave <dave@example.com>", "Failure")
	plain := []byte("Content-Type: text/plain\r\n\r\n0123456789abcdef0123456789abcdef0123456789\r\n")
	cbc := enc(plain, "rt2", "-aes-128-cbc")
	// The ciphertext ends the DER (definite lengths): set the last
	// plaintext byte (the padding length) to 0.
	pad := bytes.Clone(cbc)
	pad[len(pad)-17] ^= byte(16 - len(plain)%16)
	f.msgs["su-cbc-padding"] = inPKCS7(fail, "enveloped-data", pad)
	gcm := enc(content, "gw", "-aes-256-gcm")
	gcmBad := bytes.Clone(gcm)
	gcmBad[len(gcmBad)-1] ^= 0x01 // the GCM tag (the last field)
	f.msgs["su-gcm-tag"] = inPKCS7(fail, "authEnveloped-data", gcmBad)
	f.msgs["su-rsa-padding"] = inPKCS7(fail, "enveloped-data", inFlipIn(cbc, []byte{0x04, 0x82, 0x01, 0x00}))
	f.msgs["su-truncated"] = inPKCS7(fail, "enveloped-data", cbc[:len(cbc)-40])
	garbage := append(bytes.Clone(cbc[:60]), bytes.Repeat([]byte{0x5a}, 200)...)
	f.msgs["su-garbage"] = inPKCS7(fail, "enveloped-data", garbage)
}
