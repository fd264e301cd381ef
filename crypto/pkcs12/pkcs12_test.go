package pkcs12

import (
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/internal/ber"
)

// corpusDir finds shared/corpus/thunderbird/smime by walking up from here.
func corpusDir() string {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "corpus", "thunderbird", "smime")
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
	}
	return ""
}

func corpus(t *testing.T) string {
	t.Helper()
	dir := corpusDir()
	if dir == "" {
		t.Skip("shared/corpus/thunderbird/smime not found above the package directory")
	}
	return dir
}

func needOpenSSL(t *testing.T) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
			t.Fatalf("openssl not installed (CRYPTMILTER_REQUIRE_PEERS=1): %v", err)
		}
		t.Skipf("openssl not installed: %v", err)
	}
}

func openssl(t *testing.T, dir string, args ...string) {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestDecodeNSS reads the BER files Thunderbird (NSS) exported, which
// go-pkcs12 refuses, and checks that the right key came out.
func TestDecodeNSS(t *testing.T) {
	dir := corpus(t)
	for _, name := range []string{"Alice.p12", "Bob.p12"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				t.Fatal(err)
			}
			der, err := ber.ToDER(data)
			if err != nil {
				t.Fatal(err)
			}
			if string(der) == string(data) {
				t.Fatalf("%s is DER; the test needs NSS's BER", name)
			}
			if !LooksLikePFX(data) {
				t.Errorf("LooksLikePFX = false")
			}
			key, leaf, _, err := Decode(data, []byte("nss"))
			if err != nil {
				t.Fatal(err)
			}
			if !keyMatchesCert(key, leaf) || leaf.Subject.CommonName != strings.TrimSuffix(name, ".p12") {
				t.Errorf("leaf %v does not match the key or the file", leaf.Subject)
			}
			if _, _, _, err := Decode(data, []byte("wrong")); !errors.Is(err, ErrIncorrectPassword) {
				t.Errorf("wrong password: %v, want ErrIncorrectPassword", err)
			}
		})
	}
}

// TestDecodeOpenSSL reads what OpenSSL writes (DER, through go-pkcs12),
// legacy 3DES too, and OpenSSL's PKCS#8 encrypted keys.
func TestDecodeOpenSSL(t *testing.T) {
	needOpenSSL(t)
	dir := t.TempDir()
	openssl(t, dir, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem", "-days", "2",
		"-subj", "/CN=P12", "-addext", "subjectAltName=email:p12@example.org")
	openssl(t, dir, "pkcs12", "-export", "-inkey", "k.pem", "-in", "c.pem", "-out", "aes.p12", "-passout", "pass:pw")
	openssl(t, dir, "pkcs12", "-export", "-legacy", "-inkey", "k.pem", "-in", "c.pem", "-out", "legacy.p12", "-passout", "pass:pw")
	for _, f := range []string{"aes.p12", "legacy.p12"} {
		data, _ := os.ReadFile(filepath.Join(dir, f))
		key, leaf, _, err := Decode(data, []byte("pw"))
		if err != nil {
			// -legacy needs OpenSSL's legacy provider; without it the
			// file is not written and ReadFile gave nothing.
			t.Errorf("%s: %v", f, err)
			continue
		}
		if !keyMatchesCert(key, leaf) {
			t.Errorf("%s: key does not match the certificate", f)
		}
		if _, _, _, err := Decode(data, []byte("nope")); !errors.Is(err, ErrIncorrectPassword) {
			t.Errorf("%s wrong password: %v", f, err)
		}
	}
	for _, v := range [][]string{{"-v2", "aes-256-cbc"}, {"-v2", "des3"}, {"-v1", "PBE-SHA1-3DES"}} {
		t.Run(strings.Join(v, " "), func(t *testing.T) {
			openssl(t, dir, append([]string{"pkcs8", "-topk8", "-in", "k.pem", "-passout", "pass:pw", "-out", "enc.pem"}, v...)...)
			b, _ := os.ReadFile(filepath.Join(dir, "enc.pem"))
			blk, _ := pem.Decode(b)
			if blk == nil || blk.Type != "ENCRYPTED PRIVATE KEY" {
				t.Fatalf("openssl wrote %q", b)
			}
			c, _ := os.ReadFile(filepath.Join(dir, "c.pem"))
			cb, _ := pem.Decode(c)
			key, err := DecryptPrivateKey(blk.Bytes, []byte("pw"))
			if err != nil {
				t.Fatal(err)
			}
			leaf, err := parseCert(cb.Bytes)
			if err != nil || !keyMatchesCert(key, leaf) {
				t.Errorf("decrypted key does not match: %v", err)
			}
			if _, err := DecryptPrivateKey(blk.Bytes, []byte("nope")); err == nil {
				t.Error("wrong password accepted")
			}
		})
	}
}
