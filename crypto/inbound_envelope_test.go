package crypto

import (
	"strings"
	"testing"
	"time"
)

// TestInboundEnvelope proves the Cryptographic Envelope walk on layer
// sequences beyond two (RFC 9787): the signature reported is the innermost
// one over the plaintext, a signature that only covers ciphertext (or an
// outer wrapper) is reported as outer=…, never as the content's, and
// ciphertext for the gateway under a signature is decrypted.
func TestInboundEnvelope(t *testing.T) {
	f := inPGPFixture(t)
	dec := "decrypted; protocol=openpgp; key=" + f.fpr["gw"]
	alice := "valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"]
	relay := "outer=untrusted; outer-protocol=openpgp; outer-key=" + f.keyID["mallory"] + "; outer-reason=unknown-key"
	for _, tc := range []struct {
		msg, enc, sig string
		text          bool // the delivered text holds inUTF8Text, no ciphertext
	}{
		// Before the walk: the inner signature read untrusted (the
		// relay's) and ciphertext under a signature stayed encrypted.
		{"triple-wrap", dec, alice + "; outer=valid; outer-protocol=openpgp; outer-signer=alice@example.net; outer-key=" + f.fpr["alice"], true},
		{"relay-over-signed-enc", dec, alice + "; " + relay, true},
		{"relay-over-enc", dec, "none; reason=covers-ciphertext; " + relay, true},
		{"relay-over-signed", "none", alice + "; " + relay, false},
		{"enc-in-enc-not-for-us", dec + "; reason=inner-not-for-gateway", "none", false},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			r := inProcess(t, inEngine(t, nil), f.keys, f.msgs[tc.msg], time.Time{})
			if r.plan.Action != Accept {
				t.Fatalf("%s %q", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tc.enc, tc.sig)
			if tc.text {
				if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) {
					t.Errorf("delivered text %q", got)
				}
				if strings.Contains(string(r.raw()), "BEGIN PGP MESSAGE") {
					t.Error("ciphertext delivered")
				}
			}
		})
	}
	t.Run("enc-in-enc-not-for-us", func(t *testing.T) {
		r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["enc-in-enc-not-for-us"], time.Time{})
		if !strings.Contains(string(r.raw()), "BEGIN PGP MESSAGE") || !strings.Contains(string(r.raw()), "multipart/encrypted") {
			t.Error("the inner ciphertext (for another key) is not delivered as it is")
		}
	})
}

// TestInboundEnvelopeSMIME: triple wrap with S/MIME (dave signs and
// encrypts, erin signs the envelope).
func TestInboundEnvelopeSMIME(t *testing.T) {
	f := inSMIMEFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["triple-wrap"], time.Time{})
	inWant(t, r, "decrypted; protocol=smime; key="+f.serial["gw"],
		"valid; protocol=smime; signer=dave@example.com; key="+f.serial["dave"]+
			"; outer=valid; outer-protocol=smime; outer-signer=erin@example.com; outer-key="+f.serial["erin"])
	if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) {
		t.Errorf("delivered text %q", got)
	}
}

// TestInboundCBCUnauthenticated: CBC EnvelopedData has no integrity check.
// An attacker who edits the IV changes the first plaintext block and the
// message still decrypts; the verdict says integrity=none. A valid
// signature inside (sign-then-encrypt) covers the content instead.
func TestInboundCBCUnauthenticated(t *testing.T) {
	f := inSMIMEFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["cbc-iv-edited"], time.Time{})
	inWant(t, r, "decrypted; protocol=smime; key="+f.serial["rt2"]+"; integrity=none", "none")
	if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, "Pay 100 EUR") {
		t.Errorf("delivered text %q", got)
	}
	r = inProcess(t, inEngine(t, nil), f.keys, f.msgs["sign-then-encrypt"], time.Time{})
	if strings.Contains(r.enc(), "integrity=none") {
		t.Errorf("signed inside, still %q", r.enc())
	}
	r = inProcess(t, inEngine(t, nil), f.keys, f.msgs["env-gcm"], time.Time{})
	if strings.Contains(r.enc(), "integrity=none") {
		t.Errorf("AES-GCM: %q", r.enc())
	}
}

// TestInboundExchangeRepair: PGP/MIME that Microsoft Exchange rearranged
// into a multipart/mixed is decrypted as the PGP/MIME it was (as
// Thunderbird repairs it); with a real text in the first part it is not.
func TestInboundExchangeRepair(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["exchange"], time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"]+"; reason=exchange-repaired", "none")
	if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) {
		t.Errorf("delivered text %q", got)
	}
	r = inProcess(t, inEngine(t, nil), f.keys, f.msgs["exchange-with-text"], time.Time{})
	inWant(t, r, "partial; reason=nested-part", "none")
	inUnchanged(t, r)
}

// TestInboundCleartextShown: what a cleartext-signed message shows under
// valid is exactly what was signed.
func TestInboundCleartextShown(t *testing.T) {
	f := inPGPFixture(t)
	valid := "valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"]
	for _, tc := range []struct {
		msg, sig string
		ctype    string // delivered Content-Type ("" = unchanged)
		absent   string // text that must not be shown
	}{
		// The signature block's armor header is not signed.
		{"clearsign-comment", valid, "text/plain; charset=us-ascii", "invoice 666"},
		// format=flowed would join the signed lines at the added space.
		{"clearsign-flowed", valid, "text/plain; charset=us-ascii", "format=flowed"},
		// UTF-7 would show the signed ASCII as other text.
		{"clearsign-utf7", valid, "text/plain; charset=us-ascii", "utf-7"},
		// 8-bit text in a charset the signature does not cover.
		{"clearsign-latin1", "partial; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"] + "; reason=charset-not-signed", "", ""},
		{"clearsign-plain", valid, "", ""},
	} {
		if tc.msg == "clearsign-plain" && !strings.Contains(string(f.msgs["clearsign-top-comment"]), "Comment: Also pay") {
			t.Fatal("fixture clearsign-top-comment has no top armor header")
		}
		t.Run(tc.msg, func(t *testing.T) {
			r := inProcess(t, inEngine(t, nil), f.keys, f.msgs[tc.msg], time.Time{})
			inWant(t, r, "none", tc.sig)
			if tc.ctype == "" {
				inUnchanged(t, r)
				return
			}
			if got := r.header.Get("Content-Type"); got != tc.ctype {
				t.Errorf("Content-Type %q, want %q", got, tc.ctype)
			}
			if tc.absent != "" && strings.Contains(string(r.raw()), tc.absent) {
				t.Errorf("delivered message shows %q:\n%s", tc.absent, r.raw())
			}
			if !strings.Contains(inText(t, r.raw(), "text/plain"), "Pay invoice 42 only.") {
				t.Error("signed text not shown")
			}
		})
	}
}

// TestInboundCleartextTopArmorHeader: a cleartext-signed block whose
// armor headers hold anything but Hash (a Comment: above the text, which
// the signature does not cover) is never vouched for, and its text is
// delivered as it came.
func TestInboundCleartextTopArmorHeader(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["clearsign-top-comment"], time.Time{})
	if sig := r.sig(); strings.HasPrefix(sig, "valid") || strings.HasPrefix(sig, "partial") {
		t.Errorf("%s %q for a block with a Comment: armor header", HeaderSignature, sig)
	}
	inUnchanged(t, r)
}

// TestInboundHeaderCoverage: what a valid signature covers of the header.
// Protected headers (RFC 9788) that equal the outer ones: protected; an
// outer Subject changed after signing is replaced by the signed one and
// reported; no protected headers: unprotected.
func TestInboundHeaderCoverage(t *testing.T) {
	f := inPGPFixture(t)
	valid := "valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"]
	for _, tc := range []struct{ msg, sig, subject string }{
		{"signed-hp", valid + "; headers=protected", "Signed subject"},
		{"signed-hp-replayed", valid + "; headers=replaced", "Signed subject"},
		{"signed", valid + "; headers=unprotected", "Signed"},
		{"signed-in-enc", valid + "; headers=replaced", inSecretSubj},
	} {
		t.Run(tc.msg, func(t *testing.T) {
			r := inProcess(t, inEngine(t, nil), f.keys, f.msgs[tc.msg], time.Time{})
			if got := r.sig(); got != tc.sig {
				t.Errorf("%s:\n got %q\nwant %q", HeaderSignature, got, tc.sig)
			}
			if got := r.header.Values("Subject"); len(got) != 1 || got[0] != tc.subject {
				t.Errorf("Subject %q, want %q", got, tc.subject)
			}
		})
	}
}

// TestInboundKeepOriginalUntrusted: with keep_original, forged result
// headers of the original do not reappear inside the attached original,
// where a reader could take them for the gateway's.
func TestInboundKeepOriginalUntrusted(t *testing.T) {
	f := inPGPFixture(t)
	forged := "X-Cryptmilter-Signature: valid; protocol=openpgp; signer=ceo@example.org\r\n" +
		"X-RT-Incoming-Signature: ceo@example.org\r\n" +
		"Authentication-Results: " + inHost + "; smime=pass body.smime-identifier=ceo@example.org\r\n" +
		"Authentication-Results: other.example; spf=pass smtp.mailfrom=example.net\r\n"
	e := inEngine(t, func(c *Policy) { c.Inbound.KeepOriginal = true })
	r := inProcess(t, e, f.keys, append([]byte(forged), f.msgs["enc"]...), time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"], "none")
	raw := string(r.raw())
	i := strings.Index(raw, "Content-Type: message/rfc822")
	if i < 0 {
		t.Fatal("no attached original")
	}
	orig := raw[i:]
	for _, bad := range []string{"ceo@example.org", "X-Cryptmilter-", "X-RT-Incoming-"} {
		if strings.Contains(orig, bad) {
			t.Errorf("attached original still holds %q", bad)
		}
	}
	if !strings.Contains(orig, "other.example; spf=pass") {
		t.Error("another host's Authentication-Results was removed from the original")
	}
	if !strings.Contains(orig, "BEGIN PGP MESSAGE") {
		t.Error("the original ciphertext is not attached")
	}
}

// TestInboundAmbiguousNeverValid: a good signature over a structure that
// readers of the same bytes read differently (Go, MIME-tools, Python's
// email: see crypto/mime's TestAmbiguityDifferential) is never valid, and
// the message passes as it came. Each case keeps the signed part's bytes,
// so that Go's reading alone would verify.
func TestInboundAmbiguousNeverValid(t *testing.T) {
	f := inPGPFixture(t)
	signed := string(f.msgs["signed"])
	ct := `Content-Type: multipart/signed; micalg=pgp-sha256; protocol="application/pgp-signature"; boundary="sig-b"`
	if !strings.Contains(signed, ct) {
		t.Fatal("fixture changed")
	}
	control := inProcess(t, inEngine(t, nil), f.keys, []byte(signed), time.Time{})
	if !strings.HasPrefix(control.sig(), "valid;") {
		t.Fatalf("control: %q", control.sig())
	}
	for name, msg := range map[string]string{
		// Go and MIME-tools take the RFC 2231 value, Python the plain one.
		"rfc2231-mixed": strings.Replace(signed, `boundary="sig-b"`, `boundary="other"; boundary*0="sig-b"`, 1),
		// A pair other than \\ or \": Go keeps the backslash, MIME-tools
		// drops it.
		"quoted-pair": strings.ReplaceAll(strings.Replace(signed, `boundary="sig-b"`, `boundary="sig\-b"`, 1), "--sig-b", `--sig\-b`),
		// A bare CR: Python sees a line end where Go does not.
		"bare-cr": strings.Replace(signed, "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n",
			"This is an OpenPGP/MIME signed message\r--sig-b\rContent-Type: text/plain\r\rHidden text\r\n", 1),
		// A line a prefix-matching reader takes for a delimiter.
		"boundary-prefix": strings.Replace(signed, "This is an OpenPGP/MIME signed message (RFC 4880 and 3156)\r\n",
			"--sig-bx\r\nContent-Type: text/plain\r\n\r\nShown by a prefix-matching reader\r\n", 1),
	} {
		t.Run(name, func(t *testing.T) {
			r := inProcess(t, inEngine(t, nil), f.keys, []byte(msg), time.Time{})
			if s := r.sig(); !strings.HasPrefix(s, "bad;") || !strings.Contains(s, "reason=ambiguous-mime") {
				t.Errorf("signature %q over an ambiguous structure, want bad; reason=ambiguous-mime", s)
			}
			inUnchanged(t, r)
		})
	}
	// Two Content-Type fields on the root: nothing is interpreted.
	r := inProcess(t, inEngine(t, nil), f.keys, []byte(strings.Replace(signed, ct, "Content-Type: text/plain\r\n"+ct, 1)), time.Time{})
	if s := r.sig(); s != "none" {
		t.Errorf("two Content-Type fields: signature %q, want none", s)
	}
	if r.plan.Body != nil {
		t.Error("two Content-Type fields: body replaced")
	}
}

// TestInboundForgedAuthResultsCFWS: every form of Authentication-Results
// that a reader could take for ours is removed (a comment holding ";"
// before the authserv-id, a quoted id, a version, odd case, a final dot);
// another host's stays.
func TestInboundForgedAuthResultsCFWS(t *testing.T) {
	f := inPGPFixture(t)
	forged := []string{
		"(spoofed; really) " + inHost + "; smime=pass body.smime-identifier=ceo@example.org",
		"\"" + inHost + "\"; smime=pass",
		inHost + " 1; smime=pass",
		strings.ToUpper(inHost) + ".; smime=pass",
		"(c (nested; x)) " + inHost + " (y; z); smime=pass",
		// Forms only the lenient readings of ClaimsAuthservID take (not
		// RFC 8601 syntax, but what some parsers read as our id).
		inHost + " x; smime=pass",
		inHost + "/x; smime=pass",
		"(unterminated " + inHost + "; smime=pass",
		"other.example x " + inHost + "; smime=pass",
	}
	var h strings.Builder
	for _, v := range forged {
		h.WriteString("Authentication-Results: " + v + "\r\n")
	}
	h.WriteString("Authentication-Results: other.example; dkim=pass header.d=example.net\r\n")
	r := inProcess(t, inEngine(t, nil), f.keys, append([]byte(h.String()), f.msgs["signed"]...), time.Time{})
	if got := r.header.Values("Authentication-Results"); len(got) != 1 || got[0] != "other.example; dkim=pass header.d=example.net" {
		t.Errorf("Authentication-Results after the engine: %q", got)
	}
}

// TestInboundUnterminated: a multipart without its closing delimiter (cut
// by a relay) is read as mail clients read it: an encrypted root with
// intact ciphertext decrypts; a signed root verifies when the signed part
// and the signature are complete, and not when the signature was cut.
func TestInboundUnterminated(t *testing.T) {
	f := inPGPFixture(t)
	cut := func(msg []byte, close string) []byte {
		s := string(msg)
		i := strings.LastIndex(s, close)
		if i < 0 {
			t.Fatalf("no %q", close)
		}
		return []byte(s[:i])
	}
	r := inProcess(t, inEngine(t, nil), f.keys, cut(f.msgs["enc"], "--enc-b--"), time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"], "none")
	r = inProcess(t, inEngine(t, nil), f.keys, cut(f.msgs["signed"], "--sig-b--"), time.Time{})
	inWant(t, r, "none", "valid; protocol=openpgp; signer=alice@example.net; key="+f.fpr["alice"])
	r = inProcess(t, inEngine(t, nil), f.keys, cut(f.msgs["signed"], "-----END PGP SIGNATURE-----"), time.Time{})
	if strings.HasPrefix(r.sig(), "valid") {
		t.Errorf("signature cut short: %q", r.sig())
	}
}
