// Package ber converts BER, as mail clients and NSS write CMS and PKCS#12,
// to DER. Written by hand: encoding/asn1, cryptobyte and the PKCS#12 and
// CMS libraries read only definite lengths.
package ber

import (
	"errors"
)

// maxBERDepth bounds the nesting of BER elements. CMS as sent by mail
// clients nests about a dozen levels deep (certificates included).
const maxBERDepth = 48

var errBER = errors.New("ber: malformed BER encoding")

// ToDER rewrites a BER encoding, as mail clients send it, into the
// definite-length form that cryptobyte reads: indefinite lengths become
// minimal definite lengths, and constructed OCTET STRINGs and character
// strings of the universal class are flattened into primitive ones.
// Context-specific constructed elements are kept as they are (the caller
// knows when such a tag is an IMPLICIT OCTET STRING, see readOctets). SET OF
// is not re-sorted: signed attributes are hashed as the sender encoded them.
//
// Only the first element is converted; trailing zero bytes (padding some
// clients append) are tolerated, anything else after it is an error.
func ToDER(ber []byte) ([]byte, error) {
	out, rest, err := convertBER(make([]byte, 0, len(ber)), ber, 0)
	if err != nil {
		return nil, err
	}
	for _, b := range rest {
		if b != 0 {
			return nil, errBER
		}
	}
	return out, nil
}

// berHeader is the decoded identifier and length octets of one element.
type berHeader struct {
	tag         []byte // raw identifier octets
	class       byte   // top two bits of the first identifier octet
	constructed bool
	number      uint32 // tag number
	indefinite  bool
	length      int // content length when !indefinite
}

// readBERHeader decodes the header at the start of in and returns the
// bytes after it.
func readBERHeader(in []byte) (berHeader, []byte, error) {
	var h berHeader
	if len(in) < 2 {
		return h, nil, errBER
	}
	b0 := in[0]
	h.class = b0 >> 6
	h.constructed = b0&0x20 != 0
	i := 1
	if b0&0x1f != 0x1f {
		h.number = uint32(b0 & 0x1f)
	} else {
		// High tag number: base-128, at most 4 octets.
		for {
			if i >= len(in) || i > 4 {
				return h, nil, errBER
			}
			c := in[i]
			if i == 1 && c == 0x80 {
				return h, nil, errBER // non-minimal tag number
			}
			i++
			h.number = h.number<<7 | uint32(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if h.number < 0x1f {
			return h, nil, errBER // must use the low-tag form
		}
	}
	h.tag = in[:i]
	if i >= len(in) {
		return h, nil, errBER
	}
	l0 := in[i]
	i++
	switch {
	case l0 < 0x80:
		h.length = int(l0)
	case l0 == 0x80:
		if !h.constructed {
			return h, nil, errBER
		}
		h.indefinite = true
	case l0 == 0xff:
		return h, nil, errBER
	default:
		n := int(l0 & 0x7f)
		if n > 4 || i+n > len(in) {
			return h, nil, errBER
		}
		l := 0
		for _, c := range in[i : i+n] {
			l = l<<8 | int(c)
		}
		i += n
		h.length = l
	}
	if h.length < 0 || h.length > len(in)-i {
		return h, nil, errBER
	}
	return h, in[i:], nil
}

// isStringType reports whether a universal tag number is an OCTET STRING or
// a character string, whose constructed form is flattened.
func isStringType(n uint32) bool {
	switch n {
	case 4, 12, 18, 19, 20, 21, 22, 25, 26, 27, 28, 30:
		return true
	}
	return false
}

// convertBER converts the first element of in, appending its DER form to
// dst, and returns the bytes after it. Children are written in place and
// the parent's header inserted in front of them afterwards, so the output
// is one growing buffer (no per-level allocations).
func convertBER(dst, in []byte, depth int) (out, rest []byte, err error) {
	if depth > maxBERDepth {
		return nil, nil, errBER
	}
	h, body, err := readBERHeader(in)
	if err != nil {
		return nil, nil, err
	}
	if !h.constructed {
		return appendDERElement(dst, h.tag, body[:h.length]), body[h.length:], nil
	}
	if h.class == 0 && h.number == 3 {
		// Constructed BIT STRING does not occur in CMS; refuse it
		// rather than flatten its unused-bits octets wrongly.
		return nil, nil, errBER
	}
	start := len(dst)
	if h.indefinite {
		for {
			if len(body) >= 2 && body[0] == 0 && body[1] == 0 {
				rest = body[2:]
				break
			}
			if len(body) == 0 {
				return nil, nil, errBER
			}
			if dst, body, err = convertBER(dst, body, depth+1); err != nil {
				return nil, nil, err
			}
		}
	} else {
		inner := body[:h.length]
		rest = body[h.length:]
		for len(inner) > 0 {
			if dst, inner, err = convertBER(dst, inner, depth+1); err != nil {
				return nil, nil, err
			}
		}
	}
	tag := h.tag
	if h.class == 0 && isStringType(h.number) {
		// Constructed string: the children are (already flattened)
		// primitive segments of the same type; move their contents
		// together.
		w := start
		for r := start; r < len(dst); {
			ch, cbody, err := readBERHeader(dst[r:])
			if err != nil || ch.constructed || ch.class != 0 || ch.number != h.number {
				return nil, nil, errBER
			}
			hdrLen := len(dst[r:]) - len(cbody)
			w += copy(dst[w:], cbody[:ch.length])
			r += hdrLen + ch.length
		}
		dst = dst[:w]
		tag = []byte{h.tag[0] &^ 0x20}
	}
	// Insert the header in front of the content.
	hdr := appendLength(append([]byte(nil), tag...), len(dst)-start)
	n := len(dst)
	dst = append(dst, hdr...)
	copy(dst[start+len(hdr):], dst[start:n])
	copy(dst[start:], hdr)
	return dst, rest, nil
}

// appendDERElement appends tag, a minimal definite length and content.
func appendDERElement(dst, tag, content []byte) []byte {
	dst = append(dst, tag...)
	dst = appendLength(dst, len(content))
	return append(dst, content...)
}

// appendLength appends a minimal DER length.
func appendLength(dst []byte, l int) []byte {
	switch {
	case l < 0x80:
		dst = append(dst, byte(l))
	default:
		var lb [8]byte
		n := 0
		for v := l; v > 0; v >>= 8 {
			n++
		}
		for i := 0; i < n; i++ {
			lb[i] = byte(l >> (8 * (n - 1 - i)))
		}
		dst = append(dst, 0x80|byte(n))
		dst = append(dst, lb[:n]...)
	}
	return dst
}
