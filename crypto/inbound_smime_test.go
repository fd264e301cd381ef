package crypto

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestInboundSMIMERoundTrip proves, with messages made by openssl as the
// sending client, the verdicts, the delivered plaintext and the RFC 7281
// Authentication-Results header for: enveloped-data to RSA-3072 and
// RSA-2048 gateway certificates (AES-128/192/256-CBC, PKCS#1 v1.5 and
// OAEP key transport), AuthEnvelopedData with AES-GCM, ECDSA and RSA-PSS
// signers (detached and opaque), a certificate with the address only in
// the subject, an untrusted issuer, an expired certificate, wrong From,
// tampered content and signature, zero signerInfos, several signerInfos
// with one bad, and sign-then-encrypt.
func TestInboundSMIMERoundTrip(t *testing.T) {
	f := inSMIMEFixture(t)
	dec := func(gw string) string { return "decrypted; protocol=smime; key=" + f.serial[gw] }
	valid := func(who, addr string) string {
		return "valid; protocol=smime; signer=" + addr + "; key=" + f.serial[who]
	}
	ar := func(result, who, addr string) string {
		return inHost + "; smime=" + result + " body.smime-identifier=" + addr + " body.smime-issuer=\"CN=ca CA,O=Cryptmilter Tests\" body.smime-serial=" + f.serial[who]
	}
	cbc := func(gw string) string { return dec(gw) + "; integrity=none" }
	daveValid := valid("dave", "dave@example.com")
	tests := []struct {
		name      string
		now       time.Duration
		enc, sig  string
		ar        string // prefix of our Authentication-Results ("" = none)
		text      bool   // the delivered text/plain holds inUTF8Text
		unchanged bool
	}{
		{name: "env-smime-aes128", enc: cbc("gw"), sig: "none", text: true},
		{name: "env-cbc-rsa2048", enc: cbc("rt2"), sig: "none", text: true},
		{name: "env-oaep-aes192", enc: cbc("rt2"), sig: "none", text: true},
		{name: "env-gcm", enc: dec("gw"), sig: "none", text: true},
		{name: "env-gcm-oaep", enc: dec("gw"), sig: "none", text: true},
		{name: "env-not-for-us", enc: "failed; protocol=smime; reason=not-for-gateway", sig: "none", unchanged: true},
		{name: "sig-ecdsa-detached", enc: "none", sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), unchanged: true},
		{name: "sig-ecdsa-opaque", enc: "none", sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), text: true},
		{name: "sig-pss", enc: "none", sig: valid("erin", "erin@example.com"), ar: ar("pass", "erin", "erin@example.com"), unchanged: true},
		{name: "sig-pss-opaque", enc: "none", sig: valid("erin", "erin@example.com"), ar: ar("pass", "erin", "erin@example.com"), text: true},
		{name: "sig-subject-only", enc: "none", sig: valid("frank", "frank@example.com"), ar: ar("pass", "frank", "frank@example.com"), unchanged: true},
		{name: "sig-untrusted", enc: "none", sig: "untrusted; protocol=smime; signer=gina@example.com; key=" + f.serial["gina"] + "; reason=no-chain",
			ar: inHost + "; smime=policy reason=no-chain body.smime-identifier=gina@example.com", unchanged: true},
		{name: "sig-expiring", enc: "none", sig: valid("hank", "hank@example.com"), ar: ar("pass", "hank", "hank@example.com"), unchanged: true},
		{name: "sig-expiring", now: 72 * time.Hour, enc: "none",
			sig: "expired; protocol=smime; signer=hank@example.com; key=" + f.serial["hank"] + "; reason=expired",
			ar:  inHost + "; smime=policy reason=expired body.smime-identifier=hank@example.com", unchanged: true},
		{name: "sig-wrong-from", enc: "none", sig: "mismatch; protocol=smime; signer=dave@example.com; key=" + f.serial["dave"] + "; reason=signer-not-from",
			ar: inHost + "; smime=policy reason=signer-not-from body.smime-identifier=dave@example.com", unchanged: true},
		{name: "sig-tampered-content", enc: "none", sig: "bad; protocol=smime; signer=dave@example.com; key=" + f.serial["dave"] + "; reason=digest-mismatch",
			ar: inHost + "; smime=fail reason=digest-mismatch", unchanged: true},
		{name: "sig-tampered-signature", enc: "none", sig: "bad; protocol=smime; signer=erin@example.com; key=" + f.serial["erin"] + "; reason=bad-signature",
			ar: inHost + "; smime=fail reason=bad-signature", unchanged: true},
		{name: "sig-zero-signerinfos", enc: "none", sig: "none; protocol=smime; reason=no-signerinfo", unchanged: true},
		{name: "sig-multi-one-bad/from-dave", enc: "none", sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), unchanged: true},
		{name: "sig-multi-one-bad/from-erin", enc: "none", sig: "mismatch; protocol=smime; signer=dave@example.com; key=" + f.serial["dave"] + "; reason=signer-not-from",
			ar: inHost + "; smime=policy reason=signer-not-from body.smime-identifier=dave@example.com", unchanged: true},
		{name: "sig-multi-one-untrusted", enc: "none", sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), unchanged: true},
		{name: "sign-then-encrypt", enc: dec("gw"), sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), text: true},
		{name: "opaque-sign-then-encrypt", enc: dec("gw"), sig: daveValid, ar: ar("pass", "dave", "dave@example.com"), text: true},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s", tt.name, tt.now), func(t *testing.T) {
			t.Parallel()
			msg := f.msgs[tt.name]
			if msg == nil {
				t.Fatalf("no message %q in the fixture", tt.name)
			}
			r := inProcess(t, inEngine(t, nil), f.keys, msg, time.Now().Add(tt.now))
			if r.plan.Action != Accept {
				t.Fatalf("action %s %q, want accept", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tt.enc, tt.sig)
			inHeaderSafe(t, r.header)
			got := r.header.Values("Authentication-Results")
			switch {
			case tt.ar == "" && len(got) != 0:
				t.Errorf("Authentication-Results %q, want none", got)
			case tt.ar != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.ar)):
				t.Errorf("Authentication-Results %q, want %q…", got, tt.ar)
			}
			if tt.unchanged {
				inUnchanged(t, r)
			}
			if tt.text {
				if r.plan.Body == nil {
					t.Fatal("body not replaced")
				}
				if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) {
					t.Errorf("delivered text %q does not contain %q", got, inUTF8Text)
				}
				for _, l := range inLeaves(t, r.raw()) {
					if strings.Contains(l.mediaType, "pkcs7-mime") {
						t.Errorf("delivered message still holds %s", l.mediaType)
					}
				}
			}
		})
	}
}

// TestInboundSMIMEUniformFailure proves that S/MIME decryption failures
// give one and the same plan per class: EnvelopedData (AES-CBC, no
// integrity: broken CBC padding, broken RSA padding of the key, truncated
// and garbage DER) is always tagged, whatever on_decrypt_error says, since
// a reply that depended on the padding would be a padding oracle;
// AuthEnvelopedData (a wrong GCM tag) follows the policy.
func TestInboundSMIMEUniformFailure(t *testing.T) {
	f := inSMIMEFixture(t)
	cbc := []string{"su-cbc-padding", "su-rsa-padding", "su-truncated", "su-garbage"}
	for _, policy := range []struct {
		name   string
		action Action
		reply  string
	}{
		{"tag", Accept, ""},
		{"reject", Reject, "550 5.7.5 Message could not be decrypted"},
		{"tempfail", Tempfail, "451 4.7.5 Message could not be decrypted, try again later"},
	} {
		t.Run(policy.name, func(t *testing.T) {
			e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = policy.action })
			var first string
			for _, name := range cbc {
				r := inProcess(t, e, f.keys, f.msgs[name], time.Time{})
				p := r.plan
				if p.Body != nil {
					t.Errorf("%s: body replaced", name)
				}
				if p.Action != Accept || !p.Reply.IsZero() {
					t.Errorf("%s: %s %q, want accept (tagged) for unauthenticated encryption", name, p.Action, p.Reply)
				}
				inWant(t, r, "failed; protocol=smime; reason=decrypt-failed", "none")
				got := fmt.Sprintf("%s|%s|%s|%v", p.Action, p.Reply, p.Decision, p.HeaderOps)
				if first == "" {
					first = got
				} else if got != first {
					t.Errorf("%s gives a plan that differs from %s's:\n got %s\nwant %s", name, cbc[0], got, first)
				}
			}
			r := inProcess(t, e, f.keys, f.msgs["su-gcm-tag"], time.Time{})
			if policy.name == "tag" {
				inWant(t, r, "failed; protocol=smime; reason=decrypt-failed", "none")
				if got := fmt.Sprintf("%s|%s|%s|%v", r.plan.Action, r.plan.Reply, r.plan.Decision, r.plan.HeaderOps); got != first {
					t.Errorf("su-gcm-tag under tag differs:\n got %s\nwant %s", got, first)
				}
			} else if r.plan.Reply.String() != policy.reply {
				t.Errorf("su-gcm-tag: reply %q, want %q", r.plan.Reply, policy.reply)
			}
		})
	}
}

// TestInboundSMIMERTHeaders proves RT's headers for S/MIME.
func TestInboundSMIMERTHeaders(t *testing.T) {
	f := inSMIMEFixture(t)
	e := inEngine(t, func(c *Policy) { c.Inbound.RTHeaders = true })
	r := inProcess(t, e, f.keys, f.msgs["sign-then-encrypt"], time.Time{})
	for name, want := range map[string]string{
		"X-RT-Incoming-Encryption": "Success",
		"X-RT-Incoming-Signature":  "dave@example.com",
		"X-RT-Privacy":             "SMIME",
	} {
		if got := r.header.Values(name); len(got) != 1 || got[0] != want {
			t.Errorf("%s = %q, want %q", name, got, want)
		}
	}
}

// TestInboundSMIMERootOnly proves that enveloped and signed S/MIME parts
// below the root are left alone and reported partial.
func TestInboundSMIMERootOnly(t *testing.T) {
	f := inSMIMEFixture(t)
	hdr := inHeader("Dave <dave@example.com>", "Root only")
	for _, tc := range []struct{ name, inner, enc, sig string }{
		{"enveloped-in-mixed", "env-cbc-rsa2048", "partial; reason=nested-part", "none"},
		{"opaque-signed-in-mixed", "sig-ecdsa-opaque", "none", "partial; reason=nested-part"},
		{"detached-signed-in-mixed", "sig-ecdsa-detached", "none", "partial; reason=nested-part"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h, body := inSplit(t, f.msgs[tc.inner])
			var part strings.Builder
			for _, fl := range h {
				if strings.HasPrefix(strings.ToLower(fl.Name), "content-") {
					part.WriteString(fl.Name + ": " + fl.Value + "\r\n")
				}
			}
			msg := hdr + "Content-Type: multipart/mixed; boundary=\"atk\"\r\n\r\n--atk\r\nContent-Type: text/plain\r\n\r\nAttacker text.\r\n" +
				"--atk\r\n" + part.String() + "\r\n" + string(body) + "\r\n--atk--\r\n"
			e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = Reject })
			r := inProcess(t, e, f.keys, []byte(msg), time.Time{})
			if r.plan.Action != Accept {
				t.Fatalf("action %s %q", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tc.enc, tc.sig)
			inUnchanged(t, r)
			if r.header.Has("Authentication-Results") {
				t.Errorf("Authentication-Results for a nested signature: %q", r.header.Values("Authentication-Results"))
			}
		})
	}
}

// TestInboundSMIMEContentFieldInjection proves that Content-* fields taken
// from inside opaque signed-data (which anyone can make) cannot put a
// line break, and so a forged field, into the outer header.
func TestInboundSMIMEContentFieldInjection(t *testing.T) {
	f := inSMIMEFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["inject-opaque"], time.Time{})
	inWant(t, r, "none", "untrusted; protocol=smime; signer=gina@example.com; key="+f.serial["gina"]+"; reason=no-chain")
	inHeaderSafe(t, r.header)
	var rendered bytes.Buffer
	r.header.WriteTo(&rendered)
	h, _ := inSplit(t, rendered.Bytes())
	if got := h.Values(HeaderSignature); len(got) != 1 || !strings.HasPrefix(got[0], "untrusted;") {
		t.Errorf("%s fields after rendering: %q", HeaderSignature, got)
	}
	if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) {
		t.Errorf("delivered text %q", got)
	}
}
