package keystore

import (
	"errors"
)

// berToDER re-encodes BER (as written by NSS in PKCS#12 files:
// indefinite lengths, constructed OCTET STRINGs) as DER, which the Go
// PKCS#12 decoders require. Definite-length DER input comes back equal.
// The PKCS#12 MAC covers the contents of the authSafe OCTET STRING, which
// this conversion keeps byte for byte.
func berToDER(in []byte) ([]byte, error) {
	out, rest, err := berElement(in, 0)
	if err != nil {
		return nil, err
	}
	if len(rest) != 0 {
		return nil, errors.New("ber: trailing data")
	}
	return out, nil
}

const berMaxDepth = 64

// berElement converts the first element of in and returns the DER bytes
// and the remaining input.
func berElement(in []byte, depth int) (der, rest []byte, err error) {
	if depth > berMaxDepth {
		return nil, nil, errors.New("ber: nested too deeply")
	}
	if len(in) < 2 {
		return nil, nil, errors.New("ber: truncated")
	}
	// Identifier octets.
	idLen := 1
	if in[0]&0x1f == 0x1f {
		for {
			if idLen >= len(in) {
				return nil, nil, errors.New("ber: truncated tag")
			}
			b := in[idLen]
			idLen++
			if b&0x80 == 0 {
				break
			}
			if idLen > 6 {
				return nil, nil, errors.New("ber: tag too long")
			}
		}
	}
	if idLen >= len(in) {
		return nil, nil, errors.New("ber: truncated")
	}
	ident := in[:idLen]
	constructed := in[0]&0x20 != 0
	p := in[idLen:]
	// Length octets.
	l0 := p[0]
	p = p[1:]
	var content []byte
	indefinite := false
	switch {
	case l0 < 0x80:
		if int(l0) > len(p) {
			return nil, nil, errors.New("ber: truncated content")
		}
		content, rest = p[:l0], p[l0:]
	case l0 == 0x80:
		if !constructed {
			return nil, nil, errors.New("ber: indefinite length on primitive")
		}
		indefinite = true
	default:
		n := int(l0 & 0x7f)
		if n > 4 || n > len(p) {
			return nil, nil, errors.New("ber: bad length")
		}
		length := 0
		for _, b := range p[:n] {
			length = length<<8 | int(b)
		}
		p = p[n:]
		if length < 0 || length > len(p) {
			return nil, nil, errors.New("ber: truncated content")
		}
		content, rest = p[:length], p[length:]
	}
	if !constructed {
		return derTLV(ident, content), rest, nil
	}
	// Constructed: convert the children.
	var children [][]byte
	var src []byte
	if indefinite {
		src = p
	} else {
		src = content
	}
	for {
		if indefinite {
			if len(src) < 2 {
				return nil, nil, errors.New("ber: missing end-of-contents")
			}
			if src[0] == 0 && src[1] == 0 {
				rest = src[2:]
				break
			}
		} else if len(src) == 0 {
			break
		}
		var child []byte
		child, src, err = berElement(src, depth+1)
		if err != nil {
			return nil, nil, err
		}
		children = append(children, child)
	}
	// A constructed OCTET STRING (universal tag 4) becomes primitive:
	// the concatenation of its segments' contents.
	if len(ident) == 1 && ident[0] == 0x24 {
		var val []byte
		for _, c := range children {
			if c[0] != 0x04 {
				return nil, nil, errors.New("ber: bad octet string segment")
			}
			v, err := derContent(c)
			if err != nil {
				return nil, nil, err
			}
			val = append(val, v...)
		}
		return derTLV([]byte{0x04}, val), rest, nil
	}
	var val []byte
	for _, c := range children {
		val = append(val, c...)
	}
	return derTLV(ident, val), rest, nil
}

// derContent returns the contents of a DER element produced by derTLV.
func derContent(el []byte) ([]byte, error) {
	if len(el) < 2 {
		return nil, errors.New("ber: truncated")
	}
	l0 := el[1]
	if l0 < 0x80 {
		return el[2:], nil
	}
	n := int(l0 & 0x7f)
	if 2+n > len(el) {
		return nil, errors.New("ber: truncated")
	}
	return el[2+n:], nil
}

func derTLV(ident, content []byte) []byte {
	out := make([]byte, 0, len(ident)+6+len(content))
	out = append(out, ident...)
	n := len(content)
	switch {
	case n < 0x80:
		out = append(out, byte(n))
	case n < 1<<8:
		out = append(out, 0x81, byte(n))
	case n < 1<<16:
		out = append(out, 0x82, byte(n>>8), byte(n))
	case n < 1<<24:
		out = append(out, 0x83, byte(n>>16), byte(n>>8), byte(n))
	default:
		out = append(out, 0x84, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	return append(out, content...)
}
