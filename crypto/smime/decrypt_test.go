package smime

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// testContent is a small MIME entity with CRLF line ends.
var testContent = []byte("Content-Type: text/plain; charset=utf-8\r\n\r\nHello from openssl \xc3\xa9\r\nFrom the gateway.\r\n")

// opensslEncrypt encrypts content with `openssl cms -encrypt`, DER output.
func opensslEncrypt(t testing.TB, content []byte, args []string, recips ...string) []byte {
	t.Helper()
	// Options after -recip (-keyopt) apply to that recipient.
	a := []string{"cms", "-encrypt", "-binary", "-outform", "DER"}
	var keyopts []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-keyopt" {
			keyopts = append(keyopts, args[i], args[i+1])
			i++
			continue
		}
		a = append(a, args[i])
	}
	for _, r := range recips {
		a = append(a, "-recip", r)
	}
	a = append(a, keyopts...)
	return openssl(t, content, a...)
}

func TestDecryptOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	ids := []Identity{p.alice.identity(), p.rsa3072.identity(), p.subjOnly.identity()}
	tests := []struct {
		name    string
		args    []string
		recips  []string
		wantIdx int
		keyAlg  string
		cipher  string
		auth    bool
	}{
		{"aes128", []string{"-aes128"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-128-cbc", false},
		{"aes192", []string{"-aes192"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-192-cbc", false},
		{"aes256", []string{"-aes256"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-256-cbc", false},
		{"des3", []string{"-des3"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "des-ede3-cbc", false},
		{"rsa3072", []string{"-aes256"}, []string{p.rsa3072.certFile}, 1, "rsa-pkcs1v15", "aes-256-cbc", false},
		{"stream-ber", []string{"-aes256", "-stream"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-256-cbc", false},
		{"gcm", []string{"-aes-256-gcm"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-256-gcm", true},
		{"gcm128-stream", []string{"-aes-128-gcm", "-stream"}, []string{p.rsa3072.certFile}, 1, "rsa-pkcs1v15", "aes-128-gcm", true},
		{"oaep-sha1", []string{"-aes256", "-keyopt", "rsa_padding_mode:oaep"}, []string{p.alice.certFile}, 0, "rsa-oaep-sha1", "aes-256-cbc", false},
		{"oaep-sha256", []string{"-aes256", "-keyopt", "rsa_padding_mode:oaep", "-keyopt", "rsa_oaep_md:sha256"}, []string{p.alice.certFile}, 0, "rsa-oaep-sha256", "aes-256-cbc", false},
		{"keyid", []string{"-aes256", "-keyid"}, []string{p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-256-cbc", false},
		{"kari-and-ktri", []string{"-aes256"}, []string{p.ecUser.certFile, p.alice.certFile}, 0, "rsa-pkcs1v15", "aes-256-cbc", false},
		{"kari-and-ktri-gcm", []string{"-aes-256-gcm"}, []string{p.ecUser.certFile, p.rsa3072.certFile}, 1, "rsa-pkcs1v15", "aes-256-gcm", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := opensslEncrypt(t, testContent, tc.args, tc.recips...)
			got, info, err := Decrypt(der, ids)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(got, testContent) {
				t.Errorf("content = %q, want %q", got, testContent)
			}
			want := DecryptInfo{
				Identity:         tc.wantIdx,
				Serial:           formatSerial(ids[tc.wantIdx].Cert.SerialNumber),
				Issuer:           ids[tc.wantIdx].Cert.Issuer.String(),
				KeyAlgorithm:     tc.keyAlg,
				ContentAlgorithm: tc.cipher,
				Authenticated:    tc.auth,
				ContentType:      oidData,
			}
			if diff := cmp.Diff(want, info); diff != "" {
				t.Errorf("DecryptInfo (-want +got):\n%s", diff)
			}
		})
	}
}

// TestDecryptStreamIsBER makes sure the -stream case above really
// exercised indefinite lengths.
func TestDecryptStreamIsBER(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	der := opensslEncrypt(t, testContent, []string{"-aes256", "-stream"}, p.alice.certFile)
	if der[1] != 0x80 {
		t.Fatalf("openssl -stream output starts %x, want indefinite length", der[:2])
	}
}

func TestDecryptFailures(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	ids := []Identity{p.alice.identity()}
	// Alice's certificate with somebody else's key: the recipient
	// matches, the RSA step fails.
	wrongKey := []Identity{{Cert: p.alice.cert, Key: p.subjOnly.key}}

	cbc := opensslEncrypt(t, testContent, []string{"-aes256"}, p.alice.certFile)
	gcm := opensslEncrypt(t, testContent, []string{"-aes-256-gcm"}, p.alice.certFile)
	oaepGCM := opensslEncrypt(t, testContent, []string{"-aes-256-gcm", "-keyopt", "rsa_padding_mode:oaep"}, p.alice.certFile)
	other := opensslEncrypt(t, testContent, []string{"-aes256"}, p.rsa3072.certFile)

	// Positions: encryptedKey is the 256-byte OCTET STRING (04 82 01 00).
	ekMarker := []byte{0x04, 0x82, 0x01, 0x00}
	tests := []struct {
		name string
		der  []byte
		ids  []Identity
		want error
	}{
		{"not-for-us", other, ids, ErrNotForUs},
		{"no-identities", cbc, nil, ErrNotForUs},
		{"wrong-key-pkcs1-gcm", gcm, wrongKey, ErrDecrypt},
		// With CBC a random key gives valid padding about once in 256
		// tries; the unwrap result still makes it a failure, every time.
		{"wrong-key-pkcs1-cbc", cbc, wrongKey, ErrDecrypt},
		{"tampered-encrypted-key-cbc", flipAfterLast(t, cbc, ekMarker, 100), ids, ErrDecrypt},
		{"wrong-key-oaep-gcm", oaepGCM, wrongKey, ErrDecrypt},
		{"tampered-encrypted-key-gcm", flipAfterLast(t, gcm, ekMarker, 100), ids, ErrDecrypt},
		{"tampered-encrypted-key-oaep", flipAfterLast(t, oaepGCM, ekMarker, 7), ids, ErrDecrypt},
		{"tampered-gcm-tag", flipLastByte(gcm), ids, ErrDecrypt},
		{"tampered-gcm-ciphertext", flipAt(gcm, len(gcm)-30), ids, ErrDecrypt},
		{"tampered-cbc-padding", flipAt(cbc, len(cbc)-17), ids, ErrDecrypt},
		{"garbage", []byte("this is not CMS at all"), ids, ErrDecrypt},
		{"empty", nil, ids, ErrDecrypt},
		{"trailing-garbage", append(append([]byte{}, cbc...), 'x'), ids, ErrDecrypt},
		{"signed-data", signedForTest(t, p), ids, ErrDecrypt},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Repeat: random-key paths must fail every time.
			for i := 0; i < 20; i++ {
				got, _, err := Decrypt(tc.der, tc.ids)
				if err != tc.want { // identity, not errors.Is: the value must be the same
					t.Fatalf("try %d: Decrypt error = %v, want %v", i, err, tc.want)
				}
				if got != nil {
					t.Fatalf("content returned on failure: %d bytes", len(got))
				}
			}
		})
	}
	// The GCM tag position must really be the end of the message.
	if _, _, err := Decrypt(gcm, ids); err != nil {
		t.Fatalf("untampered gcm: %v", err)
	}
}

// TestDecryptTruncated: every truncation of a valid message yields
// exactly ErrDecrypt.
func TestDecryptTruncated(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	ids := []Identity{p.alice.identity()}
	for _, args := range [][]string{{"-aes256"}, {"-aes-256-gcm", "-stream"}} {
		der := opensslEncrypt(t, testContent, args, p.alice.certFile)
		for n := 0; n < len(der); n++ {
			if _, _, err := Decrypt(der[:n], ids); err != ErrDecrypt {
				// A -stream message ends in end-of-contents octets:
				// cutting only those zeros is still an error.
				t.Fatalf("%v truncated to %d of %d: err = %v, want ErrDecrypt", args, n, len(der), err)
			}
		}
	}
}

// TestDecryptRandomKeyOnPaddingFailure checks the RFC 3218 behaviour
// directly: a bad PKCS#1 v1.5 block (or a ciphertext of the wrong size)
// yields a random key of the right length and valid == 0, not an early
// error; a good block yields the key and valid == 1.
func TestDecryptRandomKeyOnPaddingFailure(t *testing.T) {
	p := testPKI(t)
	priv := p.alice.key.(*rsa.PrivateKey)
	bad := make([]byte, 256)
	rand.Read(bad)
	bad[0] = 0 // below the modulus
	for name, ek := range map[string][]byte{"bad-padding": bad, "short": bad[:100]} {
		r := keyTransRecipient{alg: algorithmIdentifier{oid: oidRSAEncryption}, encryptedKey: ek}
		k1, _, v1, ok1 := unwrapKey(priv, r, 32)
		k2, _, v2, ok2 := unwrapKey(priv, r, 32)
		if !ok1 || !ok2 || len(k1) != 32 || len(k2) != 32 || v1 != 0 || v2 != 0 {
			t.Fatalf("%s: ok=%v,%v valid=%d,%d lens %d,%d; want two 32-byte keys, invalid", name, ok1, ok2, v1, v2, len(k1), len(k2))
		}
		if bytes.Equal(k1, k2) {
			t.Errorf("%s: two failed unwraps gave the same key: not random", name)
		}
	}
	want := []byte("0123456789abcdef0123456789abcdef")
	//lint:ignore SA1019 test of PKCS#1 v1.5 key transport
	good, err := rsa.EncryptPKCS1v15(rand.Reader, &priv.PublicKey, want)
	if err != nil {
		t.Fatal(err)
	}
	k, _, v, ok := unwrapKey(priv, keyTransRecipient{alg: algorithmIdentifier{oid: oidRSAEncryption}, encryptedKey: good}, 32)
	if !ok || v != 1 || !bytes.Equal(k, want) {
		t.Errorf("good block: key %x valid %d ok %v", k, v, ok)
	}
	// A good block carrying a key of the wrong length is a failure too.
	if _, _, v, _ := unwrapKey(priv, keyTransRecipient{alg: algorithmIdentifier{oid: oidRSAEncryption}, encryptedKey: good}, 16); v != 0 {
		t.Errorf("key of the wrong length accepted")
	}
}

func TestDecryptOwnEncrypt(t *testing.T) {
	p := testPKI(t)
	der, err := Encrypt(testContent, []*x509.Certificate{p.alice.cert, p.rsa3072.cert})
	if err != nil {
		t.Fatal(err)
	}
	for i, id := range []Identity{p.alice.identity(), p.rsa3072.identity()} {
		got, info, err := Decrypt(der, []Identity{id})
		if err != nil {
			t.Fatalf("recipient %d: %v", i, err)
		}
		if !bytes.Equal(got, testContent) || info.ContentAlgorithm != "aes-256-cbc" {
			t.Errorf("recipient %d: content %q alg %s", i, got, info.ContentAlgorithm)
		}
	}
	if _, err := Encrypt(testContent, []*x509.Certificate{p.ecUser.cert}); err == nil || !strings.Contains(err.Error(), "not an RSA key") {
		t.Errorf("Encrypt to EC cert: err = %v, want not an RSA key", err)
	}
	if _, err := Encrypt(testContent, nil); err == nil {
		t.Error("Encrypt without recipients succeeded")
	}
	if errors.Is(ErrDecrypt, ErrNotForUs) {
		t.Error("ErrDecrypt and ErrNotForUs must differ")
	}
}

func flipLastByte(b []byte) []byte { return flipAt(b, len(b)-1) }

func flipAt(b []byte, i int) []byte {
	out := append([]byte(nil), b...)
	out[i] ^= 0x01
	return out
}

// signedForTest is a detached signature made by SignDetached.
func signedForTest(t testing.TB, p *pki) []byte {
	t.Helper()
	der, err := SignDetached(testContent, p.alice.identity(), []*x509.Certificate{p.inter.cert})
	if err != nil {
		t.Fatal(err)
	}
	return der
}
