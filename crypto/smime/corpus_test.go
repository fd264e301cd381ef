package smime

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"io"
	"mime"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-message/textproto"
)

// corpusDir finds shared/corpus/thunderbird/smime by walking up from the
// package directory; the test is skipped when it is absent.
func corpusDir(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		c := filepath.Join(dir, "shared", "corpus", "thunderbird", "smime")
		if st, err := os.Stat(c); err == nil && st.IsDir() {
			return c
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skip("shared/corpus/thunderbird/smime not found above the package: skipping corpus test")
		}
		dir = parent
	}
}

// loadP12 converts a PKCS#12 file with openssl (legacy encryption) and
// returns the identity in it.
func loadP12(t testing.TB, file, pass string) Identity {
	t.Helper()
	out := openssl(t, nil, "pkcs12", "-legacy", "-in", file, "-passin", "pass:"+pass, "-nodes")
	var id Identity
	var certs []*x509.Certificate
	for rest := out; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			certs = append(certs, c)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			id.Key = k
		}
	}
	signer, ok := id.Key.(crypto.Signer)
	if !ok {
		t.Fatalf("%s: no private key", file)
	}
	for _, c := range certs {
		if pub, ok := c.PublicKey.(interface{ Equal(crypto.PublicKey) bool }); ok && pub.Equal(signer.Public()) {
			id.Cert = c
		}
	}
	if id.Cert == nil {
		t.Fatalf("%s: no certificate for the key", file)
	}
	return id
}

// entity is one MIME entity split into header and raw body.
type entity struct {
	header textproto.Header
	body   []byte
}

func parseEntity(t testing.TB, raw []byte) entity {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := textproto.ReadHeader(br)
	if err != nil {
		t.Fatalf("read header: %v", err)
	}
	body, err := io.ReadAll(br)
	if err != nil {
		t.Fatal(err)
	}
	return entity{h, body}
}

func (e entity) mediaType(t testing.TB) (string, map[string]string) {
	t.Helper()
	mt, params, err := mime.ParseMediaType(e.header.Get("Content-Type"))
	if err != nil {
		t.Fatalf("content-type: %v", err)
	}
	return mt, params
}

// base64Body decodes a base64 transfer-encoded body.
func (e entity) base64Body(t testing.TB) []byte {
	t.Helper()
	clean := strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' || r == ' ' || r == '\t' {
			return -1
		}
		return r
	}, string(e.body))
	der, err := base64.StdEncoding.DecodeString(clean)
	if err != nil {
		t.Fatalf("base64 body: %v", err)
	}
	return der
}

// signedParts splits multipart/signed into the raw signed entity and the
// decoded signature.
func (e entity) signedParts(t testing.TB) (signed, sig []byte) {
	t.Helper()
	_, params := e.mediaType(t)
	mr := textproto.NewMultipartReader(bytes.NewReader(e.body), params["boundary"])
	var parts [][]byte
	var sigEntity entity
	for i := 0; i < 2; i++ {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		var buf bytes.Buffer
		if err := textproto.WriteHeader(&buf, p.Header); err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		buf.Write(b)
		parts = append(parts, buf.Bytes())
		if i == 1 {
			sigEntity = entity{p.Header, b}
		}
	}
	return parts[0], sigEntity.base64Body(t)
}

func TestCorpus(t *testing.T) {
	dir := corpusDir(t)
	needOpenSSL(t)
	bob := loadP12(t, filepath.Join(dir, "Bob.p12"), "nss")
	caPEM, err := os.ReadFile(filepath.Join(dir, "TestCA.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		t.Fatal("TestCA.pem: no certificate")
	}
	opts := VerifyOptions{Roots: roots, Now: time.Now()}
	ids := []Identity{bob}
	const text = "This is a test message from Alice to Bob."

	read := func(t *testing.T, name string) entity {
		raw, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return parseEntity(t, raw)
	}
	decrypt := func(t *testing.T, e entity) entity {
		t.Helper()
		content, info, err := Decrypt(e.base64Body(t), ids)
		if err != nil {
			t.Fatalf("Decrypt: %v", err)
		}
		if info.Serial != formatSerial(bob.Cert.SerialNumber) {
			t.Errorf("decrypted with serial %s, want Bob's %s", info.Serial, formatSerial(bob.Cert.SerialNumber))
		}
		return parseEntity(t, content)
	}
	wantAlice := func(t *testing.T, signers []SignerResult, want Status) {
		t.Helper()
		if len(signers) != 1 {
			t.Fatalf("%d signers, want 1", len(signers))
		}
		s := signers[0]
		if s.Status != want {
			t.Errorf("status %v (%s), want %v", s.Status, s.Reason, want)
		}
		if len(s.Addresses) != 1 || !strings.EqualFold(s.Addresses[0], "alice@example.com") {
			t.Errorf("addresses %q, want [Alice@example.com]", s.Addresses)
		}
	}
	verifyDetached := func(t *testing.T, e entity, want Status) []byte {
		t.Helper()
		signed, sig := e.signedParts(t)
		_, signers, err := Verify(sig, signed, opts)
		if err != nil {
			t.Fatalf("Verify: %v", err)
		}
		wantAlice(t, signers, want)
		return signed
	}
	hasText := func(t *testing.T, b []byte) {
		t.Helper()
		if !bytes.Contains(b, []byte(text)) {
			t.Errorf("plaintext %q lacks %q", b, text)
		}
	}

	t.Run("alice.env.eml", func(t *testing.T) {
		inner := decrypt(t, read(t, "alice.env.eml"))
		hasText(t, inner.body)
	})
	t.Run("alice.dsig.SHA256.multipart.eml", func(t *testing.T) {
		hasText(t, verifyDetached(t, read(t, "alice.dsig.SHA256.multipart.eml"), Valid))
	})
	t.Run("alice.dsig.SHA256.multipart.bad.eml", func(t *testing.T) {
		verifyDetached(t, read(t, "alice.dsig.SHA256.multipart.bad.eml"), Bad)
	})
	t.Run("alice.sig.SHA256.opaque.eml", func(t *testing.T) {
		content, signers, err := Verify(read(t, "alice.sig.SHA256.opaque.eml").base64Body(t), nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		wantAlice(t, signers, Valid)
		hasText(t, content)
	})
	t.Run("alice.dsig.SHA256.multipart.env.eml", func(t *testing.T) {
		inner := decrypt(t, read(t, "alice.dsig.SHA256.multipart.env.eml"))
		// The decrypted entity has LF line ends; the caller canonicalises
		// to CRLF before verifying, as here.
		if bytes.Contains(inner.body, []byte("\r\n")) {
			t.Fatal("corpus changed: inner entity already CRLF")
		}
		inner.body = toCRLF(inner.body)
		if mt, _ := inner.mediaType(t); mt != "multipart/signed" {
			t.Fatalf("inner type %s, want multipart/signed", mt)
		}
		hasText(t, verifyDetached(t, inner, Valid))
	})
	t.Run("alice.env.dsig.SHA256.multipart.eml", func(t *testing.T) {
		// The signature covers the enveloped part, i.e. the ciphertext.
		// The NSS generator signed that part with LF line ends while the
		// message carries it with CRLF, so over the canonical (CRLF)
		// entity it is Bad, as `openssl cms -verify` also says; over the
		// LF form it verifies.
		e := read(t, "alice.env.dsig.SHA256.multipart.eml")
		signed, sig := e.signedParts(t)
		_, signers, err := Verify(sig, signed, opts)
		if err != nil {
			t.Fatal(err)
		}
		if len(signers) != 1 || signers[0].Status != Bad || signers[0].Reason != "digest-mismatch" {
			t.Errorf("over CRLF entity: %+v, want one Bad digest-mismatch", signers)
		}
		_, signers, err = Verify(sig, bytes.ReplaceAll(signed, []byte("\r\n"), []byte("\n")), opts)
		if err != nil {
			t.Fatal(err)
		}
		wantAlice(t, signers, Valid)
		hasText(t, decrypt(t, parseEntity(t, signed)).body)
	})
	t.Run("alice.env.sig.SHA256.opaque.eml", func(t *testing.T) {
		content, signers, err := Verify(read(t, "alice.env.sig.SHA256.opaque.eml").base64Body(t), nil, opts)
		if err != nil {
			t.Fatal(err)
		}
		wantAlice(t, signers, Valid)
		hasText(t, decrypt(t, parseEntity(t, content)).body)
	})
	t.Run("not-for-alice", func(t *testing.T) {
		alice := loadP12(t, filepath.Join(dir, "Alice.p12"), "nss")
		if _, _, err := Decrypt(read(t, "alice.env.eml").base64Body(t), []Identity{alice}); err != ErrNotForUs {
			t.Errorf("Decrypt with Alice's identity: err = %v, want ErrNotForUs", err)
		}
	})
}

// toCRLF turns bare LF line ends into CRLF.
func toCRLF(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}
