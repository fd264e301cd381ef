package openpgp

import (
	"bytes"
	"io"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/cryptmilter/cryptmilter/internal/entropy"
)

// maxCiphertext bounds what IsCiphertext reads.
const maxCiphertext = 256 << 20

// IsCiphertext reports whether data is exactly one complete OpenPGP
// encrypted message and nothing else: one armor block with only
// whitespace around it (or binary packets), holding public-key or
// symmetric-key encrypted session keys followed by exactly one
// integrity-protected encrypted data packet (SEIPD or AEAD) and the end of
// the data, whose contents look like ciphertext. Outbound mail that is
// "already encrypted" must pass this before it is sent as it is: a
// message that only claims to be encrypted, or carries plaintext beside
// or inside the encrypted packet, is encrypted again.
func IsCiphertext(data []byte) bool {
	var r io.Reader = bytes.NewReader(data)
	if isArmored(data) {
		t := bytes.TrimSpace(data)
		if !bytes.HasPrefix(t, []byte("-----BEGIN PGP MESSAGE-----")) || !bytes.HasSuffix(t, []byte("-----END PGP MESSAGE-----")) ||
			bytes.Count(t, []byte("-----BEGIN ")) != 1 || bytes.Count(t, []byte("-----END ")) != 1 {
			return false
		}
		blk, err := armor.Decode(bytes.NewReader(t))
		if err != nil || blk.Type != "PGP MESSAGE" {
			return false
		}
		r = blk.Body
	}
	pr := packet.NewReader(io.LimitReader(r, maxCiphertext))
	keys, encrypted := 0, false
	for {
		p, err := pr.Next()
		if err == io.EOF {
			return encrypted && keys > 0
		}
		if err != nil || encrypted {
			// Anything after the encrypted data packet (or a packet that
			// does not parse) is not ciphertext for the recipients.
			return false
		}
		var contents io.Reader
		switch p := p.(type) {
		case *packet.EncryptedKey, *packet.SymmetricKeyEncrypted:
			keys++
			continue
		case *packet.SymmetricallyEncrypted:
			if !p.IntegrityProtected {
				return false
			}
			contents = p.Contents
		case *packet.AEADEncrypted:
			contents = p.Contents
		default:
			return false
		}
		if keys == 0 {
			return false
		}
		var sample bytes.Buffer
		if _, err := io.Copy(&sample, io.LimitReader(contents, 64<<10)); err != nil {
			return false
		}
		if _, err := io.Copy(io.Discard, contents); err != nil {
			return false
		}
		if !entropy.LooksRandom(sample.Bytes()) {
			return false
		}
		encrypted = true
	}
}
