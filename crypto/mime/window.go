package mime

import (
	"bytes"
	"fmt"
	"io"
	"sync"
)

// windowSize is how much of the message a window holds at once.
const windowSize = 32 << 10

// window reads a message through a buffer for the scans of the parse:
// forward searches that look back a few bytes and may start again a
// little before where they stopped. It holds at most a few windowSize
// bytes, whatever the size of the message.
type window struct {
	src   io.ReaderAt
	size  int64
	chunk int    // bytes read at once
	buf   []byte // src[off : off+len(buf)]
	off   int64
	err   error // the first read error
}

func newWindow(src io.ReaderAt, size int64) *window {
	return &window{src: src, size: size, chunk: int(min(windowSize, max(size, 64)))}
}

// get returns src[at : at+n], or less at the end of the message (n at
// most a few windowSize bytes, or the longest pattern searched for).
func (w *window) get(at int64, n int) []byte {
	end := min(at+int64(n), w.size)
	if at >= end {
		return nil
	}
	if at >= w.off && end <= w.off+int64(len(w.buf)) {
		return w.buf[at-w.off : end-w.off]
	}
	want := max(int(end-at), w.chunk)
	if cap(w.buf) < want {
		w.buf = make([]byte, want)
	}
	fill := min(int64(cap(w.buf)), w.size-at)
	w.buf = w.buf[:fill]
	m, err := w.src.ReadAt(w.buf, at)
	if m < len(w.buf) && w.err == nil {
		if err == nil || err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		w.err = fmt.Errorf("mime: read message: %w", err)
	}
	w.buf, w.off = w.buf[:m], at
	return w.buf[:min(int64(m), end-at)]
}

// byteAt returns the byte at i (0 past the end).
func (w *window) byteAt(i int64) byte {
	if b := w.get(i, 1); len(b) == 1 {
		return b[0]
	}
	return 0
}

// hasPrefix reports whether the bytes at i begin with p.
func (w *window) hasPrefix(i int64, p string) bool {
	return string(w.get(i, len(p))) == p
}

// index returns the offset of the first occurrence of pat at or after
// from and before end, or -1.
func (w *window) index(from, end int64, pat []byte) int64 {
	for pos := from; pos+int64(len(pat)) <= end; {
		n := int(min(end-pos, int64(max(w.chunk, 2*len(pat)))))
		b := w.get(pos, n)
		if len(b) < len(pat) {
			return -1 // a read error
		}
		if i := bytes.Index(b, pat); i >= 0 {
			return pos + int64(i)
		}
		pos += int64(len(b) - len(pat) + 1)
	}
	return -1
}

var scanBufs = sync.Pool{New: func() any { b := make([]byte, windowSize); return &b }}

// Scan calls fn with the bytes of r in order, a pooled 32 KiB buffer at a
// time (valid until fn returns), until fn returns false or r ends, and
// returns the first error reading r.
func Scan(r io.Reader, fn func(b []byte) bool) error {
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	for {
		n, err := io.ReadFull(r, *bp)
		if n > 0 && !fn((*bp)[:n]) {
			return nil
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return nil
		default:
			return err
		}
	}
}
