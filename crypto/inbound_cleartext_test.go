package crypto

import (
	"bytes"
	"regexp"
	"strings"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"

	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
)

// readCleartext and a detached check of the spooled text must decide
// what openpgp.VerifyCleartext decided on the block in memory (with
// go-crypto's clearsign.Decode), and show the same text. FuzzCleartext
// compares them on every block armorKind takes for cleartext-signed.

// cleartextSeeds returns cleartext-signed blocks: signed by a key of the
// lookup returned (so that the text is hashed), with and without
// dash-escaped lines, trailing blanks, LF line ends and armor headers,
// and damaged ones.
func cleartextSeeds(t testing.TB) ([]string, openpgp.KeyLookup) {
	pgp := pgpcrypto.PGPWithProfile(profile.Default())
	k, err := pgp.KeyGeneration().AddUserId("", "alice@example.net").New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, err := pgp.Sign().SigningKey(k).New()
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := pgpcrypto.NewKeyRing(k)
	var seeds []string
	for _, text := range []string{"Pay invoice 42 only.\n", "- dash\n-----BEGIN PGP MESSAGE-----x\ntrailing  \t\nFrom here\n", "caf\xc3\xa9\r\n\r\nend", ""} {
		b, err := signer.SignCleartext([]byte(text))
		if err != nil {
			t.Fatal(err)
		}
		block := string(b)
		seeds = append(seeds, block, strings.ReplaceAll(block, "\n", "\r\n"), " \r\n"+block+"\r\n\t\u00a0",
			strings.Replace(block, "-----BEGIN PGP SIGNATURE-----\n", "-----BEGIN PGP SIGNATURE-----\nComment: pay 666\n", 1),
			strings.Replace(block, "Pay invoice 42", "Pay invoice 43", 1),
			hashLine.ReplaceAllString(block, "${0}Hash: MD5, SHA256\n"),
			hashLine.ReplaceAllString(block, "Version: 1\n"),
			hashLine.ReplaceAllString(block, "${0}Comment: pay 666\n"),
			strings.Replace(block, "\n\n", "\n \t\n", 1))
	}
	seeds = append(seeds, armorBeginSigned+"\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBc\r\n"+armorEndSig,
		armorBeginSigned+"\n\nhi\n-----BEGIN PGP SIGNATURE-----\r\r\n"+armorEndSig)
	return seeds, openpgp.KeyRingLookup(kr)
}

// hashLine is the block's Hash armor header (whatever the digest).
var hashLine = regexp.MustCompile(`(?m)^Hash: [A-Z0-9]+\n`)

func TestCleartextReference(t *testing.T) {
	seeds, lookup := cleartextSeeds(t)
	for _, s := range seeds {
		checkCleartext(t, []byte(s), lookup)
	}
}

func FuzzCleartext(f *testing.F) {
	seeds, lookup := cleartextSeeds(f)
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkCleartext(t, data, lookup) })
}

func checkCleartext(t *testing.T, data []byte, lookup openpgp.KeyLookup) {
	t.Helper()
	if armorKind(bytes.NewReader(data)) != armorSigned {
		return
	}
	now := time.Now()
	block := bytes.TrimSpace(data)
	wantText, want, werr := openpgp.VerifyCleartext(block, lookup, now)

	var text bytes.Buffer
	cb, err := readCleartext(skipSpace(bytes.NewReader(data)), &text)
	var sig []byte
	if err == nil {
		sig, err = clearSignature(cb.sig)
	}
	var got openpgp.SigResult
	if err == nil {
		if got = openpgp.VerifyDetached(bytes.NewReader(text.Bytes()), sig, lookup, now); got.Status == openpgp.StatusBad && got.Reason == "malformed" {
			err = errClearFormat
		}
	}
	if (err != nil) != (werr != nil) {
		t.Fatalf("%q: stream %v, reference %v", data, err, werr)
	}
	if err != nil {
		return
	}
	if !bytes.Equal(text.Bytes(), wantText) {
		t.Fatalf("%q: text %q, reference %q", data, text.Bytes(), wantText)
	}
	if got.Status != want.Status || got.Reason != want.Reason || got.KeyID != want.KeyID {
		t.Fatalf("%q: verdict %+v, reference %+v", data, got, want)
	}
	// What is shown: the text part with CRLF line ends and the signature
	// block without its armor headers.
	shown := append(toCRLF(block[:cb.sigAt]), cleartextShown(cb.sig)...)
	wantShown := cleartextShown(block)
	if !bytes.Equal(shown, wantShown) {
		t.Fatalf("%q: shown %q, reference %q", data, shown, wantShown)
	}
	bare, _ := hasBareLF(bytes.NewReader(block[:cb.sigAt]))
	if changed := bare || !bytes.Equal(cleartextShown(cb.sig), cb.sig); changed != !bytes.Equal(wantShown, block) {
		t.Fatalf("%q: shown differs from the block: %v, reference %v", data, changed, !changed)
	}
}
