package e2e

import (
	"bytes"
	"encoding/pem"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// The Sendmail suite: what Sendmail 8.17 and the recipients see with
// contrib/sendmail's snippet and settings. Every test runs its own
// Sendmail, milter and sink.

// openpgpInbound returns a keystore (the gateway plus alice's public key)
// and a PGP/MIME message from alice, signed and encrypted by gpg to
// rt@example.org, carrying a forged X-Cryptmilter-Signature.
func openpgpInbound(t *testing.T) (string, []byte) {
	t.Helper()
	requirePeers(t, false, "gpg", "gpgconf")
	home := gpgHome(t)
	g := []string{"--homedir", home, "--batch", "--passphrase", ""}
	if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-gen-key", "Alice <alice@example.net>", "future-default", "default", "never")...); err != nil {
		t.Fatal(err)
	}
	pub, err := cmdOut(t, nil, "gpg", "--homedir", home, "--armor", "--export", "alice@example.net")
	if err != nil {
		t.Fatal(err)
	}
	pubFile := filepath.Join(t.TempDir(), "alice.asc")
	writeFile(t, pubFile, string(pub), 0o644)
	ks := inboundKeystore(t, map[string]bool{pubFile: false})
	gw, err := gatewaySnapshot(t, ks).Export("rt@example.org", false)
	if err != nil {
		t.Fatal(err)
	}
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
	msg := "From: Alice <alice@example.net>\r\nTo: rt@example.org\r\nSubject: encrypted to Sendmail\r\n" +
		"Message-ID: <openpgp-in@example.net>\r\n" +
		"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		strings.ReplaceAll(string(armored), "\n", "\r\n") + "\r\n--b--\r\n"
	return ks, []byte(msg)
}

// smimeInbound returns a keystore (the gateway plus a test CA) and a
// message signed by openssl as alice (certified by that CA), then
// encrypted to the gateway's certificate.
func smimeInbound(t *testing.T) (string, []byte) {
	t.Helper()
	requirePeers(t, false, "openssl")
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	run := func(args ...string) {
		t.Helper()
		if _, err := cmdOut(t, nil, "openssl", args...); err != nil {
			t.Fatal(err)
		}
	}
	run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p("ca.key"), "-out", p("ca.pem"), "-days", "30", "-subj", "/CN=Test Mail CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", p("alice.key"), "-out", p("alice.csr"), "-subj", "/CN=Alice")
	writeFile(t, p("ext.cnf"), "subjectAltName=email:alice@example.net\nextendedKeyUsage=emailProtection\nkeyUsage=digitalSignature,keyEncipherment\n", 0o644)
	run("x509", "-req", "-in", p("alice.csr"), "-CA", p("ca.pem"), "-CAkey", p("ca.key"), "-CAcreateserial", "-out", p("alice.pem"), "-days", "30", "-extfile", p("ext.cnf"))
	ks := inboundKeystore(t, map[string]bool{p("ca.pem"): true})
	id, err := gatewaySnapshot(t, ks).GatewaySMIME("rt@example.org")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, p("gw.pem"), string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})), 0o644)
	writeFile(t, p("inner.eml"), "Content-Type: text/plain; charset=us-ascii\r\n\r\nPlease reset my password.\r\n", 0o644)
	run("smime", "-sign", "-in", p("inner.eml"), "-signer", p("alice.pem"), "-inkey", p("alice.key"), "-out", p("signed.eml"))
	run("smime", "-encrypt", "-aes256", "-in", p("signed.eml"), "-out", p("enc.eml"),
		"-from", "alice@example.net", "-to", "rt@example.org", "-subject", "S/MIME to Sendmail", p("gw.pem"))
	msg, err := os.ReadFile(p("enc.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return ks, msg
}

// settle is how long a test waits, once Sendmail's queues are empty, for
// a message that should not come (a duplicate, a copy of a refused
// message).
const settle = 300 * time.Millisecond

// onlyDelivered waits for the single message to addr and checks that
// nothing else arrives: one message in the sink, the queues empty.
func onlyDelivered(t *testing.T, sm *Sendmail, addr string) *Mail {
	t.Helper()
	m := sm.Sink.WaitMailbox(t, addr, 1, 30*time.Second)[0]
	sm.WaitQueuesEmpty(t, 30*time.Second)
	time.Sleep(settle)
	if n := len(sm.Sink.Messages()); n != 1 {
		t.Fatalf("the sink received %d messages, want 1:\n%s", n, sm.Sink.summary())
	}
	return m
}

// TestSendmailMTAInboundOpenPGP: gpg's encrypted and signed message over SMTP
// to Sendmail's MTA port is delivered as plaintext with a valid signature;
// the forged result header is gone (a header change by index).
func TestSendmailMTAInboundOpenPGP(t *testing.T) {
	requireSendmail(t)
	ks, msg := openpgpInbound(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: ks}})
	if err := sendSMTP(sm.MTAAddr, "alice@example.net", []string{"rt@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	m := onlyDelivered(t, sm, "rt@example.org")
	if got := only(t, m, "X-Cryptmilter-Encryption"); !strings.HasPrefix(got, "decrypted; protocol=openpgp; key=") {
		t.Errorf("X-Cryptmilter-Encryption: %s", got)
	}
	if got := only(t, m, "X-Cryptmilter-Signature"); !strings.HasPrefix(got, "valid; protocol=openpgp; signer=alice@example.net; key=") {
		t.Errorf("X-Cryptmilter-Signature: %s", got)
	}
	if ct := only(t, m, "Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q, want the decrypted text/plain", ct)
	}
	// The forged field is deleted by its index among the fields Sendmail
	// passed; a wrong index would hit one of these.
	for name, want := range map[string]string{"From": "Alice <alice@example.net>", "To": "rt@example.org",
		"Subject": "encrypted to Sendmail", "Message-ID": "<openpgp-in@example.net>"} {
		if got := only(t, m, name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
	if !bytes.Contains(m.Body, []byte("the printer is on fire. Grüße.")) || bytes.Contains(m.Raw, []byte("BEGIN PGP MESSAGE")) {
		t.Errorf("delivered body is not the plaintext:\n%s", m.Raw)
	}
	if len(m.Get("Received")) == 0 || !strings.Contains(m.Get("Received")[0], "by mx.example.test (8.") {
		t.Errorf("no Received field from this Sendmail:\n%s", m.Raw)
	}
}

// TestSendmailMTAInboundSMIME: openssl's signed then encrypted message over
// SMTP to the MTA port is delivered as plaintext with a valid signature
// and Authentication-Results.
func TestSendmailMTAInboundSMIME(t *testing.T) {
	requireSendmail(t)
	ks, msg := smimeInbound(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: ks, Settings: []string{`hostname = "mx.example.org"`}}})
	if err := sendSMTP(sm.MTAAddr, "alice@example.net", []string{"rt@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
	m := onlyDelivered(t, sm, "rt@example.org")
	if got := only(t, m, "X-Cryptmilter-Encryption"); !strings.HasPrefix(got, "decrypted; protocol=smime; key=") {
		t.Errorf("X-Cryptmilter-Encryption: %s", got)
	}
	if got := only(t, m, "X-Cryptmilter-Signature"); !strings.HasPrefix(got, "valid; protocol=smime; signer=alice@example.net; key=") {
		t.Errorf("X-Cryptmilter-Signature: %s", got)
	}
	if got := only(t, m, "Authentication-Results"); !strings.HasPrefix(got, "mx.example.org; smime=pass body.smime-identifier=alice@example.net") {
		t.Errorf("Authentication-Results: %s", got)
	}
	if !bytes.Contains(m.Body, []byte("Please reset my password.")) || bytes.Contains(m.Raw, []byte("application/pkcs7-mime")) {
		t.Errorf("delivered message is not the plaintext:\n%s", m.Raw)
	}
}

// messageID is the Message-ID outMessage gives subject.
func messageID(subject string) string {
	return "<" + strings.ReplaceAll(subject, " ", ".") + "@example.org>"
}

// copiesOf waits until every recipient of outRcpts has a copy of the
// outMessage with subject, lets the queues drain, and checks that each
// recipient got exactly one copy in a transaction of its own. It returns
// the copies by recipient.
func copiesOf(t *testing.T, sm *Sendmail, subject string) map[string]*Mail {
	t.Helper()
	id := messageID(subject)
	ofSubject := func() []sinkMessage {
		var ms []sinkMessage
		for _, m := range sm.Sink.Messages() {
			if mail, err := parseMail(m.Raw); err == nil && slices.Contains(mail.Get("Message-ID"), id) {
				ms = append(ms, m)
			}
		}
		return ms
	}
	if !waitFor(60*time.Second, func() bool { return len(ofSubject()) >= len(outRcpts) }) {
		t.Fatalf("%d copies of %s delivered after 60s, want %d\nsink:\n%s", len(ofSubject()), id, len(outRcpts), sm.Sink.summary())
	}
	sm.WaitQueuesEmpty(t, 30*time.Second)
	time.Sleep(settle)
	got := map[string]*Mail{}
	for _, m := range ofSubject() {
		if len(m.Rcpts) != 1 {
			t.Errorf("a copy of %s went to %v, want one recipient per copy", id, m.Rcpts)
			continue
		}
		if got[m.Rcpts[0]] != nil {
			t.Errorf("%s got %s more than once", m.Rcpts[0], id)
		}
		mail, _ := parseMail(m.Raw)
		mail.Path = "copy for " + m.Rcpts[0]
		got[m.Rcpts[0]] = mail
	}
	for _, a := range outRcpts {
		if got[a] == nil {
			t.Errorf("%s got no copy of %s", a, id)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// smimeSerials lists the serial numbers of the certificates an S/MIME
// message is encrypted to (openssl cms -cmsout -print).
func smimeSerials(t *testing.T, m *Mail) []string {
	t.Helper()
	in := filepath.Join(t.TempDir(), "in.eml")
	writeFile(t, in, string(crlf(m.Raw)), 0o600)
	out, err := cmdOut(t, nil, "openssl", "cms", "-cmsout", "-print", "-inform", "SMIME", "-in", in)
	if err != nil {
		t.Fatal(err)
	}
	var serials []string
	for _, s := range regexp.MustCompile(`serialNumber: (?:0x)?([0-9A-Fa-f]+)`).FindAllStringSubmatch(string(out), -1) {
		serials = append(serials, strings.ToUpper(s[1]))
	}
	return serials
}

// checkCopies checks what each recipient of an outMessage sees: alice and
// carol decrypt their own copy with gpg in their own home (and not each
// other's), each encrypted to their key alone; dave decrypts his S/MIME
// copy with openssl, encrypted to his certificate alone; bob verifies his
// signed copy; nobody's copy names the Bcc recipient or carries result
// headers (which a milter on the re-injection daemon would add).
func (p *outPeers) checkCopies(t *testing.T, got map[string]*Mail, subject string) {
	t.Helper()
	want := []byte("Subject: " + subject)
	for _, a := range []string{"alice@example.net", "carol@example.net"} {
		plain := p.pgpDecrypt(t, a, got[a])
		if !bytes.Contains(plain, want) || !bytes.Contains(plain, []byte("=46rom the gateway.")) {
			t.Errorf("%s: decrypted entity lacks the subject or the encoded From line:\n%s", a, plain)
		}
		if s := got[a].Get("Subject"); len(s) != 1 || s[0] != "[...]" {
			t.Errorf("%s: outer Subject %q, want [...]", a, s)
		}
		if ids := p.pgpKeyIDs(t, got[a]); len(ids) != 1 || ids[0] != p.subkeys[a] {
			t.Errorf("%s's copy is encrypted to %v, want only %s", a, ids, p.subkeys[a])
		}
	}
	// Each home holds one secret key: alice cannot read carol's copy.
	if _, err := cmdOut(t, armorRe.Find(got["carol@example.net"].Body), "gpg", "--homedir", p.homes["alice@example.net"], "--batch", "--decrypt"); err == nil {
		t.Error("alice's gpg decrypts carol's copy")
	}
	crt, err := os.ReadFile(p.smimeCrt)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := cmdOut(t, crt, "openssl", "x509", "-noout", "-serial")
	if err != nil {
		t.Fatal(err)
	}
	daveSerial := strings.ToUpper(strings.TrimSpace(strings.TrimPrefix(string(serial), "serial=")))
	if s := smimeSerials(t, got["dave@example.com"]); len(s) != 1 || s[0] != daveSerial {
		t.Errorf("dave's copy is encrypted to certificates %v, want only his (%s)", s, daveSerial)
	}
	if content := p.smimeDecrypt(t, got["dave@example.com"]); !bytes.Contains(content, want) {
		t.Errorf("dave: S/MIME content lacks the subject:\n%s", content)
	}
	if signed := p.pgpVerifySigned(t, got["bob@example.net"]); !bytes.Contains(signed, []byte("Gr=C3=BC=C3=9Fe")) {
		t.Errorf("bob: signed entity is not the canonical text:\n%s", signed)
	}
	for _, a := range outRcpts {
		m := got[a]
		header := m.Raw[:len(m.Raw)-len(m.Body)]
		if len(m.Get("Bcc")) != 0 || (a != "carol@example.net" && bytes.Contains(header, []byte("carol@example.net"))) {
			t.Errorf("%s: the header names the Bcc recipient:\n%s", a, header)
		}
		for _, f := range m.Header {
			if strings.HasPrefix(strings.ToLower(f.Name), "x-cryptmilter-") {
				t.Errorf("%s: outbound copy carries %s", a, f.Raw)
			}
		}
	}
}

// TestSendmailMTAOutboundMSA: a message submitted over SMTP to the MSA
// ({daemon_name} MSA, originating_daemons = ["MSA"]) reaches each
// recipient as exactly one copy of its own, readable by that recipient
// alone.
func TestSendmailMTAOutboundMSA(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: peers.keystore}})
	if err := sendSMTP(sm.MSAAddr, "rt@example.org", outRcpts, outMessage("through the MSA")); err != nil {
		t.Fatal(err)
	}
	peers.checkCopies(t, copiesOf(t, sm, "through the MSA"), "through the MSA")
}

// TestSendmailMTAOutboundMSP: the sendmail command, through the MSP
// (submit.cf relaying over SMTP to the MSA), gives the same copies.
func TestSendmailMTAOutboundMSP(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: peers.keystore}})
	sm.Sendmail(t, "rt@example.org", outRcpts, outMessage("with the sendmail command"))
	peers.checkCopies(t, copiesOf(t, sm, "with the sendmail command"), "with the sendmail command")
	if ids := sm.queueIDs("MSA"); len(ids) != 1 {
		t.Errorf("the MSA received %d messages, want the MSP's 1", len(ids))
	}
}

// TestSendmailMTAOutboundMSPToMTAPort: with the stock submit.mc (Sendmail's
// and Debian's) the MSP relays to the MTA port (25) instead of the MSA;
// that mail is outbound only with loopback in internal_hosts (which the
// test sets: the default, empty, makes it inbound, as README says).
func TestSendmailMTAOutboundMSPToMTAPort(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{
		Milter:   milterOptions{Keystore: peers.keystore, Settings: []string{`direction.internal_hosts = ["127.0.0.0/8", "::1"]`}},
		Sendmail: sendmailOptions{MSPToMTA: true},
	})
	sm.Sendmail(t, "rt@example.org", outRcpts, outMessage("through the MTA port"))
	peers.checkCopies(t, copiesOf(t, sm, "through the MTA port"), "through the MTA port")
	if mta, msa := sm.queueIDs("MTA"), sm.queueIDs("MSA"); len(mta) != 1 || len(msa) != 0 {
		t.Errorf("the MTA received %d messages and the MSA %d, want 1 and 0", len(mta), len(msa))
	}
}

// TestSendmailMTAMacrosFromSymbolList: cryptmilter's list of macros, sent
// when Sendmail connects, decides what it gets: with Sendmail's
// Milter.macros options left without {daemon_name}, mail on the MSA is
// still outbound (encrypted to alice).
func TestSendmailMTAMacrosFromSymbolList(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{
		Milter: milterOptions{Keystore: peers.keystore},
		Sendmail: sendmailOptions{MC: []string{
			"define(`confMILTER_MACROS_CONNECT', `j')dnl",
			"define(`confMILTER_MACROS_HELO', `{tls_version}')dnl",
			"define(`confMILTER_MACROS_ENVFROM', `i')dnl",
			"define(`confMILTER_MACROS_ENVRCPT', `{rcpt_host}')dnl",
		}},
	})
	if cf, err := os.ReadFile(sm.SendmailCF); err != nil || !bytes.Contains(cf, []byte("\nO Milter.macros.connect=j\n")) {
		t.Fatalf("sendmail.cf lacks the restricted Milter.macros.connect (%v)", err)
	}
	if err := sendSMTP(sm.MSAAddr, "rt@example.org", []string{"alice@example.net"}, outMessage("macros from the symbol list")); err != nil {
		t.Fatal(err)
	}
	m := onlyDelivered(t, sm, "alice@example.net")
	if plain := peers.pgpDecrypt(t, "alice@example.net", m); !bytes.Contains(plain, []byte("Subject: macros from the symbol list")) {
		t.Errorf("decrypted entity lacks the subject:\n%s", plain)
	}
}

// TestSendmailMTAReinjection: the extra copies travel through the daemon
// with InputMailFilters= (no milter), which delivers what it gets as is.
func TestSendmailMTAReinjection(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: peers.keystore}})
	t.Run("copies", func(t *testing.T) {
		if err := sendSMTP(sm.MSAAddr, "rt@example.org", outRcpts, outMessage("re-injected")); err != nil {
			t.Fatal(err)
		}
		peers.checkCopies(t, copiesOf(t, sm, "re-injected"), "re-injected")
		// One message at the MSA, rewritten in place for one recipient;
		// the other copies re-injected, none of them seen by a milter.
		msa, reinjected := sm.queueIDs("MSA"), sm.queueIDs("reinject")
		if len(msa) != 1 || len(sm.LogLines(msa[0]+": milter=cryptmilter")) == 0 {
			t.Fatalf("want one message on the MSA, passed to cryptmilter; got %v", msa)
		}
		if len(reinjected) != len(outRcpts)-1 {
			t.Errorf("%d messages re-injected, want %d", len(reinjected), len(outRcpts)-1)
		}
		for _, id := range reinjected {
			if len(sm.LogLines(id+": Milter: no active filter")) != 1 || len(sm.LogLines(id+": milter=")) != 0 {
				t.Errorf("re-injected message %s: Sendmail's log does not say it met no milter:\n%s", id, strings.Join(sm.LogLines(id+": "), "\n"))
			}
		}
	})
	t.Run("untouched", func(t *testing.T) {
		// Whatever reaches the daemon is delivered without processing:
		// not signed, no result headers, the body as sent.
		msg := plainMessage("alice@example.net", "rt@example.org", "straight to the re-injection daemon")
		if err := sendSMTP(sm.ReinjectAddr, "alice@example.net", []string{"rt@example.org"}, msg); err != nil {
			t.Fatal(err)
		}
		m := sm.Sink.WaitMailbox(t, "rt@example.org", 1, 30*time.Second)[0]
		sent, _ := parseMail(msg)
		if !bytes.Equal(m.Body, sent.Body) {
			t.Errorf("body changed:\n%s", m.Body)
		}
		for _, f := range m.Header {
			if strings.HasPrefix(strings.ToLower(f.Name), "x-cryptmilter-") {
				t.Errorf("re-injected message carries %s", f.Raw)
			}
		}
		if ct := only(t, m, "Content-Type"); ct != "text/plain; charset=utf-8" {
			t.Errorf("Content-Type %q, want the original", ct)
		}
	})
}

// TestSendmailMTADirectCommandBypassesMilter shows the trap README warns of:
// `sendmail -C sendmail.cf` (the MTA's configuration, not the MSP's) is not
// SMTP, so Sendmail runs no milter and, even with F=T and cryptmilter
// down, delivers the message unprocessed.
func TestSendmailMTADirectCommandBypassesMilter(t *testing.T) {
	requireSendmail(t)
	sm, m := startSendmailStack(t, sendmailStackOptions{})
	m.Stop(t)
	sm.SendmailDirect(t, "rt@example.org", []string{"bob@example.net"}, outMessage("past the milter"))
	got := onlyDelivered(t, sm, "bob@example.net")
	if ct := only(t, got, "Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type %q: the message was processed", ct)
	}
	if !bytes.Contains(got.Body, []byte("From the gateway.")) {
		t.Errorf("body is not the plaintext as sent:\n%s", got.Body)
	}
}

// TestSendmailMTARequiredRefused: with policy required a recipient without a
// key makes the whole message refused: 550 5.7.1 to an SMTP client of the
// MSA; for the sendmail command the MSP gets the 550, sends the sender a
// bounce with its text and exits with 69.
func TestSendmailMTARequiredRefused(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, _ := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: peers.keystore,
		Extra: "\n[[outbound.rule]]\nmatch = \"@example.net\"\npolicy = \"required\"\n"}})
	rcpts := []string{"alice@example.net", "bob@example.net"}
	nothingFor := func(t *testing.T) {
		t.Helper()
		sm.WaitQueuesEmpty(t, 30*time.Second)
		time.Sleep(settle)
		for _, a := range rcpts {
			if n := len(sm.Sink.Mailbox(t, a)); n != 0 {
				t.Errorf("%s got %d messages of a refused message", a, n)
			}
		}
	}
	t.Run("msa", func(t *testing.T) {
		err := sendSMTP(sm.MSAAddr, "rt@example.org", rcpts, outMessage("refused at the MSA"))
		stage, code, reply := refusal(t, err)
		if stage != "end of DATA" || code != 550 || !strings.Contains(reply, "5.7.1") || !strings.Contains(reply, "bob@example.net") || !strings.Contains(reply, "no usable encryption key") {
			t.Fatalf("%s: %s, want at end of DATA 550 5.7.1 <bob@example.net>: no usable encryption key", stage, reply)
		}
		nothingFor(t)
	})
	t.Run("msp", func(t *testing.T) {
		if code, out := sm.SendmailStatus(t, "app@example.org", rcpts, outMessage("refused at the MSP")); code != 69 {
			t.Errorf("sendmail exited with %d, want 69 (EX_UNAVAILABLE)\n%s", code, out)
		}
		bounce := sm.Sink.WaitMailbox(t, "app@example.org", 1, 30*time.Second)[0]
		if !bytes.Contains(bounce.Raw, []byte("no usable encryption key")) || !bytes.Contains(bounce.Raw, []byte("bob@example.net")) {
			t.Errorf("bounce lacks the refusal:\n%s", bounce.Raw)
		}
		nothingFor(t)
	})
}

// TestSendmailMTAMilterDown: with cryptmilter down Sendmail tempfails (F=T):
// 451 4.3.2 to SMTP clients of the MTA and the MSA; the sendmail command's
// message waits in the MSP queue. Once cryptmilter is back, the client's
// retry and the MSP's queue run deliver each message exactly once per
// recipient, processed. A milter dying in the middle of a message
// tempfails it too.
func TestSendmailMTAMilterDown(t *testing.T) {
	requireSendmail(t)
	peers := newOutPeers(t)
	sm, m := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: peers.keystore}})
	m.Stop(t)
	for _, c := range []struct{ name, addr, from string }{
		{"MTA", sm.MTAAddr, "alice@example.net"},
		{"MSA", sm.MSAAddr, "rt@example.org"},
	} {
		// Sendmail greets and answers EHLO, then tempfails MAIL.
		err := sendSMTP(c.addr, c.from, outRcpts, outMessage("tempfailed by the "+c.name))
		if stage, code, reply := refusal(t, err); stage != "MAIL" || code != 451 || !strings.Contains(reply, "4.3.2") {
			t.Errorf("%s with the milter down: %s: %s, want MAIL: 451 4.3.2", c.name, stage, reply)
		}
	}
	sm.Sendmail(t, "rt@example.org", outRcpts, outMessage("queued by the MSP"))
	if !waitFor(10*time.Second, func() bool { return queued(sm.MSPQueueDir) == 1 }) {
		t.Fatalf("MSP queue holds %d messages, want 1:\n%s", queued(sm.MSPQueueDir), sm.queueListing())
	}
	time.Sleep(settle)
	if n := len(sm.Sink.Messages()); n != 0 {
		t.Fatalf("%d messages delivered while the milter was down:\n%s", n, sm.Sink.summary())
	}

	m.Start(t)
	if err := sendSMTP(sm.MSAAddr, "rt@example.org", outRcpts, outMessage("tempfailed by the MSA")); err != nil {
		t.Fatal(err)
	}
	sm.RunMSPQueue(t)
	for _, subject := range []string{"tempfailed by the MSA", "queued by the MSP"} {
		peers.checkCopies(t, copiesOf(t, sm, subject), subject)
	}
	if n := len(sm.Sink.Messages()); n != 2*len(outRcpts) {
		t.Errorf("the sink received %d messages, want %d:\n%s", n, 2*len(outRcpts), sm.Sink.summary())
	}

	t.Run("dies mid-message", func(t *testing.T) {
		before := len(sm.Sink.Messages())
		c, err := smtp.Dial(sm.MSAAddr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.Hello("client.example.net"); err != nil {
			t.Fatal(err)
		}
		if err := c.Mail("rt@example.org", nil); err != nil {
			t.Fatal(err)
		}
		if err := c.Rcpt("alice@example.net", nil); err != nil {
			t.Fatal(err)
		}
		m.kill() // the milter crashes with the session open
		err = func() error {
			w, err := c.Data()
			if err != nil {
				return &SMTPStageError{Stage: "DATA", Err: err}
			}
			w.Write(outMessage("milter crashed"))
			if err := w.Close(); err != nil {
				return &SMTPStageError{Stage: "end of DATA", Err: err}
			}
			return nil
		}()
		// At the end of DATA with go-milter 0.5 (protocol 2); a milter
		// speaking protocol 6 gets SMFIC_DATA, so Sendmail may notice at
		// DATA already.
		stage, code, reply := refusal(t, err)
		t.Logf("after the milter died: %s: %s", stage, reply)
		if (stage != "DATA" && stage != "end of DATA") || code != 451 || !strings.Contains(reply, "4.3.2") {
			t.Errorf("after the milter died: %s: %s, want at DATA or its end 451 4.3.2", stage, reply)
		}
		sm.WaitQueuesEmpty(t, 30*time.Second)
		time.Sleep(settle)
		if n := len(sm.Sink.Messages()) - before; n != 0 {
			t.Errorf("%d messages delivered after the milter died:\n%s", n, sm.Sink.summary())
		}
	})
}
