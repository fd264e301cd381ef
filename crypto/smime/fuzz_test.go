package smime

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/internal/entropy"
)

// fuzzIdentity is the fixed test identity in testdata/fuzzkey.pem (a
// throwaway key made for these tests), so that the seeds in
// testdata/fuzz reach content decryption and signature checks.
func fuzzIdentity(t testing.TB) (Identity, *x509.CertPool) {
	t.Helper()
	data, err := os.ReadFile("testdata/fuzzkey.pem")
	if err != nil {
		t.Fatal(err)
	}
	var id Identity
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			if id.Key, err = x509.ParsePKCS8PrivateKey(b.Bytes); err != nil {
				t.Fatal(err)
			}
		case "CERTIFICATE":
			if id.Cert, err = x509.ParseCertificate(b.Bytes); err != nil {
				t.Fatal(err)
			}
		}
	}
	if id.Key == nil || id.Cert == nil {
		t.Fatal("testdata/fuzzkey.pem: need a key and a certificate")
	}
	pool := x509.NewCertPool()
	pool.AddCert(id.Cert)
	return id, pool
}

func FuzzDecrypt(f *testing.F) {
	id, _ := fuzzIdentity(f)
	f.Add([]byte{0x30, 0x80, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03, 0x00, 0x00})
	if der, err := Encrypt([]byte("seed"), []*x509.Certificate{id.Cert}); err == nil {
		f.Add(der)
	}
	ids := []Identity{id}
	f.Fuzz(func(t *testing.T, der []byte) {
		content, _, err := Decrypt(der, ids)
		if err != nil {
			if err != ErrDecrypt && err != ErrNotForUs {
				t.Fatalf("unexpected error value %v", err)
			}
			if content != nil {
				t.Fatal("content returned with an error")
			}
		}
		checkDecryptReference(t, der, ids, content, err)
	})
}

// checkDecryptReference compares Decrypt's outcome (content, err) with the
// in-memory reference's: the same content, or the same failure, but that
// the stream reader says ErrNotForUs from the recipients alone where the
// reference first found the rest of the message malformed. What IsEnvelope
// accepts, the reference's test accepts too.
func checkDecryptReference(t *testing.T, der []byte, ids []Identity, content []byte, err error) {
	t.Helper()
	want, _, werr := referenceDecrypt(der, ids)
	switch {
	case err == nil && werr == nil:
		if !bytes.Equal(content, want) {
			t.Fatalf("content %q, reference %q", content, want)
		}
	case err == ErrNotForUs && werr == ErrDecrypt, err == werr:
	default:
		t.Fatalf("Decrypt: %v, reference %v", err, werr)
	}
	// IsEnvelope is stricter than the reference's test (it bounds and
	// checks what travels in clear, FuzzIsEnvelope): what it accepts, the
	// reference accepts too.
	env, ok := referenceParseEnvelope(der)
	wantEnvelope := ok && len(env.recipients) > 0 && len(env.ciphertext) > 0 && entropy.LooksRandom(env.ciphertext)
	if IsEnvelope(der) && !wantEnvelope {
		t.Fatalf("IsEnvelope accepts what the reference does not")
	}
}

func FuzzVerify(f *testing.F) {
	id, roots := fuzzIdentity(f)
	if der, err := SignDetached([]byte("seed"), id, nil); err == nil {
		f.Add(der, []byte("seed"))
	}
	f.Fuzz(func(t *testing.T, der, detached []byte) {
		if len(detached) == 0 {
			detached = nil
		}
		content, signers, err := Verify(der, detached, VerifyOptions{Roots: roots})
		if err != nil && signers != nil {
			t.Fatal("signers returned with an error")
		}
		checkVerifyReference(t, der, detached, VerifyOptions{Roots: roots}, content, signers, err)
		for _, s := range signers {
			if s.Status < Bad || s.Status > Valid {
				t.Fatalf("status out of range: %d", s.Status)
			}
		}
	})
}

// checkVerifyReference compares Verify's outcome with the in-memory
// reference parser's followed by the same signer checks.
func checkVerifyReference(t *testing.T, der, detached []byte, opts VerifyOptions, content []byte, signers []SignerResult, err error) {
	t.Helper()
	sd, rcontent, ok := referenceParseSignedData(der)
	var werr error
	switch {
	case !ok:
		werr = ErrMalformed
	case detached != nil && rcontent != nil, detached == nil && rcontent == nil:
		werr = ErrNoContent
	}
	if err != werr {
		t.Fatalf("Verify: %v, reference %v", err, werr)
	}
	if err != nil {
		return
	}
	if detached != nil {
		rcontent = detached
	}
	if !bytes.Equal(content, rcontent) {
		t.Fatalf("content %q, reference %q", content, rcontent)
	}
	want := verifySigners(sd, &contentSource{open: func() io.Reader { return bytes.NewReader(rcontent) }}, opts)
	if len(signers) != len(want) {
		t.Fatalf("%d signers, reference %d", len(signers), len(want))
	}
	for i := range want {
		g, w := signers[i], want[i]
		if g.Status != w.Status || g.Reason != w.Reason || g.Serial != w.Serial || g.Issuer != w.Issuer || g.Digest != w.Digest ||
			(g.Cert == nil) != (w.Cert == nil) || g.Cert != nil && !g.Cert.Equal(w.Cert) {
			t.Fatalf("signer %d: %+v, reference %+v", i, g, w)
		}
	}
}

// FuzzToDER: the conversion never panics, and its output is a fixed point
// (DER in, the same DER out).
func FuzzToDER(f *testing.F) {
	for _, s := range []string{"\x30\x80\x02\x01\x01\x00\x00", "\x24\x80\x04\x01\xaa\x04\x01\xbb\x00\x00", "\xa0\x80\x24\x80\x04\x00\x00\x00\x00\x00"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, ber []byte) {
		der, err := toDER(ber)
		if err != nil {
			return
		}
		again, err := toDER(der)
		if err != nil {
			t.Fatalf("toDER(%x) = %x, which does not convert again: %v", ber, der, err)
		}
		if !bytes.Equal(again, der) {
			t.Fatalf("toDER not idempotent: %x -> %x -> %x", ber, der, again)
		}
	})
}

// readSeed reads the []byte values of a `go test fuzz v1` file.
func readSeed(t testing.TB, file string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, line := range strings.Split(string(data), "\n")[1:] {
		if !strings.HasPrefix(line, "[]byte(") {
			continue
		}
		s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(line, "[]byte("), ")"))
		if err != nil {
			t.Fatalf("%s: %v", file, err)
		}
		out = append(out, []byte(s))
	}
	return out
}

// TestFuzzSeedsReachTheEnd: the openssl-made seeds decrypt and verify with
// the fuzz identity, so the fuzzers start from inputs that go all the way.
func TestFuzzSeedsReachTheEnd(t *testing.T) {
	id, roots := fuzzIdentity(t)
	for _, n := range []string{"d1", "d2", "d3", "d4"} {
		v := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzDecrypt", n))
		if _, _, err := Decrypt(v[0], []Identity{id}); err != nil {
			t.Errorf("FuzzDecrypt/%s: %v", n, err)
		}
	}
	for _, n := range []string{"v1", "v2", "v3"} {
		v := readSeed(t, filepath.Join("testdata", "fuzz", "FuzzVerify", n))
		det := v[1]
		if len(det) == 0 {
			det = nil
		}
		_, signers, err := Verify(v[0], det, VerifyOptions{Roots: roots, AllowSHA1: true})
		if err != nil || len(signers) != 1 || signers[0].Status != Valid {
			t.Errorf("FuzzVerify/%s: %+v %v", n, signers, err)
		}
	}
}
