package openpgp

import (
	"bytes"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// fuzzKeys are Go-generated keys (no gpg needed), made once per binary.
var fuzzKeys = sync.OnceValues(func() (*pgpcrypto.KeyRing, error) {
	k, err := pgpcrypto.PGP().KeyGeneration().AddUserId("Fuzz", "fuzz@example.org").New().GenerateKey()
	if err != nil {
		return nil, err
	}
	Prepare(k)
	return pgpcrypto.NewKeyRing(k)
})

func fuzzRing(f *testing.F) *pgpcrypto.KeyRing {
	f.Helper()
	kr, err := fuzzKeys()
	if err != nil {
		f.Fatal(err)
	}
	return kr
}

// seeds adds valid messages of every kind made with the fuzz key, and the
// corpus blocks when present.
func seeds(f *testing.F, kr *pgpcrypto.KeyRing) {
	f.Helper()
	k, _ := kr.GetKey(0)
	var enc, encHidden, det bytes.Buffer
	if err := SignEncrypt(&enc, bytes.NewReader(eightBit), k, []*pgpcrypto.Key{k}, false); err != nil {
		f.Fatal(err)
	}
	if err := SignEncrypt(&encHidden, bytes.NewReader(eightBit), nil, []*pgpcrypto.Key{k}, true); err != nil {
		f.Fatal(err)
	}
	if _, err := SignDetached(&det, bytes.NewReader(eightBit), k); err != nil {
		f.Fatal(err)
	}
	sh, err := pgpcrypto.PGP().Sign().SigningKey(k).New()
	if err != nil {
		f.Fatal(err)
	}
	clear, err := sh.SignCleartext([]byte("Hello\n- dash\nGrüße \n"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(clear)
	f.Add(enc.Bytes())
	f.Add(encHidden.Bytes())
	f.Add(det.Bytes())
	f.Add([]byte("-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n- -dash\ntext\n-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"))
	f.Add([]byte{0xc1, 0x0e, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0x12})
	if dir, err := filepath.Abs("../../../shared/corpus/thunderbird/openpgp/keys"); err == nil {
		files, _ := filepath.Glob(filepath.Join(dir, "*pub.asc"))
		for _, file := range files {
			if b, err := os.ReadFile(file); err == nil {
				f.Add(b)
			}
		}
	}
}

func FuzzInspect(f *testing.F) {
	seeds(f, fuzzRing(f))
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := Inspect(data)
		if err == nil && info.Kind == KindUnknown {
			t.Errorf("Inspect = %+v without error", info)
		}
	})
}

func FuzzDecrypt(f *testing.F) {
	kr := fuzzRing(f)
	seeds(f, kr)
	k, _ := kr.GetKey(0)
	lookup := lookupOf(f, k)
	now := time.Now().Add(time.Hour)
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		pt, err := Decrypt(bytes.NewReader(data), kr, lookup, now, Limits{SpoolDir: dir, MaxDecompressed: 1 << 20})
		if err == nil {
			if pt.Size > 1<<20 {
				t.Errorf("plaintext of %d bytes beyond the limit", pt.Size)
			}
			pt.Close()
		} else if err != ErrDecrypt && err != ErrNotForUs && err != ErrNotEncrypted {
			t.Errorf("Decrypt error %v is not one of the sentinels", err)
		}
		if ents, _ := os.ReadDir(dir); len(ents) != 0 {
			t.Errorf("spool dir not empty")
		}
		if pt, err := VerifyInline(bytes.NewReader(data), lookup, now, Limits{SpoolDir: dir, MaxDecompressed: 1 << 20}); err == nil {
			pt.Close()
		}
	})
}

func FuzzVerifyCleartext(f *testing.F) {
	kr := fuzzRing(f)
	seeds(f, kr)
	k, _ := kr.GetKey(0)
	lookup := lookupOf(f, k)
	now := time.Now().Add(time.Hour)
	f.Fuzz(func(t *testing.T, data []byte) {
		text, res, err := VerifyCleartext(data, lookup, now)
		if err == nil && res.Status == StatusNone {
			t.Errorf("no verdict for a parsed block: %+v", res)
		}
		_ = text
		VerifyDetached(bytes.NewReader(eightBit), data, lookup, now)
	})
}
