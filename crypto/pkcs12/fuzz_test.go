package pkcs12

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"

	"github.com/cryptmilter/cryptmilter/internal/ber"
)

func parseCert(der []byte) (*x509.Certificate, error) { return x509.ParseCertificate(der) }

// FuzzDecode: the BER converter and both PKCS#12 readers never panic, and
// the DER that ber.ToDER writes is accepted again.
func FuzzDecode(f *testing.F) {
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x00, 0x00, 0x00, 0x00})
	if dir := corpusDir(); dir != "" {
		for _, n := range []string{"Alice.p12", "Bob.p12"} {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				f.Add(b)
			}
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if der, err := ber.ToDER(data); err == nil {
			if _, err := ber.ToDER(der); err != nil {
				t.Fatalf("DER output of ber.ToDER is not accepted again: %v", err)
			}
		}
		decodeBER(data, []byte("nss"))
		if LooksLikePFX(data) {
			Decode(data, []byte("nss"))
		}
		DecryptPrivateKey(data, []byte("nss"))
	})
}
