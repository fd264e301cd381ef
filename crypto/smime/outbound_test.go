package smime

import (
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

// TestOutboundOpenSSL signs with SignDetached, wraps the result in
// multipart/signed, encrypts it with Encrypt, and has openssl decrypt and
// verify it.
func TestOutboundOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	body := []byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 =\r\nFrom the gateway=20\r\n")
	sig, err := SignDetached(body, p.alice.identity(), []*x509.Certificate{p.inter.cert})
	if err != nil {
		t.Fatal(err)
	}
	// Our own verifier agrees.
	if _, signers, err := Verify(sig, body, VerifyOptions{Roots: p.roots}); err != nil || len(signers) != 1 || signers[0].Status != Valid {
		t.Fatalf("own Verify: %+v %v", signers, err)
	}

	// openssl verifies the bare detached signature over the content.
	sigFile := writeTemp(t, "sig.der", sig)
	contentFile := writeTemp(t, "content", body)
	if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile,
		"-content", contentFile, "-CAfile", p.root.certFile, "-out", "/dev/null"); err != nil {
		t.Fatalf("openssl cms -verify of SignDetached: %v\n%s", err, out)
	}
	// ... and rejects it over other content.
	if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile,
		"-content", writeTemp(t, "other", append([]byte("X"), body...)), "-CAfile", p.root.certFile, "-out", "/dev/null"); err == nil {
		t.Fatalf("openssl verified a signature over changed content:\n%s", out)
	}

	const boundary = "sig-boundary-1"
	signedMsg := fmt.Sprintf("Content-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"%s\"\r\n\r\n"+
		"--%s\r\n%s\r\n--%s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--%s--\r\n",
		boundary, boundary, body, boundary, wrap76(base64.StdEncoding.EncodeToString(sig)), boundary)

	env, err := Encrypt([]byte(signedMsg), []*x509.Certificate{p.rsa3072.cert, p.alice.cert})
	if err != nil {
		t.Fatal(err)
	}
	envFile := writeTemp(t, "env.der", env)
	for _, r := range []*testCert{p.alice, p.rsa3072} {
		plain := openssl(t, nil, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", envFile,
			"-recip", r.certFile, "-inkey", r.keyFile)
		if !bytes.Equal(plain, []byte(signedMsg)) {
			t.Fatalf("openssl -decrypt for %s: got %q, want %q", r.cert.Subject.CommonName, plain, signedMsg)
		}
		// openssl verifies the decrypted multipart/signed (S/MIME input).
		out, err := opensslErr(plain, "cms", "-verify", "-CAfile", p.root.certFile, "-purpose", "smimesign")
		if err != nil {
			t.Fatalf("openssl cms -verify of decrypted message: %v\n%s", err, out)
		}
		if !strings.Contains(string(out), "From the gateway") {
			t.Errorf("openssl -verify output lacks the content: %q", out)
		}
	}
	// Our own Decrypt reads it too.
	if got, _, err := Decrypt(env, []Identity{p.alice.identity()}); err != nil || string(got) != signedMsg {
		t.Fatalf("own Decrypt: %v", err)
	}
}

func TestSignDetachedECDSA(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	sig, err := SignDetached(testContent, p.ecUser.identity(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", writeTemp(t, "s", sig),
		"-content", writeTemp(t, "c", testContent), "-CAfile", p.root.certFile, "-out", "/dev/null"); err != nil {
		t.Fatalf("openssl verify: %v\n%s", err, out)
	}
	if _, err := SignDetached(testContent, Identity{}, nil); err == nil {
		t.Error("SignDetached without identity succeeded")
	}
}

// wrap76 breaks base64 text into 76-column CRLF lines.
func wrap76(s string) string {
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76])
		b.WriteString("\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}
