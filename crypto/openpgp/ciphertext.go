package openpgp

import (
	"bytes"
	"encoding/base64"
	"io"

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
// the data, whose contents look like ciphertext throughout. Outbound mail
// that is "already encrypted" must pass this before it is sent as it is:
// a message that only claims to be encrypted, or carries plaintext beside
// or inside the encrypted packet, is encrypted again.
//
// Where a reader would skip data, IsCiphertext refuses it: armor is read
// strictly (see strictArmor: nothing between the checksum and the END
// line, only RFC 9580 header keys), and the packets are framed here
// before go-crypto parses them, since its reader silently skips packets
// of unknown or unsupported types, where plaintext could travel.
func IsCiphertext(data []byte) bool {
	bin := data
	if isArmored(data) {
		var ok bool
		if bin, ok = strictArmor(data); !ok {
			return false
		}
	}
	if len(bin) > maxCiphertext || !sessionKeysThenData(bin) {
		return false
	}
	pr := packet.NewReader(bytes.NewReader(bin))
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
		if random, err := entropy.AllLookRandom(contents); err != nil || !random {
			return false
		}
		encrypted = true
	}
}

// OpenPGP packet tags (RFC 9580 section 5).
const (
	tagPKESK = 1
	tagSKESK = 3
	tagSEIPD = 18
	tagAEAD  = 20
)

// maxKeyPacket bounds a session key packet: an RSA-16384 encrypted
// session key is 2 KiB.
const maxKeyPacket = 4 << 10

// sessionKeysThenData frames the packets of b (RFC 9580 section 4.2) and
// reports whether b is exactly one or more PKESK or SKESK packets followed
// by one SEIPD or AEAD packet, every byte inside a packet. A session key
// packet holds little besides an encrypted key: it must be at most 4 KiB
// and look random (entropy.LooksRandom, which passes anything under 64
// bytes), so that it carries no text in clear either.
func sessionKeysThenData(b []byte) bool {
	var tags []int
	for len(b) > 0 {
		tag, hdr, n, ok := framePacket(b)
		if !ok {
			return false
		}
		if tag == tagPKESK || tag == tagSKESK {
			if n > maxKeyPacket || !entropy.LooksRandom(b[hdr:n]) {
				return false
			}
		}
		tags = append(tags, tag)
		b = b[n:]
	}
	if len(tags) < 2 {
		return false
	}
	for _, t := range tags[:len(tags)-1] {
		if t != tagPKESK && t != tagSKESK {
			return false
		}
	}
	last := tags[len(tags)-1]
	return last == tagSEIPD || last == tagAEAD
}

// framePacket returns the tag of the packet at the start of b, the length
// of its header (of its first header for partial body lengths) and its
// length with the header; ok is false when b does not start with a
// complete packet. Partial body lengths are allowed for data packets only.
func framePacket(b []byte) (tag, hdr, n int, ok bool) {
	if len(b) == 0 || b[0]&0x80 == 0 {
		return 0, 0, 0, false
	}
	if b[0]&0x40 == 0 { // legacy format
		tag = int(b[0]>>2) & 0x0f
		switch b[0] & 3 {
		case 0:
			hdr = 2
		case 1:
			hdr = 3
		case 2:
			hdr = 5
		default: // indeterminate length: never for the packets accepted
			return 0, 0, 0, false
		}
		if len(b) < hdr {
			return 0, 0, 0, false
		}
		size := 0
		for _, c := range b[1:hdr] {
			size = size<<8 | int(c)
		}
		if size < 0 || size > len(b)-hdr {
			return 0, 0, 0, false
		}
		return tag, hdr, hdr + size, true
	}
	tag = int(b[0] & 0x3f)
	i := 1
	for {
		if i >= len(b) {
			return 0, 0, 0, false
		}
		var size int
		partial := false
		switch c := int(b[i]); {
		case c < 192:
			size, i = c, i+1
		case c < 224:
			if i+1 >= len(b) {
				return 0, 0, 0, false
			}
			size, i = (c-192)<<8+int(b[i+1])+192, i+2
		case c == 255:
			if i+4 >= len(b) {
				return 0, 0, 0, false
			}
			size = int(b[i+1])<<24 | int(b[i+2])<<16 | int(b[i+3])<<8 | int(b[i+4])
			i += 5
		default:
			if tag != tagSEIPD && tag != tagAEAD {
				return 0, 0, 0, false
			}
			size, i, partial = 1<<(c&0x1f), i+1, true
		}
		if hdr == 0 {
			hdr = i
		}
		if size < 0 || size > len(b)-i {
			return 0, 0, 0, false
		}
		i += size
		if !partial {
			return tag, hdr, i, true
		}
	}
}

// The armor lines of an OpenPGP message.
const (
	armorBeginMsg = "-----BEGIN PGP MESSAGE-----"
	armorEndMsg   = "-----END PGP MESSAGE-----"
)

// armorHeaderKeys are the armor header keys RFC 9580 section 6.2.2.1
// defines; no other key is accepted, and each header line is at most 76
// characters.
var armorHeaderKeys = []string{"Version", "Comment", "Hash", "Charset", "MessageID"}

// strictArmor decodes an armored PGP MESSAGE with only whitespace around
// it, read strictly (RFC 9580 section 6.2): the BEGIN line, header lines
// (known keys only) and the empty line after them, lines of base64 of at
// most 76 characters with padding only at the end, an optional checksum line ("=" and four base64
// characters, not checked, as RFC 9580 section 6.1 asks), the END line.
// go-crypto's armor reader is lenient where plaintext could hide: it
// ignores whatever follows the checksum line up to the END line.
func strictArmor(data []byte) ([]byte, bool) {
	lines := bytes.Split(bytes.TrimSpace(data), []byte("\n"))
	for i := range lines {
		lines[i] = bytes.TrimRight(lines[i], " \t\r")
	}
	if len(lines) < 3 || string(lines[0]) != armorBeginMsg || string(lines[len(lines)-1]) != armorEndMsg {
		return nil, false
	}
	body := lines[1 : len(lines)-1]
	i := 0
	for ; i < len(body) && len(body[i]) > 0; i++ {
		if !armorHeader(body[i]) {
			return nil, false
		}
	}
	if i == len(body) {
		return nil, false // no empty line
	}
	body = body[i+1:]
	if n := len(body); n > 0 && len(body[n-1]) == 5 && body[n-1][0] == '=' {
		if !isBase64(body[n-1][1:]) {
			return nil, false
		}
		body = body[:n-1]
	}
	var b64 []byte
	for _, l := range body {
		if len(l) > 76 || !isBase64(l) {
			return nil, false
		}
		b64 = append(b64, l...)
	}
	bin, err := base64.StdEncoding.Strict().DecodeString(string(b64))
	return bin, err == nil
}

func armorHeader(l []byte) bool {
	if len(l) > 76 {
		return false
	}
	key, _, ok := bytes.Cut(l, []byte(": "))
	if !ok {
		return false
	}
	for _, k := range armorHeaderKeys {
		if string(key) == k {
			return true
		}
	}
	return false
}

func isBase64(l []byte) bool {
	for _, c := range l {
		if !(c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '+' || c == '/' || c == '=') {
			return false
		}
	}
	return true
}
