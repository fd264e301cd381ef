package keystore

import (
	"testing"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/crypto"
)

// FuzzCheckOpenPGP: a key from an untrusted source (WKD, OPENPGPKEY, the
// discovery cache) that CheckOpenPGP accepts for an address is one the
// gateway can encrypt to, and reads the same again from what is cached
// (its Armored form gives the same key and fingerprint, as fromRecord
// requires), so a found key never turns unusable by being cached.
func FuzzCheckOpenPGP(f *testing.F) {
	const addr = "seed@example.org"
	fuzzSeeds(f)
	pub, _ := genPGP(f, "seed@Example.ORG.", time.Now().Add(-time.Hour), false)
	f.Add([]byte(pub))
	now := time.Now()
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := CheckOpenPGP(data, addr, false, now)
		if err != nil {
			return
		}
		if k.OpenPGP == nil || k.Fingerprint == "" || len(k.Armored) == 0 {
			t.Fatalf("a checked key without material: %+v", k)
		}
		again, err := CheckOpenPGP(k.Armored, addr, false, now)
		if err != nil {
			t.Fatalf("key %s accepted, but its cached form is not: %v", k.Fingerprint, err)
		}
		if again.Fingerprint != k.Fingerprint {
			t.Fatalf("key %s read back as %s", k.Fingerprint, again.Fingerprint)
		}
		h, err := crypto.PGP().Encryption().Recipient(k.OpenPGP).New()
		if err != nil {
			t.Fatalf("key %s accepted, but no encryption to it: %v", k.Fingerprint, err)
		}
		if _, err := h.Encrypt([]byte("x")); err != nil {
			t.Fatalf("key %s accepted, but encrypting to it fails: %v", k.Fingerprint, err)
		}
	})
}
