package e2e

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// inboundKeystore copies the shared gateway identity (rt@example.org) and
// imports the given files as correspondents' keys (asCA: trust anchors).
func inboundKeystore(t *testing.T, files map[string]bool) string {
	t.Helper()
	dir := filepath.Join(tempDir(t, "cm-iks-"), "keystore")
	copyTree(t, sharedKeystore(t), dir)
	for f, asCA := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keystore.Import(keystore.Options{Dir: dir}, data, f, asCA, nil, time.Now()); err != nil {
			t.Fatalf("import %s: %v", f, err)
		}
	}
	return dir
}

func gatewaySnapshot(t *testing.T, dir string) *keystore.Snapshot {
	t.Helper()
	snap, err := keystore.Load(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	return snap
}

// only returns the single value of a header field, failing otherwise.
func only(t *testing.T, m *Mail, name string) string {
	t.Helper()
	v := m.Get(name)
	if len(v) != 1 {
		t.Fatalf("%d %s fields in the delivered message, want 1:\n%s", len(v), name, m.Raw)
	}
	return strings.TrimSpace(v[0])
}

// TestInboundOpenPGPDelivered: a message encrypted and signed by gpg to the
// gateway's address, sent over SMTP, is delivered as plaintext with a
// valid signature, and forged result headers are gone.
func TestInboundOpenPGPDelivered(t *testing.T) {
	requirePeers(t, false, "gpg", "gpgconf")
	home := gpgHome(t)
	if _, err := cmdOut(t, nil, "gpg", "--homedir", home, "--batch", "--passphrase", "", "--quick-gen-key", "Alice <alice@example.net>", "future-default", "default", "never"); err != nil {
		t.Fatal(err)
	}
	pub, err := cmdOut(t, nil, "gpg", "--homedir", home, "--armor", "--export", "alice@example.net")
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(t.TempDir(), "alice.asc")
	os.WriteFile(pubFile, pub, 0o644)
	ks := inboundKeystore(t, map[string]bool{pubFile: false})
	gw, err := gatewaySnapshot(t, ks).Export("rt@example.org", false)
	if err != nil {
		t.Fatal(err)
	}
	// Only the OpenPGP block of the export.
	if i := bytes.Index(gw, []byte("-----BEGIN CERTIFICATE-----")); i >= 0 {
		gw = gw[:i]
	}
	if _, err := cmdOut(t, gw, "gpg", "--homedir", home, "--batch", "--import"); err != nil {
		t.Fatal(err)
	}
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nTicket 42: the printer is on fire. Grüße.\r\n"
	armored, err := cmdOut(t, []byte(inner), "gpg", "--homedir", home, "--batch", "--trust-model", "always", "--armor",
		"--local-user", "alice@example.net", "--recipient", "rt@example.org", "--sign", "--encrypt")
	if err != nil {
		t.Fatal(err)
	}
	msg := "From: Alice <alice@example.net>\r\nTo: rt@example.org\r\nSubject: encrypted\r\n" +
		"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		strings.ReplaceAll(string(armored), "\n", "\r\n") + "\r\n--b--\r\n"

	pf, _ := startStack(t, stackOptions{Milter: milterOptions{Keystore: ks}})
	if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	m := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)[0]
	if got := only(t, m, "X-Cryptmilter-Encryption"); !strings.HasPrefix(got, "decrypted; protocol=openpgp; key=") {
		t.Errorf("X-Cryptmilter-Encryption: %s", got)
	}
	if got := only(t, m, "X-Cryptmilter-Signature"); !strings.HasPrefix(got, "valid; protocol=openpgp; signer=alice@example.net; key=") {
		t.Errorf("X-Cryptmilter-Signature: %s", got)
	}
	if ct := only(t, m, "Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the decrypted text/plain", ct)
	}
	if !bytes.Contains(m.Body, []byte("the printer is on fire. Grüße.")) || bytes.Contains(m.Raw, []byte("BEGIN PGP MESSAGE")) {
		t.Errorf("delivered body is not the plaintext:\n%s", m.Raw)
	}
}

// TestInboundThunderbirdDelivered: Thunderbird's own encrypted and signed
// message (the corpus), sent over SMTP to a gateway holding alice's key.
func TestInboundThunderbirdDelivered(t *testing.T) {
	corpus := findCorpus(t)
	keys := filepath.Join(corpus, "openpgp", "keys")
	ks := inboundKeystore(t, map[string]bool{
		filepath.Join(keys, "alice@openpgp.example-0xf231550c4f47e38e-secret.asc"): false,
		filepath.Join(keys, "bob@openpgp.example-0xfbfcc82a015e7330-pub.asc"):      false,
	})
	msg, err := os.ReadFile(filepath.Join(corpus, "openpgp", "eml", "signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e.eml"))
	if err != nil {
		t.Fatal(err)
	}
	pf, _ := startStack(t, stackOptions{Milter: milterOptions{Keystore: ks}})
	if err := pf.SendSMTP(pf.InboundAddr, "bob@openpgp.example", []string{"rt@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	m := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)[0]
	if got := only(t, m, "X-Cryptmilter-Encryption"); got != "decrypted; protocol=openpgp; key=EB85BB5FA33A75E15E944E63F231550C4F47E38E" {
		t.Errorf("X-Cryptmilter-Encryption: %s", got)
	}
	if got := only(t, m, "X-Cryptmilter-Signature"); got != "valid; protocol=openpgp; signer=bob@openpgp.example; key=D1A66E1A23B182C9980F788CFBFCC82A015E7330; headers=replaced" {
		t.Errorf("X-Cryptmilter-Signature: %s", got)
	}
	if bytes.Contains(m.Raw, []byte("BEGIN PGP MESSAGE")) {
		t.Error("the delivered message is still encrypted")
	}
}

// TestInboundSMIMEDelivered: openssl signs (as alice, under a CA in the
// keystore) then encrypts to the gateway's certificate; the message goes
// over SMTP and is delivered as plaintext with a valid signature and an
// Authentication-Results header.
func TestInboundSMIMEDelivered(t *testing.T) {
	requirePeers(t, false, "openssl")
	dir := t.TempDir()
	run := func(args ...string) {
		t.Helper()
		if _, err := cmdOut(t, nil, "openssl", args...); err != nil {
			t.Fatal(err)
		}
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30", "-subj", "/CN=Test Mail CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("alice.key"), "-out", p("alice.csr"), "-subj", "/CN=Alice")
	os.WriteFile(p("ext.cnf"), []byte("subjectAltName=email:alice@example.net\nextendedKeyUsage=emailProtection\nkeyUsage=digitalSignature,keyEncipherment\n"), 0o644)
	run("x509", "-req", "-in", p("alice.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p("alice.pem"), "-days", "30", "-extfile", p("ext.cnf"))

	ks := inboundKeystore(t, map[string]bool{p("ca.pem"): true})
	id, err := gatewaySnapshot(t, ks).GatewaySMIME("rt@example.org")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(p("gw.pem"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw}), 0o644)
	os.WriteFile(p("inner.eml"), []byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nPlease reset my password.\r\n"), 0o644)
	run("smime", "-sign", "-in", p("inner.eml"), "-signer", p("alice.pem"), "-inkey", p("alice.key"), "-out", p("signed.eml"))
	run("smime", "-encrypt", "-aes256", "-in", p("signed.eml"), "-out", p("enc.eml"),
		"-from", "alice@example.net", "-to", "rt@example.org", "-subject", "S/MIME", p("gw.pem"))
	msg, _ := os.ReadFile(p("enc.eml"))

	pf, _ := startStack(t, stackOptions{Milter: milterOptions{Keystore: ks, Settings: []string{`hostname = "mx.example.org"`}}})
	if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	m := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)[0]
	if got := only(t, m, "X-Cryptmilter-Encryption"); !strings.HasPrefix(got, "decrypted; protocol=smime; key=") {
		t.Errorf("X-Cryptmilter-Encryption: %s", got)
	}
	if got := only(t, m, "X-Cryptmilter-Signature"); !strings.HasPrefix(got, "valid; protocol=smime; signer=alice@example.net; key=") {
		t.Errorf("X-Cryptmilter-Signature: %s", got)
	}
	if got := only(t, m, "Authentication-Results"); !strings.HasPrefix(got, "mx.example.org; smime=pass body.smime-identifier=alice@example.net") {
		t.Errorf("Authentication-Results: %s", got)
	}
	if !bytes.Contains(m.Raw, []byte("Please reset my password.")) || bytes.Contains(m.Raw, []byte("smime.p7m\r\n")) {
		t.Errorf("delivered message is not the plaintext:\n%s", m.Raw)
	}
}

// findCorpus locates ../shared/corpus/thunderbird from the package
// directory, skipping (or failing in CI) when it is absent.
func findCorpus(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	for d := wd; d != filepath.Dir(d); d = filepath.Dir(d) {
		c := filepath.Join(d, "shared", "corpus", "thunderbird")
		if fi, err := os.Stat(c); err == nil && fi.IsDir() {
			return c
		}
	}
	t.Skip("shared/corpus/thunderbird not found above " + wd + ": the corpus test needs ../shared/corpus")
	return ""
}
