package keystore

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	cpgp "github.com/cryptmilter/cryptmilter/crypto/openpgp"
)

// OpenPGP packet tags used by the scanner.
const (
	tagSignature    = 2
	tagSecretKey    = 5
	tagPublicKey    = 6
	tagSecretSubkey = 7
	tagUserID       = 13
	tagPublicSubkey = 14
)

// pgpPacket is one packet found by the scanner.
type pgpPacket struct {
	tag   byte
	start int // offset of the header in the input
	body  []byte
}

// nextPacket reads one packet header and body from b[off:].
func nextPacket(b []byte, off int) (pgpPacket, int, error) {
	if off >= len(b) {
		return pgpPacket{}, off, errors.New("truncated")
	}
	h := b[off]
	if h&0x80 == 0 {
		return pgpPacket{}, off, fmt.Errorf("not an OpenPGP packet at offset %d", off)
	}
	p := pgpPacket{start: off}
	i := off + 1
	var n int
	if h&0x40 == 0 { // old format
		p.tag = (h >> 2) & 0x0f
		switch h & 3 {
		case 0:
			if i+1 > len(b) {
				return p, off, errors.New("truncated")
			}
			n = int(b[i])
			i++
		case 1:
			if i+2 > len(b) {
				return p, off, errors.New("truncated")
			}
			n = int(binary.BigEndian.Uint16(b[i:]))
			i += 2
		case 2:
			if i+4 > len(b) {
				return p, off, errors.New("truncated")
			}
			n = int(binary.BigEndian.Uint32(b[i:]))
			i += 4
		default:
			return p, off, errors.New("indeterminate packet length in a key")
		}
	} else {
		p.tag = h & 0x3f
		if i >= len(b) {
			return p, off, errors.New("truncated")
		}
		o := int(b[i])
		switch {
		case o < 192:
			n = o
			i++
		case o < 224:
			if i+2 > len(b) {
				return p, off, errors.New("truncated")
			}
			n = (o-192)<<8 + int(b[i+1]) + 192
			i += 2
		case o == 255:
			if i+5 > len(b) {
				return p, off, errors.New("truncated")
			}
			n = int(binary.BigEndian.Uint32(b[i+1:]))
			i += 5
		default:
			return p, off, errors.New("partial packet length in a key")
		}
	}
	if n < 0 || n > len(b)-i {
		return p, off, errors.New("truncated")
	}
	p.body = b[i : i+n]
	return p, i + n, nil
}

// keyFingerprint computes the fingerprint and key ID of a public (sub)key
// packet body.
func keyFingerprint(body []byte) (fpr []byte, keyID uint64, created time.Time, err error) {
	if len(body) < 6 {
		return nil, 0, time.Time{}, errors.New("short key packet")
	}
	created = time.Unix(int64(binary.BigEndian.Uint32(body[1:5])), 0)
	switch body[0] {
	case 4:
		h := sha1.New()
		h.Write([]byte{0x99, byte(len(body) >> 8), byte(len(body))})
		h.Write(body)
		fpr = h.Sum(nil)
		keyID = binary.BigEndian.Uint64(fpr[12:20])
	case 5, 6:
		h := sha256.New()
		pre := byte(0x9a)
		if body[0] == 6 {
			pre = 0x9b
		}
		h.Write([]byte{pre, byte(len(body) >> 24), byte(len(body) >> 16), byte(len(body) >> 8), byte(len(body))})
		h.Write(body)
		fpr = h.Sum(nil)
		keyID = binary.BigEndian.Uint64(fpr[:8])
	default:
		return nil, 0, time.Time{}, fmt.Errorf("unsupported key version %d", body[0])
	}
	return fpr, keyID, created, nil
}

// userIDEmail extracts the address of a user ID as go-crypto does: the
// text between the last '<' and the following '>', or the whole user ID
// when it is a bare address.
func userIDEmail(id string) string {
	if i := strings.LastIndexByte(id, '<'); i >= 0 {
		if j := strings.IndexByte(id[i:], '>'); j > 0 {
			return strings.TrimSpace(id[i+1 : i+j])
		}
		return ""
	}
	id = strings.TrimSpace(id)
	if strings.Contains(id, "@") && !strings.ContainsAny(id, " \t") {
		return id
	}
	return ""
}

// scanOpenPGP splits binary OpenPGP public keys into one pgpKey each,
// reading only what the index needs; signatures are neither parsed nor
// verified here (that happens on first use, in pgpKey.ready).
func scanOpenPGP(file string, bin []byte, fold bool) ([]*pgpKey, error) {
	var keys []*pgpKey
	var cur *pgpKey
	var ids []string
	start := 0
	off := 0
	for off < len(bin) {
		p, next, err := nextPacket(bin, off)
		if err != nil {
			return nil, fmt.Errorf("key %d: %w", len(keys)+1, err)
		}
		switch p.tag {
		case tagPublicKey:
			if cur != nil {
				cur.raw = bin[start:p.start:p.start]
				cur.addrs = normAddrs(ids, fold)
				keys = append(keys, cur)
			}
			fpr, id, created, err := keyFingerprint(p.body)
			if err != nil {
				return nil, fmt.Errorf("key %d: %w", len(keys)+1, err)
			}
			cur = &pgpKey{file: file, fpr: strings.ToUpper(hex.EncodeToString(fpr)), keyIDs: []uint64{id}, created: created, fold: fold}
			ids = ids[:0]
			start = p.start
		case tagSecretKey, tagSecretSubkey:
			return nil, fmt.Errorf("holds secret key material; secret keys belong in %s/%s", DirPrivate, PrivOpenPGP)
		case tagPublicSubkey:
			if cur == nil {
				return nil, errors.New("subkey before any primary key")
			}
			_, id, _, err := keyFingerprint(p.body)
			if err == nil {
				cur.keyIDs = append(cur.keyIDs, id)
			}
		case tagUserID:
			if cur == nil {
				return nil, errors.New("user ID before any primary key")
			}
			ids = append(ids, userIDEmail(string(p.body)))
		default:
			if cur == nil {
				return nil, fmt.Errorf("first packet (tag %d) is not a public key", p.tag)
			}
		}
		off = next
	}
	if cur != nil {
		cur.raw = bin[start:len(bin):len(bin)]
		cur.addrs = normAddrs(ids, fold)
		keys = append(keys, cur)
	}
	if len(keys) == 0 {
		return nil, errors.New("no OpenPGP key found")
	}
	return keys, nil
}

// scanOpenPGPFile scans armored (any number of blocks) or binary data.
func scanOpenPGPFile(file string, data []byte, fold bool) ([]*pgpKey, error) {
	bins := [][]byte{data}
	if cpgp.IsArmored(data) {
		var err error
		if bins, err = keyBlocks(data); err != nil {
			return nil, err
		}
	}
	var keys []*pgpKey
	for i, bin := range bins {
		ks, err := scanOpenPGP(file, bin, fold)
		if err != nil {
			if len(bins) > 1 {
				return nil, fmt.Errorf("armor block %d: %w", i+1, err)
			}
			return nil, err
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}
