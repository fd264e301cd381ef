package crypto

import (
	"bytes"
	"crypto/x509"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/smime"
)

// TestCBCNoFormatOracle: under on_decrypt_error = reject (or tempfail),
// the SMTP reply to an S/MIME EnvelopedData (AES-CBC, no integrity) must not depend
// on what its plaintext parses as. It did: when the CBC plaintext was an
// authEnveloped-data entity (any body) the inner failure counted as one of
// authenticated ciphertext and the message was refused with 550, otherwise
// accepted; flipping one IV bit (the same bit of the first plaintext byte)
// changed the reply, a format oracle on unauthenticated plaintext.
func TestCBCNoFormatOracle(t *testing.T) {
	f := inSMIMEFixture(t)
	gw, err := f.keys.GatewaySMIMEAt("rt@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	// The inner entity: any authEnveloped-data part (garbage body).
	inner := []byte("Content-Type: application/pkcs7-mime; smime-type=authenveloped-data\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\nAAAA\r\n")
	der, err := smime.Encrypt(inner, []*x509.Certificate{gw.Cert})
	if err != nil {
		t.Fatal(err)
	}
	// The IV: OCTET STRING of 16 bytes right after the aes256-CBC OID.
	oid := []byte{0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a, 0x04, 0x10}
	i := bytes.Index(der, oid)
	if i < 0 {
		t.Fatal("no aes256-cbc IV")
	}
	flipped := bytes.Clone(der)
	flipped[i+len(oid)] ^= 0x01 // 'C' -> 'B': "Bontent-Type:"
	hdr := inHeader("Mallory <mallory@example.net>", "oracle")
	for _, policy := range []Action{Reject, Tempfail, Quarantine} {
		e := inEngine(t, func(c *Policy) { c.Actions.OnDecryptError = policy })
		a := inProcess(t, e, f.keys, inPKCS7(hdr, "enveloped-data", der), time.Time{}).plan
		b := inProcess(t, e, f.keys, inPKCS7(hdr, "enveloped-data", flipped), time.Time{}).plan
		t.Logf("%s: original CBC: %s %q; IV bit flipped: %s %q", policy, a.Action, a.Reply, b.Action, b.Reply)
		if a.Action != b.Action {
			t.Errorf("ORACLE (%s): the reply to unauthenticated CBC ciphertext depends on its plaintext: %s vs %s", policy, a.Action, b.Action)
		}
	}
}
