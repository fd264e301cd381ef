package keystore

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// Seeds: small valid inputs of each kind, made here (no fixtures needed).
func fuzzSeeds(f *testing.F) {
	f.Helper()
	pub, _ := genPGP(f, "seed@example.org", time.Now().Add(-time.Hour), false)
	f.Add([]byte(pub))
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"))
	f.Add([]byte{0x30, 0x80, 0x02, 0x01, 0x03, 0x30, 0x80, 0x00, 0x00, 0x00, 0x00})
	if dir, err := findCorpus(); err == nil {
		for _, n := range []string{"smime/TestCA.pem", "openpgp/keys/carol@example.com-0x3099ff1238852b9f-pub.asc"} {
			if b, err := os.ReadFile(filepath.Join(dir, n)); err == nil {
				f.Add(b)
			}
		}
	}
}

func findCorpus() (string, error) {
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "corpus", "thunderbird")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", os.ErrNotExist
}

// FuzzScanOpenPGP: the load-time scanner and the lazy full parse never
// panic, and agree on the fingerprint when both succeed.
func FuzzScanOpenPGP(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		keys, err := scanOpenPGPFile("fuzz", data, false)
		if err != nil {
			return
		}
		for _, k := range keys {
			if k.ready() == nil {
				k.encryptionUsable(time.Now())
				k.signingUsable(time.Now())
				k.nextEvent(time.Now())
			}
		}
	})
}

// FuzzParseOpenPGP: the import parser never panics.
func FuzzParseOpenPGP(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		ents, err := parseOpenPGP(data)
		if err != nil {
			return
		}
		for _, e := range ents {
			k := newPGPKey("fuzz", e, false)
			k.ready()
			k.encryptionUsable(time.Now())
		}
	})
}

// FuzzParsePEMOrDER: certificates, keys, CRLs.
func FuzzParsePEMOrDER(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		parsePEMOrDERPass(data, []byte("rtpass")) // encrypted keys
		pc, err := parsePEMOrDER(data)
		if err != nil {
			return
		}
		for _, c := range pc.certs {
			e := newCertEntry("fuzz", c, false)
			e.encryptionUsable(time.Now(), pc.crls)
		}
	})
}
