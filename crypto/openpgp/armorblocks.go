package openpgp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
)

// ArmorBlock is one ASCII-armored block, decoded.
type ArmorBlock struct {
	Type string // the label of the BEGIN line, e.g. "PGP PUBLIC KEY BLOCK"
	Body []byte // the binary packets
}

// IsArmored reports whether data holds an ASCII-armored OpenPGP block.
func IsArmored(data []byte) bool { return bytes.Contains(data, armorBegin) }

var armorBegin = []byte("-----BEGIN PGP ")

// DecodeArmorBlocks decodes every armored block of data (text between
// blocks is ignored), as key files hold them: `gpg --export --armor` of
// several keys, or files concatenated by hand. A block's CRC-24 checksum
// must match when present, so that a damaged or truncated file is reported
// rather than half read. go-crypto's armor reader reads only the first
// block of a stream and does not check the checksum.
func DecodeArmorBlocks(data []byte) ([]ArmorBlock, error) {
	var out []ArmorBlock
	rest := data
	for n := 1; ; n++ {
		i := bytes.Index(rest, armorBegin)
		if i < 0 {
			break
		}
		block := rest[i:]
		eol := bytes.IndexByte(block, '\n')
		if eol < 0 {
			return nil, fmt.Errorf("armor block %d: truncated header", n)
		}
		head := strings.TrimSpace(string(block[:eol]))
		typ := strings.TrimSuffix(strings.TrimPrefix(head, "-----BEGIN "), "-----")
		end := []byte("-----END " + typ + "-----")
		j := bytes.Index(block, end)
		if j < 0 {
			return nil, fmt.Errorf("armor block %d (%s): truncated, no END line", n, typ)
		}
		body, err := decodeArmorBlock(block[:j+len(end)])
		if err != nil {
			return nil, fmt.Errorf("armor block %d: %w", n, err)
		}
		out = append(out, ArmorBlock{Type: typ, Body: body})
		rest = block[j+len(end):]
	}
	if len(out) == 0 {
		return nil, errors.New("no armor block found")
	}
	return out, nil
}

// decodeArmorBlock decodes one block (BEGIN line to END line): optional
// "Key: Value" headers, base64 body, optional CRC-24 checksum.
func decodeArmorBlock(seg []byte) ([]byte, error) {
	lines := bytes.Split(seg, []byte("\n"))
	if len(lines) < 2 {
		return nil, errors.New("truncated")
	}
	i := 1
	// Headers end at the first blank line; a block without headers may
	// start its body directly.
	for j := 1; j < len(lines); j++ {
		l := bytes.TrimSpace(lines[j])
		if len(l) == 0 {
			i = j + 1
			break
		}
		if !bytes.Contains(l, []byte(": ")) {
			i = j
			break
		}
	}
	b64 := make([]byte, 0, len(seg))
	var sum []byte
	ended := false
	for _, l := range lines[i:] {
		l = bytes.TrimSpace(l)
		switch {
		case bytes.HasPrefix(l, []byte("-----END ")):
			ended = true
		case len(l) == 5 && l[0] == '=':
			sum = l[1:]
		default:
			b64 = append(b64, l...)
		}
		if ended {
			break
		}
	}
	if !ended {
		return nil, errors.New("truncated, no END line")
	}
	data := make([]byte, base64.StdEncoding.DecodedLen(len(b64)))
	n, err := base64.StdEncoding.Decode(data, b64)
	if err != nil {
		return nil, fmt.Errorf("bad base64: %w", err)
	}
	data = data[:n]
	if sum != nil {
		var want [3]byte
		if m, err := base64.StdEncoding.Decode(want[:], sum); err != nil || m != 3 {
			return nil, errors.New("bad checksum line")
		}
		c := crc24Update(crc24Init, data)
		if want != [3]byte{byte(c >> 16), byte(c >> 8), byte(c)} {
			return nil, errors.New("checksum mismatch (damaged or truncated)")
		}
	}
	return data, nil
}
