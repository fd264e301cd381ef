package openpgp

import (
	"bytes"
	"encoding/base64"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// FuzzIsCiphertext: what IsCiphertext accepts as "already encrypted" (so
// that outbound mail is sent as it is) is complete ciphertext and nothing
// else. It must agree with Inspect, must turn false when text is put
// before or after it, and every byte of an armored form must be armor
// structure or base64 of the packets: no line the armor decoder skips
// over, where plaintext could travel in clear.
func FuzzIsCiphertext(f *testing.F) {
	kr := fuzzRing(f)
	seeds(f, kr)
	k, _ := kr.GetKey(0)
	var enc bytes.Buffer
	if err := SignEncrypt(&enc, bytes.NewReader(eightBit), k, []*pgpcrypto.Key{k}, false); err != nil {
		f.Fatal(err)
	}
	if blk, err := armor.Decode(bytes.NewReader(enc.Bytes())); err == nil {
		var bin bytes.Buffer
		if _, err := bin.ReadFrom(blk.Body); err == nil {
			f.Add(bin.Bytes()) // binary packets
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		start := time.Now()
		ok := IsCiphertext(data)
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("IsCiphertext took %v on %d bytes", d, len(data))
		}
		if !ok {
			return
		}
		if info, err := Inspect(data); err != nil || info.Kind != KindEncrypted {
			t.Errorf("IsCiphertext, but Inspect = %+v, %v", info, err)
		}
		for _, junk := range []string{"plain text", "\x00", "-----END PGP MESSAGE-----"} {
			if IsCiphertext(append([]byte(junk+"\n"), data...)) {
				t.Errorf("ciphertext with %q before it is still ciphertext", junk)
			}
			if IsCiphertext(append(bytes.Clone(data), "\n"+junk...)) {
				t.Errorf("ciphertext with %q after it is still ciphertext", junk)
			}
		}
		if isArmored(data) {
			if why := armorLeftover(data); why != "" {
				t.Errorf("IsCiphertext accepts armor with %s", why)
			}
		}
	})
}

// armorLeftover checks an armored message strictly (RFC 9580 section
// 6.2): the BEGIN line, header lines up to an empty line, base64 lines,
// an optional checksum, the END line. It returns what does not fit.
func armorLeftover(data []byte) string {
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	for i := range lines {
		lines[i] = bytes.TrimRight(lines[i], " \t\r")
	}
	if len(lines) < 3 || string(lines[0]) != "-----BEGIN PGP MESSAGE-----" || string(lines[len(lines)-1]) != "-----END PGP MESSAGE-----" {
		return "no exact BEGIN and END lines"
	}
	body := lines[1 : len(lines)-1]
	// Headers: "Key: value" lines up to the first empty line.
	i := 0
	for ; i < len(body) && len(body[i]) > 0; i++ {
		if !bytes.Contains(body[i], []byte(": ")) {
			break
		}
	}
	if i < len(body) && len(body[i]) == 0 {
		i++
	} else {
		i = 0 // no header block: the data begins at once
	}
	var b64 []byte
	for j, l := range body[i:] {
		if len(l) > 0 && l[0] == '=' && j == len(body[i:])-1 && len(l) == 5 {
			break // checksum
		}
		for _, c := range l {
			if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
				return "a line that is not base64: " + string(l)
			}
		}
		b64 = append(b64, l...)
	}
	if _, err := base64.StdEncoding.DecodeString(string(b64)); err != nil {
		return "data that is not base64: " + err.Error()
	}
	return ""
}
