package smime

import (
	"bufio"
	"encoding/asn1"
	"errors"
	"io"

	"golang.org/x/crypto/cryptobyte"

	"github.com/cryptmilter/cryptmilter/internal/ber"
)

// A CMS message read as a stream: the elements on the way to its content
// are read one header at a time, the small ones (recipients, algorithms,
// certificates, signer infos) whole and bounded, and the content, the one
// element that may be large, as a reader of its octets. The BER rules are
// those of package ber (whose ToDER converts each small element), so
// that a stream is read exactly as its bytes would be.

// maxElement bounds each element read whole (a recipientInfos SET, the
// certificates, the signerInfos): a few kilobytes in real messages.
const maxElement = 1 << 20

// maxStreamDepth bounds the nesting of the elements walked by the stream
// reader (as package ber bounds what it converts).
const maxStreamDepth = 48

var errStreamBER = errors.New("smime: malformed BER")

// berReader reads BER elements from a stream.
type berReader struct {
	r   *bufio.Reader
	off int64 // bytes read
	err error // the first error reading the stream (not a BER error)
}

func newBERReader(r io.Reader) *berReader {
	return &berReader{r: bufio.NewReaderSize(r, 32<<10)}
}

// head is an element's identifier and length octets.
type head struct {
	raw         []byte
	class       byte
	constructed bool
	number      uint32
	indefinite  bool
	length      int64
}

// is reports whether h is the universal or context-specific tag (class,
// number) in the form constructed.
func (h head) is(class byte, number uint32, constructed bool) bool {
	return h.class == class && h.number == number && h.constructed == constructed
}

// Tag classes.
const (
	universal       = 0
	contextSpecific = 2
)

// frame is the content of a constructed element being walked.
type frame struct {
	indefinite bool
	end        int64 // offset just past the content (definite lengths)
}

func (b *berReader) readByte() (byte, error) {
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, b.fail(err)
	}
	b.off++
	return c, nil
}

// fail records a read error; the end of the stream inside an element is
// malformed BER.
func (b *berReader) fail(err error) error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return errStreamBER
	}
	if b.err == nil {
		b.err = err
	}
	return err
}

// header reads the next element's header inside f (nil: at the top).
func (b *berReader) header(f *frame) (head, error) {
	var h head
	b0, err := b.readByte()
	if err != nil {
		return h, err
	}
	h.raw = append(h.raw, b0)
	h.class, h.constructed = b0>>6, b0&0x20 != 0
	if b0&0x1f != 0x1f {
		h.number = uint32(b0 & 0x1f)
	} else {
		// High tag number: base-128, at most 4 octets, minimal.
		for i := 1; ; i++ {
			c, err := b.readByte()
			if err != nil {
				return h, err
			}
			if i > 4 || i == 1 && c == 0x80 {
				return h, errStreamBER
			}
			h.raw = append(h.raw, c)
			h.number = h.number<<7 | uint32(c&0x7f)
			if c&0x80 == 0 {
				break
			}
		}
		if h.number < 0x1f {
			return h, errStreamBER
		}
	}
	l0, err := b.readByte()
	if err != nil {
		return h, err
	}
	h.raw = append(h.raw, l0)
	switch {
	case l0 < 0x80:
		h.length = int64(l0)
	case l0 == 0x80:
		if !h.constructed {
			return h, errStreamBER
		}
		h.indefinite = true
	case l0 == 0xff:
		return h, errStreamBER
	default:
		n := int(l0 & 0x7f)
		if n > 4 {
			return h, errStreamBER
		}
		for range n {
			c, err := b.readByte()
			if err != nil {
				return h, err
			}
			h.raw = append(h.raw, c)
			h.length = h.length<<8 | int64(c)
		}
	}
	if f != nil && !f.indefinite && (b.off > f.end || !h.indefinite && h.length > f.end-b.off) {
		return h, errStreamBER
	}
	return h, nil
}

// enter returns the frame of h's content (h just read).
func (b *berReader) enter(h head) frame {
	return frame{indefinite: h.indefinite, end: b.off + h.length}
}

// more reports whether f has another element; at the end of an
// indefinite frame it reads the end-of-contents octets.
func (b *berReader) more(f frame) (bool, error) {
	if !f.indefinite {
		switch {
		case b.off == f.end:
			return false, nil
		case b.off > f.end:
			return false, errStreamBER
		}
		return true, nil
	}
	p, err := b.r.Peek(2)
	if err != nil {
		return false, b.fail(err)
	}
	if p[0] == 0 && p[1] == 0 {
		b.r.Discard(2)
		b.off += 2
		return false, nil
	}
	return true, nil
}

// element reads the rest of the element h (its header just read) and
// returns it whole, header included, converted to DER (ber.ToDER). It
// fails beyond maxElement bytes.
func (b *berReader) element(h head) ([]byte, error) {
	raw := append([]byte(nil), h.raw...)
	raw, err := b.content(raw, h, 0)
	if err != nil {
		return nil, err
	}
	der, err := ber.ToDER(raw)
	if err != nil {
		return nil, errStreamBER
	}
	return der, nil
}

// content appends h's content, as read, to raw.
func (b *berReader) content(raw []byte, h head, depth int) ([]byte, error) {
	if depth > maxStreamDepth {
		return nil, errStreamBER
	}
	if !h.indefinite {
		if int64(len(raw))+h.length > maxElement {
			return nil, errStreamBER
		}
		start := len(raw)
		raw = append(raw, make([]byte, h.length)...)
		if _, err := io.ReadFull(b.r, raw[start:]); err != nil {
			return nil, b.fail(err)
		}
		b.off += h.length
		return raw, nil
	}
	f := b.enter(h)
	for {
		more, err := b.more(f)
		if err != nil {
			return nil, err
		}
		if !more {
			return append(raw, 0, 0), nil
		}
		ch, err := b.header(&f)
		if err != nil {
			return nil, err
		}
		raw = append(raw, ch.raw...)
		if len(raw) > maxElement {
			return nil, errStreamBER
		}
		if raw, err = b.content(raw, ch, depth+1); err != nil {
			return nil, err
		}
	}
}

// skip reads and drops the rest of the element h (its structure checked
// as element checks it, but not held).
func (b *berReader) skip(h head) error {
	_, err := b.element(h)
	return err
}

// trailer reads what follows the top element: only zero bytes (padding
// some clients append) may.
func (b *berReader) trailer() error {
	for {
		c, err := b.r.ReadByte()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return b.fail(err)
		}
		b.off++
		if c != 0 {
			return errStreamBER
		}
	}
}

// octets returns a reader of the content of an OCTET STRING, or of an
// IMPLICIT [n] one, whose header h was just read inside f: primitive, or
// constructed of OCTET STRING segments (constructed ones too, to any
// depth within maxStreamDepth). segmented tells the constructed form.
func (b *berReader) octets(h head) *octetReader {
	o := &octetReader{b: b}
	if h.constructed {
		o.stack = []frame{b.enter(h)}
		o.segmented = true
	} else {
		o.left = h.length
	}
	return o
}

// octetReader reads the octets of a (possibly constructed) OCTET STRING.
type octetReader struct {
	b         *berReader
	stack     []frame // the constructed levels still open
	left      int64   // bytes left in the current primitive segment
	n         int64   // bytes read
	segmented bool
	err       error
}

func (o *octetReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for o.left == 0 {
		if o.err != nil {
			return 0, o.err
		}
		if len(o.stack) == 0 {
			o.err = io.EOF
			return 0, io.EOF
		}
		top := &o.stack[len(o.stack)-1]
		more, err := o.b.more(*top)
		if err != nil {
			o.err = err
			return 0, err
		}
		if !more {
			o.stack = o.stack[:len(o.stack)-1]
			continue
		}
		h, err := o.b.header(top)
		switch {
		case err != nil:
		case h.class != universal || h.number != 4:
			err = errStreamBER // a segment that is not an OCTET STRING
		case h.constructed && len(o.stack) == maxStreamDepth:
			err = errStreamBER
		}
		if err != nil {
			o.err = err
			return 0, err
		}
		if h.constructed {
			o.stack = append(o.stack, o.b.enter(h))
		} else {
			o.left = h.length
		}
	}
	if int64(len(p)) > o.left {
		p = p[:o.left]
	}
	n, err := o.b.r.Read(p)
	o.b.off += int64(n)
	o.left -= int64(n)
	o.n += int64(n)
	if err == io.EOF && o.left > 0 {
		err = nil // the next Read finds the stream cut short
	}
	if err != nil && err != io.EOF {
		o.err = o.b.fail(err)
		return n, o.err
	}
	if n == 0 && o.left > 0 {
		o.err = errStreamBER
		return 0, o.err
	}
	return n, nil
}

// next reads the header of f's next element, which must be there.
func (b *berReader) next(f *frame) (head, error) {
	more, err := b.more(*f)
	if err != nil {
		return head{}, err
	}
	if !more {
		return head{}, errStreamBER
	}
	return b.header(f)
}

// integer reads f's next element, an INTEGER that fits an int.
func (b *berReader) integer(f *frame) (int, error) {
	h, err := b.next(f)
	if err != nil || !h.is(universal, 2, false) {
		return 0, orBER(err)
	}
	der, err := b.element(h)
	if err != nil {
		return 0, err
	}
	in := cryptobyte.String(der)
	var v int
	if !in.ReadASN1Integer(&v) || !in.Empty() {
		return 0, errStreamBER
	}
	return v, nil
}

// oid reads f's next element, an OBJECT IDENTIFIER.
func (b *berReader) oid(f *frame) (asn1.ObjectIdentifier, error) {
	h, err := b.next(f)
	if err != nil || !h.is(universal, 6, false) {
		return nil, orBER(err)
	}
	der, err := b.element(h)
	if err != nil {
		return nil, err
	}
	in := cryptobyte.String(der)
	var oid asn1.ObjectIdentifier
	if !in.ReadASN1ObjectIdentifier(&oid) || !in.Empty() {
		return nil, errStreamBER
	}
	return oid, nil
}

// readContentInfoHead reads the start of a top-level ContentInfo: its
// content type, and the frames of its [0] EXPLICIT content and of itself.
func readContentInfoHead(b *berReader) (asn1.ObjectIdentifier, frame, frame, error) {
	h, err := b.header(nil)
	if err != nil || !h.is(universal, 16, true) {
		return nil, frame{}, frame{}, orBER(err)
	}
	fci := b.enter(h)
	ctype, err := b.oid(&fci)
	if err != nil {
		return nil, frame{}, frame{}, err
	}
	if h, err = b.next(&fci); err != nil || !h.is(contextSpecific, 0, true) {
		return nil, frame{}, frame{}, orBER(err)
	}
	return ctype, b.enter(h), fci, nil
}

// orBER is err, or errStreamBER when err is nil (a structure that is not
// what it must be).
func orBER(err error) error {
	if err != nil {
		return err
	}
	return errStreamBER
}
