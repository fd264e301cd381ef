package crypto

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestInboundOpenPGPRoundTrip proves, with messages made by the real gpg
// as the sending client, the verdict and the delivered plaintext for
// PGP/MIME encrypted, signed+encrypted in both forms, signed only, inline
// (quoted-printable and base64, iso-8859-1), cleartext-signed, 8-bit
// non-ASCII, attachments, HTML-only, RSA-3072 and Curve25519 keys (as
// recipient and as signer), hidden recipients, wrong From, unknown and
// expired signers, and protected headers.
func TestInboundOpenPGPRoundTrip(t *testing.T) {
	f := inPGPFixture(t)
	dec := func(gw string) string { return "decrypted; protocol=openpgp; key=" + f.fpr[gw] }
	valid := func(who, addr string) string {
		return "valid; protocol=openpgp; signer=" + addr + "; key=" + f.fpr[who]
	}
	aliceValid := valid("alice", "alice@example.net")
	tests := []struct {
		name, msg string
		now       time.Duration // added to time.Now()
		enc, sig  string
		texts     map[string]string // media type → text it must contain
		unchanged bool
		subject   string // Subject after the engine ("" = as received)
		ctype     string // delivered Content-Type must contain this
	}{
		{name: "encrypted/curve25519", msg: "enc", enc: dec("gw"), sig: "none",
			texts: map[string]string{"text/plain": inUTF8Text}, ctype: "text/plain; charset=utf-8"},
		{name: "encrypted/rsa3072", msg: "enc-rsa", enc: dec("gwrsa"), sig: "none",
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "encrypted/hidden-recipient", msg: "hidden", enc: dec("gw"), sig: "none",
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "sign+encrypt/curve25519", msg: "se", enc: dec("gw"), sig: aliceValid,
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "sign+encrypt/rsa3072", msg: "se-rsa", enc: dec("gwrsa"), sig: valid("robert", "robert@example.net"),
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "sign+encrypt/wrong-from", msg: "wrongfrom", enc: dec("gw"),
			sig:   "mismatch; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"] + "; reason=signer-not-from",
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "sign+encrypt/unknown-signer", msg: "untrusted-se", enc: dec("gw"),
			sig:   "untrusted; protocol=openpgp; key=" + f.keyID["mallory"] + "; reason=unknown-key",
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "sign+encrypt/signer-key-valid-now", msg: "expiring-se", enc: dec("gw"),
			sig: valid("expiring", "expiring@example.net")},
		{name: "sign+encrypt/signer-key-expired", msg: "expiring-se", now: 72 * time.Hour, enc: dec("gw"),
			sig: "expired; protocol=openpgp; signer=expiring@example.net; key=" + f.fpr["expiring"] + "; reason=key-expired"},
		{name: "signed-inside-encrypted/protected-headers", msg: "signed-in-enc", enc: dec("gw"), sig: aliceValid,
			texts: map[string]string{"text/plain": inUTF8Text}, subject: inSecretSubj, ctype: "multipart/signed"},
		{name: "signed-inside-encrypted/inner-from-differs", msg: "inner-from-differs", enc: dec("gw"),
			sig:   "mismatch; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"] + "; reason=inner-from-differs",
			texts: map[string]string{"text/plain": inUTF8Text}, subject: inSecretSubj},
		{name: "encrypt-then-sign", msg: "sign-over-encrypted", enc: dec("gw"),
			sig:   "none; reason=covers-ciphertext; outer=valid; outer-protocol=openpgp; outer-signer=alice@example.net; outer-key=" + f.fpr["alice"],
			texts: map[string]string{"text/plain": inUTF8Text}},
		{name: "signed/curve25519", msg: "signed", enc: "none", sig: aliceValid, unchanged: true},
		{name: "signed/rsa3072", msg: "signed-rsa", enc: "none", sig: valid("robert", "robert@example.net"), unchanged: true},
		{name: "signed/unknown-signer", msg: "signed-untrusted", enc: "none",
			sig: "untrusted; protocol=openpgp; key=" + f.keyID["mallory"] + "; reason=unknown-key", unchanged: true},
		{name: "signed/tampered-content", msg: "signed-tampered", enc: "none",
			sig: "bad; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"] + "; reason=bad-signature", unchanged: true},
		{name: "inline/quoted-printable-latin1-signed", msg: "inline-qp", enc: dec("gw"), sig: aliceValid,
			texts: map[string]string{"text/plain": inLatin1Text}, ctype: "charset=iso-8859-1"},
		{name: "inline/base64-latin1", msg: "inline-b64", enc: dec("gw"), sig: "none",
			texts: map[string]string{"text/plain": inLatin1Text}, ctype: "charset=ISO-8859-1"},
		{name: "inline/utf8-in-us-ascii-part", msg: "inline-ascii-label", enc: dec("gw"), sig: "none",
			texts: map[string]string{"text/plain": inUTF8Text}, ctype: "charset=utf-8"},
		{name: "encrypted/symmetric-only", msg: "symmetric", enc: "failed; protocol=openpgp; reason=not-for-gateway", sig: "none", unchanged: true},
		{name: "inline/cleartext-signed", msg: "clearsign", enc: "none", sig: aliceValid, unchanged: true},
		{name: "attachment", msg: "attach", enc: dec("gw"), sig: aliceValid,
			texts: map[string]string{"text/plain": inUTF8Text}, ctype: "multipart/mixed"},
		{name: "html-only", msg: "html", enc: dec("gw"), sig: "none",
			texts: map[string]string{"text/html": inHTMLText}, ctype: "text/html"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			msg := f.msgs[tt.msg]
			if msg == nil {
				t.Fatalf("no message %q in the fixture", tt.msg)
			}
			r := inProcess(t, inEngine(t, nil), f.keys, msg, time.Now().Add(tt.now))
			if r.plan.Action != Accept {
				t.Fatalf("action %s %q, want accept", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tt.enc, tt.sig)
			inHeaderSafe(t, r.header)
			if tt.unchanged {
				inUnchanged(t, r)
			}
			if len(tt.texts) > 0 {
				if r.plan.Body == nil {
					t.Fatal("body not replaced")
				}
				if bytes.Contains(r.body, []byte("-----BEGIN PGP MESSAGE-----")) {
					t.Error("delivered body still holds the ciphertext")
				}
			}
			for mt, want := range tt.texts {
				if got := inText(t, r.raw(), mt); !strings.Contains(got, want) {
					t.Errorf("delivered %s %q does not contain %q", mt, got, want)
				}
			}
			if tt.subject != "" {
				if got := r.header.Values("Subject"); len(got) != 1 || got[0] != tt.subject {
					t.Errorf("Subject = %q, want %q", got, tt.subject)
				}
			}
			if got := r.header.Values("From"); len(got) != 1 || got[0] != r.in.Get("From") {
				t.Errorf("From = %q, want the outer %q", got, r.in.Get("From"))
			}
			if tt.ctype != "" && !strings.Contains(r.header.Get("Content-Type"), tt.ctype) {
				t.Errorf("Content-Type = %q, want it to contain %q", r.header.Get("Content-Type"), tt.ctype)
			}
			if len(r.header.Values("Content-Type")) != 1 || len(r.header.Values("MIME-Version")) != 1 {
				t.Errorf("Content-Type %q, MIME-Version %q: want one each", r.header.Values("Content-Type"), r.header.Values("MIME-Version"))
			}
		})
	}
}

// TestInboundOpenPGPAttachmentBytes proves that a binary attachment inside
// the encryption reaches the recipient byte for byte, with its name.
func TestInboundOpenPGPAttachmentBytes(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["attach"], time.Time{})
	var found bool
	for _, l := range inLeaves(t, r.raw()) {
		if l.mediaType == "application/octet-stream" {
			found = true
			if l.filename != "data.bin" {
				t.Errorf("attachment file name %q, want data.bin", l.filename)
			}
			if !bytes.Equal(l.body, f.attachment) {
				t.Errorf("attachment: %d bytes differ from the %d sent", len(l.body), len(f.attachment))
			}
		}
	}
	if !found {
		t.Fatal("attachment missing from the delivered message")
	}
}

// TestInboundOpenPGPUnwrapSigned proves unwrap_signed: a verified
// multipart/signed (alone, or inside the encryption) and a cleartext block
// are delivered as their signed content only, with the verdict kept.
func TestInboundOpenPGPUnwrapSigned(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, func(c *Policy) { c.Inbound.UnwrapSigned = true })
	aliceValid := "valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"]
	for _, tc := range []struct{ msg, enc, ctype, text string }{
		{"signed", "none", "text/plain", inUTF8Text},
		{"signed-in-enc", "decrypted; protocol=openpgp; key=" + f.fpr["gw"], "text/plain", inUTF8Text},
		{"clearsign", "none", "text/plain", inUTF8Text},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			r := inProcess(t, e, f.keys, f.msgs[tc.msg], time.Time{})
			inWant(t, r, tc.enc, aliceValid)
			if r.plan.Body == nil {
				t.Fatal("body not replaced")
			}
			if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, tc.ctype) {
				t.Errorf("Content-Type %q, want %s", ct, tc.ctype)
			}
			for _, l := range inLeaves(t, r.raw()) {
				if l.mediaType == "application/pgp-signature" {
					t.Error("signature part still delivered")
				}
			}
			raw := r.raw()
			if bytes.Contains(raw, []byte("-----BEGIN PGP")) {
				t.Errorf("armor still delivered:\n%s", raw)
			}
			if got := inText(t, raw, "text/plain"); !strings.Contains(got, tc.text) {
				t.Errorf("text %q does not contain %q", got, tc.text)
			}
		})
	}
}
