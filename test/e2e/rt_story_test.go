package e2e

import (
	"bytes"
	"fmt"
	"mime"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// The story of Alice, Bob, Carol and Faythe (docs/rt.md), told by a real
// Request Tracker behind a real Postfix running cryptmilter. Each subtest
// is one section of docs/rt.md, with the same names, steps and order.

// rtPerson is a correspondent of the support queue.
type rtPerson struct {
	Name, Addr string
	// OpenPGP people: a gpg home of their own, holding their key and
	// RT's public key (Dave's holds only RT's).
	home, fpr, subkey string
	// S/MIME people: key and certificate files, and the serial number.
	key, cert, serial string
}

func (p *rtPerson) from() string { return p.Name + " <" + p.Addr + ">" }

// rtStory is the cast and the systems of the story.
type rtStory struct {
	pf *Postfix
	m  *Milter
	rt *RT

	alice, bob, carol, dave, faythe, mallory *rtPerson
	// malloryKey is the OpenPGP key Mallory made in Alice's name.
	malloryKey    *rtPerson
	dir           string // the people's files
	gwPGP         []byte // RT's public OpenPGP key (armored)
	gwCert        string // RT's S/MIME certificate (PEM file)
	gwFpr         string // RT's OpenPGP primary fingerprint
	caKey, caCert string // the CA that issued Carol's and Faythe's certificates
	lastReply     *Mail  // Bob's copy of Trent's reply
}

// Each message of the story, as its sender wrote it.
const (
	aliceSubject  = "Invoice portal shows other customers' invoices"
	aliceText     = "Hello support, when I log in to the invoice portal I see the invoices of another company. Alice"
	carolSubject  = "Please reset my password"
	carolText     = "My password no longer works since the upgrade; please reset it. Carol"
	trentText     = "Thank you, Alice. We have closed the portal while we look into it. Bob from your team will test the fix. Trent"
	bobText       = "I tested the portal again: I only see our own invoices now. Bob"
	malloryText   = "Please send all invoices of the last year to my new address. Alice"
	malloryText2  = "Sorry, my new address again, this time encrypted and signed. Alice"
	trentText2    = "The fix is deployed. Bob, Dave: please confirm. Trent"
	trentText3    = "We will keep the portal under watch for a week. Trent"
	trentSubject4 = "The auditors' report, as they sent it"
)

const trentPassword = "trent-e2e-password"

// TestRTStory runs docs/rt.md.
func TestRTStory(t *testing.T) {
	requireRT(t)
	requirePeers(t, true, "postfix", "sendmail", "postqueue", "gpg", "gpgconf", "openssl")
	s := &rtStory{dir: tempDir(t, "cm-people-")}
	step := func(name string, f func(t *testing.T)) {
		if !t.Run(name, f) {
			t.FailNow()
		}
	}
	// The admin's part starts everything for the whole test (its
	// cleanups belong to the test, not to a subtest).
	s.admin(t)
	step("1_alice_writes", s.aliceWrites)
	step("2_carol_writes", s.carolWrites)
	step("3_trent_replies", s.trentReplies)
	step("4_bob_replies", s.bobReplies)
	step("5_mallory_forges", s.malloryForges)
	step("6_why_the_subject_stays", s.whyTheSubjectStays)
	step("7_trent_mails_the_queue", s.trentMailsTheQueue)
	step("8_dave_required", s.daveRequired)
}

// admin: the mail admin sets up Postfix, cryptmilter and RT.
func (s *rtStory) admin(t *testing.T) {
	t.Helper()
	// Postfix: cryptmilter on inbound SMTP and on the sendmail command;
	// mail for rt@example.org is delivered by rt-mailgate.
	rtPort := freePort(t)
	maps := tempDir(t, "cm-rtmaps-")
	writeFile(t, filepath.Join(maps, "transport"), "rt@example.org rtgate:\n", 0o644)
	// Result headers are cryptmilter's alone, on every path: mail on the
	// outbound path (own users, sendmail) is not rewritten by its inbound
	// side. Milter-added headers are not subject to header_checks.
	writeFile(t, filepath.Join(maps, "header_checks"), "/^X-Cryptmilter-/ IGNORE\n", 0o644)
	s.pf, s.m = startStack(t, stackOptions{
		Milter: milterOptions{Settings: []string{`outbound.header_confidentiality = false`}},
		Postfix: postfixOptions{
			Main: []string{"transport_maps = texthash:" + filepath.Join(maps, "transport"),
				"header_checks = regexp:" + filepath.Join(maps, "header_checks"),
				// By default header_checks apply to attached messages too;
				// off here, so that step 5 shows RT ignoring forged
				// fields inside an attachment on its own.
				"nested_header_checks ="},
			Mailboxes: []string{"faythe@example.org", "trent@example.org", "mallory@example.com"},
		},
	})
	s.rt = newRTDir(t, rtOptions{Port: rtPort, Sendmail: s.pf, EnvelopeSender: "postmaster@example.org",
		InitialData: "testdata/rt-initialdata.pl", User: "trent", Password: trentPassword})
	// RT starts (the support queue, Trent and Faythe:
	// testdata/rt-initialdata.pl) while the rest is set up.
	rtUp := s.rt.Start(t)
	mark := len(s.pf.Log())
	s.pf.addMasterService(t, "rtgate unix - n n - - pipe\n  flags=R user=nobody argv="+s.rt.MailgateCommand("support", "correspond")+"\n")
	if !waitFor(10*time.Second, func() bool { return strings.Contains(s.pf.Log()[mark:], "reload") }) {
		t.Fatalf("postfix did not reload\n%s", s.pf.Log())
	}

	// cryptmilter: RT's identity (keys init, done by the harness), its
	// public key and certificate for the correspondents.
	exported := []byte(s.m.Keys(t, nil, "export", "rt@example.org"))
	end := []byte("-----END PGP PUBLIC KEY BLOCK-----")
	i := bytes.Index(exported, end)
	certPEM := regexp.MustCompile(`(?s)-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?`).Find(exported)
	if i < 0 || certPEM == nil {
		t.Fatalf("keys export rt@example.org lacks the OpenPGP key or the certificate:\n%s", exported)
	}
	s.gwPGP = exported[:i+len(end)]
	s.gwCert = filepath.Join(s.dir, "rt.pem")
	writeFile(t, s.gwCert, string(certPEM), 0o644)

	// The people and their keys.
	s.alice = s.pgpPerson(t, "Alice", "alice@example.net")
	s.bob = s.pgpPerson(t, "Bob", "bob@example.net")
	s.dave = &rtPerson{Name: "Dave", Addr: "dave@example.com", home: gpgHome(t)}
	s.importRTKey(t, s.dave)
	s.caKey, s.caCert = filepath.Join(s.dir, "ca.key"), filepath.Join(s.dir, "ca.pem")
	s.openssl(t, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", s.caKey, "-out", s.caCert, "-days", "30",
		"-subj", "/CN=Example Mail CA", "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")
	s.carol = s.smimePerson(t, "Carol", "carol@example.com")
	s.faythe = s.smimePerson(t, "Faythe", "faythe@example.org")
	s.mallory = &rtPerson{Name: "Mallory", Addr: "mallory@example.com"}
	s.malloryKey = s.pgpPerson(t, "Alice", "alice@example.net")

	// The admin imports the correspondents' keys and the CA into
	// cryptmilter's keystore, and reloads it.
	for _, p := range []*rtPerson{s.alice, s.bob} {
		pub, err := cmdOut(t, nil, "gpg", "--homedir", p.home, "--armor", "--export", p.Addr)
		if err != nil {
			t.Fatal(err)
		}
		s.m.Keys(t, pub, "import", "-")
	}
	s.m.Keys(t, nil, "import", s.carol.cert, s.faythe.cert)
	s.m.Keys(t, nil, "import", "--ca", s.caCert)
	if out := s.m.Reload(t); !strings.Contains(out, "msg=reloaded") {
		t.Fatalf("reload: %s", out)
	}
	list := s.m.Keys(t, nil, "list")
	for _, a := range []string{"alice@example.net", "bob@example.net", "carol@example.com", "faythe@example.org"} {
		if !strings.Contains(list, a) {
			t.Errorf("keys list lacks %s:\n%s", a, list)
		}
	}
	if strings.Contains(list, "dave@") {
		t.Errorf("Dave has no key, but keys list shows one:\n%s", list)
	}
	rtUp(t)
}

func (s *rtStory) openssl(t testing.TB, args ...string) []byte {
	t.Helper()
	out, err := cmdOut(t, nil, "openssl", args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pgpPerson makes an OpenPGP correspondent: an Ed25519 key with a
// Curve25519 encryption subkey in a gpg home of their own, which also
// holds RT's public key.
func (s *rtStory) pgpPerson(t *testing.T, name, addr string) *rtPerson {
	t.Helper()
	p := &rtPerson{Name: name, Addr: addr, home: gpgHome(t)}
	g := []string{"--homedir", p.home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}
	if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-gen-key", p.from(), "ed25519", "sign", "never")...); err != nil {
		t.Fatal(err)
	}
	out, err := cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
	if err != nil {
		t.Fatal(err)
	}
	p.fpr = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]+):`).FindStringSubmatch(string(out))[1]
	if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-add-key", p.fpr, "cv25519", "encr", "never")...); err != nil {
		t.Fatal(err)
	}
	out, _ = cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
	for _, line := range strings.Split(string(out), "\n") {
		if fs := strings.Split(line, ":"); fs[0] == "sub" && len(fs) > 11 && strings.Contains(fs[11], "e") {
			p.subkey = fs[4]
		}
	}
	s.importRTKey(t, p)
	return p
}

// importRTKey puts RT's public key into p's gpg home.
func (s *rtStory) importRTKey(t *testing.T, p *rtPerson) {
	t.Helper()
	if _, err := cmdOut(t, s.gwPGP, "gpg", "--homedir", p.home, "--batch", "--import"); err != nil {
		t.Fatal(err)
	}
	out, err := cmdOut(t, nil, "gpg", "--homedir", p.home, "--with-colons", "--list-keys", "rt@example.org")
	if err != nil {
		t.Fatal(err)
	}
	s.gwFpr = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]+):`).FindStringSubmatch(string(out))[1]
}

// smimePerson makes an S/MIME correspondent: an RSA key and a certificate
// for addr issued by the story's CA.
func (s *rtStory) smimePerson(t *testing.T, name, addr string) *rtPerson {
	t.Helper()
	local, _, _ := strings.Cut(addr, "@")
	p := &rtPerson{Name: name, Addr: addr,
		key: filepath.Join(s.dir, local+".key"), cert: filepath.Join(s.dir, local+".pem")}
	csr := filepath.Join(s.dir, local+".csr")
	ext := filepath.Join(s.dir, local+".ext")
	s.openssl(t, "req", "-newkey", "rsa:2048", "-nodes", "-keyout", p.key, "-out", csr, "-subj", "/CN="+name)
	writeFile(t, ext, "subjectAltName=email:"+addr+"\nextendedKeyUsage=emailProtection\nkeyUsage=digitalSignature,keyEncipherment\n", 0o644)
	s.openssl(t, "x509", "-req", "-in", csr, "-CA", s.caCert, "-CAkey", s.caKey, "-CAcreateserial", "-out", p.cert, "-days", "30", "-extfile", ext)
	serial := strings.TrimSpace(string(s.openssl(t, "x509", "-in", p.cert, "-noout", "-serial")))
	p.serial = strings.TrimPrefix(serial, "serial=")
	return p
}

var rtMessageSeq int

// header is the outer header of a message from p to the queue.
func (s *rtStory) header(p *rtPerson, from, subject string, extra ...string) string {
	rtMessageSeq++
	h := []string{
		"From: " + from,
		"To: support <rt@example.org>",
		"Subject: " + subject,
		"Date: " + time.Now().Format(time.RFC1123Z),
		fmt.Sprintf("Message-ID: <story-%d-%d@%s>", rtMessageSeq, time.Now().UnixNano(), strings.SplitN(p.Addr, "@", 2)[1]),
	}
	return strings.Join(append(h, extra...), "\r\n") + "\r\n"
}

// pgpMail is a PGP/MIME message from p to the queue: text signed by p and
// encrypted to RT's key, the only key p has besides their own.
func (s *rtStory) pgpMail(t *testing.T, p *rtPerson, subject, text string, extra ...string) []byte {
	t.Helper()
	inner := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + text + "\r\n"
	armored, err := cmdOut(t, []byte(inner), "gpg", "--homedir", p.home, "--batch", "--trust-model", "always", "--armor",
		"--local-user", p.Addr, "--recipient", "rt@example.org", "--sign", "--encrypt")
	if err != nil {
		t.Fatal(err)
	}
	return []byte(s.header(p, p.from(), subject, extra...) +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\r\n\r\n" +
		"--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--enc\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		string(crlf(armored)) + "\r\n--enc--\r\n")
}

// smimeMail is an S/MIME message from p to the queue: text signed by p
// (openssl smime -sign) and encrypted to RT's certificate.
func (s *rtStory) smimeMail(t *testing.T, p *rtPerson, subject, text string) []byte {
	t.Helper()
	dir := tempDir(t, "cm-sm-")
	in, signed, enc := filepath.Join(dir, "in"), filepath.Join(dir, "signed"), filepath.Join(dir, "enc")
	writeFile(t, in, "Content-Type: text/plain; charset=us-ascii\r\n\r\n"+text+"\r\n", 0o600)
	s.openssl(t, "smime", "-sign", "-in", in, "-signer", p.cert, "-inkey", p.key, "-out", signed)
	s.openssl(t, "smime", "-encrypt", "-aes256", "-in", signed, "-out", enc, s.gwCert)
	b, err := os.ReadFile(enc)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(s.header(p, p.from(), subject)), crlf(b)...)
}

// send sends msg from the outside world to the queue (Postfix's inbound
// port: cryptmilter decrypts, rt-mailgate delivers to RT).
func (s *rtStory) send(t *testing.T, envFrom string, msg []byte) {
	t.Helper()
	if err := s.pf.SendSMTP(s.pf.InboundAddr, envFrom, []string{"rt@example.org"}, msg); err != nil {
		t.Fatal(err)
	}
}

var storyBoxes = []string{"alice@example.net", "bob@example.net", "carol@example.com", "dave@example.com",
	"faythe@example.org", "trent@example.org", "mallory@example.com", "postmaster@example.org"}

// mailboxes counts every mailbox of the story once the queue is empty.
func (s *rtStory) mailboxes(t *testing.T) map[string]int {
	t.Helper()
	s.pf.WaitQueueEmpty(t, 60*time.Second)
	c := map[string]int{}
	for _, a := range storyBoxes {
		c[a] = len(s.pf.Maildir(t, a))
	}
	return c
}

// expect waits until every mail caused by the last action was delivered
// (the queue is empty: rt-mailgate and RT's sendmail calls are
// synchronous) and checks that each mailbox got exactly want[addr] new
// messages (0 when absent); it returns the new ones.
func (s *rtStory) expect(t *testing.T, before map[string]int, want map[string]int) map[string][]*Mail {
	t.Helper()
	for a, n := range want {
		if n > 0 {
			s.pf.WaitMaildir(t, a, before[a]+n, 60*time.Second)
		}
	}
	// Nothing more can come: until RT's last sendmail call has been
	// delivered, some message of the chain is in the queue.
	s.pf.WaitQueueEmpty(t, 60*time.Second)
	got := map[string][]*Mail{}
	for _, a := range storyBoxes {
		all := s.pf.Maildir(t, a)
		if n := len(all) - before[a]; n != want[a] {
			var subjects []string
			for _, m := range all[before[a]:] {
				subjects = append(subjects, strings.Join(m.Get("Subject"), " "))
			}
			t.Errorf("%s got %d new messages %q, want %d", a, n, subjects, want[a])
			continue
		}
		got[a] = all[before[a]:]
	}
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// gpgDecrypt is p reading a PGP/MIME copy in their mail client: it must
// decrypt with p's key and carry RT's good signature; it returns the
// decrypted entity.
func (s *rtStory) gpgDecrypt(t *testing.T, p *rtPerson, m *Mail) []byte {
	t.Helper()
	if ct := strings.Join(m.Get("Content-Type"), " "); !strings.Contains(ct, "multipart/encrypted") {
		t.Fatalf("%s got Content-Type %q, want PGP/MIME encrypted", p.Name, ct)
	}
	armored := armorRe.Find(m.Body)
	out := filepath.Join(tempDir(t, "cm-pt-"), "plain")
	status, err := cmdOut(t, armored, "gpg", "--homedir", p.home, "--batch", "--status-fd", "1", "--output", out, "--decrypt")
	if err != nil {
		t.Fatalf("%s cannot decrypt: %v", p.Name, err)
	}
	if !bytes.Contains(status, []byte("DECRYPTION_OKAY")) || !regexp.MustCompile(`VALIDSIG [0-9A-F]+ .* `+s.gwFpr+`\n`).Match(status) ||
		!bytes.Contains(status, []byte("GOODSIG ")) {
		t.Fatalf("%s: gpg status lacks DECRYPTION_OKAY or RT's good signature (%s):\n%s", p.Name, s.gwFpr, status)
	}
	plain, _ := os.ReadFile(out)
	return plain
}

// pgpRecipients lists the key IDs a PGP/MIME copy is encrypted to, as
// anyone holding it sees them (gpg --list-packets, no secret key needed).
func (s *rtStory) pgpRecipients(t *testing.T, m *Mail) []string {
	t.Helper()
	out, _ := cmdOut(t, armorRe.Find(m.Body), "gpg", "--homedir", s.dave.home, "--batch", "--list-packets")
	var ids []string
	for _, sm := range regexp.MustCompile(`keyid ([0-9A-F]{16})`).FindAllStringSubmatch(string(out), -1) {
		ids = append(ids, sm[1])
	}
	return ids
}

// smimeDecrypt is p reading an S/MIME copy: openssl decrypts it with p's
// key and verifies RT's signature inside; it returns the signed content.
func (s *rtStory) smimeDecrypt(t *testing.T, p *rtPerson, m *Mail) []byte {
	t.Helper()
	if ct := strings.Join(m.Get("Content-Type"), " "); !strings.Contains(ct, "application/pkcs7-mime") || !strings.Contains(ct, "enveloped-data") {
		t.Fatalf("%s got Content-Type %q, want S/MIME enveloped data", p.Name, ct)
	}
	dir := tempDir(t, "cm-sm-")
	in, signed := filepath.Join(dir, "in.eml"), filepath.Join(dir, "signed.eml")
	writeFile(t, in, string(crlf(m.Raw)), 0o600)
	if _, err := cmdOut(t, nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", p.cert, "-inkey", p.key, "-out", signed); err != nil {
		t.Fatalf("%s cannot decrypt: %v", p.Name, err)
	}
	content, err := cmdOut(t, nil, "openssl", "smime", "-verify", "-in", signed, "-CAfile", s.gwCert)
	if err != nil {
		t.Fatalf("%s: RT's S/MIME signature does not verify: %v", p.Name, err)
	}
	return content
}

// smimeRecipients lists the serial numbers of the certificates an S/MIME
// copy is encrypted to (the CMS recipientInfos, as anyone sees them).
func (s *rtStory) smimeRecipients(t *testing.T, m *Mail) []string {
	t.Helper()
	in := filepath.Join(tempDir(t, "cm-sm-"), "in.eml")
	writeFile(t, in, string(crlf(m.Raw)), 0o600)
	out := s.openssl(t, "cms", "-cmsout", "-print", "-inform", "SMIME", "-in", in)
	if n := bytes.Count(out, []byte("d.ktri:")); n == 0 {
		t.Fatalf("no key transport recipient in the copy:\n%s", out)
	}
	var serials []string
	for _, sm := range regexp.MustCompile(`serialNumber: (?:0x)?([0-9A-Fa-f]+)`).FindAllStringSubmatch(string(out), -1) {
		serials = append(serials, strings.ToUpper(sm[1]))
	}
	if n := bytes.Count(out, []byte("d.ktri:")) + bytes.Count(out, []byte("d.kari:")); n != len(serials) {
		t.Fatalf("%d recipientInfos but %d serial numbers:\n%s", n, len(serials), out)
	}
	return serials
}

// pgpVerifySigned is Dave checking a signed-only copy with RT's public
// key; it returns the signed entity.
func (s *rtStory) pgpVerifySigned(t *testing.T, p *rtPerson, m *Mail) []byte {
	t.Helper()
	ct := strings.Join(m.Get("Content-Type"), " ")
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil || mt != "multipart/signed" || params["protocol"] != "application/pgp-signature" {
		t.Fatalf("%s got Content-Type %q, want PGP/MIME signed (%v)", p.Name, ct, err)
	}
	body := crlf(m.Body)
	start := bytes.Index(body, []byte("--"+params["boundary"]+"\r\n"))
	rest := body[start+len(params["boundary"])+4:]
	end := bytes.Index(rest, []byte("\r\n--"+params["boundary"]))
	signedPart := rest[:end]
	sig := regexp.MustCompile(`(?s)-----BEGIN PGP SIGNATURE-----.*?-----END PGP SIGNATURE-----`).Find(rest[end:])
	dir := tempDir(t, "cm-sv-")
	writeFile(t, filepath.Join(dir, "data"), string(signedPart), 0o600)
	writeFile(t, filepath.Join(dir, "sig.asc"), string(sig), 0o600)
	status, err := cmdOut(t, nil, "gpg", "--homedir", p.home, "--batch", "--status-fd", "1", "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "data"))
	if err != nil || !regexp.MustCompile(`VALIDSIG [0-9A-F]+ .* `+s.gwFpr+`\n`).Match(status) {
		t.Fatalf("%s: RT's signature on the signed copy does not verify: %v\n%s", p.Name, err, status)
	}
	return signedPart
}

// wantSubject checks that a copy's outer Subject is subject: with
// header_confidentiality = false the ticket tag stays readable.
func wantSubject(t *testing.T, who string, m *Mail, subject string) {
	t.Helper()
	if got := strings.Join(m.Get("Subject"), " "); got != subject {
		t.Errorf("%s's copy has the outer Subject %q, want %q", who, got, subject)
	}
}

// wantCrypt checks the Encryption and Signature lines RT's history shows
// for the top-level message of txn.
func wantCrypt(t *testing.T, txn *rtTxn, want []rtRow) {
	t.Helper()
	got := txn.Crypt(0)
	if len(got) != len(want) {
		t.Fatalf("transaction %d (%s) shows %+v, want %+v", txn.ID, txn.Description, got, want)
	}
	for i := range want {
		if got[i].Key != want[i].Key || got[i].Classes != want[i].Classes || !strings.HasPrefix(got[i].Value, want[i].Value) {
			t.Errorf("transaction %d (%s) line %d: %+v, want %+v…", txn.ID, txn.Description, i, got[i], want[i])
		}
	}
	for i := 1; i < len(txn.Boxes); i++ {
		if rows := txn.Crypt(i); len(rows) != 0 {
			t.Errorf("transaction %d shows crypto results for an inner part: %+v", txn.ID, rows)
		}
	}
}

// topAttachment returns the stored top-level message of txn, and all its
// parts.
func (s *rtStory) topAttachment(t *testing.T, txn int) (*rtAttachment, []*rtAttachment) {
	t.Helper()
	as := s.rt.Attachments(t, txn)
	if len(as) == 0 || !as[0].Top || len(as[0].Header("X-RT-Interface")) != 1 {
		t.Fatalf("transaction %d has no top-level message: %+v", txn, as)
	}
	return as[0], as
}

// top returns the stored top-level message of txn.
func (s *rtStory) top(t *testing.T, txn int) *rtAttachment {
	t.Helper()
	top, _ := s.topAttachment(t, txn)
	return top
}

// wantRTHeaders checks RT's own result headers on the stored top-level
// message top, as the plugin set them: enc is X-RT-Incoming-Encryption,
// signer X-RT-Incoming-Signature ("" for none), privacy X-RT-Privacy.
func wantRTHeaders(t *testing.T, top *rtAttachment, enc, signer, privacy string) {
	t.Helper()
	check := func(name, want string) {
		got := top.Header(name)
		if want == "" && len(got) != 0 || want != "" && (len(got) != 1 || got[0] != want) {
			t.Errorf("attachment %d: %s = %q, want %q\n%s", top.ID, name, got, want, top.Headers)
		}
	}
	check("X-RT-Incoming-Encryption", enc)
	check("X-RT-Incoming-Signature", signer)
	check("X-RT-Privacy", privacy)
}

// 1. Alice writes to support, encrypted and signed.
func (s *rtStory) aliceWrites(t *testing.T) {
	before := s.mailboxes(t)
	s.send(t, s.alice.Addr, s.pgpMail(t, s.alice, aliceSubject, aliceText))
	got := s.expect(t, before, map[string]int{"alice@example.net": 1, "faythe@example.org": 1})

	if ids := s.rt.TicketIDs(t); !slices.Equal(ids, []int{1}) {
		t.Fatalf("tickets %v, want [1]", ids)
	}
	if tk := s.rt.Ticket(t, 1); tk.Subject != aliceSubject || len(tk.Requestor) != 1 || tk.Requestor[0].ID != s.alice.Addr {
		t.Errorf("ticket 1: subject %q, requestors %v", tk.Subject, tk.Requestor)
	}
	txns, _ := s.rt.History(t, 1)
	created, err := findTxn(txns, "Ticket created", aliceText)
	if err != nil {
		t.Fatalf("ticket 1 has no creation showing Alice's text: %+v", txns)
	}
	if !strings.Contains(created.Description, "alice@example.net") {
		t.Errorf("ticket 1 created by %q, want Alice", created.Description)
	}
	wantCrypt(t, created, []rtRow{
		{"Encryption", "decrypt done", "decrypted by the mail gateway (OpenPGP, key "},
		{"Signature", "verify done trust-FULL", "signature good, signed by alice@example.net (OpenPGP, key " + s.alice.fpr + ")"},
	})
	wantRTHeaders(t, s.top(t, created.ID), "Success", "alice@example.net", "GnuPG")

	// RT's autoreply reaches Alice encrypted to her key, signed by RT.
	auto := got["alice@example.net"][0]
	wantSubject(t, "Alice", auto, "[example.org #1] AutoReply: "+aliceSubject)
	if plain := s.gpgDecrypt(t, s.alice, auto); !bytes.Contains(plain, []byte("Subject: [example.org #1] AutoReply: "+aliceSubject)) {
		t.Errorf("Alice's autoreply lacks its protected Subject:\n%s", plain)
	}
	if ids := s.pgpRecipients(t, auto); !slices.Equal(ids, []string{s.alice.subkey}) {
		t.Errorf("Alice's autoreply is encrypted to %v, want only her key %s", ids, s.alice.subkey)
	}
	// Faythe, AdminCc of the queue, is told of the new ticket, encrypted
	// to her certificate alone.
	note := got["faythe@example.org"][0]
	wantSubject(t, "Faythe", note, "[example.org #1] "+aliceSubject)
	if content := s.smimeDecrypt(t, s.faythe, note); !bytes.Contains(content, []byte(aliceText[:40])) {
		t.Errorf("Faythe's notification lacks Alice's text:\n%s", content)
	}
	if serials := s.smimeRecipients(t, note); !slices.Equal(serials, []string{s.faythe.serial}) {
		t.Errorf("Faythe's notification is encrypted to %v, want only her certificate %s", serials, s.faythe.serial)
	}
}

// 2. Carol writes to support with S/MIME.
func (s *rtStory) carolWrites(t *testing.T) {
	before := s.mailboxes(t)
	s.send(t, s.carol.Addr, s.smimeMail(t, s.carol, carolSubject, carolText))
	got := s.expect(t, before, map[string]int{"carol@example.com": 1, "faythe@example.org": 1})

	if ids := s.rt.TicketIDs(t); !slices.Equal(ids, []int{1, 2}) {
		t.Fatalf("tickets %v, want [1 2]", ids)
	}
	txns, _ := s.rt.History(t, 2)
	created, err := findTxn(txns, "Ticket created", carolText)
	if err != nil {
		t.Fatalf("ticket 2 has no creation showing Carol's text: %+v", txns)
	}
	wantCrypt(t, created, []rtRow{
		{"Encryption", "decrypt done", "decrypted by the mail gateway (S/MIME, key "},
		{"Signature", "verify done trust-FULL", "signature good, signed by carol@example.com (S/MIME, key "},
	})
	wantRTHeaders(t, s.top(t, created.ID), "Success", "carol@example.com", "SMIME")

	auto := got["carol@example.com"][0]
	wantSubject(t, "Carol", auto, "[example.org #2] AutoReply: "+carolSubject)
	if content := s.smimeDecrypt(t, s.carol, auto); !bytes.Contains(content, []byte("[example.org #2]")) {
		t.Errorf("Carol's autoreply lacks the ticket:\n%s", content)
	}
	if serials := s.smimeRecipients(t, auto); !slices.Equal(serials, []string{s.carol.serial}) {
		t.Errorf("Carol's autoreply is encrypted to %v, want only her certificate %s", serials, s.carol.serial)
	}
	s.smimeDecrypt(t, s.faythe, got["faythe@example.org"][0])
}

// 3. Trent adds Bob and Dave to Alice's ticket and replies.
func (s *rtStory) trentReplies(t *testing.T) {
	s.rt.REST(t, "PUT", "ticket/1", map[string]any{"Requestor": []string{s.alice.Addr, s.bob.Addr}, "Cc": []string{s.dave.Addr}}, nil)
	tk := s.rt.Ticket(t, 1)
	if len(tk.Requestor) != 2 || len(tk.Cc) != 1 {
		t.Fatalf("ticket 1: requestors %v, Cc %v", tk.Requestor, tk.Cc)
	}
	before := s.mailboxes(t)
	s.rt.REST(t, "POST", "ticket/1/correspond", map[string]any{"Content": trentText, "ContentType": "text/plain"}, nil)
	got := s.expect(t, before, map[string]int{"alice@example.net": 1, "bob@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})
	subject := "[example.org #1] " + aliceSubject

	// One notification To Alice and Bob, Cc Dave: three copies.
	msgID := got["alice@example.net"][0].Get("Message-ID")
	for _, p := range []*rtPerson{s.alice, s.bob, s.dave} {
		m := got[p.Addr][0]
		wantSubject(t, p.Name, m, subject)
		if id := m.Get("Message-ID"); !slices.Equal(id, msgID) {
			t.Errorf("%s's copy has Message-ID %q, Alice's %q: not the same notification", p.Name, id, msgID)
		}
		to, cc := strings.Join(m.Get("To"), ","), strings.Join(m.Get("Cc"), ",")
		if !strings.Contains(to, s.alice.Addr) || !strings.Contains(to, s.bob.Addr) || !strings.Contains(cc, s.dave.Addr) {
			t.Errorf("%s's copy: To %q, Cc %q", p.Name, to, cc)
		}
		if len(m.Get("Bcc")) != 0 || bytes.Contains(m.Raw, []byte("faythe")) {
			t.Errorf("%s's copy mentions Faythe or Bcc:\n%s", p.Name, m.Raw)
		}
	}
	for _, p := range []*rtPerson{s.alice, s.bob} {
		m := got[p.Addr][0]
		plain := s.gpgDecrypt(t, p, m)
		if !bytes.Contains(plain, []byte("Subject: "+subject)) || !bytes.Contains(plain, []byte("Bob from your team")) {
			t.Errorf("%s's copy does not decrypt to Trent's reply:\n%s", p.Name, plain)
		}
		if bytes.Contains(plain, []byte("faythe")) {
			t.Errorf("%s's decrypted copy mentions Faythe:\n%s", p.Name, plain)
		}
		if ids := s.pgpRecipients(t, m); !slices.Equal(ids, []string{p.subkey}) {
			t.Errorf("%s's copy is encrypted to %v, want only %s (Alice %s, Bob %s)", p.Name, ids, p.subkey, s.alice.subkey, s.bob.subkey)
		}
	}
	// Dave has no key: opportunistic policy gives him a signed copy.
	if signed := s.pgpVerifySigned(t, s.dave, got["dave@example.com"][0]); !bytes.Contains(signed, []byte("Bob from your team")) {
		t.Errorf("Dave's signed copy lacks Trent's text:\n%s", signed)
	}
	// Faythe, in Bcc of the admin notification, reads it with her key
	// alone; nobody else's key is named in it.
	fm := got["faythe@example.org"][0]
	wantSubject(t, "Faythe", fm, subject)
	if content := s.smimeDecrypt(t, s.faythe, fm); !bytes.Contains(content, []byte("Bob from your team")) {
		t.Errorf("Faythe's copy lacks Trent's text:\n%s", content)
	}
	if serials := s.smimeRecipients(t, fm); !slices.Equal(serials, []string{s.faythe.serial}) {
		t.Errorf("Faythe's copy is encrypted to %v, want only her certificate %s", serials, s.faythe.serial)
	}
	if to := strings.Join(append(fm.Get("To"), fm.Get("Cc")...), ","); strings.Contains(to, "faythe") || len(fm.Get("Bcc")) != 0 {
		t.Errorf("Faythe's copy shows her address in To/Cc/Bcc: %q", to)
	}
	s.lastReply = got["bob@example.net"][0]
}

// 4. Bob replies from his mail client.
func (s *rtStory) bobReplies(t *testing.T) {
	n := s.lastReply
	before := s.mailboxes(t)
	subject := "Re: " + strings.Join(n.Get("Subject"), " ")
	msgID := strings.Join(n.Get("Message-ID"), "")
	s.send(t, s.bob.Addr, s.pgpMail(t, s.bob, subject, bobText, "In-Reply-To: "+msgID, "References: "+msgID))
	got := s.expect(t, before, map[string]int{"alice@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})

	if ids := s.rt.TicketIDs(t); !slices.Equal(ids, []int{1, 2}) {
		t.Fatalf("tickets %v after Bob's reply, want [1 2]: the reply did not thread", ids)
	}
	txns, _ := s.rt.History(t, 1)
	reply, err := findTxn(txns, "Correspondence added", bobText)
	if err != nil {
		t.Fatalf("ticket 1 has no correspondence showing Bob's text")
	}
	if !strings.Contains(reply.Description, "bob@example.net") {
		t.Errorf("Bob's reply is by %q", reply.Description)
	}
	wantCrypt(t, reply, []rtRow{
		{"Encryption", "decrypt done", "decrypted by the mail gateway (OpenPGP, key "},
		{"Signature", "verify done trust-FULL", "signature good, signed by bob@example.net (OpenPGP, key " + s.bob.fpr + ")"},
	})
	wantRTHeaders(t, s.top(t, reply.ID), "Success", "bob@example.net", "GnuPG")
	if plain := s.gpgDecrypt(t, s.alice, got["alice@example.net"][0]); !bytes.Contains(plain, []byte("only see our own invoices")) {
		t.Errorf("Alice's notification of Bob's reply:\n%s", plain)
	}
}

// 5. Mallory forges the results.
func (s *rtStory) malloryForges(t *testing.T) {
	forged := []string{
		"X-Cryptmilter-Encryption: decrypted; protocol=openpgp; key=" + s.gwFpr,
		"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=alice@example.net; key=" + s.alice.fpr,
		"X-RT-Incoming-Encryption: Success",
		"X-RT-Incoming-Signature: Alice <alice@example.net>",
		"X-RT-Privacy: GnuPG",
		"X-RT-GnuPG-Status: Operation: Verify\n Status: DONE\n Message: The signature is good, signed by Alice <alice@example.net>, trust level is ultimate",
	}
	head := strings.ReplaceAll(strings.Join(forged, "\r\n"), "\n ", "\r\n ")
	// Inside the attachment also the field RT's gateway sets on the
	// top-level message it received.
	inner := "From: Alice <alice@example.net>\r\nTo: rt@example.org\r\nSubject: my new address\r\nX-RT-Interface: Email\r\n" + head +
		"\r\nContent-Type: text/plain\r\n\r\nThe signed original, as you can see in the headers.\r\n"
	msg := s.header(s.mallory, s.alice.from(), "Re: [example.org #1] "+aliceSubject, head) +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"mix\"\r\n\r\n" +
		"--mix\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + malloryText + "\r\n" +
		"--mix\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\n" + inner +
		"--mix--\r\n"
	before := s.mailboxes(t)
	s.send(t, s.mallory.Addr, []byte(msg))
	// RT takes it as Alice's (From is all it has to go by): Bob, Dave and
	// Faythe are notified, Alice is not (she is the one "writing").
	s.expect(t, before, map[string]int{"bob@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})

	txns, page := s.rt.History(t, 1)
	fake, err := findTxn(txns, "Correspondence added", malloryText)
	if err != nil {
		t.Fatalf("ticket 1 has no correspondence showing Mallory's text")
	}
	for i := range fake.Boxes {
		if rows := fake.Crypt(i); len(rows) != 0 {
			t.Errorf("Mallory's message shows crypto results (part %d): %+v", i, rows)
		}
	}
	if !strings.Contains(fake.Text, "my new address") {
		t.Errorf("the attached message is not shown: %s", fake.Text)
	}
	// Only Alice's and Bob's genuine messages show a good signature.
	if n := strings.Count(page, "signature good, signed by"); n != 2 {
		t.Errorf("ticket 1 shows %d good signatures, want 2 (Alice's and Bob's)", n)
	}
	// What RT stored: cryptmilter's own verdicts at the top, RT's headers
	// from the plugin; the forged fields survive only inside the
	// attached message, where nothing reads them.
	top, all := s.topAttachment(t, fake.ID)
	if got := top.Header("X-Cryptmilter-Encryption"); !slices.Equal(got, []string{"none"}) {
		t.Errorf("stored X-Cryptmilter-Encryption %q, want [none]\n%s", got, top.Headers)
	}
	if got := top.Header("X-Cryptmilter-Signature"); !slices.Equal(got, []string{"none"}) {
		t.Errorf("stored X-Cryptmilter-Signature %q, want [none]\n%s", got, top.Headers)
	}
	wantRTHeaders(t, top, "Not encrypted", "", "")
	if got := top.Header("X-RT-GnuPG-Status"); len(got) != 0 {
		t.Errorf("stored X-RT-GnuPG-Status %q", got)
	}
	innerForged := false
	for _, a := range all {
		if !a.Top && slices.Contains(a.Header("X-Cryptmilter-Signature"), "valid; protocol=openpgp; signer=alice@example.net; key="+s.alice.fpr) {
			innerForged = true
		}
	}
	if !innerForged {
		t.Errorf("RT did not store the attached message's forged X-Cryptmilter-Signature; the test no longer shows that it is ignored")
	}

	// Mallory tries again: encrypted to RT's public key (anyone may
	// have it) and signed with a key she made in Alice's name.
	before = s.mailboxes(t)
	s.send(t, s.mallory.Addr, s.pgpMail(t, s.malloryKey, "Re: [example.org #1] "+aliceSubject, malloryText2))
	s.expect(t, before, map[string]int{"bob@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})
	txns, page = s.rt.History(t, 1)
	fake, err = findTxn(txns, "Correspondence added", malloryText2)
	if err != nil {
		t.Fatalf("ticket 1 has no correspondence showing Mallory's second text")
	}
	wantCrypt(t, fake, []rtRow{
		{"Encryption", "decrypt done", "decrypted by the mail gateway (OpenPGP, key "},
		{"Signature", "verify bad", "signed"},
	})
	if row := fake.Crypt(0)[1]; !strings.Contains(row.Value, "with a key or certificate the mail gateway does not trust") || !strings.Contains(row.Value, "key "+s.malloryKey.fpr[24:]) {
		// An unknown key is named by the key ID in the signature.
		t.Errorf("Mallory's signature is shown as %q, want untrusted with her key ID %s", row.Value, s.malloryKey.fpr[24:])
	}
	wantRTHeaders(t, s.top(t, fake.ID), "Success", "", "GnuPG")
	if n := strings.Count(page, "signature good, signed by"); n != 2 {
		t.Errorf("ticket 1 shows %d good signatures, want 2 (Alice's and Bob's)", n)
	}
}

// 6. Why the Subject stays readable.
func (s *rtStory) whyTheSubjectStays(t *testing.T) {
	s.setMilter(t, func(o *milterOptions) {
		o.Settings = append(o.Settings, `outbound.header_confidentiality = true`)
	})
	before := s.mailboxes(t)
	s.rt.REST(t, "POST", "ticket/1/correspond", map[string]any{"Content": trentText2, "ContentType": "text/plain"}, nil)
	got := s.expect(t, before, map[string]int{"alice@example.net": 1, "bob@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})
	n := got["bob@example.net"][0]
	wantSubject(t, "Alice", got["alice@example.net"][0], "[...]")
	wantSubject(t, "Bob", n, "[...]")
	wantSubject(t, "Faythe", got["faythe@example.org"][0], "[...]")
	if plain := s.gpgDecrypt(t, s.bob, n); !bytes.Contains(plain, []byte("Subject: [example.org #1] "+aliceSubject)) {
		t.Errorf("the real Subject is not inside Bob's copy:\n%s", plain)
	}
	// Dave's copy is only signed: its Subject was never hidden.
	wantSubject(t, "Dave", got["dave@example.com"][0], "[example.org #1] "+aliceSubject)

	before = s.mailboxes(t)
	msgID := strings.Join(n.Get("Message-ID"), "")
	s.send(t, s.bob.Addr, s.pgpMail(t, s.bob, "Re: [...]", "Confirmed, all good. Bob", "In-Reply-To: "+msgID, "References: "+msgID))
	// RT sees no ticket number and opens a new ticket: autoreply to
	// Bob, new-ticket notice to Faythe.
	s.expect(t, before, map[string]int{"bob@example.net": 1, "faythe@example.org": 1})
	if ids := s.rt.TicketIDs(t); !slices.Equal(ids, []int{1, 2, 3}) {
		t.Fatalf("tickets %v, want [1 2 3]: a reply to \"[...]\" opens ticket 3", ids)
	}
	if tk := s.rt.Ticket(t, 3); tk.Subject != "Re: [...]" {
		t.Errorf("ticket 3 has the subject %q", tk.Subject)
	}
	s.setMilter(t, func(o *milterOptions) {
		o.Settings = append(o.Settings, `outbound.header_confidentiality = false`)
	})
}

// 7. Trent mails the queue himself.
func (s *rtStory) trentMailsTheQueue(t *testing.T) {
	trent := &rtPerson{Name: "Trent", Addr: "trent@example.org"}
	// The auditors' report as they sent it: PGP/MIME encrypted to RT's
	// key, so cryptmilter's outbound side passes it untouched, with
	// result headers that claim the contrary.
	armored, err := cmdOut(t, []byte("Content-Type: text/plain\r\n\r\nThe auditors' report.\r\n"), "gpg", "--homedir", s.dave.home,
		"--batch", "--trust-model", "always", "--armor", "--recipient", "rt@example.org", "--encrypt")
	if err != nil {
		t.Fatal(err)
	}
	msg := s.header(trent, trent.from(), "Re: [example.org #1] "+trentSubject4,
		"X-Cryptmilter-Encryption: decrypted; protocol=openpgp; key="+s.gwFpr,
		"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org; key="+s.alice.fpr) +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"enc\"\r\n\r\n" +
		"--enc\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--enc\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		string(crlf(armored)) + "\r\n--enc--\r\n"
	before := s.mailboxes(t)
	// From his mail client: the submission port, outbound for cryptmilter.
	if err := s.pf.SendSMTP(s.pf.SubmitAddr, trent.Addr, []string{"rt@example.org"}, []byte(msg)); err != nil {
		t.Fatal(err)
	}
	s.expect(t, before, map[string]int{"alice@example.net": 1, "bob@example.net": 1, "dave@example.com": 1, "faythe@example.org": 1})
	if line := lastLine(s.m.Log(), "from=trent@example.org"); !strings.Contains(line, "direction=out") || !strings.Contains(line, "already encrypted") {
		t.Errorf("cryptmilter did not pass Trent's mail as outbound and already encrypted: %s", line)
	}
	txns, _ := s.rt.History(t, 1)
	txn, err := findTxn(txns, "Correspondence added", trentSubject4)
	if err != nil {
		t.Fatalf("ticket 1 has no correspondence showing Trent's mail")
	}
	for i := range txn.Boxes {
		if rows := txn.Crypt(i); len(rows) != 0 {
			t.Errorf("Trent's mail shows crypto results (part %d): %+v", i, rows)
		}
	}
	top, _ := s.topAttachment(t, txn.ID)
	if got := append(top.Header("X-Cryptmilter-Encryption"), top.Header("X-Cryptmilter-Signature")...); len(got) != 0 {
		t.Errorf("the forged result headers reached RT: %q", got)
	}
	wantRTHeaders(t, top, "Not encrypted", "", "")
}

// 8. Dave and the required policy.
func (s *rtStory) daveRequired(t *testing.T) {
	s.setMilter(t, func(o *milterOptions) {
		o.Extra += "\n[[outbound.rule]]\nmatch = \"@example.com\"\npolicy = \"required\"\n"
	})
	before := s.mailboxes(t)
	s.rt.REST(t, "POST", "ticket/1/correspond", map[string]any{"Content": trentText3, "ContentType": "text/plain"}, nil)
	// The notification to Alice, Bob and Dave is refused as a whole and
	// bounces to RT's envelope sender; Faythe's own notification is
	// another message and arrives.
	got := s.expect(t, before, map[string]int{"postmaster@example.org": 1, "faythe@example.org": 1})
	bounce := got["postmaster@example.org"][0]
	for _, p := range []*rtPerson{s.alice, s.bob, s.dave} {
		if !bytes.Contains(bounce.Raw, []byte("<"+p.Addr+">: <dave@example.com>: no usable encryption key")) {
			t.Errorf("the bounce does not tell that %s's copy was refused for Dave's missing key:\n%s", p.Name, bounce.Raw)
		}
	}
	if !bytes.Contains(bounce.Raw, []byte("Status: 5.7.1")) {
		t.Errorf("the bounce lacks the status 5.7.1:\n%s", bounce.Raw)
	}
	if content := s.smimeDecrypt(t, s.faythe, got["faythe@example.org"][0]); !bytes.Contains(content, []byte("under watch")) {
		t.Errorf("Faythe's copy lacks Trent's text:\n%s", content)
	}
	if line := lastLine(s.m.Log(), "rejected"); !strings.Contains(line, "dave@example.com") {
		t.Errorf("cryptmilter's log has no refusal naming Dave: %q", line)
	}
	// RT noticed nothing: the reply is in the history as sent.
	txns, _ := s.rt.History(t, 1)
	if _, err := findTxn(txns, "Correspondence added", trentText3); err != nil {
		t.Errorf("ticket 1 lacks Trent's last reply")
	}
	for _, x := range txns {
		if strings.Contains(x.Description, "Sending the previous mail has failed") {
			t.Errorf("RT recorded a sending failure: %s", x.Description)
		}
	}
	// Nor did it log an error along the way.
	for _, l := range strings.Split(s.rt.Log(), "\n") {
		if strings.Contains(l, "[error]") || strings.Contains(l, "[critical]") {
			t.Errorf("RT logged: %s", l)
		}
	}
}

// setMilter changes the milter's configuration and reloads it (SIGHUP).
func (s *rtStory) setMilter(t *testing.T, change func(*milterOptions)) {
	t.Helper()
	change(&s.m.opts)
	s.m.writeConfig(t, s.m.opts)
	if out := s.m.Reload(t); !strings.Contains(out, "msg=reloaded") {
		t.Fatalf("reload: %s", out)
	}
}
