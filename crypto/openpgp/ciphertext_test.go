package openpgp

import (
	"bytes"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// secretText is the plaintext the leak cases try to carry in clear.
const secretText = "Dear Bob, the merger is on. Nobody may know before Monday."

// armorOf armors packets as a PGP MESSAGE.
func armorOf(t *testing.T, bin []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, err := armor.Encode(&b, "PGP MESSAGE", nil)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(bin)
	w.Close()
	return b.Bytes()
}

// newPacket frames body as a new-format packet with a five-octet length.
func newPacket(tag byte, body []byte) []byte {
	n := len(body)
	return append([]byte{0xc0 | tag, 255, byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)}, body...)
}

// TestIsCiphertext: real ciphertext passes; plaintext beside the
// encrypted packet (where go-crypto's armor and packet readers skip
// data) or inside it after the first 64 KiB does not. The leak cases were
// found by FuzzIsCiphertext (armor after the checksum) and by writing its
// properties (unknown packets, late plaintext); before the fix each was
// accepted as "already encrypted" and sent as it is under `required`.
func TestIsCiphertext(t *testing.T) {
	kr := must(fuzzKeys())
	k := must(kr.GetKey(0))
	var enc bytes.Buffer
	if err := SignEncrypt(&enc, strings.NewReader(secretText), k, []*pgpcrypto.Key{k}, false); err != nil {
		t.Fatal(err)
	}
	armored := enc.Bytes()
	blk, err := armor.Decode(bytes.NewReader(armored))
	if err != nil {
		t.Fatal(err)
	}
	bin := must(io.ReadAll(blk.Body))
	// The session key packet alone, and a SEIPD packet whose body is 64
	// KiB of random bytes and then the secret.
	_, _, keyLen, ok := framePacket(bin)
	if !ok {
		t.Fatal("cannot frame the session key packet")
	}
	random := make([]byte, 64<<10)
	rand.Read(random)
	lateText := append(bytes.Clone(bin[:keyLen]), newPacket(tagSEIPD, append(append([]byte{1}, random...), strings.Repeat(secretText+"\r\n", 40)...))...)
	// Text in the first window: a SEIPD packet whose content is text.
	earlyText := append(bytes.Clone(bin[:keyLen]), newPacket(tagSEIPD, append([]byte{1}, strings.Repeat(secretText+"\r\n", 40)...))...)
	allRandom := append(bytes.Clone(bin[:keyLen]), newPacket(tagSEIPD, append(append([]byte{1}, random...), random[:4096]...))...)
	unknown := newPacket(61, []byte(secretText))
	// A PKESK packet (v3, a key ID, RSA) whose "encrypted key" is text.
	textKey := newPacket(tagPKESK, append([]byte{3, 1, 2, 3, 4, 5, 6, 7, 8, 1, 0x08, 0x00}, strings.Repeat(secretText, 8)...))
	marker := newPacket(10, []byte("PGP"))

	end := bytes.LastIndex(armored, []byte(armorEndMsg))
	withChecksum := bytes.Clone(armored)
	if !regexp.MustCompile(`\n=[A-Za-z0-9+/]{4}\r?\n-----END`).Match(armored) {
		withChecksum = append(append(bytes.Clone(armored[:end]), "=AAAA\n"...), armored[end:]...)
		end += 6
	}
	afterChecksum := append(append(bytes.Clone(withChecksum[:end]), secretText+"\n"...), withChecksum[end:]...)
	header := func(h string) []byte {
		return bytes.Replace(armored, []byte(armorBeginMsg+"\n"), []byte(armorBeginMsg+"\n"+h+"\n"), 1)
	}

	// The first two lines of base64 as one.
	first := bytes.Index(armored, []byte("\n\n")) + 2
	nl := first + bytes.IndexByte(armored[first:], '\n')
	longLine := append(bytes.Clone(armored[:nl]), armored[nl+1:]...)
	if nl-first+bytes.IndexByte(armored[nl+1:], '\n') <= 76 {
		t.Fatal("the armor's lines are too short to make a long one")
	}

	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"armored", armored, true},
		{"armored, CRLF", bytes.ReplaceAll(armored, []byte("\n"), []byte("\r\n")), true},
		{"armored, checksum", withChecksum, true},
		{"binary", bin, true},
		{"SEIPD random past 64 KiB", allRandom, true},
		{"armor header Comment", header("Comment: https://www.enigmail.net/"), true},
		{"armor header Version", header("Version: GnuPG v2"), true},

		{"text after the checksum line", afterChecksum, false},
		{"unknown armor header", header("Subject: " + secretText), false},
		{"armor header over 76 characters", header("Comment: " + secretText + secretText), false},
		{"no empty line after BEGIN", bytes.Replace(armored, []byte(armorBeginMsg+"\n\n"), []byte(armorBeginMsg+"\n"), 1), false},
		{"unknown packet after", append(bytes.Clone(bin), unknown...), false},
		{"unknown packet before", append(bytes.Clone(unknown), bin...), false},
		{"unknown packet after, armored", armorOf(t, append(bytes.Clone(bin), unknown...)), false},
		{"session key packet holding text", append(bytes.Clone(textKey), bin...), false},
		{"session key packet over 4 KiB", append(newPacket(tagPKESK, random[:5000]), bin...), false},
		{"marker packet", append(bytes.Clone(marker), bin...), false},
		{"SEIPD with text after 64 KiB", lateText, false},
		{"SEIPD of text", earlyText, false},
		{"base64 line over 76 characters", longLine, false},
		{"session keys only", bin[:keyLen], false},
		{"truncated", bin[:len(bin)-1], false},
		{"trailing byte", append(bytes.Clone(bin), 0), false},
	} {
		if got := IsCiphertext(tc.data); got != tc.want {
			t.Errorf("%s: IsCiphertext = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestIsCiphertextCorpus: the strict reading still accepts what
// Thunderbird and GnuPG send.
func TestIsCiphertextCorpus(t *testing.T) {
	dir := findCorpus(t, filepath.Join("thunderbird", "openpgp", "eml"))
	files, _ := filepath.Glob(filepath.Join(dir, "*encrypt*.eml"))
	n := 0
	for _, file := range files {
		data := must(os.ReadFile(file))
		i := bytes.Index(data, []byte(armorBeginMsg))
		j := bytes.Index(data, []byte(armorEndMsg))
		if i < 0 || j < i {
			continue
		}
		n++
		if !IsCiphertext(data[i : j+len(armorEndMsg)]) {
			t.Errorf("%s: the armored message is not ciphertext", filepath.Base(file))
		}
	}
	if n < 4 {
		t.Fatalf("only %d armored messages in %s", n, dir)
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}
