package e2e

import (
	"bytes"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"mime"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// outPeers are the correspondents of the outbound suite: alice and carol
// read OpenPGP (each with a gpg home of their own), dave reads S/MIME,
// bob has no key.
type outPeers struct {
	keystore string            // gateway identity plus the peers' public keys
	homes    map[string]string // gpg home per OpenPGP peer
	subkeys  map[string]string // encryption subkey ID per OpenPGP peer
	smimeKey string
	smimeCrt string
	gwCert   string // gateway S/MIME certificate (PEM file)
	gwKeyID  string // gateway OpenPGP key ID (16 hex, upper case)
	verifier string // a gpg home holding only the gateway's public key
}

func cmdOut(t testing.TB, stdin []byte, name string, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

func gpgHome(t testing.TB) string {
	t.Helper()
	home, err := os.MkdirTemp("", "g")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	return home
}

// newOutPeers makes the peers' keys and a keystore holding the gateway
// identity and their public keys.
func newOutPeers(t testing.TB) *outPeers {
	t.Helper()
	requirePeers(t, false, "gpg", "gpgconf", "openssl")
	p := &outPeers{homes: map[string]string{}, subkeys: map[string]string{}}
	p.keystore = filepath.Join(tempDir(t, "cm-oks-"), "keystore")
	copyTree(t, sharedKeystore(t), p.keystore)
	opts := keystore.Options{Dir: p.keystore}
	snap, err := keystore.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	gw, err := snap.GatewayOpenPGPAt("rt@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	p.gwKeyID = strings.ToUpper(gw.GetHexKeyID())
	gwPub, err := gw.GetArmoredPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	id, err := snap.GatewaySMIMEAt("rt@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := tempDir(t, "cm-op-")
	p.gwCert = filepath.Join(dir, "gw.pem")
	writeFile(t, p.gwCert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})), 0o600)
	p.verifier = gpgHome(t)
	if _, err := cmdOut(t, []byte(gwPub), "gpg", "--homedir", p.verifier, "--batch", "--import"); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{"alice@example.net", "carol@example.net"} {
		home := gpgHome(t)
		p.homes[addr] = home
		g := []string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}
		if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-gen-key", addr, "ed25519", "sign", "never")...); err != nil {
			t.Fatal(err)
		}
		out, err := cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
		if err != nil {
			t.Fatal(err)
		}
		fpr := regexp.MustCompile(`(?m)^fpr:+([0-9A-F]+):`).FindStringSubmatch(string(out))[1]
		if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-add-key", fpr, "cv25519", "encr", "never")...); err != nil {
			t.Fatal(err)
		}
		out, _ = cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
		for _, line := range strings.Split(string(out), "\n") {
			if fs := strings.Split(line, ":"); fs[0] == "sub" && len(fs) > 11 && strings.Contains(fs[11], "e") {
				p.subkeys[addr] = fs[4]
			}
		}
		pub, err := cmdOut(t, nil, "gpg", append(g, "--armor", "--export", addr)...)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keystore.Import(opts, pub, addr+".asc", false, nil, time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		if _, err := cmdOut(t, []byte(gwPub), "gpg", append(g, "--import")...); err != nil {
			t.Fatal(err)
		}
	}
	p.smimeKey, p.smimeCrt = filepath.Join(dir, "dave.key"), filepath.Join(dir, "dave.pem")
	if _, err := cmdOut(t, nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p.smimeKey, "-out", p.smimeCrt,
		"-days", "30", "-subj", "/CN=dave", "-addext", "subjectAltName=email:dave@example.com",
		"-addext", "extendedKeyUsage=emailProtection", "-addext", "keyUsage=digitalSignature,keyEncipherment"); err != nil {
		t.Fatal(err)
	}
	crt, _ := os.ReadFile(p.smimeCrt)
	if _, err := keystore.Import(opts, crt, "dave.pem", false, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	return p
}

var armorRe = regexp.MustCompile(`(?s)-----BEGIN PGP MESSAGE-----.*?-----END PGP MESSAGE-----`)

// crlf turns a maildir file (LF) back into the CRLF message that was sent.
func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// pgpDecrypt decrypts a delivered PGP/MIME message with addr's key and
// checks the gateway's signature; it returns the plaintext entity.
func (p *outPeers) pgpDecrypt(t testing.TB, addr string, m *Mail) []byte {
	t.Helper()
	if ct := strings.Join(m.Get("Content-Type"), " "); !strings.Contains(ct, "multipart/encrypted") || !strings.Contains(ct, "application/pgp-encrypted") {
		t.Fatalf("%s got Content-Type %q, want PGP/MIME", addr, ct)
	}
	armored := armorRe.Find(m.Body)
	if armored == nil {
		t.Fatalf("%s: no PGP message in the body", addr)
	}
	out := filepath.Join(tempDir(t, "cm-pt-"), "plain")
	status, err := cmdOut(t, armored, "gpg", "--homedir", p.homes[addr], "--batch", "--status-fd", "1", "--output", out, "--decrypt")
	if err != nil {
		t.Fatalf("%s: %v", addr, err)
	}
	if !bytes.Contains(status, []byte("DECRYPTION_OKAY")) || !bytes.Contains(status, []byte("GOODSIG "+p.gwKeyID)) {
		t.Fatalf("%s: gpg status lacks DECRYPTION_OKAY or GOODSIG %s:\n%s", addr, p.gwKeyID, status)
	}
	plain, _ := os.ReadFile(out)
	return plain
}

// pgpKeyIDs lists the recipient key IDs of a delivered PGP/MIME message
// (gpg --list-packets without any secret key).
func (p *outPeers) pgpKeyIDs(t testing.TB, m *Mail) []string {
	t.Helper()
	out, _ := cmdOut(t, armorRe.Find(m.Body), "gpg", "--homedir", p.verifier, "--batch", "--list-packets")
	var ids []string
	for _, s := range regexp.MustCompile(`keyid ([0-9A-F]{16})`).FindAllStringSubmatch(string(out), -1) {
		ids = append(ids, s[1])
	}
	return ids
}

// smimeDecrypt decrypts dave's S/MIME message and verifies the gateway's
// signature inside; it returns the signed content.
func (p *outPeers) smimeDecrypt(t testing.TB, m *Mail) []byte {
	t.Helper()
	if ct := strings.Join(m.Get("Content-Type"), " "); !strings.Contains(ct, "application/pkcs7-mime") || !strings.Contains(ct, "enveloped-data") {
		t.Fatalf("dave got Content-Type %q, want S/MIME enveloped data", ct)
	}
	dir := tempDir(t, "cm-sm-")
	in := filepath.Join(dir, "in.eml")
	writeFile(t, in, string(crlf(m.Raw)), 0o600)
	signed := filepath.Join(dir, "signed.eml")
	if _, err := cmdOut(t, nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", p.smimeCrt, "-inkey", p.smimeKey, "-out", signed); err != nil {
		t.Fatal(err)
	}
	content, err := cmdOut(t, nil, "openssl", "smime", "-verify", "-in", signed, "-CAfile", p.gwCert)
	if err != nil {
		t.Fatalf("openssl smime -verify: %v", err)
	}
	return content
}

// pgpVerifySigned verifies a delivered PGP/MIME signed message.
func (p *outPeers) pgpVerifySigned(t testing.TB, m *Mail) []byte {
	t.Helper()
	ct := strings.Join(m.Get("Content-Type"), " ")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/signed" || params["protocol"] != "application/pgp-signature" {
		t.Fatalf("Content-Type %q, want PGP/MIME signed (%v)", ct, err)
	}
	body := crlf(m.Body)
	delim := []byte("\r\n--" + params["boundary"])
	start := bytes.Index(body, []byte("--"+params["boundary"]+"\r\n"))
	if start < 0 {
		t.Fatalf("no first part")
	}
	rest := body[start+len(params["boundary"])+4:]
	end := bytes.Index(rest, delim)
	signedPart := rest[:end]
	sigPart := rest[end+len(delim):]
	sig := regexp.MustCompile(`(?s)-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----`).Find(sigPart)
	dir := tempDir(t, "cm-sv-")
	writeFile(t, filepath.Join(dir, "data"), string(signedPart), 0o600)
	writeFile(t, filepath.Join(dir, "sig.asc"), string(sig), 0o600)
	status, err := cmdOut(t, nil, "gpg", "--homedir", p.verifier, "--batch", "--status-fd", "1", "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "data"))
	if err != nil || !bytes.Contains(status, []byte("GOODSIG "+p.gwKeyID)) {
		t.Fatalf("gpg --verify of the signed copy: %v\n%s", err, status)
	}
	return signedPart
}

// outMessage is the test message: To alice and dave, Cc bob; carol is
// the Bcc recipient (envelope only).
func outMessage(subject string) []byte {
	return []byte("From: RT <rt@example.org>\r\n" +
		"To: alice@example.net, dave@example.com\r\n" +
		"Cc: bob@example.net\r\n" +
		"Subject: " + subject + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.org>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Grüße, trailing space \r\n" +
		"From the gateway.\r\n")
}

var outRcpts = []string{"alice@example.net", "dave@example.com", "bob@example.net", "carol@example.net"}

// checkDelivered checks that each recipient got exactly one copy of the
// message with subject, in its own protocol, and returns nothing.
func (p *outPeers) checkDelivered(t *testing.T, pf *Postfix, subject string, before map[string]int) {
	t.Helper()
	got := map[string]*Mail{}
	for _, addr := range outRcpts {
		mails := pf.WaitMaildir(t, addr, before[addr]+1, 60*time.Second)
		got[addr] = mails[len(mails)-1]
	}
	pf.WaitQueueEmpty(t, 30*time.Second)
	time.Sleep(time.Second) // a duplicate would arrive about now
	for _, addr := range outRcpts {
		if n := len(pf.Maildir(t, addr)); n != before[addr]+1 {
			t.Errorf("%s has %d new messages, want exactly 1", addr, n-before[addr])
		}
	}
	want := []byte("Subject: " + subject)
	for _, addr := range []string{"alice@example.net", "carol@example.net"} {
		plain := p.pgpDecrypt(t, addr, got[addr])
		if !bytes.Contains(plain, want) || !bytes.Contains(plain, []byte("=46rom the gateway.")) {
			t.Errorf("%s: decrypted entity lacks the subject or the encoded From line:\n%s", addr, plain)
		}
		if s := got[addr].Get("Subject"); len(s) != 1 || s[0] != "[...]" {
			t.Errorf("%s: outer Subject %q, want [...]", addr, s)
		}
	}
	if ids := p.pgpKeyIDs(t, got["alice@example.net"]); len(ids) != 1 || ids[0] != p.subkeys["alice@example.net"] {
		t.Errorf("alice's copy is encrypted to %v, want only %s (carol is %s)", ids, p.subkeys["alice@example.net"], p.subkeys["carol@example.net"])
	}
	if content := p.smimeDecrypt(t, got["dave@example.com"]); !bytes.Contains(content, want) {
		t.Errorf("dave: S/MIME content lacks the subject:\n%s", content)
	}
	if signed := p.pgpVerifySigned(t, got["bob@example.net"]); !bytes.Contains(signed, []byte("Gr=C3=BC=C3=9Fe")) {
		t.Errorf("bob: signed entity is not the canonical text:\n%s", signed)
	}
	for _, addr := range outRcpts {
		// The header, not the raw bytes: base64 and armored ciphertext
		// spell "Bcc" by chance in a few percent of messages.
		if len(got[addr].Get("Bcc")) != 0 || bytes.Contains(got[addr].Body, []byte("\nBcc:")) {
			t.Errorf("%s: copy mentions Bcc", addr)
		}
	}
}

// counts returns how many messages each recipient has, once the queue is
// empty (so that nothing of an earlier subtest arrives later).
func counts(t *testing.T, pf *Postfix) map[string]int {
	t.Helper()
	pf.WaitQueueEmpty(t, 30*time.Second)
	c := map[string]int{}
	for _, a := range outRcpts {
		c[a] = len(pf.Maildir(t, a))
	}
	return c
}

// TestOutboundDelivery: one message to an OpenPGP recipient, an S/MIME
// recipient, a recipient without a key and a Bcc recipient arrives as
// exactly one correct copy per mailbox, over SMTP and with sendmail.
func TestOutboundDelivery(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	peers := newOutPeers(t)
	pf, _ := startStack(t, stackOptions{Milter: milterOptions{Keystore: peers.keystore}})
	t.Run("smtp", func(t *testing.T) {
		before := counts(t, pf)
		if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", outRcpts, outMessage("over smtp")); err != nil {
			t.Fatal(err)
		}
		peers.checkDelivered(t, pf, "over smtp", before)
	})
	t.Run("sendmail", func(t *testing.T) {
		before := counts(t, pf)
		pf.Sendmail(t, "rt@example.org", outRcpts, outMessage("with sendmail"))
		peers.checkDelivered(t, pf, "with sendmail", before)
	})
}

// TestOutboundRequiredRefused: with policy required a recipient without a
// key makes the message refused with the X.7.1 reply: over SMTP to the
// client, with sendmail as a bounce to the sender.
func TestOutboundRequiredRefused(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	peers := newOutPeers(t)
	pf, _ := startStack(t, stackOptions{Milter: milterOptions{Keystore: peers.keystore,
		Extra: "\n[[outbound.rule]]\nmatch = \"@example.net\"\npolicy = \"required\"\n"}})
	t.Run("sendmail", func(t *testing.T) {
		// At the end of a non-SMTP message the 5xx makes Postfix bounce
		// the message to the sender with the reply's text.
		pf.Sendmail(t, "rt@example.org", []string{"alice@example.net", "bob@example.net"}, outMessage("refused by sendmail"))
		bounces := pf.WaitMaildir(t, "rt@example.org", 1, 60*time.Second)
		if !bytes.Contains(bounces[0].Raw, []byte("no usable encryption key")) || !bytes.Contains(bounces[0].Raw, []byte("bob@example.net")) {
			t.Errorf("bounce lacks the refusal:\n%s", bounces[0].Raw)
		}
		if n := len(pf.Maildir(t, "alice@example.net")); n != 0 {
			t.Errorf("alice got %d messages of a refused message", n)
		}
	})
	t.Run("smtp", func(t *testing.T) {
		code, reply := pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", []string{"alice@example.net", "bob@example.net"}, outMessage("refused"))
		if code != 550 || !strings.Contains(reply, "5.7.1") || !strings.Contains(reply, "bob@example.net") || !strings.Contains(reply, "no usable encryption key") {
			t.Fatalf("reply %d %q, want 550 5.7.1 <bob@example.net>: no usable encryption key", code, reply)
		}
		time.Sleep(time.Second)
		if n := len(pf.Maildir(t, "alice@example.net")); n != 0 {
			t.Errorf("alice got %d messages of a refused message", n)
		}
	})
}

// switchProxy forwards TCP connections to target while up; while down
// nothing listens on its address.
type switchProxy struct {
	addr, target string
	mu           sync.Mutex
	l            net.Listener
}

func (p *switchProxy) up(t testing.TB) {
	t.Helper()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		return
	}
	var err error
	for i := 0; i < 50; i++ {
		if p.l, err = net.Listen("tcp", p.addr); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("proxy listen %s: %v", p.addr, err)
	}
	go func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				u, err := net.Dial("tcp", p.target)
				if err != nil {
					return
				}
				defer u.Close()
				go io.Copy(u, c)
				io.Copy(c, u)
			}()
		}
	}(p.l)
}

func (p *switchProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
}

// TestOutboundReinjectDown: while the re-injection listener is down a
// message that needs extra copies is deferred (SMTP: 451 to the client;
// sendmail: kept in the maildrop) and, once it is up, delivered exactly
// once per mailbox.
func TestOutboundReinjectDown(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	peers := newOutPeers(t)
	proxy := &switchProxy{addr: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	t.Cleanup(proxy.down)
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Keystore: peers.keystore, Reinject: proxy.addr}})
	proxy.target = pf.ReinjectAddr

	t.Run("smtp", func(t *testing.T) {
		before := counts(t, pf)
		code, reply := pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", outRcpts, outMessage("smtp retried"))
		if code != 451 {
			t.Fatalf("with the re-injection listener down: %d %q, want 451", code, reply)
		}
		proxy.up(t)
		defer proxy.down()
		if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", outRcpts, outMessage("smtp retried")); err != nil {
			t.Fatal(err)
		}
		peers.checkDelivered(t, pf, "smtp retried", before)
	})
	t.Run("sendmail", func(t *testing.T) {
		proxy.down()
		before := counts(t, pf)
		pf.Sendmail(t, "rt@example.org", outRcpts, outMessage("sendmail deferred"))
		m.WaitLog(t, "tempfail", 30*time.Second)
		time.Sleep(2 * time.Second)
		for _, a := range outRcpts {
			if n := len(pf.Maildir(t, a)); n != before[a] {
				t.Fatalf("%s got a copy while the re-injection listener was down", a)
			}
		}
		proxy.up(t)
		pf.Flush(t)
		peers.checkDelivered(t, pf, "sendmail deferred", before)
	})
}

// TestOutboundProcess runs `cryptmilter process --direction out --out DIR`
// on the test message: result.json lists one copy per recipient and each
// copy decrypts or verifies with the recipient's own tools.
func TestOutboundProcess(t *testing.T) {
	peers := newOutPeers(t)
	dir := tempDir(t, "cm-proc-")
	cfg := filepath.Join(dir, "cryptmilter.toml")
	writeFile(t, cfg, "keystore = \""+peers.keystore+"\"\n[identity]\naddresses = [\"rt@example.org\"]\n", 0o600)
	out := filepath.Join(dir, "out")
	args := []string{"process", "-c", cfg, "--direction", "out", "--from", "rt@example.org", "--out", out}
	for _, r := range outRcpts {
		args = append(args, "--rcpt", r)
	}
	if res, err := cmdOut(t, outMessage("processed"), cryptmilterBin, args...); err != nil {
		t.Fatalf("%v\n%s", err, res)
	}
	raw, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Action string
		Copies []struct {
			Recipients []string
			File       string
		}
	}
	if err := json.Unmarshal(raw, &res); err != nil {
		t.Fatal(err)
	}
	if res.Action != "accept" || len(res.Copies) != 4 {
		t.Fatalf("result.json: %s", raw)
	}
	files := map[string]*Mail{}
	for _, c := range res.Copies {
		if len(c.Recipients) != 1 {
			t.Fatalf("copy %s for %v, want one recipient each", c.File, c.Recipients)
		}
		b, err := os.ReadFile(filepath.Join(out, c.File))
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseMail(b)
		if err != nil {
			t.Fatal(err)
		}
		files[c.Recipients[0]] = m
	}
	want := []byte("Subject: processed")
	for _, a := range []string{"alice@example.net", "carol@example.net"} {
		if plain := peers.pgpDecrypt(t, a, files[a]); !bytes.Contains(plain, want) {
			t.Errorf("%s: plaintext lacks the protected subject", a)
		}
	}
	if content := peers.smimeDecrypt(t, files["dave@example.com"]); !bytes.Contains(content, want) {
		t.Errorf("dave: content lacks the protected subject")
	}
	peers.pgpVerifySigned(t, files["bob@example.net"])
}
