package crypto

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// testBody is a message body with everything canonicalization must keep:
// 8-bit text with trailing spaces and "From " lines, HTML in a
// multipart/alternative, and a binary attachment.
func outTestMessage(to, cc string) []byte {
	return []byte("From: RT <rt@example.org>\r\n" +
		"To: " + to + "\r\n" +
		"Cc: " + cc + "\r\n" +
		"Subject: [example.org #42] Secret plans\r\n" +
		"Date: Thu, 26 Nov 2026 21:00:00 +0000\r\n" +
		"Message-ID: <rt-42@example.org>\r\n" +
		"Keywords: secret\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"mixed\"\r\n" +
		"\r\n" +
		"--mixed\r\n" +
		"Content-Type: multipart/alternative; boundary=\"alt\"\r\n" +
		"\r\n" +
		"--alt\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"Grüße aus dem Tresor, with trailing spaces   \r\n" +
		"From here on it is secret.\r\n" +
		"tab at the end\t\r\n" +
		".\r\n" +
		"--alt\r\n" +
		"Content-Type: text/html; charset=utf-8\r\n" +
		"Content-Transfer-Encoding: 8bit\r\n" +
		"\r\n" +
		"<html><body><p>Grüße</p> \r\n</body></html>\r\n" +
		"--alt--\r\n" +
		"--mixed\r\n" +
		"Content-Type: application/pdf; name=\"plans.pdf\"\r\n" +
		"Content-Disposition: attachment; filename=\"plans.pdf\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n" +
		"\r\n" +
		"JVBERi0xLjQKJcfsj6IKAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUm\r\n" +
		"JygpKissLS4vMDEyMzQ1Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltc\r\n" +
		"--mixed--\r\n")
}

// checkInner checks a decrypted or signed entity: transport-safe, the
// decoded content equal to the original's, and (with header protection)
// the protected fields inside with hp="cipher" or hp="clear".
func outCheckInner(t *testing.T, inner, orig []byte, hp string) {
	t.Helper()
	if why := outTransportSafe(inner); why != "" {
		t.Errorf("signed entity is not transport-safe: %s", why)
	}
	_, origBody := outHeaderOf(t, orig)
	oh, _ := outHeaderOf(t, orig)
	var ob bytes.Buffer
	mime.ContentFields(oh).WriteTo(&ob)
	ob.Write(origBody)
	if diff := cmp.Diff(outLeaves(t, ob.Bytes()), outLeaves(t, inner)); diff != "" {
		t.Errorf("decoded content differs (-sent +received):\n%s", diff)
	}
	ih, _ := outHeaderOf(t, inner)
	_, p := outParams(t, ih)
	if p["hp"] != hp {
		t.Errorf("inner Content-Type %q: hp = %q, want %q", ih.Get("Content-Type"), p["hp"], hp)
	}
	if hp == "" {
		return
	}
	for _, name := range []string{"Subject", "From", "To", "Date", "Message-ID", "Keywords"} {
		if got, want := ih.Get(name), oh.Get(name); got != want {
			t.Errorf("inner %s = %q, want %q", name, got, want)
		}
	}
	if ih.Has("Bcc") {
		t.Errorf("inner header carries Bcc")
	}
	if hp == "cipher" && !slices.Contains(ih.Values("HP-Outer"), "Subject: [...]") {
		t.Errorf("HP-Outer = %q, want it to record Subject: [...]", ih.Values("HP-Outer"))
	}
}

// checkOuter checks the outer header of an encrypted copy with header
// protection: Subject obscured, Keywords gone, the rest kept.
func outCheckOuter(t *testing.T, raw, orig []byte, protected bool) {
	t.Helper()
	h, _ := outHeaderOf(t, raw)
	oh, _ := outHeaderOf(t, orig)
	for _, name := range []string{"From", "To", "Cc", "Date", "Message-ID"} {
		if h.Get(name) != oh.Get(name) {
			t.Errorf("outer %s = %q, want %q", name, h.Get(name), oh.Get(name))
		}
	}
	wantSubj := oh.Get("Subject")
	if protected {
		wantSubj = "[...]"
		if h.Has("Keywords") {
			t.Errorf("outer Keywords kept")
		}
	}
	if h.Get("Subject") != wantSubj {
		t.Errorf("outer Subject = %q, want %q", h.Get("Subject"), wantSubj)
	}
	if len(h.Values("Content-Type")) != 1 || len(h.Values("MIME-Version")) != 1 {
		t.Errorf("outer header has %d Content-Type and %d MIME-Version fields", len(h.Values("Content-Type")), len(h.Values("MIME-Version")))
	}
	if why := outTransportSafe(raw); why != "" {
		t.Errorf("copy is not transport-safe: %s", why)
	}
}

var outKeyIDRe = regexp.MustCompile(`keyid ([0-9A-F]{16})`)

// recipientKeyIDs lists the key IDs of the PKESK packets of a PGP/MIME
// copy with gpg --list-packets.
func outRecipientKeyIDs(t *testing.T, raw []byte) []string {
	t.Helper()
	h, body := outHeaderOf(t, raw)
	_, p := outParams(t, h)
	_, armored := outHeaderOf(t, outRawParts(t, body, p["boundary"])[1])
	home, err := os.MkdirTemp("", "gpl")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		outRun(nil, "gpgconf", "--homedir", home, "--kill", "all")
		os.RemoveAll(home)
	}()
	// Without secret keys gpg lists the packets it can see and fails.
	out, _ := outRun(armored, "gpg", "--homedir", home, "--batch", "--list-packets")
	var ids []string
	for _, m := range outKeyIDRe.FindAllStringSubmatch(string(out), -1) {
		if !slices.Contains(ids, m[1]) {
			ids = append(ids, m[1])
		}
	}
	if len(ids) == 0 {
		t.Fatalf("gpg --list-packets shows no recipient:\n%s", out)
	}
	return ids
}

func TestOutboundPerRecipient(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, nil)
	msg := outTestMessage("Alice <alice@example.net>, dave@example.com", "nokey@example.com")
	rcpts := []string{"alice@example.net", "dave@example.com", "nokey@example.com", "carol@example.net", "erin@example.com"}
	plan, copies := processOut(t, e, snap, outGatewayAddr, rcpts, msg)
	if plan.Action != Accept || plan.Decision != "encrypted" {
		t.Fatalf("plan %s/%s %q", plan.Action, plan.Decision, plan.Reply)
	}
	if len(copies) != 5 {
		t.Fatalf("%d copies, want 5 (one per recipient)", len(copies))
	}
	if len(plan.DelRcpts) != 0 {
		t.Errorf("DelRcpts = %v; the milter removes copy recipients itself", plan.DelRcpts)
	}
	for _, addr := range []string{"alice@example.net", "carol@example.net"} {
		raw := outCopyFor(t, copies, addr)
		outCheckOuter(t, raw, msg, true)
		outCheckInner(t, f.gpgDecrypt(t, addr, raw), msg, "cipher")
	}
	for _, addr := range []string{"dave@example.com", "erin@example.com"} {
		raw := outCopyFor(t, copies, addr)
		outCheckOuter(t, raw, msg, true)
		outCheckInner(t, f.smimeDecrypt(t, addr, raw), msg, "cipher")
	}
	raw := outCopyFor(t, copies, "nokey@example.com")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.gpgVerifySigned(t, "alice@example.net", raw), msg, "clear")

	// The Bcc recipient's key ID is in its own copy only.
	carol := f.subkeys["carol@example.net"]
	for _, c := range copies {
		h, _ := outHeaderOf(t, c.raw)
		mt, _ := outParams(t, h)
		if mt != "multipart/encrypted" {
			continue
		}
		ids := outRecipientKeyIDs(t, c.raw)
		if len(ids) != 1 {
			t.Errorf("copy for %v is encrypted to %v, want one key", c.rcpts, ids)
		}
		if slices.Contains(ids, carol) != slices.Contains(c.rcpts, "carol@example.net") {
			t.Errorf("copy for %v: key IDs %v, Bcc key %s", c.rcpts, ids, carol)
		}
	}
}

func TestOutboundByClass(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Split = ByClass })
	msg := outTestMessage("alice@example.net, bob@example.net, dave@example.com", "erin@example.com")
	rcpts := []string{"alice@example.net", "bob@example.net", "carol@example.net", "dave@example.com", "erin@example.com", "nokey@example.com", "nokey2@example.com"}
	_, copies := processOut(t, e, snap, outGatewayAddr, rcpts, msg)
	// alice+bob (OpenPGP), carol alone (Bcc), dave+erin (S/MIME), the two
	// without keys together (signed; one of them Bcc, but a signed copy
	// carries no recipient key).
	var got [][]string
	for _, c := range copies {
		got = append(got, c.rcpts)
	}
	want := [][]string{{"alice@example.net", "bob@example.net"}, {"carol@example.net"}, {"dave@example.com", "erin@example.com"}, {"nokey@example.com", "nokey2@example.com"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("copies (-want +got):\n%s", diff)
	}
	shared := outCopyFor(t, copies, "alice@example.net")
	for _, addr := range []string{"alice@example.net", "bob@example.net"} {
		outCheckInner(t, f.gpgDecrypt(t, addr, shared), msg, "cipher")
	}
	ids := outRecipientKeyIDs(t, shared)
	if slices.Contains(ids, f.subkeys["carol@example.net"]) || len(ids) != 2 {
		t.Errorf("shared copy key IDs %v (Bcc carol: %s)", ids, f.subkeys["carol@example.net"])
	}
	outCheckInner(t, f.gpgDecrypt(t, "carol@example.net", outCopyFor(t, copies, "carol@example.net")), msg, "cipher")
	sm := outCopyFor(t, copies, "dave@example.com")
	for _, addr := range []string{"dave@example.com", "erin@example.com"} {
		outCheckInner(t, f.smimeDecrypt(t, addr, sm), msg, "cipher")
	}
}

func TestOutboundPolicy(t *testing.T) {
	f := outFixtureFor(t)
	msg := outTestMessage("x@example.com", "y@example.com")
	tests := []struct {
		name   string
		mod    func(*Policy)
		rcpts  []string
		action Action
		reply  string
		kind   map[string]string // rcpt → Content-Type media type of its copy ("" = unchanged)
	}{
		{
			name:   "required without key rejects",
			mod:    func(c *Policy) { c.Outbound.Rules = []Rule{{Match: "@example.com", Policy: Required}} },
			rcpts:  []string{"alice@example.net", "nokey@example.com"},
			action: Reject, reply: "550 5.7.1 <nokey@example.com>: no usable encryption key",
		},
		{
			name:   "required policy by default",
			mod:    func(c *Policy) { c.Outbound.Default = Required },
			rcpts:  []string{"<Nokey@Example.COM>"},
			action: Reject, reply: "550 5.7.1 <Nokey@Example.COM>: no usable encryption key",
		},
		{
			name:   "required with key encrypts",
			mod:    func(c *Policy) { c.Outbound.Rules = []Rule{{Match: "@example.com", Policy: Required}} },
			rcpts:  []string{"dave@example.com"},
			action: Accept, kind: map[string]string{"dave@example.com": "application/pkcs7-mime"},
		},
		{
			name: "first match wins",
			mod: func(c *Policy) {
				c.Outbound.Rules = []Rule{{Match: "nokey@example.com", Policy: NoCrypto}, {Match: "@example.com", Policy: Required}}
			},
			rcpts:  []string{"nokey@example.com"},
			action: Accept, kind: map[string]string{"nokey@example.com": ""},
		},
		{
			name:   "none leaves the message alone",
			mod:    func(c *Policy) { c.Outbound.Rules = []Rule{{Match: "*", Policy: NoCrypto}} },
			rcpts:  []string{"alice@example.net", "dave@example.com"},
			action: Accept, kind: map[string]string{"alice@example.net": "", "dave@example.com": ""},
		},
		{
			name: "sign-only signs even with a key",
			mod: func(c *Policy) {
				c.Outbound.Rules = []Rule{{Match: "alice@example.net", Policy: SignOnly}}
			},
			rcpts:  []string{"alice@example.net", "bob@example.net"},
			action: Accept, kind: map[string]string{"alice@example.net": "multipart/signed", "bob@example.net": "multipart/encrypted"},
		},
		{
			name:   "prefer openpgp",
			rcpts:  []string{"both@example.net"},
			action: Accept, kind: map[string]string{"both@example.net": "multipart/encrypted"},
		},
		{
			name:   "prefer smime",
			mod:    func(c *Policy) { c.Outbound.Prefer = SMIME },
			rcpts:  []string{"both@example.net"},
			action: Accept, kind: map[string]string{"both@example.net": "application/pkcs7-mime"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, snap := f.engine(t, tt.mod)
			plan, copies := processOut(t, e, snap, outGatewayAddr, tt.rcpts, msg)
			if plan.Action != tt.action || plan.Reply.String() != tt.reply {
				t.Fatalf("plan %s %q, want %s %q", plan.Action, plan.Reply, tt.action, tt.reply)
			}
			if tt.action != Accept {
				if plan.Body != nil || len(plan.Copies) != 0 || len(plan.HeaderOps) != 0 {
					t.Errorf("a rejected plan changes the message")
				}
				return
			}
			for addr, want := range tt.kind {
				raw := outCopyFor(t, copies, addr)
				if want == "" {
					if !bytes.Equal(raw, msg) {
						t.Errorf("%s: message changed", addr)
					}
					continue
				}
				h, _ := outHeaderOf(t, raw)
				if mt, _ := outParams(t, h); mt != want {
					t.Errorf("%s: %s, want %s", addr, mt, want)
				}
			}
		})
	}
}

func TestOutboundSMIMESigned(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) {
		c.Outbound.Rules = []Rule{{Match: "*", Policy: SignOnly}}
	})
	msg := outTestMessage("dave@example.com", "nokey@example.com")
	// dave uses S/MIME, so his signed copy is S/MIME; nokey gets the
	// preferred protocol's signature.
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"dave@example.com", "nokey@example.com"}, msg)
	raw := outCopyFor(t, copies, "dave@example.com")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.smimeVerify(t, raw), msg, "clear")
	outCheckInner(t, f.gpgVerifySigned(t, "alice@example.net", outCopyFor(t, copies, "nokey@example.com")), msg, "clear")
}

func TestOutboundNoHeaderProtection(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.ProtectHeaders = false })
	msg := outTestMessage("alice@example.net", "dave@example.com")
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net", "dave@example.com"}, msg)
	raw := outCopyFor(t, copies, "alice@example.net")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.gpgDecrypt(t, "alice@example.net", raw), msg, "")
	raw = outCopyFor(t, copies, "dave@example.com")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.smimeDecrypt(t, "dave@example.com", raw), msg, "")
}

// outCiphertexts returns real ciphertext to alice (armored OpenPGP, CRLF)
// and to dave (S/MIME EnvelopedData, base64 lines).
func outCiphertexts(t *testing.T, f *outFixture, snap *keystore.Snapshot) (armored, smimeB64 string) {
	t.Helper()
	alice, err := snap.EncryptionKey("alice@example.net", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var ct bytes.Buffer
	if err := openpgp.SignEncrypt(&ct, strings.NewReader("secret"), nil, []*pgpcrypto.Key{alice}, false); err != nil {
		t.Fatal(err)
	}
	dave, err := snap.Certificate("dave@example.com", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	der, err := smime.Encrypt([]byte("Content-Type: text/plain\r\n\r\nsecret\r\n"), []*x509.Certificate{dave})
	if err != nil {
		t.Fatal(err)
	}
	var b64 bytes.Buffer
	if err := mime.WriteBase64(&b64, der); err != nil {
		t.Fatal(err)
	}
	return strings.ReplaceAll(strings.TrimSpace(ct.String()), "\n", "\r\n"), b64.String()
}

func TestOutboundAlreadyEncrypted(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	head := "From: rt@example.org\r\nTo: nokey@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
	armored, smimeB64 := outCiphertexts(t, f, snap)
	tests := map[string]string{
		"pgp/mime":                             head + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + "\r\n--b--\r\n",
		"pgp/mime with Thunderbird's preamble": head + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n" + armored + "\r\n--b--\r\n",
		"s/mime":                               head + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n" + smimeB64,
		"inline":                               head + "Content-Type: text/plain\r\n\r\n\r\n" + armored + "\r\n",
	}
	for name, msg := range tests {
		t.Run(name, func(t *testing.T) {
			plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"nokey@example.com", "alice@example.net"}, []byte(msg))
			if plan.Action != Accept || plan.Body != nil || len(plan.HeaderOps) != 0 || len(plan.Copies) != 0 {
				t.Fatalf("plan %s %q with %d ops, %d copies: want untouched", plan.Action, plan.Reply, len(plan.HeaderOps), len(plan.Copies))
			}
			if !bytes.Equal(copies[0].raw, []byte(msg)) {
				t.Errorf("message changed")
			}
		})
	}
}

// TestOutboundClaimedEncryption: a message that only claims to be
// encrypted, or carries plaintext beside real ciphertext (preamble, the
// version part, the epilogue, a packet after the encrypted one, plaintext
// as the "encrypted" packet, a pkcs7-mime body that merely starts with the
// EnvelopedData OID), is not let through in plaintext where policy
// requires encryption.
func TestOutboundClaimedEncryption(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	head := "From: rt@example.org\r\nTo: nokey@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n"
	fakeArmor := "-----BEGIN PGP MESSAGE-----\r\n\r\nTop secret text in clear\r\n-----END PGP MESSAGE-----\r\n"
	armored, _ := outCiphertexts(t, f, snap)
	pgpMIME := func(preamble, version, data, epilogue string) string {
		return head + "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n" + preamble +
			"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\n" + version + "\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n" +
			data + "\r\n--b--\r\n" + epilogue
	}
	// Real ciphertext with a literal data packet appended after the
	// encrypted one, and a "encrypted" packet holding plaintext.
	trailing := outArmor(t, append(outDearmor(t, armored), outLiteralPacket("Top secret text in clear, after the ciphertext")...))
	plainPacket := outArmor(t, append(outDearmor(t, armored)[:outFirstPacketLen(t, armored)], outPacket(18, append([]byte{1}, bytes.Repeat([]byte("Top secret text in clear. "), 20)...))...))
	for name, msg := range map[string]string{
		"multipart/encrypted":       pgpMIME("", "Version: 1", fakeArmor, ""),
		"plaintext preamble":        pgpMIME("Top secret text in clear\r\n", "Version: 1", armored, ""),
		"plaintext in version part": pgpMIME("", "Version: 1\r\nTop secret text in clear", armored, ""),
		"plaintext epilogue":        pgpMIME("", "Version: 1", armored, "Top secret text in clear\r\n"),
		"packet after ciphertext":   pgpMIME("", "Version: 1", trailing, ""),
		"plaintext packet":          pgpMIME("", "Version: 1", plainPacket, ""),
		"plaintext field in the data part": strings.Replace(pgpMIME("", "Version: 1", armored, ""),
			"Content-Type: application/octet-stream\r\n", "Content-Type: application/octet-stream\r\nX-Note: Top secret text in clear\r\n", 1),
		"long description of the version part": strings.Replace(pgpMIME("", "Version: 1", armored, ""),
			"Content-Type: application/pgp-encrypted\r\n", "Content-Type: application/pgp-encrypted\r\nContent-Description: "+strings.Repeat("Top secret text in clear. ", 6)+"\r\n", 1),
		"two descriptions": strings.Replace(pgpMIME("", "Version: 1", armored, ""),
			"Content-Type: application/octet-stream\r\n", "Content-Type: application/octet-stream\r\nContent-Description: a\r\nContent-Description: Top secret\r\n", 1),
		"text after the armor checksum": pgpMIME("", "Version: 1", armorWithTextAfterChecksum(t, armored), ""),
		"application/pgp-encrypted":     head + "Content-Type: application/pgp-encrypted\r\n\r\n" + fakeArmor,
		"pkcs7-mime plaintext":          head + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data\r\n\r\nTop secret text in clear\r\n",
		"pkcs7-mime OID only":           head + "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqGSIb3DQEHA6CAMIACAQA=\r\n",
		"inline fake armor":             head + "Content-Type: text/plain\r\n\r\n" + fakeArmor,
		"quoted armor in a reply":       head + "Content-Type: text/plain\r\n\r\n" + fakeArmor + "\r\nMy answer, in clear.\r\n",
		"two content types":             head + "Content-Type: text/plain\r\nContent-Type: multipart/encrypted; boundary=b\r\n\r\nTop secret text in clear\r\n",
	} {
		plan, _ := processOut(t, e, snap, outGatewayAddr, []string{"nokey@example.com"}, []byte(msg))
		if plan.Action != Reject || !strings.HasPrefix(plan.Reply.String(), "550 5.7.1 <nokey@example.com>") {
			t.Errorf("%s: %s %q, want the required-policy refusal", name, plan.Action, plan.Reply)
		}
	}
}

// armorWithTextAfterChecksum puts a line of text between the checksum
// line (added when missing) and the END line, where go-crypto's armor
// reader skips it (found by FuzzIsCiphertext).
func armorWithTextAfterChecksum(t *testing.T, armored string) string {
	t.Helper()
	end := strings.LastIndex(armored, "-----END PGP MESSAGE-----")
	if end < 0 {
		t.Fatal("no END line")
	}
	body := armored[:end]
	if !regexp.MustCompile(`\n=[A-Za-z0-9+/]{4}\r\n$`).MatchString(body) {
		body += "=AAAA\r\n"
	}
	return body + "Top secret text in clear\r\n" + armored[end:]
}

// outDearmor returns the packets of an armored message.
func outDearmor(t *testing.T, armored string) []byte {
	t.Helper()
	blk, err := armor.Decode(strings.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(blk.Body)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// outArmor armors packets as a PGP MESSAGE with CRLF line ends.
func outArmor(t *testing.T, packets []byte) string {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(packets)
	w.Close()
	return strings.ReplaceAll(b.String(), "\n", "\r\n")
}

// outFirstPacketLen returns the length of the first packet (the PKESK).
func outFirstPacketLen(t *testing.T, armored string) int {
	t.Helper()
	b := outDearmor(t, armored)
	if b[0]&0x40 == 0 {
		t.Fatal("want a new-format packet")
	}
	switch l := int(b[1]); {
	case l < 192:
		return 2 + l
	case l < 224:
		return 3 + (l-192)<<8 + int(b[2]) + 192
	}
	t.Fatal("unexpected packet length form")
	return 0
}

// outPacket makes a new-format packet with tag and body (< 8384 bytes).
func outPacket(tag byte, body []byte) []byte {
	p := []byte{0xc0 | tag}
	if n := len(body); n < 192 {
		p = append(p, byte(n))
	} else {
		n -= 192
		p = append(p, byte(n>>8)+192, byte(n))
	}
	return append(p, body...)
}

// outLiteralPacket is a literal data packet holding text.
func outLiteralPacket(text string) []byte {
	return outPacket(11, append([]byte{'b', 0, 0, 0, 0, 0}, text...))
}

// TestOutboundRecipientCaseVariants: bob@x and BOB@X are two envelope
// recipients; both leave the original copy for the encrypted one.
func TestOutboundRecipientCaseVariants(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	msg := outTestMessage("alice@example.net", "x@example.com")
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net", "alice@EXAMPLE.net"}, msg)
	if plan.Action != Accept {
		t.Fatalf("%s %q", plan.Action, plan.Reply)
	}
	var all []string
	for _, c := range copies {
		all = append(all, c.rcpts...)
	}
	for _, r := range []string{"alice@example.net", "alice@EXAMPLE.net"} {
		if !slices.Contains(all, r) {
			t.Errorf("%s is in no copy: %v", r, all)
		}
	}
	for _, c := range copies {
		if !bytes.Contains(c.raw, []byte("multipart/encrypted")) {
			t.Errorf("copy for %v is not encrypted", c.rcpts)
		}
	}
}

// TestOutboundSharedCopyNamesEachKeyOnce: in a copy shared by class, two
// envelope forms of one address name its key once, for OpenPGP (one
// public-key encrypted session key packet) and for S/MIME (one
// RecipientInfo).
func TestOutboundSharedCopyNamesEachKeyOnce(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Default = Required; c.Outbound.Split = ByClass })
	tests := []struct {
		rcpts []string
		count func(t *testing.T, raw []byte) int
	}{
		{[]string{"alice@example.net", "alice@EXAMPLE.net"}, func(t *testing.T, raw []byte) int {
			h, body := outHeaderOf(t, raw)
			_, p := outParams(t, h)
			parts := outRawParts(t, body, p["boundary"])
			_, armored := outHeaderOf(t, parts[len(parts)-1])
			out, _ := outRun(armored, "gpg", "--homedir", t.TempDir(), "--batch", "--list-packets")
			return bytes.Count(out, []byte(":pubkey enc packet:"))
		}},
		{[]string{"dave@example.com", "dave@EXAMPLE.com"}, func(t *testing.T, raw []byte) int {
			_, body := outHeaderOf(t, raw)
			der, err := base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(body)))
			if err != nil {
				t.Fatal(err)
			}
			out, err := outRun(der, "openssl", "cms", "-cmsout", "-print", "-inform", "DER")
			if err != nil {
				t.Fatalf("openssl cms -print: %v\n%s", err, out)
			}
			return bytes.Count(out, []byte("d.ktri:"))
		}},
	}
	for _, tt := range tests {
		msg := outTestMessage(strings.Join(tt.rcpts, ", "), "x@example.com")
		plan, copies := processOut(t, e, snap, outGatewayAddr, tt.rcpts, msg)
		if plan.Action != Accept || len(copies) != 1 {
			t.Fatalf("%v: %s %q, %d copies", tt.rcpts, plan.Action, plan.Reply, len(copies))
		}
		if n := tt.count(t, copies[0].raw); n != 1 {
			t.Errorf("%v: the shared copy names the key %d times, want 1", tt.rcpts, n)
		}
	}
}

func TestOutboundNoKeystore(t *testing.T) {
	f := outFixtureFor(t)
	e, _ := f.engine(t, nil)
	msg := outTestMessage("alice@example.net", "x@example.com")
	plan, copies := processOut(t, e, nil, outGatewayAddr, []string{"alice@example.net"}, msg)
	if plan.Action != Accept || !bytes.Equal(copies[0].raw, msg) {
		t.Errorf("without a keystore opportunistic mail must pass unchanged: %s", plan.Action)
	}
	e, _ = f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	plan, _ = processOut(t, e, nil, outGatewayAddr, []string{"alice@example.net"}, msg)
	if plan.Action != Reject {
		t.Errorf("without a keystore required mail must be refused: %s", plan.Action)
	}
}

// TestOutboundHeaderOps checks the in-place rewrite as the milter applies
// it: delete indexes count per name over the original header.
func TestOutboundHeaderOps(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, nil)
	msg := []byte("Content-Type: text/plain; charset=utf-8\r\nFrom: rt@example.org\r\nSubject: one\r\nContent-Transfer-Encoding: 8bit\r\nTo: alice@example.net\r\nComments: c1\r\nComments: c2\r\nMIME-Version: 1.0\r\n\r\nGrüße \r\n")
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, msg)
	h, _ := outHeaderOf(t, copies[0].raw)
	var names []string
	for _, fl := range h {
		names = append(names, fl.Name+": "+fl.Value)
	}
	want := []string{"From: rt@example.org", "Subject: [...]", "To: alice@example.net", "MIME-Version: 1.0"}
	if diff := cmp.Diff(want, names[:4]); diff != "" {
		t.Errorf("header (-want +got):\n%s\nops: %+v", diff, plan.HeaderOps)
	}
	if len(names) != 5 || !strings.HasPrefix(names[4], "Content-Type: multipart/encrypted;") {
		t.Errorf("header = %q", names)
	}
	inner := f.gpgDecrypt(t, "alice@example.net", copies[0].raw)
	ih, body := outHeaderOf(t, inner)
	if ih.Get("Subject") != "one" || len(ih.Values("Comments")) != 2 {
		t.Errorf("inner header %v", ih)
	}
	if string(body) != "Gr=C3=BC=C3=9Fe=20=\r\n" && string(body) != "Gr=C3=BC=C3=9Fe=20\r\n" {
		t.Errorf("inner body %q", body)
	}
}

func TestRule(t *testing.T) {
	cfg := testPolicy(nil).Outbound
	cfg.Rules = []Rule{
		{Match: "boss@partner.example", Policy: SignOnly},
		{Match: "@partner.example", Policy: Required, Inline: true},
		{Match: "@PUBLIC.example", Policy: NoCrypto},
	}
	tests := []struct {
		addr   string
		policy OutboundPolicy
		inline bool
	}{
		{"boss@partner.example", SignOnly, false},
		{"<Boss@Partner.Example>", SignOnly, false},
		{"x@partner.example", Required, true},
		{"x@sub.partner.example", Opportunistic, false},
		{"x@public.example", NoCrypto, false},
		{"partner.example@other.example", Opportunistic, false},
	}
	for _, tt := range tests {
		p, in := ruleFor(&cfg, tt.addr)
		if p != tt.policy || in != tt.inline {
			t.Errorf("ruleFor(%q) = %v %v, want %v %v", tt.addr, p, in, tt.policy, tt.inline)
		}
	}
	cfg.Rules = append([]Rule{{Match: "*", Policy: NoCrypto}}, cfg.Rules...)
	if p, _ := ruleFor(&cfg, "boss@partner.example"); p != NoCrypto {
		t.Errorf("* first: %v, want none", p)
	}
}

func TestRcptDefer(t *testing.T) {
	f := outFixtureFor(t)
	tests := []struct {
		split        Split
		defer_       bool
		first, rcpt  string
		wantDeferred bool
	}{
		{PerRecipient, false, "alice@example.net", "bob@example.net", false},
		{PerRecipient, true, "", "alice@example.net", false},
		{PerRecipient, true, "alice@example.net", "bob@example.net", true},
		{PerRecipient, true, "alice@example.net", "alice@example.net", false},
		{ByClass, true, "alice@example.net", "bob@example.net", false},
		{ByClass, true, "alice@example.net", "dave@example.com", true},
		{ByClass, true, "nokey@example.com", "nokey2@example.com", false},
		{PerRecipient, true, "nokey@example.com", "nokey2@example.com", false},
		{ByClass, true, "nokey@example.com", "alice@example.net", true},
	}
	for _, tt := range tests {
		e, snap := f.engine(t, func(c *Policy) { c.Outbound.Split = tt.split; c.Outbound.DeferRcpt = tt.defer_ })
		got := e.RcptDefer(snap, time.Now(), outGatewayAddr, tt.first, tt.rcpt)
		if !got.IsZero() != tt.wantDeferred || !got.IsZero() && got != DeferReply {
			t.Errorf("%v defer=%v first=%q rcpt=%q: %q", tt.split, tt.defer_, tt.first, tt.rcpt, got)
		}
	}
}

// TestOutboundSignerFromIdentity: the From address signs when it is a
// gateway identity; otherwise sign_as.
func TestOutboundSigner(t *testing.T) {
	f := outFixtureFor(t)
	dir := t.TempDir()
	outCopyDir(t, f.ksDir, dir)
	if _, err := keystore.Init(keystore.Options{Dir: dir}, []string{"support@example.org"}, false, time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	snap, err := keystore.Load(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ from, signAs, want string }{
		{"support@example.org", "", "support@example.org"},
		{"rt@example.org", "support@example.org", "rt@example.org"},
		{"someone@example.org", "support@example.org", "support@example.org"},
		{"someone@example.org", "", "rt@example.org"},
	} {
		e, _ := f.engine(t, func(c *Policy) { c.Outbound.SignAs = tt.signAs })
		msg := bytes.Replace(outTestMessage("alice@example.net", "x@example.com"), []byte("From: RT <rt@example.org>"), []byte("From: "+tt.from), 1)
		plan, _ := processOut(t, e, snap, tt.from, []string{"alice@example.net"}, msg)
		var got string
		for _, a := range plan.Attrs {
			if a.Key == "signer_openpgp" {
				got = a.Value.String()
			}
		}
		if got != tt.want {
			t.Errorf("From %s, sign_as %q: signer %q, want %q", tt.from, tt.signAs, got, tt.want)
		}
	}
}

func outCopyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.Walk(src, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if fi.IsDir() {
			return os.MkdirAll(target, fi.Mode().Perm())
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return os.WriteFile(target, data, fi.Mode().Perm())
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOutboundInline: a rule with inline = true sends a single text/plain
// message as inline PGP (the decoded text, signed and encrypted); other
// messages to the same recipient stay PGP/MIME.
func TestOutboundInline(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) {
		c.Outbound.Rules = []Rule{{Match: "alice@example.net", Policy: Required, Inline: true}}
	})
	msg := []byte("From: rt@example.org\r\nTo: alice@example.net\r\nSubject: inline\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" +
		"Gr=C3=BC=C3=9Fe =\r\nsoft\r\nFrom me\r\n")
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, msg)
	h, body := outHeaderOf(t, copies[0].raw)
	mt, p := outParams(t, h)
	if mt != "text/plain" || p["charset"] != "utf-8" || h.Get("Content-Transfer-Encoding") != "7bit" || h.Get("Subject") != "inline" {
		t.Fatalf("inline copy header %v", h)
	}
	if !bytes.HasPrefix(body, []byte("-----BEGIN PGP MESSAGE-----\r\n")) {
		t.Fatalf("body is not an armored message:\n%.200s", body)
	}
	if why := outTransportSafe(copies[0].raw); why != "" {
		t.Errorf("inline copy not transport-safe: %s", why)
	}
	outFixMu.Lock()
	out := filepath.Join(t.TempDir(), "plain")
	status, err := outRun(body, "gpg", "--homedir", f.homes["alice@example.net"], "--batch", "--status-fd", "1", "--output", out, "--decrypt")
	outFixMu.Unlock()
	if err != nil || !bytes.Contains(status, []byte("GOODSIG "+f.gwPGPID)) {
		t.Fatalf("gpg: %v\n%s", err, status)
	}
	plain, _ := os.ReadFile(out)
	if want := "Grüße soft\r\nFrom me\r\n"; string(plain) != want {
		t.Errorf("plaintext %q, want %q", plain, want)
	}
	// A multipart message to the same recipient is PGP/MIME.
	_, copies = processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, outTestMessage("alice@example.net", "x@example.com"))
	h, _ = outHeaderOf(t, copies[0].raw)
	if mt, _ := outParams(t, h); mt != "multipart/encrypted" {
		t.Errorf("multipart message with an inline rule: %s, want multipart/encrypted", mt)
	}
}

// TestOutboundLimits: a message too deeply nested to canonicalize is
// refused with a clear reply, not tempfailed forever.
func TestOutboundLimits(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Limits.MaxMIMEDepth = 3 })
	var b strings.Builder
	b.WriteString("From: rt@example.org\r\nTo: alice@example.net\r\nBcc: carol@example.net\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b0\r\n\r\n")
	for i := 1; i <= 5; i++ {
		fmt.Fprintf(&b, "--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i-1, i)
	}
	b.WriteString("--b5\r\nContent-Type: text/plain\r\n\r\ndeep\r\n--b5--\r\n")
	plan, _ := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, []byte(b.String()))
	if plan.Action != Reject || plan.Reply != LimitReply {
		t.Errorf("plan %s %q, want reject %q", plan.Action, plan.Reply, LimitReply)
	}
	// Within the limits, the Bcc field is removed from the rewritten copy.
	e, _ = f.engine(t, nil)
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, []byte(b.String()))
	if h, _ := outHeaderOf(t, copies[0].raw); h.Has("Bcc") {
		t.Errorf("rewritten copy keeps the Bcc field")
	}
}

// TestOutboundCertificateEKU: a certificate without emailProtection (here
// serverAuth only) is not used for encryption.
func TestOutboundCertificateEKU(t *testing.T) {
	f := outFixtureFor(t)
	dir := t.TempDir()
	outCopyDir(t, f.ksDir, dir)
	key, crt := filepath.Join(dir, "web.key"), filepath.Join(dir, "web.pem")
	if _, err := outRun(nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
		"-days", "30", "-subj", "/CN=web", "-addext", "subjectAltName=email:web@example.com",
		"-addext", "extendedKeyUsage=serverAuth", "-addext", "keyUsage=digitalSignature,keyEncipherment"); err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(crt)
	// The keystore may refuse the import outright or keep the certificate
	// unusable for encryption; either way the engine must not use it.
	keystore.Import(keystore.Options{Dir: dir}, data, "web.pem", false, nil, time.Now().Add(time.Second))
	snap, err := keystore.Load(keystore.Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	e, _ := f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	plan, _ := processOut(t, e, snap, outGatewayAddr, []string{"web@example.com"}, outTestMessage("web@example.com", "x@example.com"))
	if plan.Action != Reject || plan.Reply.String() != "550 5.7.1 <web@example.com>: no usable encryption key" {
		t.Errorf("serverAuth-only certificate: %s %q, want the no-key refusal", plan.Action, plan.Reply)
	}
}

// TestOutboundStripsResultHeaders: inbound result headers on outbound mail
// can only be forged or stale; they never travel under the gateway's
// signature. That includes Authentication-Results claiming the gateway's
// authserv-id with an smime result (found by FuzzOutbound); other
// verifiers' results under the same id stay.
func TestOutboundStripsResultHeaders(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, nil)
	msg := append([]byte("X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org\r\nX-RT-Incoming-Signature: ceo@example.org\r\n"+
		"Authentication-Results: localhost; smime=pass body.smime-identifier=ceo@example.org\r\n"+
		"Authentication-Results: localhost; dkim=pass header.d=example.org\r\n"),
		outTestMessage("alice@example.net", "x@example.com")...)
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net", "x@example.com"}, msg)
	if plan.Action != Accept {
		t.Fatalf("%s %q", plan.Action, plan.Reply)
	}
	for _, c := range copies {
		h, _ := outHeaderOf(t, c.raw)
		if h.Has("X-Cryptmilter-Signature") || h.Has("X-RT-Incoming-Signature") {
			t.Errorf("copy for %v keeps a forged result header", c.rcpts)
		}
		if bytes.Contains(c.raw, []byte("ceo@example.org")) {
			t.Errorf("copy for %v carries the forged value", c.rcpts)
		}
		if !bytes.Contains(c.raw, []byte("dkim=pass header.d=example.org")) {
			t.Errorf("copy for %v lost another verifier's result", c.rcpts)
		}
	}
}

// TestOutboundPassedStripsResultHeaders: mail that leaves unchanged by
// policy (none, already encrypted) loses the result fields it carries,
// which on the way out can only be forged (a local sender writing
// "signature good" for a ticket system behind the gateway).
func TestOutboundPassedStripsResultHeaders(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.Default = NoCrypto })
	msg := []byte("From: staff@example.org\r\nTo: rt@example.org\r\nSubject: s\r\n" +
		"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org\r\n" +
		"X-RT-Incoming-Signature: ceo@example.org\r\nX-Other: kept\r\n" +
		"Authentication-Results: localhost; smime=pass body.smime-identifier=ceo@example.org\r\n\r\nHello.\r\n")
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"rt@example.org"}, msg)
	if plan.Action != Accept || plan.Body != nil {
		t.Fatalf("plan %s, body replaced %v", plan.Action, plan.Body != nil)
	}
	raw := string(copies[0].raw)
	if strings.Contains(raw, "ceo@example.org") || !strings.Contains(raw, "X-Other: kept") || !strings.Contains(raw, "\r\n\r\nHello.\r\n") {
		t.Errorf("delivered:\n%s", raw)
	}
}

// TestOutboundAddressForms: rules, key lookups and Bcc status compare one
// canonical form of an address, so that no spelling ("alice"@x, case
// variants, a final dot, IDN in A-label or U-label form) bypasses a
// required rule or changes what a recipient gets.
func TestOutboundAddressForms(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) {
		c.Outbound.Rules = []Rule{
			{Match: "nokey@partner.example", Policy: Required},
			{Match: "@bücher.example", Policy: Required},
			{Match: "@xn--caf-dma.example", Policy: Required},
		}
	})
	msg := outTestMessage("x@example.com", "")
	for _, rcpt := range []string{
		`"nokey"@partner.example`, `<"no\key"@Partner.Example.>`, "NOKEY@PARTNER.EXAMPLE",
		"x@xn--bcher-kva.example", "x@BÜCHER.example", "x@café.example",
	} {
		plan, _ := processOut(t, e, snap, outGatewayAddr, []string{rcpt}, msg)
		if plan.Action != Reject || !strings.HasPrefix(plan.Reply.String(), "550 5.7.1 ") {
			t.Errorf("%s: %s %q, want the required rule's refusal", rcpt, plan.Action, plan.Reply)
		}
	}
	// A quoted local part and a final dot still find alice's key.
	e, snap = f.engine(t, func(c *Policy) { c.Outbound.Default = Required })
	rcpt := `"alice"@Example.NET.`
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{rcpt}, outTestMessage("alice@example.net", ""))
	if plan.Action != Accept {
		t.Fatalf("%s: %s %q", rcpt, plan.Action, plan.Reply)
	}
	if h, _ := outHeaderOf(t, outCopyFor(t, copies, rcpt)); !strings.HasPrefix(h.Get("Content-Type"), "multipart/encrypted") {
		t.Errorf("%s: copy is %s, want encrypted", rcpt, h.Get("Content-Type"))
	}
	// Visible in To under another spelling: not Bcc, so one copy for two
	// visible recipients under by-class.
	e, snap = f.engine(t, func(c *Policy) { c.Outbound.Split = ByClass })
	plan, copies = processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net", "bob@example.net"},
		outTestMessage(`"alice"@EXAMPLE.net, Bob <bob@Example.Net.>`, ""))
	if plan.Action != Accept || len(copies) != 1 {
		t.Errorf("by-class with both visible: %s, %d copies, want 1", plan.Action, len(copies))
	}
}
