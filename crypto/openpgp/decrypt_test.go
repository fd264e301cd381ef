package openpgp

import (
	"bytes"
	"crypto/aes"
	"crypto/rand"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// eightBit is a body with non-ASCII UTF-8, Latin-1 bytes, CRLF and LF,
// trailing spaces, a "From " line and a NUL: it must come back unchanged.
var eightBit = []byte("Grüße aus Köln \r\nFrom the gateway\n\xe9t\xe9 \x00\xff\r\n-- \r\nend")

func TestDecryptGPG(t *testing.T) {
	f := getFixtures(t)
	now := time.Now()
	tests := []struct {
		name     string
		to       string // gpg recipient
		hidden   bool
		sign     bool
		armor    bool
		wantFP   string
		wantSign Status
	}{
		{"25519 signed armored", f.gatewayUID, false, true, true, f.gw25519FP, StatusValid},
		{"25519 signed binary", f.gatewayUID, false, true, false, f.gw25519FP, StatusValid},
		{"25519 unsigned armored", f.gatewayUID, false, false, true, f.gw25519FP, StatusNone},
		{"25519 unsigned binary", f.gatewayUID, false, false, false, f.gw25519FP, StatusNone},
		{"rsa3072 signed armored", f.rsaUID, false, true, true, f.gwRSAFP, StatusValid},
		{"rsa3072 signed binary", f.rsaUID, false, true, false, f.gwRSAFP, StatusValid},
		{"rsa3072 unsigned armored", f.rsaUID, false, false, true, f.gwRSAFP, StatusNone},
		{"rsa3072 unsigned binary", f.rsaUID, false, false, false, f.gwRSAFP, StatusNone},
		{"25519 hidden signed", f.gatewayUID, true, true, true, f.gw25519FP, StatusValid},
		{"rsa3072 hidden unsigned", f.rsaUID, true, false, false, f.gwRSAFP, StatusNone},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			args := []string{"--encrypt"}
			if tc.hidden {
				args = append(args, "--hidden-recipient", tc.to)
			} else {
				args = append(args, "--recipient", tc.to)
			}
			if tc.sign {
				args = append(args, "--sign", "--local-user", f.senderUID)
			}
			if tc.armor {
				args = append(args, "--armor")
			}
			msg := f.gpg.mustRun(t, eightBit, args...)
			info, err := Inspect(msg)
			if err != nil || info.Kind != KindEncrypted || info.Armored != tc.armor || info.Hidden != tc.hidden {
				t.Errorf("Inspect = %+v, %v; want encrypted, armored=%v hidden=%v", info, err, tc.armor, tc.hidden)
			}
			dir, checkEmpty := spoolDir(t)
			pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, now, Limits{SpoolDir: dir})
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if got := readAll(t, pt); !bytes.Equal(got, eightBit) {
				t.Errorf("plaintext = %q, want %q", got, eightBit)
			}
			if pt.Size != int64(len(eightBit)) {
				t.Errorf("Size = %d, want %d", pt.Size, len(eightBit))
			}
			if pt.DecryptedWith != tc.wantFP {
				t.Errorf("DecryptedWith = %s, want %s", pt.DecryptedWith, tc.wantFP)
			}
			sig := pt.Signature
			if sig.Status != tc.wantSign {
				t.Errorf("signature = %+v, want status %v", sig, tc.wantSign)
			}
			if tc.sign {
				if sig.KeyFingerprint != f.senderFP {
					t.Errorf("signer fingerprint = %s, want %s", sig.KeyFingerprint, f.senderFP)
				}
				if diff := cmp.Diff([]string{"sender@example.net"}, sig.SignerAddresses); diff != "" {
					t.Errorf("signer addresses (-want +got):\n%s", diff)
				}
				if !strings.HasPrefix(sig.HashAlgo, "pgp-sha") {
					t.Errorf("HashAlgo = %q", sig.HashAlgo)
				}
			}
			if err := pt.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := pt.Open(); err == nil {
				t.Error("Open after Close succeeded")
			}
			checkEmpty()
		})
	}
}

func TestDecryptUnknownSigner(t *testing.T) {
	f := getFixtures(t)
	msg := f.gpg.mustRun(t, eightBit, "--encrypt", "--sign", "--local-user", f.senderUID, "--recipient", f.gatewayUID)
	dir, checkEmpty := spoolDir(t)
	for name, lookup := range map[string]KeyLookup{"nil lookup": nil, "empty ring": KeyRingLookup(nil)} {
		pt, err := Decrypt(bytes.NewReader(msg), f.gateway, lookup, time.Now(), Limits{SpoolDir: dir})
		if err != nil {
			t.Fatalf("%s: Decrypt: %v", name, err)
		}
		if pt.Signature.Status != StatusUntrusted || pt.Signature.KeyFingerprint != "" || pt.Signature.KeyID == 0 {
			t.Errorf("%s: signature = %+v, want untrusted with key ID and no fingerprint", name, pt.Signature)
		}
		pt.Close()
	}
	checkEmpty()
}

// flipInData flips one bit inside the last packet (the encrypted data) of
// a binary OpenPGP message, far from its start.
func flipInData(msg []byte, fromEnd int) []byte {
	out := bytes.Clone(msg)
	out[len(out)-fromEnd] ^= 0x01
	return out
}

func TestDecryptTampered(t *testing.T) {
	f := getFixtures(t)
	// 1 MiB of plaintext, so that go-crypto streams most of it before the
	// MDC at the end is checked.
	big := bytes.Repeat([]byte("confidential line of plaintext\r\n"), 1<<15)
	for _, signed := range []bool{false, true} {
		args := []string{"--encrypt", "--compress-algo", "none", "--recipient", f.gatewayUID}
		if signed {
			args = append(args, "--sign", "--local-user", f.senderUID)
		}
		msg := f.gpg.mustRun(t, big, args...)
		for _, off := range []int{200, len(big) / 2, 30} {
			dir, checkEmpty := spoolDir(t)
			bad := flipInData(msg, off)
			pt, err := Decrypt(bytes.NewReader(bad), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir})
			if !errors.Is(err, ErrDecrypt) || err != ErrDecrypt || pt != nil {
				t.Errorf("signed=%v flip at -%d: Decrypt = %v, %v; want exactly ErrDecrypt", signed, off, pt, err)
			}
			checkEmpty()
		}
		// The untampered message decrypts (the test can fail for the right reason).
		dir, _ := spoolDir(t)
		pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir})
		if err != nil {
			t.Fatalf("untampered: %v", err)
		}
		if !bytes.Equal(readAll(t, pt), big) {
			t.Error("untampered plaintext differs")
		}
		pt.Close()
	}
}

// TestDecryptMemorySpool: with Limits.Spool the plaintext stays in memory
// up to the spool's threshold and goes to an unlinked file beyond it, and
// either way a tampered message gives exactly ErrDecrypt and no plaintext.
func TestDecryptMemorySpool(t *testing.T) {
	f := getFixtures(t)
	big := bytes.Repeat([]byte("confidential line of plaintext\r\n"), 1<<15) // 1 MiB
	msg := f.gpg.mustRun(t, big, "--encrypt", "--sign", "--compress-algo", "none",
		"--recipient", f.gatewayUID, "--local-user", f.senderUID)
	for _, tc := range []struct {
		threshold int64
		onDisk    bool
	}{{1 << 20, false}, {64 << 10, true}} {
		dir, checkEmpty := spoolDir(t)
		sp, err := spool.Open(dir, tc.threshold)
		if err != nil {
			t.Fatal(err)
		}
		lim := Limits{Spool: sp}
		for _, off := range []int{200, len(big) / 2, 30} {
			pt, err := Decrypt(bytes.NewReader(flipInData(msg, off)), f.gateway, f.senders, time.Now(), lim)
			if err != ErrDecrypt || pt != nil {
				t.Errorf("threshold %d, flip at -%d: Decrypt = %v, %v; want exactly ErrDecrypt", tc.threshold, off, pt, err)
			}
		}
		pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), lim)
		if err != nil {
			t.Fatalf("threshold %d: %v", tc.threshold, err)
		}
		if got := pt.buf.OnDisk(); got != tc.onDisk {
			t.Errorf("threshold %d: plaintext on disk = %v, want %v", tc.threshold, got, tc.onDisk)
		}
		if pt.Signature.Status != StatusValid || !bytes.Equal(readAll(t, pt), big) {
			t.Errorf("threshold %d: signature %v, plaintext equal %v", tc.threshold, pt.Signature.Status, bytes.Equal(readAll(t, pt), big))
		}
		if all, err := io.ReadAll(io.NewSectionReader(pt, 0, pt.Size)); err != nil || !bytes.Equal(all, big) {
			t.Errorf("threshold %d: ReadAt: %v, equal %v", tc.threshold, err, bytes.Equal(all, big))
		}
		pt.Close()
		if _, err := pt.Open(); err == nil {
			t.Error("Open after Close succeeded")
		}
		if _, err := pt.ReadAt(make([]byte, 1), 0); err == nil {
			t.Error("ReadAt after Close succeeded")
		}
		checkEmpty()
	}
}

func TestDecryptNotForUs(t *testing.T) {
	f := getFixtures(t)
	tests := []struct {
		name string
		args []string
		want error
	}{
		{"other recipient", []string{"--encrypt", "--recipient", f.other}, ErrNotForUs},
		{"other recipient armored", []string{"--encrypt", "--armor", "--recipient", f.other}, ErrNotForUs},
		// A hidden recipient could be us: every gateway key is tried, and
		// the failure is the uniform one.
		{"hidden other recipient", []string{"--encrypt", "--hidden-recipient", f.other}, ErrDecrypt},
		{"symmetric only", []string{"--symmetric", "--passphrase", "secret"}, ErrNotForUs},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			msg := f.gpg.mustRun(t, eightBit, tc.args...)
			dir, checkEmpty := spoolDir(t)
			pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir})
			if err != tc.want || pt != nil {
				t.Errorf("Decrypt = %v, %v; want %v", pt, err, tc.want)
			}
			checkEmpty()
		})
	}
	// Our key among others: decrypts.
	msg := f.gpg.mustRun(t, eightBit, "--encrypt", "--recipient", f.other, "--recipient", f.rsaUID)
	pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{})
	if err != nil {
		t.Fatalf("other+gateway: %v", err)
	}
	if pt.DecryptedWith != f.gwRSAFP {
		t.Errorf("DecryptedWith = %s, want %s", pt.DecryptedWith, f.gwRSAFP)
	}
	pt.Close()
}

func TestDecryptNotEncrypted(t *testing.T) {
	f := getFixtures(t)
	msg := f.gpg.mustRun(t, eightBit, "--sign", "--local-user", f.senderUID)
	_, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{})
	if err != ErrNotEncrypted {
		t.Errorf("Decrypt(signed only) = %v, want ErrNotEncrypted", err)
	}
	for _, junk := range [][]byte{nil, []byte("hello"), []byte("-----BEGIN PGP MESSAGE-----\n\nAAAA\n-----END PGP MESSAGE-----\n"), {0x85, 0x01}} {
		if _, err := Decrypt(bytes.NewReader(junk), f.gateway, f.senders, time.Now(), Limits{}); err != ErrDecrypt {
			t.Errorf("Decrypt(%q) = %v, want ErrDecrypt", junk, err)
		}
	}
}

// TestDecryptNoMDC builds a Symmetrically Encrypted Data packet (tag 9,
// no integrity protection) for the gateway key: it must be refused.
func TestDecryptNoMDC(t *testing.T) {
	f := getFixtures(t)
	var lit bytes.Buffer
	lw, err := packet.SerializeLiteral(nopCloser{&lit}, true, "", 0)
	if err != nil {
		t.Fatal(err)
	}
	lw.Write(eightBit)
	lw.Close()

	sessionKey := make([]byte, 32)
	rand.Read(sessionKey)
	var msg bytes.Buffer
	encKey, ok := f.gw25519.GetEntity().EncryptionKey(time.Now(), nil)
	if !ok {
		t.Fatal("no encryption key")
	}
	if err := packet.SerializeEncryptedKeyAEAD(&msg, encKey.PublicKey, packet.CipherAES256, false, sessionKey, nil); err != nil {
		t.Fatal(err)
	}
	block, _ := aes.NewCipher(sessionKey)
	randData := make([]byte, block.BlockSize())
	rand.Read(randData)
	stream, prefix := packet.NewOCFBEncrypter(block, randData, packet.OCFBResync)
	body := append(prefix, make([]byte, lit.Len())...)
	stream.XORKeyStream(body[len(prefix):], lit.Bytes())
	// Old-format header, tag 9, four-octet length.
	msg.Write([]byte{0x80 | 9<<2 | 2, byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))})
	msg.Write(body)

	// Sanity: the packet is well formed (go-crypto reads it when told to
	// accept unauthenticated data), so the refusal below is about the MDC.
	insecure := &packet.Config{InsecureAllowUnauthenticatedMessages: true}
	md, err := openpgp.ReadMessage(bytes.NewReader(msg.Bytes()), openpgp.EntityList{f.gw25519.GetEntity()}, nil, insecure)
	if err != nil {
		t.Fatalf("sanity read: %v", err)
	}
	got, err := io.ReadAll(md.UnverifiedBody)
	if err != nil || !bytes.Equal(got, eightBit) {
		t.Fatalf("sanity read = %q, %v", got, err)
	}

	dir, checkEmpty := spoolDir(t)
	pt, err := Decrypt(bytes.NewReader(msg.Bytes()), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir})
	if err != ErrDecrypt || pt != nil {
		t.Errorf("Decrypt(no MDC) = %v, %v; want ErrDecrypt", pt, err)
	}
	checkEmpty()
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

func TestDecryptCompressionBomb(t *testing.T) {
	f := getFixtures(t)
	zeros := make([]byte, 8<<20)
	msg := f.gpg.mustRun(t, zeros, "--encrypt", "--compress-algo", "zlib", "-z", "9", "--recipient", f.gatewayUID)
	if len(msg) > 200<<10 {
		t.Fatalf("message is %d bytes, expected a small compressed message", len(msg))
	}
	dir, checkEmpty := spoolDir(t)
	pt, err := Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir, MaxDecompressed: 1 << 20})
	if err != ErrDecrypt || pt != nil {
		t.Errorf("Decrypt(8 MiB of zeros, limit 1 MiB) = %v, %v; want ErrDecrypt", pt, err)
	}
	checkEmpty()
	pt, err = Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir, MaxDecompressed: 16 << 20})
	if err != nil {
		t.Fatalf("Decrypt with a 16 MiB limit: %v", err)
	}
	if pt.Size != int64(len(zeros)) {
		t.Errorf("Size = %d", pt.Size)
	}
	pt.Close()
	// The same cap applies to inline-signed messages.
	signed := f.gpg.mustRun(t, zeros, "--sign", "--local-user", f.senderUID, "-z", "9")
	if _, err := VerifyInline(bytes.NewReader(signed), f.senders, time.Now(), Limits{SpoolDir: dir, MaxDecompressed: 1 << 20}); err != ErrTooLarge {
		t.Errorf("VerifyInline(bomb) = %v, want ErrTooLarge", err)
	}
	checkEmpty()
}

func TestDecryptReadError(t *testing.T) {
	f := getFixtures(t)
	msg := f.gpg.mustRun(t, bytes.Repeat(eightBit, 1000), "--encrypt", "--compress-algo", "none", "--recipient", f.gatewayUID)
	boom := errors.New("disk on fire")
	r := io.MultiReader(bytes.NewReader(msg[:len(msg)/2]), iotest.ErrReader(boom))
	dir, checkEmpty := spoolDir(t)
	_, err := Decrypt(r, f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir})
	if !errors.Is(err, boom) || errors.Is(err, ErrDecrypt) {
		t.Errorf("Decrypt(failing reader) = %v; want the I/O error, not ErrDecrypt", err)
	}
	checkEmpty()
	// An unusable spool directory is a local error too.
	_, err = Decrypt(bytes.NewReader(msg), f.gateway, f.senders, time.Now(), Limits{SpoolDir: dir + "/missing"})
	if err == nil || errors.Is(err, ErrDecrypt) {
		t.Errorf("Decrypt(missing spool dir) = %v; want a spool error", err)
	}
}

// goKey generates an Ed25519/X25519 v4 key at time created with the given
// lifetime (0: none).
func goKey(t testing.TB, name, email string, created time.Time, lifetime time.Duration) *pgpcrypto.Key {
	t.Helper()
	k, err := pgpcrypto.PGPWithProfile(profile.Default()).KeyGeneration().
		AddUserId(name, email).GenerationTime(created.Unix()).Lifetime(int32(lifetime / time.Second)).New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func lookupOf(t testing.TB, keys ...*pgpcrypto.Key) KeyLookup {
	t.Helper()
	kr, err := pgpcrypto.NewKeyRing(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if err := kr.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	return KeyRingLookup(kr)
}

// TestSignerKeyState covers expired and revoked signer keys, for embedded
// signatures (Decrypt) and detached ones (VerifyDetached).
func TestSignerKeyState(t *testing.T) {
	t0 := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	data := []byte("Subject: x\r\n\r\nsigned body\r\n")

	// A gateway key that existed at t0.
	gw := goKey(t, "Gateway", "gw@example.org", t0.Add(-2*time.Hour), 0)
	gateway, err := pgpcrypto.NewKeyRing(gw)
	if err != nil {
		t.Fatal(err)
	}
	expiring := goKey(t, "Expiring", "expiring@example.com", t0.Add(-time.Hour), 24*time.Hour)
	revoked := goKey(t, "Revoked", "revoked@example.com", t0.Add(-time.Hour), 0)
	fresh := goKey(t, "Fresh", "fresh@example.com", t0.Add(-time.Hour), 0)

	sign := func(k *pgpcrypto.Key) (enc, det []byte) {
		var b bytes.Buffer
		if err := signEncryptAt(&b, bytes.NewReader(data), k, []*pgpcrypto.Key{gw}, false, t0); err != nil {
			t.Fatal(err)
		}
		var d bytes.Buffer
		if _, err := signDetachedAt(&d, bytes.NewReader(data), k, t0); err != nil {
			t.Fatal(err)
		}
		return b.Bytes(), d.Bytes()
	}
	expEnc, expDet := sign(expiring)
	revEnc, revDet := sign(revoked)
	freshEnc, freshDet := sign(fresh)
	// Revoke after signing (superseded: the key was fine at signing time).
	if err := revoked.GetEntity().Revoke(packet.KeySuperseded, "superseded", &packet.Config{Time: func() time.Time { return t0.Add(time.Hour) }}); err != nil {
		t.Fatal(err)
	}
	lookup := lookupOf(t, expiring, revoked, fresh)

	tests := []struct {
		name     string
		enc, det []byte
		now      time.Time
		want     Status
		reason   string
		addr     string
	}{
		{"expiring, before expiry", expEnc, expDet, t0.Add(time.Hour), StatusValid, "", "expiring@example.com"},
		{"expiring, after expiry", expEnc, expDet, t0.Add(30 * time.Hour), StatusExpired, "key-expired", "expiring@example.com"},
		{"revoked, before revocation", revEnc, revDet, t0.Add(time.Minute), StatusValid, "", "revoked@example.com"},
		{"revoked, after revocation", revEnc, revDet, t0.Add(2 * time.Hour), StatusRevoked, "key-revoked", "revoked@example.com"},
		{"fresh", freshEnc, freshDet, t0.Add(2 * time.Hour), StatusValid, "", "fresh@example.com"},
		{"signature from the future", freshEnc, freshDet, t0.Add(-time.Hour), StatusBad, "signature-in-future", "fresh@example.com"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			pt, err := Decrypt(bytes.NewReader(tc.enc), gateway, lookup, tc.now, Limits{})
			if err != nil {
				t.Fatal(err)
			}
			defer pt.Close()
			if !bytes.Equal(readAll(t, pt), data) {
				t.Error("plaintext differs")
			}
			got := pt.Signature
			if got.Status != tc.want || got.Reason != tc.reason || len(got.SignerAddresses) != 1 || got.SignerAddresses[0] != tc.addr {
				t.Errorf("embedded: %+v; want %v/%q/%s", got, tc.want, tc.reason, tc.addr)
			}
			got = VerifyDetached(bytes.NewReader(data), tc.det, lookup, tc.now)
			if got.Status != tc.want || got.Reason != tc.reason || got.HashAlgo != "pgp-sha256" {
				t.Errorf("detached: %+v; want %v/%q", got, tc.want, tc.reason)
			}
		})
	}
}
