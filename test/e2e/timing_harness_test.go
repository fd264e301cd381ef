package e2e

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// The timing harness (issue 11, "Oracles"): every decryption attempt with
// the gateway's keys must be answered no sooner than the same size-based
// deadline (crypto's Plan.NotBefore), whatever the outcome. The harness
// makes one message per outcome class with gpg and openssl (the failure
// kinds crafted as crypto/inbound_pgpfix_test.go and
// inbound_smimefix_test.go craft them), pads every body to the same size
// so that the deadline is the same for all, and sends them to a real
// Postfix with the milter over SMTP, timing each from the final "." of
// DATA to the reply.
//
//	fix := newOracleFixture(t, 8192)           // keystore + one message per class, 8 KiB bodies
//	pf, m := startStack(t, stackOptions{Milter: milterOptions{Keystore: fix.Keystore, Settings: fix.Settings}})
//	s := dialOracleSMTP(t, pf.InboundAddr)     // one persistent session
//	r := s.Send(fix.From, fix.Rcpt, msg)       // r.Reply, r.Elapsed (end of DATA → reply)
//
// One persistent SMTP session (or a few) carries the messages, and the
// classes are interleaved in a new random order every round: the timed
// span never holds TCP or SMTP session setup (or smtpd and milter
// connection start-up, which a fresh connection per message would put
// next to the span on a loaded machine), and a drift in the machine's
// load hits every class alike.

// The deadline crypto/inbound.go gives a decryption of a message whose body
// has n bytes: oracleFloorBase + n × oracleFloorPerByte after the engine
// started (decryptBase, decryptPerByte there). The client's "." is sent
// before the engine starts, so no reply to a decryption may come sooner
// than this after it.
const (
	oracleFloorBase    = 50 * time.Millisecond
	oracleFloorPerByte = 100 * time.Nanosecond
)

// oracleFloor is the deadline for a body of size bytes.
func oracleFloor(size int) time.Duration {
	return oracleFloorBase + time.Duration(size)*oracleFloorPerByte
}

// oracleBodySize is the size every class's body is padded to, unless
// the fixture is made for another.
const oracleBodySize = 8192

// outcomeKind says what the gateway does with a class's messages.
type outcomeKind int

const (
	// outcomeDecrypted: the gateway's key decrypts it.
	outcomeDecrypted outcomeKind = iota
	// outcomeFailed: the gateway tries its keys and fails.
	outcomeFailed
	// outcomeNotForGateway: encrypted to other keys only (no key of the
	// gateway is tried, but the reply waits like any attempt).
	outcomeNotForGateway
	// outcomePlain: not encrypted (the reference).
	outcomePlain
)

func (k outcomeKind) String() string {
	return [...]string{"decrypted", "failed", "not-for-gateway", "plain"}[k]
}

// oracleClass is one outcome class: a message and what must become of it.
type oracleClass struct {
	Name string // "openpgp/tampered"
	// Group names the failures whose result headers must be identical:
	// "openpgp", "smime-cbc" (EnvelopedData), "smime-gcm"
	// (AuthEnvelopedData); "" for the plain reference.
	Group string
	Kind  outcomeKind
	// Msg is the message with a Message-ID of oracleMsgIDDigits zeros,
	// which Message fills in.
	Msg []byte
	// TwinOf names the class this one copies (an A/A control: the
	// difference between the two is what noise alone makes).
	TwinOf string
}

// twin returns a copy of c for an A/A control.
func (c *oracleClass) twin() *oracleClass {
	t := *c
	t.Name, t.TwinOf = c.Name+" (copy)", c.Name
	return &t
}

// Attempt reports whether the class's messages are answered no sooner
// than the decryption deadline.
func (c *oracleClass) Attempt() bool { return c.Kind != outcomePlain }

// BodySize is the size of the message's body (after the blank line).
func (c *oracleClass) BodySize() int {
	i := bytes.Index(c.Msg, []byte("\r\n\r\n"))
	return len(c.Msg) - i - 4
}

const oracleMsgIDZeros = "00000000"

// Message returns the class's message with Message-ID number n.
func (c *oracleClass) Message(n int) []byte {
	return bytes.Replace(c.Msg, []byte("<timing-"+oracleMsgIDZeros+"@"), []byte(fmt.Sprintf("<timing-%08d@", n%1e8)), 1)
}

// oracleFixture is a gateway keystore and one message per class.
type oracleFixture struct {
	// Size is the size of every message's body (the encrypted content
	// is about 70% of it, the rest padding, or all padding for the
	// classes whose ciphertext is short).
	Size int
	// Keystore holds the shared gateway identity for rt@example.org
	// (X25519 OpenPGP key, RSA-3072 S/MIME certificate) and a second
	// OpenPGP secret key, RSA-3072 (rt-rsa@example.org), so that RSA
	// PKCS#1 padding can fail.
	Keystore string
	// Settings are the milter settings the classes assume: a
	// decompression cap (limits.max_decompressed_size) over the
	// plaintexts and under the bomb's size.
	Settings []string
	From     string
	Rcpt     string
	Classes  []*oracleClass
}

// Class returns the class called name.
func (f *oracleFixture) Class(name string) *oracleClass {
	for _, c := range f.Classes {
		if c.Name == name {
			return c
		}
	}
	panic("no timing class " + name)
}

// newOracleFixture makes the keystore and the messages with bodies of size
// bytes (gpg and openssl as the sending clients; a few seconds, most of it
// gpg's RSA key).
func newOracleFixture(t testing.TB, size int) *oracleFixture {
	t.Helper()
	requirePeers(t, false, "gpg", "gpgconf", "openssl")
	f := &oracleFixture{
		Size:     size,
		Keystore: filepath.Join(tempDir(t, "cm-tks-"), "keystore"),
		Settings: []string{fmt.Sprintf(`limits.max_decompressed_size = "%d"`, max(64<<10, 2*size))},
		From:     "alice@example.net",
		Rcpt:     "rt@example.org",
	}
	copyTree(t, sharedKeystore(t), f.Keystore)
	home := gpgHome(t)
	gpg := func(stdin []byte, args ...string) []byte {
		t.Helper()
		base := []string{"--homedir", home, "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
			"--trust-model", "always", "--auto-key-locate", "local", "--no-auto-key-retrieve"}
		out, err := cmdOut(t, stdin, "gpg", append(base, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	snap, err := keystore.Load(keystore.Options{Dir: f.Keystore})
	if err != nil {
		t.Fatal(err)
	}
	gwPub, err := snap.Export("rt@example.org", false)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(gwPub, []byte("-----BEGIN CERTIFICATE-----")); i >= 0 {
		gwPub = gwPub[:i]
	}
	gpg(gwPub, "--import")
	gpg(nil, "--quick-gen-key", "rt-rsa@example.org", "rsa3072", "sign", "never")
	fpr := regexp.MustCompile(`(?m)^fpr:+([0-9A-F]{40}):`).FindSubmatch(gpg(nil, "--with-colons", "--list-keys", "rt-rsa@example.org"))
	if fpr == nil {
		t.Fatal("no fingerprint for rt-rsa@example.org")
	}
	gpg(nil, "--quick-add-key", string(fpr[1]), "rsa3072", "encr", "never")
	gpg(nil, "--quick-gen-key", "Dave <dave@example.net>", "future-default", "default", "never")
	sec := gpg(nil, "--armor", "--export-secret-keys", "rt-rsa@example.org")
	if _, err := keystore.Import(keystore.Options{Dir: f.Keystore}, sec, "rt-rsa.asc", false, nil, time.Now()); err != nil {
		t.Fatalf("import the RSA gateway key: %v", err)
	}
	f.pgpClasses(t, gpg)
	f.smimeClasses(t)
	f.Classes = append(f.Classes, &oracleClass{Name: "plain", Kind: outcomePlain,
		Msg: f.message(t, "Content-Type: text/plain; charset=us-ascii\r\n", []byte("Hello, this is not encrypted.\r\n"))})
	return f
}

// oracleHeader is the header every class shares (Content-* fields follow).
const oracleHeader = "From: Alice <alice@example.net>\r\nTo: rt@example.org\r\nSubject: timing\r\n" +
	"Date: Thu, 26 Nov 2026 21:00:00 +0000\r\nMessage-ID: <timing-" + oracleMsgIDZeros + "@example.net>\r\nMIME-Version: 1.0\r\n"

// message puts the shared header, the Content-* fields ct (CRLF lines) and
// body together, padding the body with blank-space lines to f.Size bytes
// (whitespace that base64 decoding skips, or a multipart's epilogue).
func (f *oracleFixture) message(t testing.TB, ct string, body []byte) []byte {
	t.Helper()
	if !bytes.HasSuffix(body, []byte("\r\n")) {
		body = append(body, "\r\n"...)
	}
	pad := f.Size - len(body)
	if pad < 2 {
		t.Fatalf("timing message body of %d bytes does not fit in %d", len(body), f.Size)
	}
	var b bytes.Buffer
	b.WriteString(oracleHeader + ct + "\r\n")
	b.Write(body)
	for pad > 0 {
		n := min(pad, 78)
		if pad-n == 1 { // no line of a single byte: split the rest evenly
			n--
		}
		b.WriteString(strings.Repeat(" ", n-2) + "\r\n")
		pad -= n
	}
	return b.Bytes()
}

// pgpMIME is an RFC 3156 multipart/encrypted message around armored.
func (f *oracleFixture) pgpMIME(t testing.TB, armored []byte) []byte {
	body := "This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n" +
		"--enc-b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--enc-b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		string(crlf(bytes.TrimRight(armored, "\r\n"))) + "\r\n--enc-b--\r\n"
	return f.message(t, "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc-b\"\r\n", []byte(body))
}

// oracleArmor armors binary OpenPGP data as a PGP MESSAGE.
func oracleArmor(t testing.TB, bin []byte) []byte {
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	w.Close()
	return b.Bytes()
}

// oracleFirstPacketLen is the length of the first OpenPGP packet of b
// (header included), or -1.
func oracleFirstPacketLen(b []byte) int {
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

// text is the MIME entity the encrypted messages carry: numbered lines of
// text, as long as the ciphertext can be in f.Size bytes (base64 or armor
// make 4 bytes of 3, the RSA-3072 key and the MIME structure about 900
// more).
func (f *oracleFixture) text() []byte {
	b := []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nTicket 4711: please reset the password of the printer account.\r\n")
	for i := 0; len(b) < f.Size*10/14-900; i++ {
		b = fmt.Appendf(b, "%08d %s\r\n", i, strings.Repeat("abcdefghij", 7))
	}
	return b
}

// pgpClasses makes the OpenPGP classes (gpg as the sender).
func (f *oracleFixture) pgpClasses(t testing.TB, gpg func([]byte, ...string) []byte) {
	t.Helper()
	text := f.text()
	enc := func(pt []byte, to string, extra ...string) []byte {
		return gpg(pt, append([]string{"--encrypt", "--compress-algo", "none", "--recipient", to}, extra...)...)
	}
	add := func(name string, kind outcomeKind, bin []byte) {
		f.Classes = append(f.Classes, &oracleClass{Name: "openpgp/" + name, Group: "openpgp", Kind: kind, Msg: f.pgpMIME(t, oracleArmor(t, bin))})
	}
	binA := enc(text, "rt@example.org")
	binB := enc([]byte("Content-Type: text/plain\r\n\r\nanother text\r\n"), "rt@example.org")
	binR := enc(text, "rt-rsa@example.org")
	add("ok", outcomeDecrypted, binA)
	add("ok-rsa", outcomeDecrypted, binR)
	// Integrity failure: a byte near the end of the encrypted data (the
	// MDC) flipped.
	tamp := bytes.Clone(binA)
	tamp[len(tamp)-30] ^= 0x40
	add("tampered", outcomeFailed, tamp)
	add("truncated", outcomeFailed, binA[:len(binA)*2/3])
	add("garbage", outcomeFailed, bytes.Repeat([]byte{0xa5, 0x01, 0x77}, 100))
	// The gateway's key ID and session key from one message, the
	// encrypted data of another.
	na, nb := oracleFirstPacketLen(binA), oracleFirstPacketLen(binB)
	if na < 0 || nb < 0 {
		t.Fatal("cannot split gpg's output into packets")
	}
	add("wrong-session-key", outcomeFailed, append(bytes.Clone(binA[:na]), binB[nb:]...))
	// A bit inside the RSA-encrypted session key: PKCS#1 v1.5 padding
	// fails.
	padR := bytes.Clone(binR)
	padR[40] ^= 0x01
	add("rsa-padding", outcomeFailed, padR)
	add("no-mdc", outcomeFailed, enc(text, "rt@example.org", "--rfc2440", "--cipher-algo", "AES256"))
	// Zeros (1 MiB or 8 times the body size) compressed to a thousandth:
	// over the fixture's max_decompressed_size.
	bomb := append([]byte("Content-Type: text/plain\r\n\r\n"), bytes.Repeat([]byte("0"), max(1<<20, 8*f.Size))...)
	add("bomb", outcomeFailed, enc(bomb, "rt@example.org", "--compress-algo", "zlib", "-z", "9"))
	add("not-for-gateway", outcomeNotForGateway, enc(text, "dave@example.net"))
	// Inline PGP: the armor as a text/plain body.
	inline := func(name string, kind outcomeKind, bin []byte) {
		f.Classes = append(f.Classes, &oracleClass{Name: "openpgp/" + name, Group: "openpgp", Kind: kind,
			Msg: f.message(t, "Content-Type: text/plain; charset=us-ascii\r\n", crlf(oracleArmor(t, bin)))})
	}
	inline("inline-ok", outcomeDecrypted, binA)
	inline("inline-tampered", outcomeFailed, tamp)
}

// smimeClasses makes the S/MIME classes (openssl cms as the sender), all
// to the gateway's RSA-3072 certificate.
func (f *oracleFixture) smimeClasses(t testing.TB) {
	t.Helper()
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	ossl := func(stdin []byte, args ...string) []byte {
		t.Helper()
		out, err := cmdOut(t, stdin, "openssl", args...)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	writeFile(t, p("gw.pem"), gatewayCertPEM(t, f.Keystore), 0o600)
	gwKey, err := filepath.Glob(filepath.Join(f.Keystore, "private", "smime", "rt@example.org-*.pem"))
	if err != nil || len(gwKey) != 1 {
		t.Fatalf("the gateway's S/MIME key file: %v %v", gwKey, err)
	}
	ossl(nil, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("dave.key"), "-out", p("dave.pem"), "-days", "30", "-subj", "/CN=Dave")
	enc := func(pt []byte, recip, cipher string) []byte {
		return ossl(pt, "cms", "-encrypt", "-binary", "-outform", "DER", "-"+cipher, "-recip", p(recip))
	}
	add := func(name, group string, kind outcomeKind, smimeType string, der []byte) {
		ct := "Content-Type: application/pkcs7-mime; smime-type=" + smimeType + "; name=\"smime.p7m\"\r\n" +
			"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\n"
		f.Classes = append(f.Classes, &oracleClass{Name: "smime/" + name, Group: group, Kind: kind, Msg: f.message(t, ct, []byte(b64Lines(der)))})
	}
	// The plaintext: its length leaves 6 bytes of CBC padding, so that
	// the first byte of the last block is content.
	plain := f.text()
	for len(plain)%16 != 10 {
		plain = append(plain[:len(plain)-2], 'x', '\r', '\n')
	}
	cbc := enc(plain, "gw.pem", "aes-256-cbc")
	// The last 32 bytes of the DER (definite lengths, nothing after the
	// encrypted content) are the last two ciphertext blocks; a byte of
	// the second to last changes the same byte of the last plaintext
	// block.
	if !oracleDecrypts(t, cbc, p("gw.pem"), gwKey[0]) {
		t.Fatal("openssl cannot decrypt its own EnvelopedData")
	}
	add("ok-cbc", "smime-cbc", outcomeDecrypted, "enveloped-data", cbc)
	// Bad padding: the last plaintext byte (the padding length, 6) set
	// to 0.
	bad := bytes.Clone(cbc)
	bad[len(bad)-17] ^= 6
	oracleWantDecrypt(t, "cbc-padding", bad, false, p("gw.pem"), gwKey[0])
	add("cbc-padding", "smime-cbc", outcomeFailed, "enveloped-data", bad)
	// Good padding, tampered ciphertext: the first byte of the second to
	// last block changes a content byte of the last block (and garbles
	// the block before). CBC has no integrity check: it decrypts. This
	// and cbc-padding are the two answers of a padding oracle.
	good := bytes.Clone(cbc)
	good[len(good)-32] ^= 0x01
	oracleWantDecrypt(t, "cbc-tampered", good, true, p("gw.pem"), gwKey[0])
	add("cbc-tampered", "smime-cbc", outcomeDecrypted, "enveloped-data", good)
	// RSA PKCS#1 v1.5 padding: a bit inside the encrypted content key
	// (an RSA-3072 block: OCTET STRING 04 82 01 80).
	rsaHdr := []byte{0x04, 0x82, 0x01, 0x80}
	i := bytes.Index(cbc, rsaHdr)
	if i < 0 {
		t.Fatal("no RSA-3072 encrypted key in openssl's EnvelopedData")
	}
	rsaBad := bytes.Clone(cbc)
	rsaBad[i+len(rsaHdr)+20] ^= 0x01
	add("rsa-padding", "smime-cbc", outcomeFailed, "enveloped-data", rsaBad)
	// Wrong key: the encrypted content key of another message for the
	// gateway. The content then decrypts to noise whose padding is bad,
	// except once in about 256: openssl picks a pair where it is bad.
	var wrong []byte
	for range 50 {
		other := enc(plain, "gw.pem", "aes-256-cbc")
		j := bytes.Index(other, rsaHdr)
		w := bytes.Clone(cbc)
		copy(w[i:i+len(rsaHdr)+384], other[j:j+len(rsaHdr)+384])
		if !oracleDecrypts(t, w, p("gw.pem"), gwKey[0]) {
			wrong = w
			break
		}
	}
	if wrong == nil {
		t.Fatal("no wrong-key EnvelopedData with bad padding in 50 tries")
	}
	add("wrong-key", "smime-cbc", outcomeFailed, "enveloped-data", wrong)
	add("truncated", "smime-cbc", outcomeFailed, "enveloped-data", cbc[:len(cbc)-40])
	add("garbage", "smime-cbc", outcomeFailed, "enveloped-data", append(bytes.Clone(cbc[:60]), bytes.Repeat([]byte{0x5a}, 200)...))
	add("not-for-gateway", "smime-cbc", outcomeNotForGateway, "enveloped-data", enc(plain, "dave.pem", "aes-256-cbc"))
	gcm := enc(f.text(), "gw.pem", "aes-256-gcm")
	add("ok-gcm", "smime-gcm", outcomeDecrypted, "authEnveloped-data", gcm)
	tag := bytes.Clone(gcm)
	tag[len(tag)-1] ^= 0x01 // the GCM tag is the last field
	add("gcm-tag", "smime-gcm", outcomeFailed, "authEnveloped-data", tag)
}

// oracleDecrypts reports whether openssl decrypts the EnvelopedData der
// with the gateway's key.
func oracleDecrypts(t testing.TB, der []byte, cert, key string) bool {
	t.Helper()
	_, err := cmdOut(t, der, "openssl", "cms", "-decrypt", "-inform", "DER", "-recip", cert, "-inkey", key)
	return err == nil
}

func oracleWantDecrypt(t testing.TB, name string, der []byte, want bool, cert, key string) {
	t.Helper()
	if got := oracleDecrypts(t, der, cert, key); got != want {
		t.Fatalf("%s: openssl decrypts it: %v, want %v (is openssl's DER not the shape the fixture expects?)", name, got, want)
	}
}

// b64Lines base64-encodes data in 76-character CRLF lines.
func b64Lines(data []byte) string {
	var b strings.Builder
	for len(data) > 0 {
		n := min(len(data), 57)
		b.WriteString(base64.StdEncoding.EncodeToString(data[:n]) + "\r\n")
		data = data[n:]
	}
	return b.String()
}

// oracleSMTP is one SMTP session that times the end of DATA.
type oracleSMTP struct {
	c net.Conn
	r *bufio.Reader
	w *bufio.Writer
}

// dialOracleSMTP opens a session (greeting and EHLO) to addr.
func dialOracleSMTP(t testing.TB, addr string) *oracleSMTP {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	s := &oracleSMTP{c: c, r: bufio.NewReader(c), w: bufio.NewWriterSize(c, 64<<10)}
	t.Cleanup(func() { s.Close() })
	if _, err := s.expect(220); err != nil {
		t.Fatalf("greeting from %s: %v", addr, err)
	}
	if _, err := s.cmd(250, "EHLO client.example.net"); err != nil {
		t.Fatalf("EHLO to %s: %v", addr, err)
	}
	return s
}

// Close ends the session.
func (s *oracleSMTP) Close() {
	s.c.SetDeadline(time.Now().Add(2 * time.Second))
	s.w.WriteString("QUIT\r\n")
	s.w.Flush()
	s.c.Close()
}

// oracleResult is one message's answer.
type oracleResult struct {
	// Reply is the reply to the end of DATA (the last line, with its
	// code), Elapsed the time from writing the final "." to reading it.
	Reply   string
	Elapsed time.Duration
	// Start is when the final "." was written.
	Start time.Time
}

// queuedRE matches the queue id in Postfix's 250 reply.
var queuedRE = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// QueueID is the Postfix queue id in a 250 reply, or "".
func (r oracleResult) QueueID() string {
	if m := queuedRE.FindStringSubmatch(r.Reply); m != nil {
		return m[1]
	}
	return ""
}

// Normalized is the reply with the queue id replaced by QUEUEID.
func (r oracleResult) Normalized() string {
	return queuedRE.ReplaceAllString(r.Reply, "queued as QUEUEID")
}

// Send sends msg (CRLF lines) in a new transaction: MAIL, RCPT, DATA, the
// dot-stuffed message, and then, timed, the final "." and its reply. A
// refusal at end of DATA is a result, not an error.
func (s *oracleSMTP) Send(from, rcpt string, msg []byte) (oracleResult, error) {
	s.c.SetDeadline(time.Now().Add(2 * time.Minute))
	if _, err := s.cmd(250, "MAIL FROM:<"+from+">"); err != nil {
		return oracleResult{}, fmt.Errorf("MAIL: %w", err)
	}
	if _, err := s.cmd(250, "RCPT TO:<"+rcpt+">"); err != nil {
		return oracleResult{}, fmt.Errorf("RCPT: %w", err)
	}
	if _, err := s.cmd(354, "DATA"); err != nil {
		return oracleResult{}, fmt.Errorf("DATA: %w", err)
	}
	for line := range bytes.Lines(msg) {
		if line[0] == '.' {
			s.w.WriteByte('.')
		}
		s.w.Write(line)
	}
	if !bytes.HasSuffix(msg, []byte("\r\n")) {
		s.w.WriteString("\r\n")
	}
	if err := s.w.Flush(); err != nil {
		return oracleResult{}, err
	}
	start := time.Now()
	s.w.WriteString(".\r\n")
	if err := s.w.Flush(); err != nil {
		return oracleResult{}, err
	}
	reply, err := s.readReply()
	elapsed := time.Since(start)
	if err != nil {
		return oracleResult{}, fmt.Errorf("end of DATA: %w", err)
	}
	if reply[0] != '2' {
		// Postfix ends a transaction refused at end of DATA: RSET is
		// not needed, but harmless.
		s.cmd(250, "RSET")
	}
	return oracleResult{Reply: reply, Elapsed: elapsed, Start: start}, nil
}

func (s *oracleSMTP) cmd(code int, line string) (string, error) {
	s.w.WriteString(line + "\r\n")
	if err := s.w.Flush(); err != nil {
		return "", err
	}
	return s.expect(code)
}

func (s *oracleSMTP) expect(code int) (string, error) {
	reply, err := s.readReply()
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(reply, fmt.Sprint(code)) {
		return reply, fmt.Errorf("reply %q, want %d", reply, code)
	}
	return reply, nil
}

// readReply reads a (multi-line) reply and returns its last line.
func (s *oracleSMTP) readReply() (string, error) {
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 {
			return "", fmt.Errorf("short reply line %q", line)
		}
		if line[3] != '-' {
			return line, nil
		}
	}
}

// oracleRun is what one run measured: per class, every result in order.
type oracleRun struct {
	Size    int // of the bodies
	Classes []*oracleClass
	Results map[string][]oracleResult
	// Order is the class of each message in the order the answers came.
	Order []*oracleClass
}

// runOracleClasses sends n messages of every class over sessions
// persistent sessions, in rounds: each round sends one message of every
// class in a new random order, the sessions taking the messages of a
// round in turn.
func runOracleClasses(t testing.TB, addr string, fix *oracleFixture, classes []*oracleClass, n, sessions int) *oracleRun {
	t.Helper()
	run := &oracleRun{Size: fix.Size, Classes: classes, Results: map[string][]oracleResult{}}
	ss := make([]*oracleSMTP, sessions)
	for i := range ss {
		ss[i] = dialOracleSMTP(t, addr)
	}
	type job struct {
		c   *oracleClass
		seq int
	}
	seq := 0
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 11))
	for round := range n {
		order := slices.Clone(classes)
		rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
		jobs := make(chan job)
		type done struct {
			c   *oracleClass
			r   oracleResult
			err error
		}
		out := make(chan done, len(order))
		for _, s := range ss {
			go func() {
				for j := range jobs {
					r, err := s.Send(fix.From, fix.Rcpt, j.c.Message(j.seq))
					out <- done{j.c, r, err}
				}
			}()
		}
		for _, c := range order {
			seq++
			jobs <- job{c, seq}
		}
		close(jobs)
		for range order {
			d := <-out
			if d.err != nil {
				t.Fatalf("round %d, %s: %v", round, d.c.Name, d.err)
			}
			run.Results[d.c.Name] = append(run.Results[d.c.Name], d.r)
			run.Order = append(run.Order, d.c)
		}
	}
	return run
}

// oracleStats are the figures of one class.
type oracleStats struct {
	N                          int
	Median, P95, Min, Max, Avg time.Duration
}

func oracleStatsOf(rs []oracleResult) oracleStats {
	ds := make([]time.Duration, len(rs))
	for i, r := range rs {
		ds[i] = r.Elapsed
	}
	return durationStats(ds)
}

func durationStats(ds []time.Duration) oracleStats {
	if len(ds) == 0 {
		return oracleStats{}
	}
	ds = slices.Clone(ds)
	slices.Sort(ds)
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	return oracleStats{N: len(ds), Median: quantile(ds, 0.5), P95: quantile(ds, 0.95), Min: ds[0], Max: ds[len(ds)-1], Avg: sum / time.Duration(len(ds))}
}

// quantile of sorted ds, interpolated between the closest ranks.
func quantile(ds []time.Duration, q float64) time.Duration {
	pos := q * float64(len(ds)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(ds)-1)
	frac := pos - float64(lo)
	return ds[lo] + time.Duration(frac*float64(ds[hi]-ds[lo]))
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f", float64(d)/float64(time.Millisecond)) }

// oracleLoadAverage is /proc/loadavg's first three fields.
func oracleLoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// milterTap sits between Postfix and the milter and timestamps the milter
// packets that matter for the timing of a message: the end of the body
// (SMFIC_BODYEOB) from the MTA, the milter's first modification and its
// final response. With it, the span from the end of DATA to the reply
// splits into Postfix before the milter, the milter, and Postfix after it.
type milterTap struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	events []tapEvent
	conns  sync.WaitGroup
}

// tapEvent is what the tap saw of one message.
type tapEvent struct {
	EOM      time.Time // SMFIC_BODYEOB read from the MTA
	FirstMod time.Time // the milter's first packet after it (zero: none before the final one)
	Final    time.Time // the milter's final response read
	Response byte      // its command: 'a' accept, 'y' reply code, …
	Mods     int       // modification packets
	ModBytes int
}

// startMilterTap relays connections on a free loopback port to target.
func startMilterTap(t testing.TB, target string) *milterTap {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	tap := &milterTap{ln: ln, target: target}
	go tap.serve()
	t.Cleanup(func() { ln.Close(); tap.conns.Wait() })
	return tap
}

// Addr is the tap's address in Postfix syntax.
func (tap *milterTap) Addr() string { return "inet:" + tap.ln.Addr().String() }

// Take returns the events so far and forgets them.
func (tap *milterTap) Take() []tapEvent {
	tap.mu.Lock()
	defer tap.mu.Unlock()
	ev := tap.events
	tap.events = nil
	return ev
}

func (tap *milterTap) serve() {
	for {
		c, err := tap.ln.Accept()
		if err != nil {
			return
		}
		tap.conns.Add(1)
		go func() {
			defer tap.conns.Done()
			tap.relay(c)
		}()
	}
}

func (tap *milterTap) relay(mta net.Conn) {
	defer mta.Close()
	milter, err := net.Dial("tcp", tap.target)
	if err != nil {
		return
	}
	defer milter.Close()
	var mu sync.Mutex
	var cur *tapEvent
	done := make(chan struct{})
	go func() {
		defer close(done)
		tapPackets(quickAckReader{mta.(*net.TCPConn)}, milter, func(cmd byte, n int) {
			if cmd != 'E' {
				return
			}
			mu.Lock()
			cur = &tapEvent{EOM: time.Now()}
			mu.Unlock()
		})
		milter.Close()
	}()
	tapPackets(milter, mta, func(cmd byte, n int) {
		now := time.Now()
		mu.Lock()
		defer mu.Unlock()
		if cur == nil {
			return
		}
		if cur.FirstMod.IsZero() {
			cur.FirstMod = now
		}
		switch cmd {
		case 'a', 'c', 'd', 'r', 't', 'y':
			cur.Final, cur.Response = now, cmd
			tap.mu.Lock()
			tap.events = append(tap.events, *cur)
			tap.mu.Unlock()
			cur = nil
		case 'p': // progress
		default:
			cur.Mods++
			cur.ModBytes += n
		}
	})
	mta.Close()
	<-done
}

// quickAckReader acknowledges every read from the MTA at once, as the
// milter does (milter/quickack_linux.go): the tap stands where the milter
// would, and Postfix's Nagle would otherwise wait for its delayed ACKs.
type quickAckReader struct{ c *net.TCPConn }

func (q quickAckReader) Read(p []byte) (int, error) {
	n, err := q.c.Read(p)
	if rc, e := q.c.SyscallConn(); n > 0 && e == nil {
		rc.Control(func(fd uintptr) {
			_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_QUICKACK, 1)
		})
	}
	return n, err
}

// tapPackets copies milter packets (4-byte length, command, data) from
// src to dst, calling seen for each after reading it and before
// forwarding it.
func tapPackets(src io.Reader, dst io.Writer, seen func(cmd byte, n int)) {
	r := bufio.NewReaderSize(src, 128<<10)
	var hdr [4]byte
	buf := make([]byte, 0, 128<<10)
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(hdr[:]))
		if n < 1 || n > 64<<20 {
			return
		}
		buf = slices.Grow(buf[:0], 4+n)[:4+n]
		copy(buf, hdr[:])
		if _, err := io.ReadFull(r, buf[4:]); err != nil {
			return
		}
		seen(buf[4], n)
		if _, err := dst.Write(buf); err != nil {
			return
		}
	}
}
