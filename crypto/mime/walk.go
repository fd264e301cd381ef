package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"strings"
)

// Limits bound a MIME walk.
type Limits struct {
	MaxDepth int // deepest nesting of multiparts (root = 0)
	MaxParts int // most entities in the tree
	// MaxHeaderSize bounds the header of every part in bytes, and
	// MaxHeaderTotal the headers of all the parts of the tree together
	// (a header given to ParseHeaderBody does not count). Zero: no bound.
	MaxHeaderSize, MaxHeaderTotal int64
}

// ErrLimits is returned when a message exceeds Limits.
var ErrLimits = errors.New("mime: message structure exceeds limits")

// Entity is one MIME entity: its header as parsed, and where its bytes
// lie in the message it was parsed from, so that signed content can be
// verified over the exact bytes that were sent and large bodies are read
// as they are needed, never held in memory.
//
// Written by hand rather than with go-message's multipart reader because
// verification needs the exact raw bytes of each part (header, blank line,
// body) between the boundary delimiters, which RFC 1847 defines as the
// signed data.
type Entity struct {
	Header    Header
	MediaType string            // lower case, "text/plain" when absent
	Params    map[string]string // Content-Type parameters, names lower case
	Parts     []*Entity         // children of a multipart; the one message of a message/rfc822
	Depth     int
	// Unterminated is set on a multipart whose closing delimiter is
	// missing (the message was cut short, or its sender never wrote it):
	// its last part runs to the end of the body, as mail clients read it.
	// A part followed by a delimiter is complete either way.
	Unterminated bool

	// Where the entity lies in src: its header from start (for a root
	// given its header, head is that header as written and start is
	// bodyStart), its body from bodyStart, both up to end.
	src                   io.ReaderAt
	head                  []byte
	start, bodyStart, end int64

	// What the parse saw and Ambiguity judges.
	headerErr error // the header could not be read: the entity is an opaque leaf
	noBlank   bool  // the header has fields and no blank line ends it
	split     split // the delimiters of a multipart body
}

// IsMultipart reports whether e is a multipart.
func (e *Entity) IsMultipart() bool { return strings.HasPrefix(e.MediaType, "multipart/") }

// Raw returns a reader of the whole entity: header, blank line and body,
// as received.
func (e *Entity) Raw() io.Reader {
	body := io.NewSectionReader(e.src, e.start, e.end-e.start)
	if len(e.head) == 0 {
		return body
	}
	return io.MultiReader(bytes.NewReader(e.head), body)
}

// RawSize is the size of Raw in bytes.
func (e *Entity) RawSize() int64 { return int64(len(e.head)) + e.end - e.start }

// Body returns a reader of the raw (still transfer-encoded) body.
func (e *Entity) Body() *io.SectionReader {
	return io.NewSectionReader(e.src, e.bodyStart, e.end-e.bodyStart)
}

// BodySize is the size of the raw body in bytes.
func (e *Entity) BodySize() int64 { return e.end - e.bodyStart }

// Decoded returns a reader of the body with its Content-Transfer-Encoding
// undone, decoding as it reads (see NewTransferDecoder): a body that does
// not decode gives an error matching ErrTransferEncoding.
func (e *Entity) Decoded() io.Reader {
	return NewTransferDecoder(e.Header.Get("Content-Transfer-Encoding"), e.Body())
}

// DecodedPrefix returns up to n bytes from the start of the decoded body.
// A body that does not decode within them gives an error matching
// ErrTransferEncoding.
func (e *Entity) DecodedPrefix(n int) ([]byte, error) {
	b := make([]byte, n)
	m, err := io.ReadFull(e.Decoded(), b)
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return b[:m], err
}

// Outside returns the bytes of a multipart's body outside its parts (the
// preamble, the delimiter lines and their line breaks, the epilogue),
// when there are at most max of them (ok false otherwise).
func (e *Entity) Outside(max int64) (b []byte, ok bool, err error) {
	pos, n := e.bodyStart, e.BodySize()
	for _, p := range e.Parts {
		n -= p.end - p.start
	}
	if n > max {
		return nil, false, nil
	}
	out := make([]byte, 0, n)
	read := func(from, to int64) error {
		seg := out[len(out) : len(out)+int(to-from)]
		if m, err := e.src.ReadAt(seg, from); m < len(seg) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return fmt.Errorf("mime: read message: %w", err)
		}
		out = out[:len(out)+len(seg)]
		return nil
	}
	for _, p := range e.Parts {
		if err := read(pos, p.start); err != nil {
			return nil, false, err
		}
		pos = p.end
	}
	if err := read(pos, e.end); err != nil {
		return nil, false, err
	}
	return out, true, nil
}

// Parse parses raw (a whole message or entity, CRLF or LF line ends) into
// an entity tree within lim.
func Parse(raw []byte, lim Limits) (*Entity, error) {
	return ParseAt(bytes.NewReader(raw), int64(len(raw)), lim)
}

// ParseAt parses the message or entity of size bytes held in src (CRLF or
// LF line ends) into an entity tree within lim. The tree reads src as it
// is used: src must stay unchanged and readable as long as the tree is.
// An error is ErrLimits, or a failure to read src.
func ParseAt(src io.ReaderAt, size int64, lim Limits) (*Entity, error) {
	p := newParser(src, size, lim)
	e, err := p.parse(0, size, 0, "text/plain")
	if err == nil {
		err = p.w.err
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// ParseHeaderBody parses an entity given its header and its raw body of
// size bytes held in body (see ParseAt).
func ParseHeaderBody(h Header, body io.ReaderAt, size int64, lim Limits) (*Entity, error) {
	p := newParser(body, size, lim)
	p.count = 1
	var head bytes.Buffer
	h.WriteTo(&head)
	e := &Entity{Header: h, src: body, head: head.Bytes(), end: size}
	e.setType("text/plain")
	err := p.children(e)
	if err == nil {
		err = p.w.err
	}
	if err != nil {
		return nil, err
	}
	return e, nil
}

// parser holds one parse.
type parser struct {
	src    io.ReaderAt
	lim    Limits
	count  int   // entities so far
	header int64 // header bytes so far
	w      *window
}

func newParser(src io.ReaderAt, size int64, lim Limits) *parser {
	return &parser{src: src, lim: lim, w: newWindow(src, size)}
}

// parse parses the entity src[start:end].
func (p *parser) parse(start, end int64, depth int, defaultType string) (*Entity, error) {
	p.count++
	lim := p.lim
	if lim.MaxParts > 0 && p.count > lim.MaxParts {
		return nil, fmt.Errorf("%w: more than %d parts", ErrLimits, lim.MaxParts)
	}
	if lim.MaxDepth > 0 && depth > lim.MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrLimits, lim.MaxDepth)
	}
	e := &Entity{src: p.src, start: start, end: end, Depth: depth}
	cr := &countingReader{r: io.NewSectionReader(p.src, start, end-start)}
	// A small buffer: a message can have thousands of parts, and
	// ReadHeader takes longer lines in pieces.
	br := bufio.NewReaderSize(cr, 512)
	max := lim.MaxHeaderSize
	if lim.MaxHeaderTotal > 0 && (max <= 0 || lim.MaxHeaderTotal-p.header < max) {
		max = max0(lim.MaxHeaderTotal - p.header)
	}
	h, err := ReadHeader(br, max)
	// The body starts right after the line that ended the header, as
	// ReadHeader saw it.
	n := cr.n - int64(br.Buffered())
	switch {
	case cr.err != nil:
		return nil, fmt.Errorf("mime: read message: %w", cr.err)
	case errors.Is(err, ErrHeaderTooLarge):
		return nil, fmt.Errorf("%w: a part header beyond %d bytes", ErrLimits, max)
	case err != nil:
		// A part whose header cannot be read is an opaque leaf: nothing
		// in it is interpreted.
		e.Header, e.bodyStart, e.headerErr = Header{{Name: "Content-Type", Value: "application/octet-stream"}}, start, err
	default:
		p.header += n
		e.Header, e.bodyStart = h, start+n
		if len(h) > 0 {
			tail := p.read(max64(start, e.bodyStart-3), e.bodyStart)
			e.noBlank = !bytes.HasSuffix(tail, []byte("\n\n")) && !bytes.HasSuffix(tail, []byte("\n\r\n"))
		}
	}
	e.setType(defaultType)
	return e, p.children(e)
}

// read returns the few bytes src[from:to] (nil after a read error, which
// the parse then returns).
func (p *parser) read(from, to int64) []byte {
	b := make([]byte, to-from)
	if n, err := p.src.ReadAt(b, from); n < len(b) {
		if p.w.err == nil {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			p.w.err = fmt.Errorf("mime: read message: %w", err)
		}
		return nil
	}
	return b
}

// countingReader counts the bytes read and keeps the first error.
type countingReader struct {
	r   io.Reader
	n   int64
	err error
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.n += int64(n)
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
	return n, err
}

func max0(n int64) int64 {
	if n < 1 {
		return 1 // ReadHeader takes 0 for no limit
	}
	return n
}

func max64(a, b int64) int64 {
	if a > b {
		return a
	}
	return b
}

// setType sets MediaType and Params from the Content-Type field, or to
// defaultType when there is none (text/plain, or message/rfc822 inside
// a multipart/digest: RFC 2046 5.1.5).
func (e *Entity) setType(defaultType string) {
	e.MediaType, e.Params = defaultType, map[string]string{}
	var ct, cte int
	for _, f := range e.Header {
		switch {
		case strings.EqualFold(f.Name, "Content-Type"):
			ct++
		case strings.EqualFold(f.Name, "Content-Transfer-Encoding"):
			cte++
		}
	}
	if ct > 1 || cte > 1 {
		// Readers disagree on which of two fields counts: such an entity
		// is opaque, nothing in it is interpreted.
		e.MediaType = "application/octet-stream"
		return
	}
	if ct := e.Header.Get("Content-Type"); ct != "" {
		mt, params, err := stdmime.ParseMediaType(ct)
		if err != nil && mt == "" {
			// An unparsable type is treated as application/octet-stream
			// (RFC 2045 says text/plain, but nothing here should be
			// interpreted from it).
			e.MediaType = "application/octet-stream"
			return
		}
		e.MediaType = strings.ToLower(mt)
		for k, v := range params {
			e.Params[strings.ToLower(k)] = v
		}
	}
}

// children parses the parts of a multipart, or the message of a
// message/rfc822.
func (p *parser) children(e *Entity) error {
	if e.MediaType == "message/rfc822" {
		return p.message(e)
	}
	if !e.IsMultipart() {
		return nil
	}
	boundary := e.Params["boundary"]
	if boundary == "" {
		return nil // treated as a leaf
	}
	e.split = p.splitMultipart(e.bodyStart, e.end, boundary)
	if !e.split.seen {
		// No delimiter at all: the multipart is an opaque leaf, nothing
		// in it is interpreted.
		return nil
	}
	e.Unterminated = !e.split.closed
	childType := "text/plain"
	if e.MediaType == "multipart/digest" {
		childType = "message/rfc822"
	}
	for _, s := range e.split.parts {
		child, err := p.parse(s.start, s.end, e.Depth+1, childType)
		if err != nil {
			return err
		}
		if child.noBlank && s.end > s.start && string(p.read(s.end-1, s.end)) == "\n" {
			// The line break before the next delimiter follows the
			// header's last one: every reader sees the blank line.
			child.noBlank = false
		}
		e.Parts = append(e.Parts, child)
	}
	return nil
}

// message parses the body of a message/rfc822 entity (a forwarded
// message) as its one child, so that what it holds is seen (and counted
// against the limits). A body with a transfer encoding other than the
// identity ones, which RFC 2046 forbids for message/rfc822, stays a leaf.
func (p *parser) message(e *Entity) error {
	switch strings.ToLower(strings.TrimSpace(e.Header.Get("Content-Transfer-Encoding"))) {
	case "", "7bit", "8bit", "binary":
	default:
		return nil
	}
	child, err := p.parse(e.bodyStart, e.end, e.Depth+1, "text/plain")
	if err != nil {
		return err
	}
	e.Parts = []*Entity{child}
	return nil
}

// split is what splitMultipart found in a multipart body. Offsets in it
// count from the start of the body.
type split struct {
	seen   bool   // a delimiter line was found (else there are no parts)
	parts  []span // each body part, in the message
	closed bool   // the closing delimiter was found
	// stray is the offset of the first occurrence of "--" boundary that
	// is not a delimiter line (inside a line, followed by other text, or
	// after the closing delimiter), or -1.
	stray int64
	// mixed is the offset of the first delimiter whose line breaks (the
	// one before it, the one ending it) differ from the one ending the
	// first delimiter line (CRLF or LF), or -1.
	mixed int64
	// empty is the index of the first part with not even a line break
	// (a delimiter line right after another), or -1.
	empty int
}

// span is where a part lies in the message: src[start:end].
type span struct{ start, end int64 }

// splitMultipart finds the body parts of the multipart body
// src[body:end]: what lies between a delimiter line and the line break
// before the next delimiter (RFC 2046 5.1.1), exactly as received. When
// the closing delimiter is missing, the last part runs to the end of the
// body (as mail clients read it). It reads the body once, a window at a
// time.
func (p *parser) splitMultipart(body, end int64, boundary string) split {
	w := p.w
	s := split{stray: -1, empty: -1, mixed: -1}
	nl := "" // the line break of the first delimiter line
	delim := []byte("--" + boundary)
	start := int64(-1) // start of the current part
	pos := body
	stray := func(at int64) {
		if s.stray < 0 {
			s.stray = at - body
		}
	}
	for pos <= end {
		// Find the next line that starts with the delimiter.
		i := w.index(pos, end, delim)
		if i < 0 {
			break
		}
		after := i + int64(len(delim))
		if s.closed {
			// Anything that looks like a delimiter after the closing one
			// is read as one by some parsers.
			stray(i)
			break
		}
		if i > body && w.byteAt(i-1) != '\n' {
			stray(i)
			pos = after
			continue
		}
		closing := end-after >= 2 && w.hasPrefix(after, "--")
		rest := after
		if closing {
			rest += 2
		}
		// Only linear whitespace may follow on the delimiter line.
		lineEnd, own, ok := delimiterLineEnd(w, rest, end)
		if !ok {
			stray(i)
			pos = after
			continue
		}
		// Go's mime/multipart and go-message's reader take the line
		// break of the first delimiter line as the one that precedes
		// every later delimiter (and the one ending every delimiter
		// line).
		if start < 0 {
			nl = own
		} else {
			before := "\n"
			if i-body >= 2 && w.byteAt(i-2) == '\r' {
				before = "\r\n"
			}
			if (before != nl || own != nl && own != "") && s.mixed < 0 {
				s.mixed = i - body
			}
		}
		if start >= 0 {
			partEnd := i
			// The line break before the delimiter belongs to it.
			if partEnd > start && w.byteAt(partEnd-1) == '\n' {
				partEnd--
				if partEnd > start && w.byteAt(partEnd-1) == '\r' {
					partEnd--
				}
			}
			if i == start && s.empty < 0 {
				s.empty = len(s.parts)
			}
			s.parts = append(s.parts, span{start, partEnd})
		}
		s.seen = true
		if closing {
			s.closed = true
			pos = lineEnd
			continue
		}
		start = lineEnd
		pos = lineEnd
	}
	if !s.closed && start >= 0 {
		s.parts = append(s.parts, span{start, end})
	}
	return s
}

// delimiterLineEnd reads the rest of a delimiter line from rest: it must
// hold only spaces, tabs and CRs up to its LF (or the end of the body).
// It returns where the next line starts and the line break ("\r\n",
// "\n", or "" at the end of the body).
func delimiterLineEnd(w *window, rest, end int64) (lineEnd int64, own string, ok bool) {
	for pos := rest; pos < end; {
		b := w.get(pos, int(min(end-pos, int64(w.chunk))))
		if len(b) == 0 {
			return 0, "", false // a read error
		}
		for k, c := range b {
			switch c {
			case ' ', '\t', '\r':
				continue
			case '\n':
				at := pos + int64(k)
				if at > rest && w.byteAt(at-1) == '\r' {
					return at + 1, "\r\n", true
				}
				return at + 1, "\n", true
			}
			return 0, "", false
		}
		pos += int64(len(b))
	}
	return end, "", true
}

// Walk calls fn for e and every descendant, depth first.
func (e *Entity) Walk(fn func(*Entity)) {
	fn(e)
	for _, p := range e.Parts {
		p.Walk(fn)
	}
}

// ContentFields are the header fields that describe an entity's content;
// they move with the body when a message is rewritten.
func IsContentField(name string) bool {
	return len(name) >= 8 && strings.EqualFold(name[:8], "Content-")
}
