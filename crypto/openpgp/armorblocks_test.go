package openpgp

import (
	"bytes"
	"strings"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// armored encodes body as go-crypto does (with a CRC-24 line when sum).
func armored(t testing.TB, typ string, body []byte, sum bool) []byte {
	t.Helper()
	var b bytes.Buffer
	var w interface {
		Write([]byte) (int, error)
		Close() error
	}
	var err error
	if sum {
		w, err = armor.EncodeWithChecksumOption(&b, typ, map[string]string{"Comment": "test"}, true)
	} else {
		w, err = armor.Encode(&b, typ, nil)
	}
	if err != nil {
		t.Fatal(err)
	}
	w.Write(body)
	w.Close()
	return b.Bytes()
}

func TestDecodeArmorBlocks(t *testing.T) {
	k, err := pgpcrypto.PGP().KeyGeneration().AddUserId("A", "a@example.org").New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.GetPublicKey()
	sec, _ := k.Serialize()
	one := armored(t, "PGP PUBLIC KEY BLOCK", pub, true)
	two := armored(t, "PGP PRIVATE KEY BLOCK", sec, false)
	// Two blocks with text around them, as files concatenated by hand.
	data := append(append(append([]byte("Alice's key:\n"), one...), "\nand the secret one\n"...), two...)
	blocks, err := DecodeArmorBlocks(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(blocks) != 2 || blocks[0].Type != "PGP PUBLIC KEY BLOCK" || !bytes.Equal(blocks[0].Body, pub) ||
		blocks[1].Type != "PGP PRIVATE KEY BLOCK" || !bytes.Equal(blocks[1].Body, sec) {
		t.Fatalf("decoded %d blocks, not the two written", len(blocks))
	}
	if !IsArmored(data) || IsArmored(pub) {
		t.Error("IsArmored is wrong")
	}
	// A block without headers and without the blank line is read too.
	noBlank := bytes.Replace(armored(t, "PGP PUBLIC KEY BLOCK", pub, false), []byte("-----\n\n"), []byte("-----\n"), 1)
	if b, err := DecodeArmorBlocks(noBlank); err != nil || !bytes.Equal(b[0].Body, pub) {
		t.Errorf("block without blank line: %v", err)
	}

	// A damaged base64 character is caught by the checksum.
	i := bytes.Index(one, []byte("\n\n")) + 10
	bad := append([]byte(nil), one...)
	if bad[i] == 'A' {
		bad[i] = 'B'
	} else {
		bad[i] = 'A'
	}
	for _, tc := range []struct {
		name string
		in   []byte
		want string
	}{
		{"checksum", append(append([]byte(nil), two...), bad...), "armor block 2: checksum mismatch"},
		{"no END line", one[:len(one)-30], "armor block 1 (PGP PUBLIC KEY BLOCK): truncated, no END line"},
		{"bad checksum line", bytes.Replace(one, []byte("\n="), []byte("\n=!!!!"), 1), "armor block 1: "},
		{"no block", []byte("hello"), "no armor block found"},
		{"header only", []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----"), "truncated header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := DecodeArmorBlocks(tc.in); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
		})
	}
}

// FuzzDecodeArmorBlocks: the key-file armor decoder never panics.
func FuzzDecodeArmorBlocks(f *testing.F) {
	f.Add([]byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmDMEZ\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----\n"))
	f.Add(armored(f, "PGP MESSAGE", []byte("hello world"), true))
	f.Fuzz(func(t *testing.T, data []byte) {
		DecodeArmorBlocks(data)
	})
}
