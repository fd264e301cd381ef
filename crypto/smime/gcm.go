package smime

import (
	"crypto/cipher"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"io"
)

// AES-GCM (NIST SP 800-38D) decryption as a stream, for AuthEnvelopedData
// whose content is too large to hold: crypto/cipher's AEAD only opens
// whole messages. The content is decrypted (CTR) and authenticated
// (GHASH) as it is read; the caller keeps what comes out away from
// everything until check has compared the tag, which it does in constant
// time. CMS puts the authenticated attributes (the AAD) after the
// content, so the GHASH of the content is computed first and the AAD's
// folded in front of it at the end: GHASH is a polynomial in H, and
// GHASH(A ‖ C) = GHASH(A)·H^c ⊕ GHASH(C) for c blocks of C.
//
// The bulk of GHASH is crypto/cipher's (see gcmOpener): constant-time
// carry-less multiplication on amd64 and arm64, its generic code
// elsewhere, as for any AES-GCM in Go. The few multiplications done here
// (per 64 KiB, and for the additional data) are in GF(2^128) with
// integer multiplications only (no table lookups, no branches on data),
// following BearSSL's ghash_ctmul64.

// gcmBlock is a GF(2^128) element in GCM's bit order, as two big-endian
// halves: hi holds bytes 0–7.
type gcmBlock struct{ hi, lo uint64 }

func loadBlock(b []byte) gcmBlock {
	return gcmBlock{binary.BigEndian.Uint64(b), binary.BigEndian.Uint64(b[8:])}
}

func (x gcmBlock) xor(y gcmBlock) gcmBlock { return gcmBlock{x.hi ^ y.hi, x.lo ^ y.lo} }

func (x gcmBlock) bytes() [16]byte {
	var b [16]byte
	binary.BigEndian.PutUint64(b[:], x.hi)
	binary.BigEndian.PutUint64(b[8:], x.lo)
	return b
}

// bmul64 is the low 64 bits of the carry-less product of x and y, with
// integer multiplications on values whose set bits are four apart (so
// that carries cannot reach the next bit that counts).
func bmul64(x, y uint64) uint64 {
	const m0, m1, m2, m3 = 0x1111111111111111, 0x2222222222222222, 0x4444444444444444, 0x8888888888888888
	x0, x1, x2, x3 := x&m0, x&m1, x&m2, x&m3
	y0, y1, y2, y3 := y&m0, y&m1, y&m2, y&m3
	z0 := (x0 * y0) ^ (x1 * y3) ^ (x2 * y2) ^ (x3 * y1)
	z1 := (x0 * y1) ^ (x1 * y0) ^ (x2 * y3) ^ (x3 * y2)
	z2 := (x0 * y2) ^ (x1 * y1) ^ (x2 * y0) ^ (x3 * y3)
	z3 := (x0 * y3) ^ (x1 * y2) ^ (x2 * y1) ^ (x3 * y0)
	return z0&m0 | z1&m1 | z2&m2 | z3&m3
}

// rev64 reverses the bits of x.
func rev64(x uint64) uint64 {
	x = (x&0x5555555555555555)<<1 | (x>>1)&0x5555555555555555
	x = (x&0x3333333333333333)<<2 | (x>>2)&0x3333333333333333
	x = (x&0x0F0F0F0F0F0F0F0F)<<4 | (x>>4)&0x0F0F0F0F0F0F0F0F
	x = (x&0x00FF00FF00FF00FF)<<8 | (x>>8)&0x00FF00FF00FF00FF
	x = (x&0x0000FFFF0000FFFF)<<16 | (x>>16)&0x0000FFFF0000FFFF
	return x<<32 | x>>32
}

// gfMul returns x·h in GCM's GF(2^128) (Karatsuba on bit-reflected
// halves, then the reduction by x^128 + x^7 + x^2 + x + 1).
func gfMul(x, h gcmBlock) gcmBlock {
	y1, y0 := x.hi, x.lo
	h1, h0 := h.hi, h.lo
	h0r, h1r := rev64(h0), rev64(h1)
	h2, h2r := h0^h1, h0r^h1r
	y0r, y1r := rev64(y0), rev64(y1)
	y2, y2r := y0^y1, y0r^y1r

	z0 := bmul64(y0, h0)
	z1 := bmul64(y1, h1)
	z2 := bmul64(y2, h2)
	z0h := bmul64(y0r, h0r)
	z1h := bmul64(y1r, h1r)
	z2h := bmul64(y2r, h2r)
	z2 ^= z0 ^ z1
	z2h ^= z0h ^ z1h
	z0h = rev64(z0h) >> 1
	z1h = rev64(z1h) >> 1
	z2h = rev64(z2h) >> 1

	v0 := z0
	v1 := z0h ^ z2
	v2 := z1 ^ z2h
	v3 := z1h

	v3 = v3<<1 | v2>>63
	v2 = v2<<1 | v1>>63
	v1 = v1<<1 | v0>>63
	v0 <<= 1

	v2 ^= v0 ^ v0>>1 ^ v0>>2 ^ v0>>7
	v1 ^= v0<<63 ^ v0<<62 ^ v0<<57
	v3 ^= v1 ^ v1>>1 ^ v1>>2 ^ v1>>7
	v2 ^= v1<<63 ^ v1<<62 ^ v1<<57
	return gcmBlock{v3, v2}
}

// gfPow returns h^n (n is public: the number of content blocks).
func gfPow(h gcmBlock, n uint64) gcmBlock {
	r := gcmBlock{1 << 63, 0} // 1 in GCM's bit order
	for ; n > 0; n >>= 1 {
		if n&1 == 1 {
			r = gfMul(r, h)
		}
		h = gfMul(h, h)
	}
	return r
}

// ghash accumulates GHASH over data given in any pieces (padded with
// zeros to whole blocks only by pad), for the nonce and the additional
// data.
type ghash struct {
	h   gcmBlock
	y   gcmBlock
	buf [16]byte
	n   int // bytes in buf
}

func (g *ghash) write(p []byte) {
	if g.n > 0 {
		k := copy(g.buf[g.n:], p)
		g.n += k
		p = p[k:]
		if g.n < 16 {
			return
		}
		g.y = gfMul(g.y.xor(loadBlock(g.buf[:])), g.h)
		g.n = 0
	}
	for len(p) >= 16 {
		g.y = gfMul(g.y.xor(loadBlock(p)), g.h)
		p = p[16:]
	}
	g.n = copy(g.buf[:], p)
}

// pad completes a partial block with zeros.
func (g *ghash) pad() {
	if g.n > 0 {
		clear(g.buf[g.n:])
		g.y = gfMul(g.y.xor(loadBlock(g.buf[:])), g.h)
		g.n = 0
	}
}

// gcmOpener decrypts AES-GCM content as a stream.
//
// The content's GHASH is computed a chunk at a time by crypto/cipher's
// own AES-GCM under the same key, sealing nothing with the chunk as
// additional data: that tag is E_K(N‖1) ⊕ S, with S = (Y ⊕ L)·H for Y the
// GHASH of the chunk's blocks and L its length block, so that the GHASH
// of the content times H, W, grows as W·H^m ⊕ S ⊕ L·H with each chunk
// of m blocks. Only those few multiplications, the additional data and
// the final combination are done here. The keystream is crypto/cipher's
// CTR for 12-byte nonces (whose 32-bit counter cannot wrap within the
// content GCM allows), else counted here with inc32 as SP 800-38D says.
type gcmOpener struct {
	block  cipher.Block
	aead   cipher.AEAD // GHASH of whole chunks
	h      gcmBlock
	j0     [16]byte
	ek0    [16]byte // E_K(0^96 ‖ 1): the mask of the chunk tags
	hc     gcmBlock // H^(blocks of a chunk)
	lch    gcmBlock // L·H for a whole chunk
	w      gcmBlock // GHASH of the content so far, times H
	pend   []byte   // content not hashed yet (less than a chunk)
	tag    []byte   // the chunk tag
	hashed uint64   // content blocks hashed

	ctr   cipher.Stream // 12-byte nonces
	next  [16]byte      // the next counter block, other nonces
	ks    [16 * 64]byte
	ksOff int // keystream bytes of ks used (len(ks): none left)

	size uint64 // content bytes
}

// gcmChunk is the content hashed at once (a multiple of the block size).
const gcmChunk = 64 << 10

// maxGCMContent is what one key and nonce may encrypt (SP 800-38D: 2^32-2
// blocks), as crypto/cipher's limit.
const maxGCMContent = (1<<32 - 2) * 16

func newGCMOpener(block cipher.Block, nonce []byte) *gcmOpener {
	o := &gcmOpener{block: block, ksOff: len(gcmOpener{}.ks), pend: make([]byte, 0, gcmChunk)}
	var zero [16]byte
	var hb [16]byte
	block.Encrypt(hb[:], zero[:])
	o.h = loadBlock(hb[:])
	if len(nonce) == 12 {
		copy(o.j0[:], nonce)
		o.j0[15] = 1
	} else {
		g := ghash{h: o.h}
		g.write(nonce)
		g.pad()
		var lens [16]byte
		binary.BigEndian.PutUint64(lens[8:], uint64(len(nonce))*8)
		g.write(lens[:])
		o.j0 = g.y.bytes()
	}
	first := o.j0
	inc32(&first)
	if len(nonce) == 12 {
		o.ctr = cipher.NewCTR(block, first[:])
	} else {
		o.next = first
	}
	o.aead, _ = cipher.NewGCM(block) // a 16-byte block cipher: no error
	var n0 [16]byte
	n0[15] = 1
	block.Encrypt(o.ek0[:], n0[:])
	o.hc = gfPow(o.h, gcmChunk/16)
	o.lch = gfMul(lengthBlock(gcmChunk, 0), o.h)
	return o
}

func inc32(b *[16]byte) {
	binary.BigEndian.PutUint32(b[12:], binary.BigEndian.Uint32(b[12:])+1)
}

// lengthBlock is GHASH's last block: the bit lengths of the additional
// data and of the content.
func lengthBlock(aad, content uint64) gcmBlock { return gcmBlock{aad * 8, content * 8} }

// hashChunk folds the content bytes p (whole blocks but at the end) into
// w.
func (o *gcmOpener) hashChunk(p []byte) {
	var zeroNonce [12]byte
	o.tag = o.aead.Seal(o.tag[:0], zeroNonce[:], nil, p)
	s := loadBlock(o.tag).xor(loadBlock(o.ek0[:]))
	m := uint64(len(p)+15) / 16
	hm, lh := o.hc, o.lch
	if len(p) != gcmChunk {
		hm, lh = gfPow(o.h, m), gfMul(lengthBlock(uint64(len(p)), 0), o.h)
	}
	o.w = gfMul(o.w, hm).xor(s).xor(lh)
	o.hashed += m
}

// decrypt hashes the ciphertext src and writes its plaintext to dst
// (len(dst) >= len(src)). It reports false once the content is longer
// than GCM allows.
func (o *gcmOpener) decrypt(dst, src []byte) bool {
	o.size += uint64(len(src))
	if o.size > maxGCMContent {
		return false
	}
	for rest := src; len(rest) > 0; {
		n := min(len(rest), gcmChunk-len(o.pend))
		o.pend = append(o.pend, rest[:n]...)
		rest = rest[n:]
		if len(o.pend) == gcmChunk {
			o.hashChunk(o.pend)
			o.pend = o.pend[:0]
		}
	}
	if o.ctr != nil {
		o.ctr.XORKeyStream(dst[:len(src)], src)
		return true
	}
	for len(src) > 0 {
		if o.ksOff == len(o.ks) {
			for i := 0; i < len(o.ks); i += 16 {
				o.block.Encrypt(o.ks[i:i+16], o.next[:])
				inc32(&o.next)
			}
			o.ksOff = 0
		}
		n := subtle.XORBytes(dst, src, o.ks[o.ksOff:])
		o.ksOff += n
		dst, src = dst[n:], src[n:]
	}
	return true
}

// check reports, in constant time, whether tag is the authentication tag
// (its first len(tag) bytes) of the content decrypted so far and aad.
func (o *gcmOpener) check(aad, tag []byte) bool {
	if len(o.pend) > 0 {
		o.hashChunk(o.pend)
		o.pend = o.pend[:0]
	}
	// S = (GHASH(A)·H^c ⊕ GHASH(C) ⊕ L)·H for c content blocks.
	s := o.w.xor(gfMul(lengthBlock(uint64(len(aad)), o.size), o.h))
	if len(aad) > 0 {
		a := ghash{h: o.h}
		a.write(aad)
		a.pad()
		s = s.xor(gfMul(a.y, gfPow(o.h, o.hashed+1)))
	}
	t := s.bytes()
	var ej0 [16]byte
	o.block.Encrypt(ej0[:], o.j0[:])
	subtle.XORBytes(t[:], t[:], ej0[:])
	return len(tag) <= 16 && subtle.ConstantTimeCompare(t[:len(tag)], tag) == 1
}

// copy decrypts the content read from r into w.
func (o *gcmOpener) copy(w io.Writer, r io.Reader) error {
	in := make([]byte, 32<<10)
	out := make([]byte, len(in))
	for {
		n, err := r.Read(in)
		if n > 0 {
			if !o.decrypt(out, in[:n]) {
				return errGCMTooLong
			}
			if _, werr := w.Write(out[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

var errGCMTooLong = errors.New("smime: GCM content too long")
