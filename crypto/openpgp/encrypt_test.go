package openpgp

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// seipdVersions returns the versions of the encrypted data packets and the
// PKESK versions and key IDs of an armored message.
func packetsOf(t testing.TB, armored []byte) (seipd []int, pkeskVersions []int, keyIDs []uint64) {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	pr := packet.NewReader(blk.Body)
	for {
		p, err := pr.Next()
		if err != nil {
			t.Fatalf("parse own output: %v", err)
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			pkeskVersions = append(pkeskVersions, p.Version)
			keyIDs = append(keyIDs, p.KeyId)
		case *packet.SymmetricallyEncrypted:
			seipd = append(seipd, p.Version)
			return
		case *packet.AEADEncrypted:
			seipd = append(seipd, -1)
			return
		}
	}
}

func TestSignEncryptGPG(t *testing.T) {
	f := getFixtures(t)
	gwRSAPub, err := f.gwRSA.ToPublic()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name       string
		recipients []*pgpcrypto.Key
		hidden     bool
	}{
		{"curve25519", []*pgpcrypto.Key{f.sender}, false},
		{"rsa3072", []*pgpcrypto.Key{gwRSAPub}, false},
		{"two recipients", []*pgpcrypto.Key{f.sender, gwRSAPub}, false},
		{"hidden", []*pgpcrypto.Key{f.sender}, true},
		{"two hidden", []*pgpcrypto.Key{f.sender, gwRSAPub}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			if err := SignEncrypt(&out, bytes.NewReader(eightBit), f.gw25519, tc.recipients, tc.hidden); err != nil {
				t.Fatal(err)
			}
			if !bytes.HasPrefix(out.Bytes(), []byte("-----BEGIN PGP MESSAGE-----")) {
				t.Fatalf("not armored: %q", out.Bytes()[:40])
			}
			seipd, versions, ids := packetsOf(t, out.Bytes())
			if len(seipd) != 1 || seipd[0] != 1 {
				t.Errorf("encrypted data packets %v, want one SEIPDv1", seipd)
			}
			for i, v := range versions {
				if v != 3 {
					t.Errorf("PKESK version %d, want 3", v)
				}
				if tc.hidden != (ids[i] == 0) {
					t.Errorf("PKESK key ID %016X, hidden=%v", ids[i], tc.hidden)
				}
			}
			if len(versions) != len(tc.recipients) {
				t.Errorf("%d PKESKs, want %d", len(versions), len(tc.recipients))
			}
			// --list-packets exits 2 when it tries a hidden PKESK with a
			// key that does not fit; the listing is complete anyway.
			listing, _, _ := f.gpg.run(out.Bytes(), "--list-packets")
			if tc.hidden && !strings.Contains(string(listing), "keyid 0000000000000000") {
				t.Errorf("gpg --list-packets shows no hidden recipient:\n%s", listing)
			}
			if !tc.hidden && strings.Contains(string(listing), "keyid 0000000000000000") {
				t.Errorf("unexpected hidden recipient:\n%s", listing)
			}
			if !strings.Contains(string(listing), "mdc_method: 2") {
				t.Errorf("no MDC-protected data packet:\n%s", listing)
			}
			plain, status, err := f.gpg.run(out.Bytes(), "--decrypt")
			// With hidden recipients gpg 2.2 tries its secret keys in turn;
			// a key that does not fit logs "ecdh failed ... Checksum error"
			// or NO_SECKEY and makes gpg exit 2 although it decrypted and
			// checked the signature (the status lines below prove it).
			if err != nil && !tc.hidden {
				t.Fatal(err)
			}
			if !bytes.Equal(plain, eightBit) {
				t.Errorf("gpg plaintext = %q, want %q", plain, eightBit)
			}
			// DECRYPTION_INFO 2 9: MDC (SEIPDv1), AES-256.
			for _, want := range []string{"[GNUPG:] DECRYPTION_INFO 2 9 ", "[GNUPG:] DECRYPTION_OKAY", "[GNUPG:] GOODSIG", "[GNUPG:] VALIDSIG " + f.gw25519FP, "[GNUPG:] GOODMDC"} {
				if !strings.Contains(status, want) {
					t.Errorf("gpg status lacks %q:\n%s", want, status)
				}
			}
		})
	}
}

// TestSignEncryptForcesSEIPDv1 uses a v4 recipient key that advertises
// SEIPDv2: go-crypto alone would send AEAD, which GnuPG 2.2 cannot read.
func TestSignEncryptForcesSEIPDv1(t *testing.T) {
	f := getFixtures(t)
	e, err := openpgp.NewEntity("Modern", "", "modern@example.com", &packet.Config{
		Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519, AEADConfig: &packet.AEADConfig{},
	})
	if err != nil {
		t.Fatal(err)
	}
	modern, err := pgpcrypto.NewKeyFromEntity(e)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := modern.ToPublic()
	if err != nil {
		t.Fatal(err)
	}
	// Control: plain gopenpgp encryption to this key uses SEIPDv2.
	h, err := pgpcrypto.PGPWithProfile(outboundProfile()).Encryption().Recipient(pub).New()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := h.Encrypt([]byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	arm, err := msg.ArmorBytes()
	if err != nil {
		t.Fatal(err)
	}
	if seipd, _, _ := packetsOf(t, arm); len(seipd) != 1 || seipd[0] != 2 {
		t.Fatalf("control: gopenpgp used %v, expected SEIPDv2 for an AEAD-advertising key", seipd)
	}

	var out bytes.Buffer
	if err := SignEncrypt(&out, bytes.NewReader(eightBit), f.gw25519, []*pgpcrypto.Key{pub}, false); err != nil {
		t.Fatal(err)
	}
	if seipd, versions, _ := packetsOf(t, out.Bytes()); len(seipd) != 1 || seipd[0] != 1 || versions[0] != 3 {
		t.Errorf("SignEncrypt used data packets %v, PKESK versions %v; want SEIPDv1 and v3", seipd, versions)
	}
	// The key itself still advertises SEIPDv2 (v1View does not modify it).
	if sig, _ := pub.GetEntity().PrimarySelfSignature(time.Now(), nil); sig == nil || !sig.SEIPDv2 {
		t.Error("recipient key was modified")
	}
	// gpg 2.2 reads it with that key.
	sec, err := modern.Serialize()
	if err != nil {
		t.Fatal(err)
	}
	f.gpg.mustRun(t, sec, "--import")
	plain, status, err := f.gpg.run(out.Bytes(), "--decrypt")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(plain, eightBit) || !strings.Contains(status, "DECRYPTION_OKAY") || !strings.Contains(status, "GOODSIG") {
		t.Errorf("gpg decrypt = %q\n%s", plain, status)
	}
}

func TestSignEncryptRoundTrip(t *testing.T) {
	f := getFixtures(t)
	var out bytes.Buffer
	if err := SignEncrypt(&out, bytes.NewReader(eightBit), f.gw25519, []*pgpcrypto.Key{f.gwRSA}, true); err != nil {
		t.Fatal(err)
	}
	pt, err := Decrypt(&out, f.gateway, lookupOf(t, f.gw25519), time.Now().Add(time.Minute), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	if !bytes.Equal(readAll(t, pt), eightBit) || pt.DecryptedWith != f.gwRSAFP {
		t.Errorf("round trip: decrypted with %s", pt.DecryptedWith)
	}
	if pt.Signature.Status != StatusValid || pt.Signature.KeyFingerprint != f.gw25519FP {
		t.Errorf("round trip signature = %+v", pt.Signature)
	}
	// Unusable keys are refused up front.
	expired := goKey(t, "Old", "old@example.com", time.Now().Add(-48*time.Hour), time.Hour)
	if err := SignEncrypt(&out, strings.NewReader("x"), f.gw25519, []*pgpcrypto.Key{expired}, false); err == nil {
		t.Error("SignEncrypt to an expired key succeeded")
	}
	if err := SignEncrypt(&out, strings.NewReader("x"), f.gw25519, nil, false); err == nil {
		t.Error("SignEncrypt without recipients succeeded")
	}
}

func TestSignDetachedGPG(t *testing.T) {
	f := getFixtures(t)
	crlf := []byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nGr=C3=BC=C3=9Fe=20\r\nFrom me\r\n")
	dir := t.TempDir()
	dataFile := filepath.Join(dir, "data")
	if err := os.WriteFile(dataFile, crlf, 0o600); err != nil {
		t.Fatal(err)
	}
	for name, in := range map[string][]byte{"CRLF": crlf, "LF": bytes.ReplaceAll(crlf, []byte("\r\n"), []byte("\n"))} {
		var sig bytes.Buffer
		micalg, err := SignDetached(&sig, bytes.NewReader(in), f.gw25519)
		if err != nil {
			t.Fatal(err)
		}
		if micalg != "pgp-sha256" {
			t.Errorf("%s: micalg = %q", name, micalg)
		}
		if !regexp.MustCompile(`^-----BEGIN PGP SIGNATURE-----\n\n([A-Za-z0-9+/=]+\n)+-----END PGP SIGNATURE-----\n$`).Match(sig.Bytes()) {
			t.Errorf("%s: signature block:\n%s", name, sig.Bytes())
		}
		sigFile := filepath.Join(dir, name+".asc")
		if err := os.WriteFile(sigFile, sig.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		// gpg verifies over the CRLF entity that goes on the wire.
		_, status, err := f.gpg.run(nil, "--verify", sigFile, dataFile)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !strings.Contains(status, "[GNUPG:] GOODSIG") || !strings.Contains(status, "[GNUPG:] VALIDSIG "+f.gw25519FP) {
			t.Errorf("%s: gpg status:\n%s", name, status)
		}
		if res := VerifyDetached(bytes.NewReader(crlf), sig.Bytes(), lookupOf(t, f.gw25519), time.Now().Add(time.Minute)); res.Status != StatusValid {
			t.Errorf("%s: own verification = %+v", name, res)
		}
	}
}

// TestConcurrentUse shares prepared keys between goroutines; run with
// -race it proves Prepare leaves go-crypto's lazy caches read-only.
func TestConcurrentUse(t *testing.T) {
	f := getFixtures(t)
	var enc, encRSA, sig bytes.Buffer
	if err := SignEncrypt(&enc, bytes.NewReader(eightBit), f.gw25519, []*pgpcrypto.Key{f.gw25519}, false); err != nil {
		t.Fatal(err)
	}
	if err := SignEncrypt(&encRSA, bytes.NewReader(eightBit), f.gw25519, []*pgpcrypto.Key{f.gwRSA}, true); err != nil {
		t.Fatal(err)
	}
	if _, err := SignDetached(&sig, bytes.NewReader(eightBit), f.gw25519); err != nil {
		t.Fatal(err)
	}
	lookup := lookupOf(t, f.gw25519, f.sender)
	now := time.Now().Add(time.Minute)
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, m := range [][]byte{enc.Bytes(), encRSA.Bytes()} {
				pt, err := Decrypt(bytes.NewReader(m), f.gateway, lookup, now, Limits{})
				if err != nil || pt.Signature.Status != StatusValid {
					t.Errorf("concurrent Decrypt: %v", err)
					return
				}
				pt.Close()
			}
			if r := VerifyDetached(bytes.NewReader(eightBit), sig.Bytes(), lookup, now); r.Status != StatusValid {
				t.Errorf("concurrent VerifyDetached: %+v", r)
			}
			var out bytes.Buffer
			if err := SignEncrypt(&out, bytes.NewReader(eightBit), f.gw25519, []*pgpcrypto.Key{f.sender, f.gwRSA}, false); err != nil {
				t.Errorf("concurrent SignEncrypt: %v", err)
			}
		}()
	}
	wg.Wait()
}
