package crypto

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"math/rand/v2"
	"mime/quotedprintable"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// The inbound OpenPGP fixture: a keystore made by keystore.Init for
// rt@example.org (Ed25519/X25519) plus an RSA-3072 gateway key made by gpg
// (rt-rsa@example.org), correspondents made by gpg (Curve25519 and
// RSA-3072), and every test message made once by the real gpg acting as
// the sending client. Everything gpg needs lives in one temp directory
// that is removed (agent killed) as soon as the messages exist, so the
// tests need no TestMain of their own.
type inPGPFix struct {
	keys *keystore.Snapshot
	// fpr holds primary key fingerprints (upper-case hex) by name:
	// gw, gwrsa, alice, robert, mallory, expiring, evil.
	fpr map[string]string
	// keyID holds the 16-hex-digit primary key IDs by the same names.
	keyID map[string]string
	msgs  map[string][]byte
	// attachment is the binary attachment inside msgs["attach"].
	attachment []byte
	err        error
}

var (
	inPGPOnce sync.Once
	inPGP     inPGPFix
)

// inPGPFixture builds the fixture once per test binary.
func inPGPFixture(t testing.TB) *inPGPFix {
	t.Helper()
	inTools(t, "gpg", "gpgconf")
	inPGPOnce.Do(func() { inPGP.err = inPGP.build() })
	if inPGP.err != nil {
		t.Fatalf("OpenPGP fixture: %v", inPGP.err)
	}
	return &inPGP
}

// Texts used in the messages.
const (
	inUTF8Text   = "Grüße aus Köln: ½ € ✓ — naïve façade"
	inLatin1Text = "Grüße aus Köln, ½ Stück für 3 £"
	inHTMLText   = "<p>Hello <b>HTML</b> ✓ ünïcödé</p>"
	inSecretSubj = "Secret subject ✓"
)

// inTextPart is a text/plain entity (CRLF, 8bit UTF-8) used as content.
func inTextPart(text string) string {
	return "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n"
}

func inEncryptedMsg(hdr, armored string) []byte {
	return []byte(hdr + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n\r\n" +
		"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
		"--enc-b\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n" +
		"--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n" +
		toCRLFString(armored) + "\r\n--enc-b--\r\n")
}

// inSignedEntity builds an RFC 3156 multipart/signed entity (header and
// body) over part, which must be CRLF-canonical.
func inSignedEntity(part, armoredSig string) string {
	return "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig-b\"\r\n\r\n" +
		"This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n" +
		"--sig-b\r\n" + part + "\r\n" +
		"--sig-b\r\nContent-Type: application/pgp-signature; name=\"OpenPGP_signature.asc\"\r\nContent-Disposition: attachment; filename=\"OpenPGP_signature.asc\"\r\n\r\n" +
		toCRLFString(armoredSig) + "\r\n--sig-b--\r\n"
}

func toCRLFString(s string) string { return string(toCRLF([]byte(strings.TrimRight(s, "\r\n")))) }

func inArmor(bin []byte) string {
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		panic(err)
	}
	w.Write(bin)
	w.Close()
	return b.String() + "\n"
}

// inFirstPacketLen returns the length of the first OpenPGP packet of b
// (header included), or -1.
func inFirstPacketLen(b []byte) int {
	if len(b) < 2 || b[0]&0x80 == 0 {
		return -1
	}
	if b[0]&0x40 == 0 { // old format
		switch b[0] & 3 {
		case 0:
			return 2 + int(b[1])
		case 1:
			return 3 + (int(b[1])<<8 | int(b[2]))
		case 2:
			return 5 + (int(b[1])<<24 | int(b[2])<<16 | int(b[3])<<8 | int(b[4]))
		}
		return -1
	}
	switch l := int(b[1]); {
	case l < 192:
		return 2 + l
	case l < 224:
		return 3 + ((l-192)<<8 + int(b[2]) + 192)
	case l == 255:
		return 6 + (int(b[2])<<24 | int(b[3])<<16 | int(b[4])<<8 | int(b[5]))
	}
	return -1
}

func (f *inPGPFix) build() error {
	dir, err := os.MkdirTemp("", "cmi")
	if err != nil {
		return err
	}
	home := filepath.Join(dir, "g")
	defer func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(dir)
	}()
	if err := os.Mkdir(home, 0o700); err != nil {
		return err
	}
	opts := keystore.Options{Dir: filepath.Join(dir, "ks")}
	now := time.Now()
	if _, err := keystore.Init(opts, []string{"rt@example.org"}, false, now.Add(-time.Hour)); err != nil {
		return err
	}
	snap, err := keystore.Load(opts)
	if err != nil {
		return err
	}
	gwPub, err := snap.Export("rt@example.org", false)
	if err != nil {
		return err
	}
	gpg := func(stdin []byte, args ...string) ([]byte, error) {
		base := []string{"--homedir", home, "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
			"--trust-model", "always", "--auto-key-locate", "local", "--no-auto-key-retrieve"}
		return inRun(stdin, "gpg", append(base, args...)...)
	}
	if _, err := gpg(gwPub, "--import"); err != nil {
		return err
	}
	f.fpr, f.keyID, f.msgs = map[string]string{}, map[string]string{}, map[string][]byte{}
	fprRE := regexp.MustCompile(`(?m)^fpr:+([0-9A-F]{40}):`)
	lookup := func(name, query string) error {
		out, err := gpg(nil, "--with-colons", "--list-keys", query)
		if err != nil {
			return err
		}
		m := fprRE.FindStringSubmatch(string(out))
		if m == nil {
			return fmt.Errorf("no fingerprint for %s", query)
		}
		f.fpr[name], f.keyID[name] = m[1], m[1][24:]
		return nil
	}
	if err := lookup("gw", "rt@example.org"); err != nil {
		return err
	}
	type keySpec struct{ name, uid, algo, expire, encAlgo string }
	specs := []keySpec{
		{"alice", "Alice <alice@example.net>", "ed25519", "never", "cv25519"},
		{"robert", "Robert <robert@example.net>", "rsa3072", "never", "rsa3072"},
		{"gwrsa", "rt-rsa@example.org", "rsa3072", "never", "rsa3072"},
		{"mallory", "mallory@example.net", "ed25519", "never", ""},
		{"expiring", "expiring@example.net", "ed25519", "1d", "cv25519"},
		{"evil", "Evil \"q\" <evil@example.net>\r\nX-Injected: yes", "ed25519", "never", "cv25519"},
	}
	for _, s := range specs {
		if _, err := gpg(nil, "--quick-gen-key", s.uid, s.algo, "sign", s.expire); err != nil {
			return err
		}
		// The UID of evil holds a line break: find it by its address.
		q := s.uid
		if s.name == "evil" {
			q = "evil@example.net"
		}
		if err := lookup(s.name, q); err != nil {
			return err
		}
		if s.encAlgo != "" {
			if _, err := gpg(nil, "--quick-add-key", f.fpr[s.name], s.encAlgo, "encr", "never"); err != nil {
				return err
			}
		}
	}
	// Correspondents known to the gateway (mallory is not); rt-rsa is a
	// second gateway identity. The keystore refuses correspondent keys
	// without an encryption subkey, so every key has one.
	for _, name := range []string{"alice", "robert", "expiring", "evil"} {
		pub, err := gpg(nil, "--armor", "--export", f.fpr[name])
		if err != nil {
			return err
		}
		if _, err := keystore.Import(opts, pub, name+".asc", false, nil, time.Now()); err != nil {
			return fmt.Errorf("import %s: %w", name, err)
		}
	}
	sec, err := gpg(nil, "--armor", "--export-secret-keys", f.fpr["gwrsa"])
	if err != nil {
		return err
	}
	if _, err := keystore.Import(opts, sec, "gwrsa.asc", false, nil, time.Now()); err != nil {
		return fmt.Errorf("import gateway RSA key: %w", err)
	}
	if f.keys, err = keystore.Load(opts); err != nil {
		return err
	}
	if p := f.keys.Problems(); len(p) > 0 {
		return fmt.Errorf("keystore problems: %v", p)
	}
	return f.makeMessages(gpg)
}

// makeMessages has gpg make every test message.
func (f *inPGPFix) makeMessages(gpg func([]byte, ...string) ([]byte, error)) error {
	var firstErr error
	do := func(stdin []byte, args ...string) []byte {
		out, err := gpg(stdin, args...)
		if err != nil && firstErr == nil {
			firstErr = err
		}
		return out
	}
	enc := func(pt []byte, to string, extra ...string) string {
		return string(do(pt, append([]string{"--armor", "--encrypt", "--recipient", f.fpr[to]}, extra...)...))
	}
	signEnc := func(pt []byte, from, to string) string {
		return string(do(pt, "--armor", "--sign", "--local-user", f.fpr[from], "--encrypt", "--recipient", f.fpr[to]))
	}
	detach := func(part []byte, from string) string {
		return string(do(part, "--armor", "--detach-sign", "--digest-algo", "SHA256", "--local-user", f.fpr[from]))
	}
	alice := inHeader("Alice <alice@example.net>", "Encrypted mail")
	text := []byte(inTextPart(inUTF8Text))

	f.msgs["enc"] = inEncryptedMsg(alice, enc(text, "gw"))
	f.msgs["enc-rsa"] = inEncryptedMsg(alice, enc(text, "gwrsa"))
	f.msgs["hidden"] = inEncryptedMsg(alice, string(do(text, "--armor", "--encrypt", "--hidden-recipient", f.fpr["gw"])))
	f.msgs["se"] = inEncryptedMsg(alice, signEnc(text, "alice", "gw"))
	f.msgs["se-rsa"] = inEncryptedMsg(inHeader("Robert <robert@example.net>", "RSA"), signEnc(text, "robert", "gwrsa"))
	f.msgs["wrongfrom"] = inEncryptedMsg(inHeader("Bob <bob@example.net>", "Not from Alice"), signEnc(text, "alice", "gw"))
	f.msgs["untrusted-se"] = inEncryptedMsg(inHeader("mallory@example.net", "Unknown"), signEnc(text, "mallory", "gw"))
	f.msgs["expiring-se"] = inEncryptedMsg(inHeader("expiring@example.net", "Expiring"), signEnc(text, "expiring", "gw"))
	f.msgs["evil-se"] = inEncryptedMsg(inHeader("evil@example.net", "Evil"), signEnc(text, "evil", "gw"))
	f.msgs["evil-filename"] = inEncryptedMsg(alice, enc(text, "gw", "--set-filename", "evil\"\r\nX-Injected: yes.txt"))
	f.msgs["notforus"] = inEncryptedMsg(alice, enc(text, "alice"))

	// multipart/signed inside multipart/encrypted, with protected headers.
	protected := "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
		"Subject: " + inSecretSubj + "\r\nFrom: Alice <alice@example.net>\r\nTo: rt@example.org\r\n\r\n" + qp(inUTF8Text) + "\r\n"
	f.msgs["signed-in-enc"] = inEncryptedMsg(inHeader("Alice <alice@example.net>", "..."),
		enc([]byte(inSignedEntity(protected, detach([]byte(protected), "alice"))), "gw"))
	// The same with a protected From that is not the outer From.
	spoofed := strings.Replace(protected, "From: Alice <alice@example.net>", "From: Boss <boss@example.org>", 1)
	f.msgs["inner-from-differs"] = inEncryptedMsg(inHeader("Alice <alice@example.net>", "..."),
		enc([]byte(inSignedEntity(spoofed, detach([]byte(spoofed), "alice"))), "gw"))

	// Inline armor of UTF-8 text in a part labelled us-ascii (the armor
	// itself is ASCII, so clients label it so).
	f.msgs["inline-ascii-label"] = []byte(inHeader("Alice <alice@example.net>", "Inline") +
		"Content-Type: text/plain; charset=us-ascii\r\nContent-Transfer-Encoding: 7bit\r\n\r\n" + toCRLFString(enc([]byte(inUTF8Text+"\n"), "gw")) + "\r\n")
	// Encrypted with a passphrase only (no public-key recipient).
	f.msgs["symmetric"] = inEncryptedMsg(alice, string(do(text, "--armor", "--symmetric", "--passphrase", "secret", "--cipher-algo", "AES256")))

	part0 := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp(inUTF8Text) + "\r\n"

	// Encrypt, then sign: a multipart/signed over a multipart/encrypted.
	encEntity := string(inEncryptedMsg("", enc(text, "gw")))
	f.msgs["sign-over-encrypted"] = []byte(inHeader("Alice <alice@example.net>", "Encrypt then sign") +
		inSignedEntity(encEntity, detach([]byte(encEntity), "alice")))

	// The Cryptographic Envelope (RFC 9787) beyond two layers.
	signedPart := inSignedEntity(part0, detach([]byte(part0), "alice"))
	// (The inner signature keeps its boundary: the relay's signature
	// below gets "sig-b", so the inner one is renamed where both are
	// visible.)
	innerEnc := string(inEncryptedMsg("", enc([]byte(signedPart), "gw")))
	// Triple wrap: sign(alice), encrypt(gw), sign(alice) again outside.
	f.msgs["triple-wrap"] = []byte(inHeader("Alice <alice@example.net>", "Triple wrap") +
		inSignedEntity(innerEnc, detach([]byte(innerEnc), "alice")))
	// A relay's transport signature (a key the gateway does not know)
	// over ciphertext for the gateway that holds alice's signature.
	f.msgs["relay-over-signed-enc"] = []byte(inHeader("Alice <alice@example.net>", "Relayed") +
		inSignedEntity(innerEnc, detach([]byte(innerEnc), "mallory")))
	// The same relay signature over unsigned ciphertext.
	f.msgs["relay-over-enc"] = []byte(inHeader("Alice <alice@example.net>", "Relayed") +
		inSignedEntity(encEntity, detach([]byte(encEntity), "mallory")))
	// A relay's signature over alice's signed (not encrypted) message.
	signedEntity := strings.ReplaceAll(signedPart, "sig-b", "inner-sig-b")
	f.msgs["relay-over-signed"] = []byte(inHeader("Alice <alice@example.net>", "Relayed") +
		inSignedEntity(signedEntity, detach([]byte(signedEntity), "mallory")))
	// Ciphertext for another key inside the gateway's encryption.
	f.msgs["enc-in-enc-not-for-us"] = inEncryptedMsg(alice, enc(inEncryptedMsg("", enc(text, "alice")), "gw"))
	// PGP/MIME as Microsoft Exchange rearranges it: a multipart/mixed with
	// an empty text part, the version part and the ciphertext as an
	// attachment.
	exch := enc(text, "gw")
	f.msgs["exchange"] = []byte(alice + "Content-Type: multipart/mixed; boundary=\"ex-b\"\r\n\r\n" +
		"--ex-b\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\r\n" +
		"--ex-b\r\nContent-Type: application/pgp-encrypted; name=\"PGPMIME Versions Identification\"\r\nContent-Disposition: attachment; filename=\"PGPMIME Versions Identification\"\r\n\r\nVersion: 1\r\n\r\n" +
		"--ex-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Disposition: attachment; filename=\"encrypted.asc\"\r\n\r\n" +
		toCRLFString(exch) + "\r\n--ex-b--\r\n")
	// The same shape with a real text in the first part: not Exchange's,
	// not repaired.
	f.msgs["exchange-with-text"] = bytes.Replace(f.msgs["exchange"], []byte("charset=us-ascii\r\n\r\n\r\n"),
		[]byte("charset=us-ascii\r\n\r\n"+strings.Repeat("Please read the attached file carefully. ", 20)+"\r\n"), 1)

	// Cleartext signatures with what the signature does not cover: an
	// armor header in the signature block, format=flowed, a charset
	// that shows the signed ASCII as other text, 8-bit text that is not
	// UTF-8.
	commented := do([]byte("Pay invoice 42 only.\n"), "--clearsign", "--digest-algo", "SHA256", "--comment", "Also pay invoice 666", "--local-user", f.fpr["alice"])
	f.msgs["clearsign-comment"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + string(toCRLF(commented)))
	plainClear := do([]byte("Pay invoice 42 only.\nThen stop.\n"), "--clearsign", "--digest-algo", "SHA256", "--local-user", f.fpr["alice"])
	f.msgs["clearsign-flowed"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=us-ascii; format=flowed; delsp=yes\r\n\r\n" +
		strings.Replace(string(toCRLF(plainClear)), "Pay invoice 42 only.\r\n", "Pay invoice 42 only. \r\n", 1))
	f.msgs["clearsign-utf7"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=utf-7\r\n\r\n" + string(toCRLF(plainClear)))
	f.msgs["clearsign-latin1"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" +
		string(toCRLF(do(latin1Of(inLatin1Text+"\n"), "--clearsign", "--digest-algo", "SHA256", "--local-user", f.fpr["alice"]))))
	f.msgs["clearsign-plain"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n" + string(toCRLF(plainClear)))
	// An armor header other than Hash at the top of the block (not
	// signed; some readers show it above the text).
	f.msgs["clearsign-top-comment"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\n" +
		strings.Replace(string(toCRLF(plainClear)), "Hash: SHA256\r\n", "Hash: SHA256\r\nComment: Also pay invoice 666\r\n", 1))

	// Signed only, with protected headers (RFC 9788 hp="clear"): equal to
	// the outer ones, and an outer Subject replaced after signing.
	hpPart := "Content-Type: text/plain; charset=utf-8; hp=\"clear\"\r\nContent-Transfer-Encoding: quoted-printable\r\n" +
		"Subject: Signed subject\r\nFrom: Alice <alice@example.net>\r\nTo: RT <rt@example.org>\r\n\r\n" + qp(inUTF8Text) + "\r\n"
	hpSigned := inSignedEntity(hpPart, detach([]byte(hpPart), "alice"))
	f.msgs["signed-hp"] = []byte(inHeader("Alice <alice@example.net>", "Signed subject") + hpSigned)
	f.msgs["signed-hp-replayed"] = []byte(inHeader("Alice <alice@example.net>", "URGENT: new bank account") + hpSigned)

	// Protected headers that try to smuggle a line break (a bare CR, a
	// bare LF inside a folded value) into the outer header.
	inject := "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"\r\n" +
		"Subject: Hello\rX-Cryptmilter-Signature: valid; protocol=openpgp; signer=boss@example.org\r\n" +
		"To: rt@example.org,\r\n\tother@example.org\r\n\r\n" + inUTF8Text + "\r\n"
	f.msgs["inject-protected"] = inEncryptedMsg(inHeader("Alice <alice@example.net>", "..."), signEnc([]byte(inject), "alice", "gw"))
	// Inline PGP that is signed but not encrypted (gpg --sign --armor).
	f.msgs["inline-signed-armored"] = []byte(inHeader("Alice <alice@example.net>", "Inline signed") +
		"Content-Type: text/plain; charset=utf-8\r\n\r\n" + toCRLFString(string(do([]byte(inUTF8Text+"\n"), "--armor", "--sign", "--local-user", f.fpr["alice"]))) + "\r\n")

	// multipart/signed only (Curve25519 and RSA-3072 signers).
	part := part0
	f.msgs["signed"] = []byte(inHeader("Alice <alice@example.net>", "Signed") + inSignedEntity(part, detach([]byte(part), "alice")))
	f.msgs["signed-rsa"] = []byte(inHeader("Robert <robert@example.net>", "Signed") + inSignedEntity(part, detach([]byte(part), "robert")))
	f.msgs["signed-untrusted"] = []byte(inHeader("mallory@example.net", "Signed") + inSignedEntity(part, detach([]byte(part), "mallory")))
	tampered := strings.Replace(part, "K", "C", 1)
	f.msgs["signed-tampered"] = []byte(inHeader("Alice <alice@example.net>", "Signed") + inSignedEntity(tampered, detach([]byte(part), "alice")))

	// Inline PGP: armored encrypted iso-8859-1 text, quoted-printable and
	// base64, signed and not; a cleartext-signed block.
	latin1 := latin1Of(inLatin1Text)
	armQP := signEnc(latin1, "alice", "gw")
	f.msgs["inline-qp"] = []byte(inHeader("Alice <alice@example.net>", "Inline") +
		"Content-Type: text/plain; charset=iso-8859-1\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + qp(armQP))
	armB64 := enc(latin1, "gw")
	f.msgs["inline-b64"] = []byte(inHeader("Alice <alice@example.net>", "Inline") +
		"Content-Type: text/plain; charset=\"ISO-8859-1\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64lines([]byte(armB64)))
	clear := do([]byte(inUTF8Text+"\n- dash line\nFrom the start\n"), "--clearsign", "--digest-algo", "SHA256", "--local-user", f.fpr["alice"])
	f.msgs["clearsign"] = []byte(inHeader("Alice <alice@example.net>", "Clear") +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + string(toCRLF(clear)))

	// Attachments and HTML inside the encryption.
	rng := rand.New(rand.NewChaCha8([32]byte{7}))
	f.attachment = make([]byte, 5000)
	for i := range f.attachment {
		f.attachment[i] = byte(rng.Uint32())
	}
	mixed := "Content-Type: multipart/mixed; boundary=\"mix-b\"\r\n\r\n" +
		"--mix-b\r\n" + inTextPart(inUTF8Text) +
		"--mix-b\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64lines(f.attachment) + "--mix-b--\r\n"
	f.msgs["attach"] = inEncryptedMsg(alice, signEnc([]byte(mixed), "alice", "gw"))
	html := "Content-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n<html><body>" + inHTMLText + "</body></html>\r\n"
	f.msgs["html"] = inEncryptedMsg(alice, enc([]byte(html), "gw"))

	// Structure over the default limits, inside the encryption.
	f.msgs["deep-in-enc"] = inEncryptedMsg(alice, enc([]byte(inNested(25)), "gw"))

	// Failures, all under the same outer header: they must look the same.
	fail := inHeader("Alice <alice@example.net>", "Failure")
	binA := do(text, "--encrypt", "--recipient", f.fpr["gw"])
	binB := do([]byte(inTextPart("another text")), "--encrypt", "--recipient", f.fpr["gw"])
	tamp := bytes.Clone(binA)
	tamp[len(tamp)-30] ^= 0x40
	f.msgs["u-tampered"] = inEncryptedMsg(fail, inArmor(tamp))
	f.msgs["u-truncated"] = inEncryptedMsg(fail, inArmor(binA[:len(binA)*2/3]))
	f.msgs["u-garbage"] = inEncryptedMsg(fail, inArmor(bytes.Repeat([]byte{0xa5, 0x01, 0x77}, 100)))
	if n := inFirstPacketLen(binA); n > 0 && inFirstPacketLen(binB) > 0 {
		// Our key ID, a session key that belongs to another message.
		f.msgs["u-wrong-session-key"] = inEncryptedMsg(fail, inArmor(append(bytes.Clone(binA[:n]), binB[inFirstPacketLen(binB):]...)))
	} else if firstErr == nil {
		firstErr = fmt.Errorf("cannot split gpg output into packets")
	}
	binR := do(text, "--encrypt", "--recipient", f.fpr["gwrsa"])
	padR := bytes.Clone(binR)
	padR[40] ^= 0x01 // inside the RSA-encrypted session key: PKCS#1 padding fails
	f.msgs["u-rsa-padding"] = inEncryptedMsg(fail, inArmor(padR))
	f.msgs["u-nomdc"] = inEncryptedMsg(fail, enc(text, "gw", "--rfc2440", "--cipher-algo", "AES256"))
	bomb := append([]byte(inTextPart("")), bytes.Repeat([]byte("0"), 1<<20)...)
	f.msgs["u-bomb"] = inEncryptedMsg(fail, enc(bomb, "gw", "--compress-algo", "zlib", "-z", "9"))
	return firstErr
}

// latin1Of encodes s (Latin-1 runes only) as ISO-8859-1.
func latin1Of(s string) []byte {
	var b []byte
	for _, r := range s {
		b = append(b, byte(r))
	}
	return b
}

// inNested returns an entity of depth nested multipart/mixed levels.
func inNested(depth int) string {
	var b strings.Builder
	for i := range depth {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"d%d\"\r\n\r\n--d%d\r\n", i, i)
	}
	b.WriteString(inTextPart("deep"))
	for i := depth - 1; i >= 0; i-- {
		fmt.Fprintf(&b, "--d%d--\r\n", i)
	}
	return b.String()
}

// qp quoted-printable encodes s with CRLF line ends.
func qp(s string) string {
	var b bytes.Buffer
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return string(toCRLF(b.Bytes()))
}

// b64lines base64 encodes data in 76-character CRLF lines.
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
