package crypto

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"sync"
	"unicode"
	"unicode/utf8"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// The inbound engine reads every message, and everything it decrypts, as
// a stream or through an io.ReaderAt over a spool buffer (memory up to
// limits.memory_spool, an unlinked file beyond): what it holds in memory
// per message is a few buffers of fixed size, whatever the size of the
// message. This file has the stream helpers.

// stickyAt is an io.ReaderAt that remembers its first read error. Every
// parse tree reads its bytes through one, so that the classifiers, which
// take unreadable bytes for bytes that do not match, cannot hide a failing
// spool: the analysis checks the errors at the end (analyzer.readErr) and
// the message is tempfailed.
type stickyAt struct {
	r    io.ReaderAt
	size int64
	mu   sync.Mutex
	err  error
}

func (s *stickyAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := s.r.ReadAt(p, off)
	if err != nil && (err != io.EOF || off+int64(n) < s.size) {
		s.mu.Lock()
		if s.err == nil {
			s.err = err
		}
		s.mu.Unlock()
	}
	return n, err
}

func (s *stickyAt) failed() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// source registers src (size bytes) as the bytes of a parse tree.
func (a *analyzer) source(src io.ReaderAt, size int64) *stickyAt {
	s := &stickyAt{r: src, size: size}
	a.srcs = append(a.srcs, s)
	return s
}

// hold keeps c (a spool buffer, a plaintext) until the message is done.
func (a *analyzer) hold(c io.Closer) { a.held = append(a.held, c) }

// newBuffer returns a spool buffer held until the message is done.
func (a *analyzer) newBuffer() *spool.Buffer {
	b := a.e.spool.New()
	a.hold(b)
	return b
}

// close releases what the analysis held.
func (a *analyzer) close() {
	for _, c := range a.held {
		c.Close()
	}
	a.held = nil
}

// readErr is the first error reading the bytes of any parse tree.
func (a *analyzer) readErr() error {
	for _, s := range a.srcs {
		if err := s.failed(); err != nil {
			return fmt.Errorf("crypto: inbound: %w", err)
		}
	}
	return nil
}

// crlfReader reads r with a CR put before every LF that has none; a CR
// alone stays as it is (toCRLF, as a stream).
type crlfReader struct {
	r       io.Reader
	cr      bool // the last byte read was a CR
	pending bool // an LF is due (p had no room for it)
	in      *[]byte
}

func newCRLFReader(r io.Reader) *crlfReader { return &crlfReader{r: r} }

func (c *crlfReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	if c.pending {
		c.pending = false
		p[0] = '\n'
		return 1, nil
	}
	if c.in == nil {
		c.in = scanBufs.Get().(*[]byte)
	}
	// Read at most half of p: every byte may become two.
	n, err := c.r.Read((*c.in)[:min(max(len(p)/2, 1), len(*c.in))])
	if err != nil {
		defer c.release()
	}
	out := 0
	for _, b := range (*c.in)[:n] {
		if b == '\n' && !c.cr {
			p[out] = '\r'
			out++
			if out == len(p) {
				c.pending = true
				c.cr = false
				return out, err
			}
		}
		p[out] = b
		out++
		c.cr = b == '\r'
	}
	return out, err
}

// release gives the read buffer back once r has ended.
func (c *crlfReader) release() {
	scanBufs.Put(c.in)
	c.in = nil
}

// copyBuffered copies src to dst with a pooled buffer.
func copyBuffered(dst io.Writer, src io.Reader) (int64, error) {
	bp := scanBufs.Get().(*[]byte)
	defer scanBufs.Put(bp)
	return io.CopyBuffer(dst, src, *bp)
}

// lfReader reads r with every CRLF turned into LF.
type lfReader struct{ br *bufio.Reader }

func newLFReader(r io.Reader) *lfReader { return &lfReader{bufio.NewReaderSize(r, 32<<10)} }

func (l *lfReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		c, err := l.br.ReadByte()
		if err != nil {
			if n > 0 {
				return n, nil
			}
			return 0, err
		}
		if c == '\r' {
			if next, err := l.br.Peek(1); err == nil && next[0] == '\n' {
				continue // the LF follows
			}
		}
		p[n] = c
		n++
	}
	return n, nil
}

// hasBareLF reports whether r holds an LF without a CR before it.
func hasBareLF(r io.Reader) (bool, error) {
	found, cr := false, false
	err := mime.Scan(r, func(b []byte) bool {
		for i := 0; ; {
			j := bytes.IndexByte(b[i:], '\n')
			if j < 0 {
				break
			}
			i += j
			if i == 0 && !cr || i > 0 && b[i-1] != '\r' {
				found = true
				return false
			}
			i++
		}
		cr = b[len(b)-1] == '\r'
		return true
	})
	return found, err
}

var scanBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

// counter counts the non-overlapping occurrences of patterns in a stream
// (bytes.Count, a window at a time).
type counter struct {
	pats [][]byte
	n    []int
	next []int64 // where the next occurrence of each may start
	keep int     // bytes kept for occurrences across windows
	buf  []byte  // the kept bytes, then the window
	pos  int64   // stream offset of buf[0]
}

func newCounter(pats ...string) *counter {
	c := &counter{n: make([]int, len(pats)), next: make([]int64, len(pats))}
	for _, p := range pats {
		c.pats = append(c.pats, []byte(p))
		c.keep = max(c.keep, len(p)-1)
	}
	return c
}

func (c *counter) write(b []byte) {
	c.buf = append(c.buf, b...)
	for k, p := range c.pats {
		for from := max(int(c.next[k]-c.pos), 0); from <= len(c.buf)-len(p); {
			i := bytes.Index(c.buf[from:], p)
			if i < 0 {
				break
			}
			from += i + len(p)
			c.n[k]++
			c.next[k] = c.pos + int64(from)
		}
	}
	if drop := len(c.buf) - c.keep; drop > 0 {
		c.pos += int64(drop)
		c.buf = c.buf[:copy(c.buf, c.buf[drop:])]
	}
}

// textEnd finds the end of a text trimmed of white space (bytes.TrimSpace
// on the right, as a stream): the last tailLen bytes before it.
type textEnd struct {
	last    []byte // up to tailLen bytes ending at the last non-space rune
	hist    []byte // the last tailLen bytes of complete runes
	partial []byte // bytes that may begin a rune cut by the window
}

const tailLen = 64

func (t *textEnd) write(b []byte) {
	b = append(t.partial, b...)
	cut := len(b)
	for k := 1; k <= utf8.UTFMax-1 && k <= len(b); k++ {
		if utf8.RuneStart(b[len(b)-k]) {
			if !utf8.FullRune(b[len(b)-k:]) {
				cut = len(b) - k
			}
			break
		}
	}
	t.complete(b[:cut])
	t.partial = append(t.partial[:0:0], b[cut:]...)
}

// flush takes what is left as complete (an invalid rune is no space).
func (t *textEnd) flush() {
	t.complete(t.partial)
	t.partial = nil
}

func (t *textEnd) complete(b []byte) {
	j := len(b)
	for j > 0 {
		r, size := utf8.DecodeLastRune(b[:j])
		if !unicode.IsSpace(r) {
			break
		}
		j -= size
	}
	if j > 0 {
		t.last = lastN(append(append([]byte(nil), t.hist...), b[:j]...), tailLen)
	}
	t.hist = lastN(append(t.hist, b...), tailLen)
}

func lastN(b []byte, n int) []byte {
	if len(b) > n {
		return append([]byte(nil), b[len(b)-n:]...)
	}
	return b
}

// skipSpace returns a reader of r without its leading white space
// (bytes.TrimSpace on the left, as a stream).
func skipSpace(r io.Reader) *bufio.Reader {
	br := bufio.NewReaderSize(r, 512)
	for {
		c, _, err := br.ReadRune()
		if err != nil {
			break
		}
		if !unicode.IsSpace(c) {
			br.UnreadRune()
			break
		}
	}
	return br
}

// containsAny reports for each marker whether the decoded body of e
// holds it. A body that does not decode holds none (as a whole, it could
// not be read as text).
func containsAny(e *mime.Entity, markers ...string) []bool {
	c := newCounter(markers...)
	err := mime.Scan(e.Decoded(), func(b []byte) bool { c.write(b); return true })
	found := make([]bool, len(markers))
	for i := range markers {
		found[i] = err == nil && c.n[i] > 0
	}
	return found
}

// decodedUpTo returns the decoded body of e when it is at most max bytes.
func decodedUpTo(e *mime.Entity, max int) ([]byte, error) {
	b, err := e.DecodedPrefix(max + 1)
	if err != nil {
		return nil, err
	}
	if len(b) > max {
		return nil, fmt.Errorf("crypto: %s part larger than %d bytes", e.MediaType, max)
	}
	return b, nil
}

// textEntity builds a text/plain entity holding the text in src (size
// bytes, any line ends) with CRLF line ends, quoted-printable when it is
// not short-lined ASCII (mime.EncodeTextBody's rule); the body goes to a
// spool buffer held until the message is done.
func (a *analyzer) textEntity(src io.ReaderAt, size int64, charset string) (*mime.Entity, error) {
	text := func() io.Reader { return newCRLFReader(io.NewSectionReader(src, 0, size)) }
	var k textKind
	if err := mime.Scan(text(), func(b []byte) bool { k.write(b); return true }); err != nil {
		return nil, fmt.Errorf("crypto: inbound text: %w", err)
	}
	k.finish()
	switch strings.ToLower(charset) {
	case "", "us-ascii", "ascii":
		// Armor is ASCII, so clients label the part us-ascii whatever the
		// plaintext is: 8-bit text that is valid UTF-8 is UTF-8.
		if charset == "" || !k.ascii && k.utf8 {
			charset = "utf-8"
		}
	}
	buf := a.newBuffer()
	cte := "7bit"
	if k.plain {
		if _, err := io.Copy(buf, text()); err != nil {
			return nil, fmt.Errorf("crypto: inbound text: %w", err)
		}
	} else {
		cte = "quoted-printable"
		w := quotedprintable.NewWriter(buf)
		if _, err := io.Copy(w, text()); err != nil {
			return nil, fmt.Errorf("crypto: inbound text: %w", err)
		}
		if err := w.Close(); err != nil {
			return nil, fmt.Errorf("crypto: inbound text: %w", err)
		}
	}
	h := mime.Header{
		{Name: "Content-Type", Value: "text/plain; charset=" + quoteParam(charset)},
		{Name: "Content-Transfer-Encoding", Value: cte},
	}
	return mime.ParseHeaderBody(h, a.source(buf, buf.Size()), buf.Size(), a.lim)
}

// textKind is what textEntity needs to know about CRLF text: whether it
// is ASCII, valid UTF-8, and plain (mime.EncodeTextBody's 7bit: lines of
// at most 900 bytes, no 8-bit byte, NUL, or CR or LF outside a CRLF).
type textKind struct {
	ascii, utf8, plain bool
	started            bool
	line               int    // bytes of the current line
	cr                 bool   // the last byte was a CR
	partial            []byte // an incomplete rune at the end of the last write
}

func (k *textKind) write(b []byte) {
	if !k.started {
		k.ascii, k.utf8, k.plain, k.started = true, true, true, true
	}
	if k.utf8 {
		u := append(k.partial, b...)
		cut := len(u)
		for n := 1; n <= utf8.UTFMax-1 && n <= len(u); n++ {
			if utf8.RuneStart(u[len(u)-n]) {
				if !utf8.FullRune(u[len(u)-n:]) {
					cut = len(u) - n
				}
				break
			}
		}
		k.utf8 = utf8.Valid(u[:cut])
		k.partial = append(k.partial[:0:0], u[cut:]...)
	}
	for _, c := range b {
		if c >= 0x80 {
			k.ascii = false
		}
		switch {
		case c == '\n':
			if !k.cr {
				k.plain = false
			}
			k.line = 0
		case k.cr:
			k.plain = false // a CR alone
			k.line++
		case c >= 0x80 || c == 0:
			k.plain = false
			k.line++
		case c != '\r':
			k.line++
		}
		if k.line > 900 {
			k.plain = false
		}
		k.cr = c == '\r'
	}
}

func (k *textKind) finish() {
	if !k.started {
		k.ascii, k.utf8, k.plain = true, true, true
	}
	if len(k.partial) > 0 {
		k.utf8 = false
	}
	if k.cr {
		k.plain = false
	}
}
