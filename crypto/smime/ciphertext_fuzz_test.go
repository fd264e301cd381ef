package smime

import (
	"bytes"
	"crypto/x509"
	"path/filepath"
	"testing"
	"time"
)

// FuzzIsEnvelope: what IsEnvelope accepts as "already encrypted" (sent as
// it is outbound) is one complete envelope: it turns false when the data
// is cut short or has anything after it, decryption reads it as an
// envelope too (never a parse failure that IsEnvelope let through: only
// "not for us", or a decryption result), and it answers quickly.
func FuzzIsEnvelope(f *testing.F) {
	id, _ := fuzzIdentity(f)
	if der, err := Encrypt([]byte("seed"), []*x509.Certificate{id.Cert}); err == nil {
		f.Add(der)
	}
	// The openssl-made envelopes of FuzzDecrypt (AES-CBC, AES-GCM, OAEP).
	files, _ := filepath.Glob(filepath.Join("testdata", "fuzz", "FuzzDecrypt", "d*"))
	for _, file := range files {
		for _, v := range readSeed(f, file) {
			f.Add(v)
		}
	}
	ids := []Identity{id}
	f.Fuzz(func(t *testing.T, der []byte) {
		start := time.Now()
		ok := IsEnvelope(der)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("IsEnvelope took %v on %d bytes", d, len(der))
		}
		if !ok {
			return
		}
		if IsEnvelope(append(bytes.Clone(der), 0x04, 0x01, 'x')) {
			t.Error("an envelope with data after it is still an envelope")
		}
		if IsEnvelope(der[:len(der)-1]) {
			t.Error("an envelope cut short by one byte is still an envelope")
		}
		if _, err := readEnvelopeHead(bytes.NewReader(der)); err != nil {
			t.Errorf("IsEnvelope, but the envelope parser fails on the data as given: %v", err)
		}
		content, _, err := Decrypt(der, ids)
		if err == nil && content == nil {
			t.Error("decrypted to nothing")
		}
	})
}
