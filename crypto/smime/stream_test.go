package smime

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// TestSignDetachedReaderOpenSSL: a signature made while reading the
// content (in small pieces) verifies with openssl cms -verify over the
// detached content and with the package's own Verify, for RSA and ECDSA
// signers; openssl rejects it over other content and without content
// (it is detached).
func TestSignDetachedReaderOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	big := bytes.Repeat([]byte("Content-Type: text/plain\r\n\r\nline of text =20\r\n"), 40000) // ~1.6 MB
	tests := []struct {
		name    string
		signer  *testCert
		chain   []*x509.Certificate
		content []byte
	}{
		{name: "rsa-chain", signer: p.alice, chain: []*x509.Certificate{p.inter.cert}, content: testContent},
		{name: "rsa-empty", signer: p.alice, chain: []*x509.Certificate{p.inter.cert}, content: nil},
		{name: "rsa-large", signer: p.rsa3072, content: big},
		{name: "ecdsa", signer: p.ecUser, content: testContent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := time.Now().Add(-time.Second)
			sig, err := SignDetachedReader(iotest.HalfReader(bytes.NewReader(tt.content)), tt.signer.identity(), tt.chain)
			if err != nil {
				t.Fatal(err)
			}
			// Verify takes empty detached content as none (ErrNoContent):
			// openssl alone checks the empty case.
			if len(tt.content) > 0 {
				_, signers, err := Verify(sig, tt.content, VerifyOptions{Roots: p.roots})
				if err != nil || len(signers) != 1 || signers[0].Status != Valid {
					t.Fatalf("own Verify: %+v %v", signers, err)
				}
				if signers[0].Digest != "sha256" || signers[0].SigningTime.Before(before.Truncate(time.Second)) || signers[0].SigningTime.After(time.Now()) {
					t.Errorf("own Verify: digest %q, signing time %v", signers[0].Digest, signers[0].SigningTime)
				}
			}
			sigFile := writeTemp(t, "sig.der", sig)
			if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile,
				"-content", writeTemp(t, "content", tt.content), "-CAfile", p.root.certFile, "-out", "/dev/null"); err != nil {
				t.Fatalf("openssl cms -verify: %v\n%s", err, out)
			}
			if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile,
				"-content", writeTemp(t, "other", append([]byte("X"), tt.content...)), "-CAfile", p.root.certFile, "-out", "/dev/null"); err == nil {
				t.Fatalf("openssl verified the signature over changed content:\n%s", out)
			}
			if out, err := opensslErr(nil, "cms", "-verify", "-binary", "-inform", "DER", "-in", sigFile,
				"-CAfile", p.root.certFile, "-out", "/dev/null"); err == nil {
				t.Fatalf("openssl verified a detached signature without content:\n%s", out)
			}
		})
	}
}

// TestSignDetachedReaderSMIME: openssl smime -verify accepts a
// multipart/signed entity carrying SignDetachedReader's signature, and
// prints the signed entity.
func TestSignDetachedReaderSMIME(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	body := "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nCaf=C3=A9 =\r\nFrom the gateway=20\r\n"
	sig, err := SignDetachedReader(strings.NewReader(body), p.alice.identity(), []*x509.Certificate{p.inter.cert})
	if err != nil {
		t.Fatal(err)
	}
	const boundary = "sig-boundary-2"
	msg := fmt.Sprintf("MIME-Version: 1.0\r\nContent-Type: multipart/signed; protocol=\"application/pkcs7-signature\"; micalg=sha-256; boundary=\"%s\"\r\n\r\n"+
		"--%s\r\n%s\r\n--%s\r\nContent-Type: application/pkcs7-signature; name=smime.p7s\r\nContent-Transfer-Encoding: base64\r\n\r\n%s\r\n--%s--\r\n",
		boundary, boundary, body, boundary, wrap76(base64.StdEncoding.EncodeToString(sig)), boundary)
	out, err := opensslErr([]byte(msg), "smime", "-verify", "-CAfile", p.root.certFile, "-purpose", "smimesign")
	if err != nil {
		t.Fatalf("openssl smime -verify: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "From the gateway") {
		t.Errorf("openssl smime -verify output lacks the content: %q", out)
	}
	bad := strings.Replace(msg, "From the gateway", "From the gatewaY", 1)
	if out, err := opensslErr([]byte(bad), "smime", "-verify", "-CAfile", p.root.certFile, "-purpose", "smimesign"); err == nil {
		t.Fatalf("openssl smime -verify accepted a changed entity:\n%s", out)
	}
}

func TestSignDetachedReaderErrors(t *testing.T) {
	p := testPKI(t)
	if _, err := SignDetachedReader(strings.NewReader("x"), Identity{}, nil); err == nil {
		t.Error("no identity: succeeded")
	}
	boom := errors.New("boom")
	if _, err := SignDetachedReader(iotest.ErrReader(boom), p.alice.identity(), nil); !errors.Is(err, boom) {
		t.Errorf("read error: got %v, want %v", err, boom)
	}
}

// TestEncryptToOpenSSL: openssl cms -decrypt recovers EncryptTo's
// content byte for byte, for every recipient, for sizes around the block
// size and the internal buffer size; the package's Decrypt agrees.
func TestEncryptToOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	for _, size := range []int{0, 1, 15, 16, 17, 65535, 65536, 65537, 3<<20 + 5} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			content := make([]byte, size)
			rand.Read(content)
			var out bytes.Buffer
			// OneByteReader for small sizes exercises short reads.
			var r io.Reader = iotest.HalfReader(bytes.NewReader(content))
			if size < 100 {
				r = iotest.OneByteReader(bytes.NewReader(content))
			}
			if err := EncryptTo(&out, r, int64(size), []*x509.Certificate{p.alice.cert, p.rsa3072.cert}); err != nil {
				t.Fatal(err)
			}
			envFile := writeTemp(t, "env.der", out.Bytes())
			for _, rc := range []*testCert{p.alice, p.rsa3072} {
				plain := openssl(t, nil, "cms", "-decrypt", "-binary", "-inform", "DER", "-in", envFile,
					"-recip", rc.certFile, "-inkey", rc.keyFile)
				if !bytes.Equal(plain, content) {
					t.Fatalf("openssl cms -decrypt for %s: %d bytes differ from the %d sent", rc.cert.Subject.CommonName, len(plain), size)
				}
			}
			got, _, err := Decrypt(out.Bytes(), []Identity{p.alice.identity()})
			if err != nil || !bytes.Equal(got, content) {
				t.Fatalf("own Decrypt: %v (len %d, want %d)", err, len(got), size)
			}
		})
	}
}

// TestEncryptToMatchesInMemory: for the same key, IV and encrypted keys,
// the streamed EnvelopedData is byte for byte the DER that cryptobyte
// builds in memory (the former Encrypt), across short and long DER
// length forms.
func TestEncryptToMatchesInMemory(t *testing.T) {
	p := testPKI(t)
	key, iv := make([]byte, 32), make([]byte, 16)
	rand.Read(key)
	rand.Read(iv)
	ris := []keyTransport{
		{p.alice.cert, bytes.Repeat([]byte{1}, 256)},
		{p.rsa3072.cert, bytes.Repeat([]byte{2}, 384)},
	}
	for _, size := range []int{0, 1, 15, 16, 17, 31, 32, 100, 111, 112, 127, 128, 239, 240, 255, 256, 1000, 65519, 65535, 65536, 65537, 70000} {
		content := make([]byte, size)
		rand.Read(content)
		want := referenceEnveloped(t, content, ris, key, iv)
		var got bytes.Buffer
		if err := writeEnveloped(&got, bytes.NewReader(content), int64(size), ris, key, iv); err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if !bytes.Equal(got.Bytes(), want) {
			t.Fatalf("size %d: streamed DER (%d bytes) differs from the in-memory DER (%d bytes)", size, got.Len(), len(want))
		}
	}
}

// referenceEnveloped is the all-in-memory EnvelopedData encoding that
// Encrypt used before streaming.
func referenceEnveloped(t *testing.T, content []byte, ris []keyTransport, key, iv []byte) []byte {
	t.Helper()
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	n := aes.BlockSize - len(content)%aes.BlockSize
	ct := make([]byte, len(content)+n)
	copy(ct, content)
	for i := len(content); i < len(ct); i++ {
		ct[i] = byte(n)
	}
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, ct)
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidEnvelopedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(0)
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {
					for _, r := range ris {
						b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
							b.AddASN1Int64(0)
							b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddBytes(r.cert.RawIssuer)
								b.AddASN1BigInt(r.cert.SerialNumber)
							})
							b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
								b.AddASN1ObjectIdentifier(oidRSAEncryption)
								b.AddASN1NULL()
							})
							b.AddASN1OctetString(r.ek)
						})
					}
				})
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData)
					b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1ObjectIdentifier(oidAES256CBC)
						b.AddASN1OctetString(iv)
					})
					b.AddASN1(casn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddBytes(ct)
					})
				})
			})
		})
	})
	out, err := b.Bytes()
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func TestEncryptToErrors(t *testing.T) {
	p := testPKI(t)
	rcpts := []*x509.Certificate{p.alice.cert}
	tests := []struct {
		name    string
		content string
		size    int64
		rcpts   []*x509.Certificate
		want    error
	}{
		{name: "shorter", content: "0123456789", size: 11, rcpts: rcpts, want: ErrSizeMismatch},
		{name: "longer", content: "0123456789", size: 9, rcpts: rcpts, want: ErrSizeMismatch},
		{name: "longer-at-block", content: strings.Repeat("a", 17), size: 16, rcpts: rcpts, want: ErrSizeMismatch},
		{name: "no-recipients", content: "x", size: 1},
		{name: "negative", content: "", size: -1, rcpts: rcpts},
		{name: "ec-recipient", content: "x", size: 1, rcpts: []*x509.Certificate{p.ecUser.cert}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := EncryptTo(io.Discard, strings.NewReader(tt.content), tt.size, tt.rcpts)
			if err == nil {
				t.Fatal("succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
		})
	}
	boom := errors.New("boom")
	if err := EncryptTo(io.Discard, iotest.ErrReader(boom), 5, rcpts); !errors.Is(err, boom) {
		t.Errorf("read error: got %v, want %v", err, boom)
	}
}

func TestDERHeader(t *testing.T) {
	tests := []struct {
		n    int64
		want []byte
	}{
		{0, []byte{0x30, 0}},
		{127, []byte{0x30, 127}},
		{128, []byte{0x30, 0x81, 128}},
		{255, []byte{0x30, 0x81, 255}},
		{256, []byte{0x30, 0x82, 1, 0}},
		{50 << 20, []byte{0x30, 0x84, 0x03, 0x20, 0, 0}},
	}
	for _, tt := range tests {
		if got := derHeader(0x30, tt.n); !bytes.Equal(got, tt.want) {
			t.Errorf("derHeader(%d) = %x, want %x", tt.n, got, tt.want)
		}
	}
}
