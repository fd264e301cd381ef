package crypto

import (
	"bytes"
	"strings"
	"testing"
	"time"
)

// TestInboundSignaturePartIsOnlySignature: text around the armored
// signature, or a signature part of another type, could be shown next to
// the signed content unsigned: never valid.
func TestInboundSignaturePartIsOnlySignature(t *testing.T) {
	f := inPGPFixture(t)
	signed := f.msgs["signed"]
	e := inEngine(t, nil)
	r := inProcess(t, e, f.keys, signed, time.Time{})
	if !strings.HasPrefix(r.sig(), "valid; protocol=openpgp; signer=alice@example.net") {
		t.Fatalf("control: %q", r.sig())
	}
	sigCT := `Content-Type: application/pgp-signature; name="OpenPGP_signature.asc"`
	for name, mutate := range map[string]func([]byte) []byte{
		"text-plain-type": func(m []byte) []byte {
			return bytes.Replace(m, []byte(sigCT), []byte(`Content-Type: text/plain`), 1)
		},
		"text-before-armor": func(m []byte) []byte {
			return bytes.Replace(m, []byte("-----BEGIN PGP SIGNATURE-----"), []byte("CORRECTION: pay account EVIL-1\r\n-----BEGIN PGP SIGNATURE-----"), 1)
		},
		"text-after-armor": func(m []byte) []byte {
			return bytes.Replace(m, []byte("-----END PGP SIGNATURE-----"), []byte("-----END PGP SIGNATURE-----\r\nCORRECTION: pay account EVIL-2"), 1)
		},
		"two-content-types": func(m []byte) []byte {
			return bytes.Replace(m, []byte(sigCT), []byte(sigCT+"\r\nContent-Type: text/html"), 1)
		},
	} {
		r := inProcess(t, e, f.keys, mutate(signed), time.Time{})
		want := "bad; protocol=openpgp; reason=malformed"
		if name == "two-content-types" {
			// Readers disagree on which field counts: the structure is
			// ambiguous before the signature part is even read.
			want = "bad; protocol=openpgp; reason=ambiguous-mime"
		}
		if s := r.sig(); s != want {
			t.Errorf("%s: signature %q, want %q", name, s, want)
		}
	}
}

// TestInboundDuplicateRootContentType: with two Content-Type fields readers
// disagree on the structure; nothing is interpreted.
func TestInboundDuplicateRootContentType(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, nil)
	m := append([]byte("Content-Type: multipart/mixed; boundary=\"EVIL\"\r\n"), f.msgs["signed"]...)
	r := inProcess(t, e, f.keys, m, time.Time{})
	if strings.HasPrefix(r.sig(), "valid") {
		t.Errorf("two root Content-Type fields: signature %q, want not valid", r.sig())
	}
	if r.plan.Body != nil || len(r.header.Values("Content-Type")) != 2 {
		t.Error("the message was rewritten")
	}
}

// TestInboundForgedAuthResultsForms: RFC 8601 allows comments before the
// authserv-id and a quoted form; both forgeries are removed.
func TestInboundForgedAuthResultsForms(t *testing.T) {
	e := inEngine(t, func(c *Policy) { c.Hostname = "mx.example.org" })
	msg := []byte(inHeader("Alice <alice@example.net>", "forged",
		"Authentication-Results: (trusted) mx.example.org; smime=pass body.smime-identifier=ceo@example.org",
		`Authentication-Results: "mx.example.org"; smime=pass`,
		// (A dkim result under our authserv-id is OpenDKIM's to remove:
		// TestInboundKeepsOtherVerifiersResults.)
		"Authentication-Results: MX.Example.ORG (comment); smime=fail",
		"Authentication-Results: other.example.net; spf=pass") + "\r\nHello.\r\n")
	r := inProcess(t, e, nil, msg, time.Time{})
	got := r.header.Values("Authentication-Results")
	if len(got) != 1 || got[0] != "other.example.net; spf=pass" {
		t.Errorf("Authentication-Results left: %q, want only other.example.net's", got)
	}
}

// TestInboundP7MOctetStream: some agents send S/MIME as
// application/octet-stream with a .p7m name (RFC 8551 3.2.1).
func TestInboundP7MOctetStream(t *testing.T) {
	f := inSMIMEFixture(t)
	e := inEngine(t, nil)
	for _, name := range []string{"env-cbc-rsa2048", "sig-ecdsa-opaque"} {
		m := f.msgs[name]
		m = bytes.Replace(m, []byte("Content-Type: application/pkcs7-mime; smime-type=enveloped-data;"), []byte("Content-Type: application/octet-stream;"), 1)
		m = bytes.Replace(m, []byte("Content-Type: application/pkcs7-mime; smime-type=signed-data;"), []byte("Content-Type: application/octet-stream;"), 1)
		if bytes.Contains(m, []byte("pkcs7-mime")) {
			t.Fatalf("%s: fixture not rewritten", name)
		}
		r := inProcess(t, e, f.keys, m, time.Time{})
		want := map[string]string{"env-cbc-rsa2048": "decrypted; protocol=smime", "sig-ecdsa-opaque": "none"}[name]
		if !strings.HasPrefix(r.enc(), want) {
			t.Errorf("%s as octet-stream: encryption %q, want %q…", name, r.enc(), want)
		}
		if name == "sig-ecdsa-opaque" && !strings.HasPrefix(r.sig(), "valid; protocol=smime") {
			t.Errorf("%s as octet-stream: signature %q", name, r.sig())
		}
	}
}

// TestInboundDecryptFloor: every message whose root is encrypted gets a
// reply deadline (Plan.NotBefore) of the same size-based floor, whether it
// decrypted, failed in any way or was for other keys; mail that is not
// encrypted gets none. The milter waits for it (milter tests); this test
// fails when an outcome skips it.
func TestInboundDecryptFloor(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, nil)
	now := time.Now()
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"enc", true}, {"u-tampered", true}, {"u-garbage", true}, {"u-nomdc", true},
		{"notforus", true}, {"signed", false},
	} {
		r := inProcess(t, e, f.keys, f.msgs[c.msg], now)
		_, body := inSplit(t, f.msgs[c.msg])
		switch {
		case c.want && !r.plan.NotBefore.Equal(decryptDeadline(now, int64(len(body)))):
			t.Errorf("%s: NotBefore %v after start, want %v", c.msg, r.plan.NotBefore.Sub(now), decryptDeadline(now, int64(len(body))).Sub(now))
		case !c.want && !r.plan.NotBefore.IsZero():
			t.Errorf("%s: NotBefore set for mail that is not encrypted", c.msg)
		}
	}
}
