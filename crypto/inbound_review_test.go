package crypto

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
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
		if s := r.sig(); s != "bad; protocol=openpgp; reason=malformed" {
			t.Errorf("%s: signature %q, want bad; malformed", name, s)
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
	e := inEngine(t, func(c *config.Config) { c.Hostname = "mx.example.org" })
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

// TestInboundDecryptFloor: every decryption with the gateway's keys,
// successful or failed, waits for the same size-based floor; mail that is
// not for the gateway or not encrypted does not. (The floor is observed
// here; BenchmarkInboundFailureTiming measures the time.)
func TestInboundDecryptFloor(t *testing.T) {
	f := inPGPFixture(t)
	e := inEngine(t, nil)
	var waited []time.Duration
	e.waitUntil = func(_ context.Context, deadline time.Time) { waited = append(waited, time.Until(deadline)) }
	for _, c := range []struct {
		msg  string
		want bool
	}{
		{"enc", true}, {"u-tampered", true}, {"u-garbage", true}, {"u-nomdc", true},
		{"notforus", false}, {"signed", false},
	} {
		waited = nil
		inProcess(t, e, f.keys, f.msgs[c.msg], time.Time{})
		switch {
		case c.want && len(waited) != 1:
			t.Errorf("%s: floor applied %d times, want once", c.msg, len(waited))
		case c.want && waited[0] < decryptBase/2:
			t.Errorf("%s: floor %v from now, want about %v", c.msg, waited[0], decryptBase)
		case !c.want && len(waited) != 0:
			t.Errorf("%s: floor applied to mail the gateway did not decrypt", c.msg)
		}
	}
}
