package openpgp

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/clearsign"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
)

// Kind says what an OpenPGP blob is.
type Kind int

// Kinds of OpenPGP data.
const (
	KindUnknown         Kind = iota
	KindEncrypted            // PKESK/SKESK + encrypted data
	KindSigned               // signed message (one-pass or old style), maybe compressed
	KindLiteral              // literal data only, neither signed nor encrypted
	KindCleartextSigned      // -----BEGIN PGP SIGNED MESSAGE-----
	KindSignature            // detached signature
	KindPublicKey            // public key (block)
	KindSecretKey            // secret key (block)
)

var kindNames = [...]string{"unknown", "encrypted", "signed", "literal", "cleartext-signed", "signature", "public-key", "secret-key"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// Info describes an OpenPGP blob as far as it can be seen without secret
// keys.
type Info struct {
	Kind Kind
	// Armored is true for ASCII-armored input.
	Armored bool
	// Surrounded is true when armored input has non-whitespace text before
	// or after its first armor block (including a second block): the block
	// is then not the whole body and must not be spliced into that text.
	Surrounded bool
	// Recipients are the key IDs of the PKESK packets, 0 for a hidden
	// recipient (KindEncrypted only).
	Recipients []uint64
	// Hidden is true when some recipient is hidden (key ID 0).
	Hidden bool
	// Symmetric is true when the message can be decrypted with a
	// passphrase (SKESK present).
	Symmetric bool
	// Signers are the issuer key IDs of visible signatures (signed,
	// cleartext-signed and detached signatures; never inside encryption).
	Signers []uint64
}

// Limits of Inspect on untrusted data.
const (
	inspectMaxPackets      = 1000
	inspectMaxDecompressed = 1 << 20
)

var armorTypes = map[string]Kind{
	"PGP MESSAGE":           KindUnknown, // decided by the packets
	"PGP SIGNED MESSAGE":    KindCleartextSigned,
	"PGP SIGNATURE":         KindSignature,
	"PGP PUBLIC KEY BLOCK":  KindPublicKey,
	"PGP PRIVATE KEY BLOCK": KindSecretKey,
}

// Inspect classifies data (armored or binary OpenPGP) without secret keys
// and without reading more than a bounded amount of decompressed data. It
// returns ErrMalformed, with what was learnt so far, when data is not
// OpenPGP or is damaged.
func Inspect(data []byte) (Info, error) {
	var info Info
	if len(data) == 0 {
		return info, ErrMalformed
	}
	if !isArmored(data) {
		return inspectPackets(bytes.NewReader(data), info)
	}
	info.Armored = true
	typ, begin, end, ok := findArmor(data)
	if !ok {
		return info, ErrMalformed
	}
	info.Surrounded = len(bytes.TrimSpace(data[:begin])) > 0 || len(bytes.TrimSpace(data[end:])) > 0
	kind, known := armorTypes[typ]
	if !known {
		return info, ErrMalformed
	}
	block := data[begin:end]
	switch typ {
	case "PGP SIGNED MESSAGE":
		info.Kind = kind
		b, _ := clearsign.Decode(block)
		if b == nil || b.ArmoredSignature == nil {
			return info, ErrMalformed
		}
		sig, err := io.ReadAll(io.LimitReader(b.ArmoredSignature.Body, maxSigBytes))
		if err != nil {
			return info, ErrMalformed
		}
		sigs, err := readSignaturePackets(sig)
		if err != nil {
			return info, ErrMalformed
		}
		for _, s := range sigs {
			if s.IssuerKeyId != nil {
				info.Signers = append(info.Signers, *s.IssuerKeyId)
			}
		}
		return info, nil
	case "PGP SIGNATURE", "PGP PUBLIC KEY BLOCK", "PGP PRIVATE KEY BLOCK":
		info.Kind = kind
		if typ == "PGP SIGNATURE" {
			sigs, err := readSignaturePackets(block)
			if err != nil {
				return info, ErrMalformed
			}
			for _, s := range sigs {
				if s.IssuerKeyId != nil {
					info.Signers = append(info.Signers, *s.IssuerKeyId)
				}
			}
		}
		return info, nil
	}
	blk, err := armor.Decode(bytes.NewReader(block))
	if err != nil {
		return info, ErrMalformed
	}
	return inspectPackets(blk.Body, info)
}

// findArmor locates the first armor block: its type, the offset of its
// BEGIN line and the offset just past its END line.
func findArmor(data []byte) (typ string, begin, end int, ok bool) {
	const beginPrefix = "-----BEGIN "
	off := 0
	for {
		i := bytes.Index(data[off:], []byte(beginPrefix))
		if i < 0 {
			return "", 0, 0, false
		}
		i += off
		if i == 0 || data[i-1] == '\n' {
			begin = i
			break
		}
		off = i + 1
	}
	line := data[begin:]
	if nl := bytes.IndexByte(line, '\n'); nl >= 0 {
		line = line[:nl]
	}
	line = bytes.TrimRight(line, " \t\r")
	if !bytes.HasSuffix(line, []byte("-----")) || len(line) < len(beginPrefix)+5 {
		return "", 0, 0, false
	}
	typ = string(line[len(beginPrefix) : len(line)-5])
	endType := typ
	if typ == "PGP SIGNED MESSAGE" {
		endType = "PGP SIGNATURE"
	}
	endLine := []byte("-----END " + endType + "-----")
	j := bytes.Index(data[begin:], endLine)
	if j < 0 {
		return "", 0, 0, false
	}
	end = begin + j + len(endLine)
	return typ, begin, end, true
}

// inspectPackets walks the leading packets of a binary OpenPGP stream.
func inspectPackets(r io.Reader, info Info) (Info, error) {
	pr := packet.NewReader(r)
	for n := 0; n < inspectMaxPackets; n++ {
		p, err := pr.Next()
		if err == io.EOF {
			if info.Kind == KindSigned && len(info.Signers) > 0 {
				// Only signature packets and no literal data: detached.
				info.Kind = KindSignature
				return info, nil
			}
			return info, ErrMalformed
		}
		if err != nil {
			return info, ErrMalformed
		}
		switch p := p.(type) {
		case *packet.EncryptedKey:
			info.Recipients = append(info.Recipients, p.KeyId)
			if p.KeyId == 0 {
				info.Hidden = true
			}
		case *packet.SymmetricKeyEncrypted:
			info.Symmetric = true
		case *packet.SymmetricallyEncrypted, *packet.AEADEncrypted:
			info.Kind = KindEncrypted
			return info, nil
		case *packet.Compressed:
			if len(info.Recipients) > 0 || info.Symmetric {
				return info, ErrMalformed
			}
			if err := pr.Push(io.LimitReader(p.Body, inspectMaxDecompressed)); err != nil {
				return info, ErrMalformed
			}
		case *packet.OnePassSignature:
			info.Kind = KindSigned
			if !slices.Contains(info.Signers, p.KeyId) {
				info.Signers = append(info.Signers, p.KeyId)
			}
		case *packet.Signature:
			info.Kind = KindSigned
			if p.IssuerKeyId != nil && !slices.Contains(info.Signers, *p.IssuerKeyId) {
				info.Signers = append(info.Signers, *p.IssuerKeyId)
			}
		case *packet.LiteralData:
			if info.Kind != KindSigned {
				info.Kind = KindLiteral
			}
			return info, nil
		case *packet.PublicKey:
			if n == 0 {
				info.Kind = KindPublicKey
				return info, nil
			}
			return info, ErrMalformed
		case *packet.PrivateKey:
			if n == 0 {
				info.Kind = KindSecretKey
				return info, nil
			}
			return info, ErrMalformed
		default:
			return info, ErrMalformed
		}
	}
	return info, ErrMalformed
}

// KeyIDsHex returns Signers as 16-digit uppercase hex strings.
func (i Info) KeyIDsHex() []string {
	out := make([]string, len(i.Signers))
	for n, id := range i.Signers {
		out[n] = fmt.Sprintf("%016X", id)
	}
	return out
}
