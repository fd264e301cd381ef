package mime

import (
	"bytes"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

// The byte-at-a-time CRLF and quoted-printable writers the line-at-a-time
// ones replaced, kept as the reference their output must equal.

type refCRLFWriter struct {
	w   io.Writer
	cr  bool
	buf []byte
}

func (c *refCRLFWriter) Write(p []byte) (int, error) {
	c.buf = c.buf[:0]
	for _, b := range p {
		switch {
		case b == '\n':
			c.buf = append(c.buf, '\r', '\n')
			c.cr = false
			continue
		case c.cr:
			c.buf = append(c.buf, '\r', '\n')
		}
		c.cr = b == '\r'
		if !c.cr {
			c.buf = append(c.buf, b)
		}
	}
	if _, err := c.w.Write(c.buf); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (c *refCRLFWriter) Close() error {
	if c.cr {
		c.cr = false
		_, err := c.w.Write([]byte("\r\n"))
		return err
	}
	return nil
}

type refQPWriter struct {
	w    io.Writer
	line []byte
	cr   bool
	out  []byte
}

func (q *refQPWriter) Write(p []byte) (int, error) {
	q.out = q.out[:0]
	for _, b := range p {
		if q.cr {
			q.cr = false
			if b == '\n' {
				q.hardBreak()
				continue
			}
			q.encoded('\r')
		}
		switch b {
		case '\r':
			q.cr = true
		case '\n':
			q.encoded('\n')
		default:
			q.byte(b)
		}
	}
	if _, err := q.w.Write(q.out); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (q *refQPWriter) byte(b byte) {
	literal := b >= 33 && b <= 126 && b != '=' || b == ' ' || b == '\t'
	if !literal {
		q.encoded(b)
		return
	}
	q.room(1)
	if len(q.line) == 0 && (b == 'F' || b == '.') {
		q.encoded(b)
		return
	}
	q.line = append(q.line, b)
}

func (q *refQPWriter) encoded(b byte) {
	q.room(3)
	q.line = append(q.line, '=', hexUpper[b>>4], hexUpper[b&15])
}

func (q *refQPWriter) room(n int) {
	if len(q.line)+n <= 75 {
		return
	}
	q.flushLine()
	q.out = append(q.out, '=', '\r', '\n')
	q.line = q.line[:0]
}

func (q *refQPWriter) flushLine() {
	l := q.line
	if k := len(l); k > 0 && (l[k-1] == ' ' || l[k-1] == '\t') {
		ws := l[k-1]
		q.out = append(q.out, l[:k-1]...)
		if k+2 > 76 {
			q.out = append(q.out, '=', '\r', '\n')
		}
		q.out = append(q.out, '=', hexUpper[ws>>4], hexUpper[ws&15])
		return
	}
	q.out = append(q.out, l...)
}

func (q *refQPWriter) hardBreak() {
	q.flushLine()
	q.out = append(q.out, '\r', '\n')
	q.line = q.line[:0]
}

func (q *refQPWriter) Close() error {
	q.out = q.out[:0]
	if q.cr {
		q.cr = false
		q.encoded('\r')
	}
	if len(q.line) > 0 {
		q.flushLine()
		q.line = q.line[:0]
		q.out = append(q.out, '=', '\r', '\n')
	}
	_, err := q.w.Write(q.out)
	return err
}

// refClean is the byte-at-a-time cleanChecker.
type refClean struct {
	clean   bool
	bol     bool
	lineLen int
	prev    byte
	head    []byte
	cr      bool
}

func (c *refClean) Write(p []byte) (int, error) {
	if !c.clean {
		return len(p), nil
	}
	for _, b := range p {
		if c.cr {
			c.cr = false
			if b != '\n' {
				c.clean = false
				return len(p), nil
			}
			if c.prev == ' ' || c.prev == '\t' || string(c.head) == "." {
				c.clean = false
				return len(p), nil
			}
			c.bol, c.lineLen, c.head, c.prev = true, 0, c.head[:0], '\n'
			continue
		}
		switch {
		case b == '\r':
			c.cr = true
			continue
		case b == '\n' || b == 0 || b >= 0x80:
			c.clean = false
			return len(p), nil
		}
		c.lineLen++
		if c.lineLen > maxLine {
			c.clean = false
			return len(p), nil
		}
		if len(c.head) < 5 {
			c.head = append(c.head, b)
			if string(c.head) == "From " {
				c.clean = false
				return len(p), nil
			}
		}
		c.prev = b
		c.bol = false
	}
	return len(p), nil
}

func (c *refClean) finish() bool {
	if c.cr || (!c.bol && (c.prev == ' ' || c.prev == '\t')) || string(c.head) == "." {
		return false
	}
	return c.clean
}

// textAlphabet is what random test text is drawn from: everything the
// encoders treat specially, with letters and spaces often enough for
// long lines to occur.
var textAlphabet = []string{"a", "b", "F", ".", "From ", " ", "\t", "=", "\r", "\n", "\r\n", "\r\n", "\x00", "\xc3\xbc", "\xff", "~", "!",
	"abcdefghijklmnopqrstuvwxyz", "The quick brown fox jumps over the lazy dog. ", strings.Repeat("x", 80), strings.Repeat("y ", 40)}

func randomText(rng *rand.Rand, n int, alphabet []string) []byte {
	var b []byte
	for len(b) < n {
		b = append(b, alphabet[rng.IntN(len(alphabet))]...)
	}
	return b[:n]
}

// writeSplit writes data to w in pieces of random sizes and closes it.
func writeSplit(t *testing.T, w io.WriteCloser, data []byte, rng *rand.Rand) {
	t.Helper()
	for len(data) > 0 {
		n := min(len(data), 1+rng.IntN(200))
		if rng.IntN(4) == 0 {
			n = len(data)
		}
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("write %d: %d, %v", n, m, err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestFastWritersMatchReference: the CRLF and quoted-printable writers and
// the clean-text check give exactly what the byte-at-a-time versions give,
// on random text with every special case, written in random pieces.
func TestFastWritersMatchReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	clean := []string{"a", "b", " ", "abcdefghijklmnopqrstuvwxyz", "The quick brown fox. ", "\r\n", "\r\n", "F", ".", "x\t", strings.Repeat("z", 70)}
	for i := range 3000 {
		alphabet := textAlphabet
		if i%2 == 1 {
			alphabet = clean
		}
		data := randomText(rng, rng.IntN(600), alphabet)
		seed := rng.Uint64()
		var got, want bytes.Buffer
		writeSplit(t, NewCRLFWriter(&got), data, rand.New(rand.NewPCG(seed, 1)))
		writeSplit(t, &refCRLFWriter{w: &want}, data, rand.New(rand.NewPCG(seed, 2)))
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("CRLF of %q:\n got %q\nwant %q", data, got.Bytes(), want.Bytes())
		}
		got.Reset()
		want.Reset()
		writeSplit(t, NewQPWriter(&got), data, rand.New(rand.NewPCG(seed, 3)))
		writeSplit(t, &refQPWriter{w: &want}, data, rand.New(rand.NewPCG(seed, 4)))
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("QP of %q:\n got %q\nwant %q", data, got.Bytes(), want.Bytes())
		}
		fast, ref := &cleanChecker{clean: true, bol: true}, &refClean{clean: true, bol: true}
		split := rand.New(rand.NewPCG(seed, 5))
		for p := data; len(p) > 0; {
			n := min(len(p), 1+split.IntN(100))
			fast.Write(p[:n])
			ref.Write(p[:n])
			p = p[n:]
		}
		if f, r := fast.finish(), ref.finish(); f != r {
			t.Fatalf("clean(%q) = %v, want %v", data, f, r)
		}
	}
}

func benchText(size int, eightBit, crlf bool) []byte {
	line := "This is line of a ticket notification with some text, 0123456789."
	if eightBit {
		line = "Grüße, this is line of a ticket notification with some 8-bit text."
	}
	if crlf {
		line += "\r\n"
	} else {
		line += "\n"
	}
	return []byte(strings.Repeat(line, size/len(line)+1)[:size])
}

func BenchmarkCanonicalize(b *testing.B) {
	for _, tc := range []struct {
		name     string
		size     int
		eightBit bool
	}{{"7bit-10KB", 10 << 10, false}, {"8bit-10KB", 10 << 10, true}, {"8bit-1MB", 1 << 20, true}} {
		body := benchText(tc.size, tc.eightBit, true)
		h := Header{{Name: "Content-Type", Value: "text/plain; charset=utf-8"}, {Name: "Content-Transfer-Encoding", Value: "8bit"}}
		b.Run(tc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Canonicalize(io.Discard, h, bytes.NewReader(body), CanonOptions{}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCRLFWriter(b *testing.B) {
	for _, crlf := range []bool{true, false} {
		name := map[bool]string{true: "CRLF-1MB", false: "LF-1MB"}[crlf]
		data := benchText(1<<20, false, crlf)
		b.Run(name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				w := NewCRLFWriter(io.Discard)
				for p := data; len(p) > 0; p = p[min(len(p), 32<<10):] {
					w.Write(p[:min(len(p), 32<<10)])
				}
				w.Close()
			}
		})
	}
}
