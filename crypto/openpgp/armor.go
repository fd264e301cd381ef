package openpgp

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"io"
	"sync"
)

// This file holds the armor encoder for everything the gateway writes. Its
// output is byte for byte that of go-crypto's
// armor.EncodeWithChecksumOption(w, blockType, nil, true): "-----BEGIN
// T-----", an empty line (no armor headers), base64 in lines of 64
// characters joined by LF, "=" and the CRC-24 checksum (RFC 4880 6.1,
// which GnuPG 2.2 requires), "-----END T-----" without a final line end.
// go-crypto computes the CRC bit by bit (a third of the CPU of a 1 MB
// sign+encrypt) and base64-encodes through two small writers; this one
// uses a slicing-by-8 table and encodes whole lines into one buffer.

const (
	crc24Init = 0xb704ce
	crc24Poly = 0x1864cfb

	armorLineIn  = 48 // bytes of input per 64-character line
	armorLineOut = 64
	armorLines   = 256 // lines encoded per write to the underlying writer (16 KiB: few syscalls on a spool file)
	armorChunk   = armorLineIn * armorLines
)

// crc24Tables[k][b] is the CRC register (the 24-bit CRC in the top 24 bits
// of 32) after feeding byte b followed by k zero bytes into a zero register.
var crc24Tables = func() (t [8][256]uint32) {
	const poly = (crc24Poly & 0xffffff) << 8 // without the x^24 term, in the top 24 bits
	for i := range 256 {
		c := uint32(i) << 24
		for range 8 {
			if c&0x80000000 != 0 {
				c = c<<1 ^ poly
			} else {
				c <<= 1
			}
		}
		t[0][i] = c
	}
	for k := 1; k < 8; k++ {
		for i := range 256 {
			c := t[k-1][i]
			t[k][i] = c<<8 ^ t[0][c>>24]
		}
	}
	return t
}()

// crc24Update returns the CRC-24 of d continued from crc (both the plain
// 24-bit value, as RFC 4880 defines it).
func crc24Update(crc uint32, d []byte) uint32 {
	t := &crc24Tables
	c := crc << 8
	for len(d) >= 8 {
		c ^= uint32(d[0])<<24 | uint32(d[1])<<16 | uint32(d[2])<<8 | uint32(d[3])
		c = t[7][c>>24] ^ t[6][c>>16&0xff] ^ t[5][c>>8&0xff] ^ t[4][c&0xff] ^
			t[3][d[4]] ^ t[2][d[5]] ^ t[1][d[6]] ^ t[0][d[7]]
		d = d[8:]
	}
	for _, b := range d {
		c = c<<8 ^ t[0][byte(c>>24)^b]
	}
	return c >> 8
}

// armorWriter is the armor encoder; see newArmorWriter.
type armorWriter struct {
	w         io.Writer
	blockType string
	crc       uint32
	started   bool // a line was written: the next one needs a LF first
	err       error
	n         int       // bytes pending in buf.in
	buf       *armorBuf // nil once closed
}

// armorBuf holds an armorWriter's input and output buffers (29 KiB),
// reused across messages.
type armorBuf struct {
	in  [armorChunk]byte
	out [armorLines * (armorLineOut + 1)]byte
}

var armorBufs = sync.Pool{New: func() any { return new(armorBuf) }}

// newArmorWriter writes the armor header of blockType to w and returns a
// writer that armors what is written to it; Close writes the checksum and
// the footer (and does not close w). Its buffers come from a pool and
// go back on Close.
func newArmorWriter(w io.Writer, blockType string) (io.WriteCloser, error) {
	if _, err := io.WriteString(w, "-----BEGIN "+blockType+"-----\n\n"); err != nil {
		return nil, err
	}
	return &armorWriter{w: w, blockType: blockType, crc: crc24Init, buf: armorBufs.Get().(*armorBuf)}, nil
}

var errArmorClosed = errors.New("openpgp: write to a closed armor writer")

func (a *armorWriter) Write(p []byte) (int, error) {
	if a.buf == nil {
		return 0, errArmorClosed
	}
	if a.err != nil {
		return 0, a.err
	}
	total := len(p)
	a.crc = crc24Update(a.crc, p)
	if a.n > 0 {
		c := copy(a.buf.in[a.n:], p)
		a.n += c
		p = p[c:]
		if a.n < armorChunk {
			return total, nil
		}
		if err := a.lines(a.buf.in[:]); err != nil {
			return 0, err
		}
		a.n = 0
	}
	for len(p) >= armorChunk {
		if err := a.lines(p[:armorChunk]); err != nil {
			return 0, err
		}
		p = p[armorChunk:]
	}
	a.n = copy(a.buf.in[:], p)
	return total, nil
}

// lines encodes src (at most armorChunk bytes; a multiple of armorLineIn
// unless it is the last) as lines and writes them.
func (a *armorWriter) lines(src []byte) error {
	out := a.buf.out[:]
	o := 0
	for len(src) > 0 {
		if a.started {
			out[o] = '\n'
			o++
		}
		a.started = true
		k := min(len(src), armorLineIn)
		base64.StdEncoding.Encode(out[o:], src[:k])
		o += base64.StdEncoding.EncodedLen(k)
		src = src[k:]
	}
	if _, err := a.w.Write(out[:o]); err != nil {
		a.err = err
		return err
	}
	return nil
}

// Close writes the last line, the checksum and the footer, and returns
// the writer's buffers to the pool.
func (a *armorWriter) Close() error {
	if a.buf == nil {
		return errArmorClosed
	}
	err := a.err
	if err == nil && a.n > 0 {
		err = a.lines(a.buf.in[:a.n])
	}
	if err == nil {
		sum := [3]byte{byte(a.crc >> 16), byte(a.crc >> 8), byte(a.crc)}
		var b64 [4]byte
		base64.StdEncoding.Encode(b64[:], sum[:])
		_, err = io.WriteString(a.w, "\n="+string(b64[:])+"\n-----END "+a.blockType+"-----")
	}
	armorBufs.Put(a.buf)
	a.buf, a.w = nil, nil
	return err
}

// armorBody decodes the base64 body of an armor block a few kilobytes at
// a time, where go-crypto's Block.Body decodes it through a line reader
// and a streaming base64 decoder. It reads what go-crypto's reader reads
// and accepts what it accepts: lines trimmed of white space, the block
// ending at a line starting "-----END " or at the checksum line (a "="
// and four characters; the checksum is not checked, as go-crypto does
// not), or at the end of the input; a line over 96 characters (or over
// the bufio.Reader's size) is an error. It is more lenient in one way:
// padding may end any quantum (see fill).
type armorBody struct {
	br   *bufio.Reader
	text []byte // base64 text read, not yet decoded
	out  []byte // decoded, not yet returned
	dec  []byte // out's backing array
	end  bool   // the end of the block was reached
	err  error
}

// errArmorCorrupt is returned for a malformed armor body; Decrypt reports
// any of them as ErrDecrypt.
var errArmorCorrupt = errors.New("openpgp: armor invalid")

// armorTextChunk is how much base64 text is decoded at once.
const armorTextChunk = 4096

func newArmorBody(br *bufio.Reader) *armorBody {
	// A chunk ends within a line (at most 96 characters) of armorTextChunk.
	const textCap = armorTextChunk + 128
	return &armorBody{br: br, text: make([]byte, 0, textCap), dec: make([]byte, 0, base64.StdEncoding.DecodedLen(textCap))}
}

func (a *armorBody) Read(p []byte) (int, error) {
	for len(a.out) == 0 {
		if a.err != nil {
			return 0, a.err
		}
		a.fill()
	}
	n := copy(p, a.out)
	a.out = a.out[n:]
	return n, nil
}

// fill reads lines until there is a chunk of text or the block ended,
// and decodes the whole quanta (all of the text at the end).
func (a *armorBody) fill() {
	for !a.end && len(a.text) < armorTextChunk {
		line, isPrefix, err := a.br.ReadLine()
		switch {
		case err != nil:
			a.end = true
			if err != io.EOF {
				a.err = err
				return
			}
			continue
		case isPrefix:
			a.err = errArmorCorrupt
			return
		}
		line = bytes.TrimSpace(line)
		switch {
		case bytes.HasPrefix(line, []byte("-----END ")), len(line) == 5 && line[0] == '=':
			a.end = true
		case len(line) > 96:
			a.err = errArmorCorrupt
			return
		default:
			a.text = append(a.text, line...)
		}
	}
	k := len(a.text) &^ 3
	if a.end {
		if k != len(a.text) {
			a.err = io.ErrUnexpectedEOF
			return
		}
	}
	// Padding may end any quantum: go-crypto's streaming decoder accepts
	// padded segments one after the other when they meet its reads at
	// line ends, and this decoder accepts them wherever they are.
	n, src := 0, a.text[:k]
	for len(src) > 0 {
		seg := src
		if i := bytes.IndexByte(src, '='); i >= 0 {
			seg = src[:min(len(src), i&^3+4)]
		}
		m, err := base64.StdEncoding.Decode(a.dec[n:cap(a.dec)], seg)
		if err != nil {
			a.err = errArmorCorrupt
			return
		}
		n += m
		src = src[len(seg):]
	}
	a.out = a.dec[:n]
	a.text = a.text[:copy(a.text, a.text[k:])]
	if a.end && len(a.out) == 0 {
		a.err = io.EOF
	}
}
