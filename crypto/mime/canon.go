package mime

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"mime/quotedprintable"
	"strings"
	"sync"

	"github.com/emersion/go-message/textproto"
)

// TempBuffer is write-once, read-many storage for one decoded part, as
// *spool.Buffer provides.
type TempBuffer interface {
	io.Writer
	Reader() io.Reader
	Close() error
}

// CanonOptions bounds and equips Canonicalize.
type CanonOptions struct {
	// MaxDepth is the deepest nesting of multiparts and messages (<= 0: 32).
	MaxDepth int
	// MaxParts is the largest number of MIME parts (<= 0: 10000).
	MaxParts int
	// NewBuffer returns temporary storage for a text part while it is
	// checked (nil: memory).
	NewBuffer func() TempBuffer
}

// ErrMalformed is returned for a multipart whose structure cannot be read.
var ErrMalformed = errors.New("mime: malformed MIME structure")

// truncReader ends a part cut off by the end of the message (no closing
// delimiter) at what is there.
type truncReader struct {
	r         io.Reader
	truncated bool
}

func (t *truncReader) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if errors.Is(err, io.ErrUnexpectedEOF) {
		t.truncated = true
		err = io.EOF
	}
	return n, err
}

// ErrLimit is returned when a message exceeds CanonOptions' bounds.
var ErrLimit = errors.New("mime: message exceeds the MIME depth or part limit")

// maxLine is the longest line left unencoded (RFC 5322 allows 998).
const maxLine = 998

// ContentFields returns the fields of h that describe the body as a MIME
// entity (Content-*), in order.
func ContentFields(h Header) Header {
	var out Header
	for _, f := range h {
		if IsContentField(f.Name) {
			out = append(out, f)
		}
	}
	return out
}

// Canonicalize writes the body of the entity whose Content-* fields are h
// in the canonical, transport-proof form a signature is made over, and
// returns the Content-* fields of the canonical entity: CRLF line ends,
// 7-bit only, no trailing whitespace and no line starting with "From ".
// Text parts that are not already so are quoted-printable encoded, other
// leaf parts base64 encoded; multiparts keep their structure (with new
// boundaries; preamble and epilogue are dropped), message/rfc822 parts are
// canonicalized inside, and multipart/signed entities (somebody else's
// signature) are copied unchanged. Decoded content is unchanged.
func Canonicalize(w io.Writer, h Header, body io.Reader, opts CanonOptions) (Header, error) {
	if opts.MaxDepth <= 0 {
		opts.MaxDepth = 32
	}
	if opts.MaxParts <= 0 {
		opts.MaxParts = 10000
	}
	if opts.NewBuffer == nil {
		opts.NewBuffer = func() TempBuffer { return &memBuffer{} }
	}
	c := &canon{opts: opts}
	bw := getWriter(w)
	defer putWriter(bw)
	out, err := c.entity(bw, ContentFields(h), body, 0)
	if err != nil {
		return nil, err
	}
	if err := bw.Flush(); err != nil {
		return nil, fmt.Errorf("mime: canonicalize: %w", err)
	}
	return out, nil
}

// writers holds the 32 KiB bufio.Writers of canonicalization (one per
// nesting level in use), reused across messages.
var writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 32<<10) }}

func getWriter(w io.Writer) *bufio.Writer {
	bw := writers.Get().(*bufio.Writer)
	bw.Reset(w)
	return bw
}

// putWriter returns bw to the pool, dropping its writer and any unflushed
// data (of a failed canonicalization).
func putWriter(bw *bufio.Writer) {
	bw.Reset(nil)
	writers.Put(bw)
}

type canon struct {
	opts  CanonOptions
	parts int
}

type memBuffer struct{ bytes.Buffer }

func (m *memBuffer) Reader() io.Reader { return bytes.NewReader(m.Bytes()) }
func (m *memBuffer) Close() error      { return nil }

// mediaType returns the lower-case media type and parameters of h's
// Content-Type (text/plain when absent or unparsable).
func mediaType(h Header) (string, map[string]string) {
	v := h.Get("Content-Type")
	if v == "" {
		return "text/plain", map[string]string{"charset": "us-ascii"}
	}
	mt, params, err := stdmime.ParseMediaType(v)
	if err != nil {
		// A parameter may be broken; the type itself is still usable.
		mt = strings.ToLower(strings.TrimSpace(strings.SplitN(v, ";", 2)[0]))
		if !strings.Contains(mt, "/") {
			return "text/plain", map[string]string{"charset": "us-ascii"}
		}
		return mt, map[string]string{}
	}
	return mt, params
}

func cte(h Header) string { return strings.ToLower(h.Get("Content-Transfer-Encoding")) }

// NewBoundary returns a random boundary that cannot occur in
// quoted-printable or base64 text ("=_" is invalid in both).
func NewBoundary() string {
	var b [12]byte
	rand.Read(b[:])
	return "=_cm_" + hex.EncodeToString(b[:])
}

func (c *canon) entity(w *bufio.Writer, h Header, body io.Reader, depth int) (Header, error) {
	c.parts++
	if c.parts > c.opts.MaxParts || depth > c.opts.MaxDepth {
		return nil, ErrLimit
	}
	mt, params := mediaType(h)
	enc := cte(h)
	identity := enc == "" || enc == "7bit" || enc == "8bit" || enc == "binary"
	switch {
	case mt == "multipart/signed" && identity:
		// A signature made by someone else: its bytes must not change.
		return cleanHeader(h), copyCRLF(w, body)
	case strings.HasPrefix(mt, "multipart/") && identity && params["boundary"] != "":
		return c.multipart(w, h, mt, params, body, depth)
	case mt == "message/rfc822" && identity:
		return c.message(w, h, body, depth)
	}
	return c.leaf(w, h, mt, enc, body)
}

// message canonicalizes a message/rfc822 part: its header is kept, its
// body canonicalized. One that does not parse is kept as opaque data.
func (c *canon) message(w *bufio.Writer, h Header, body io.Reader, depth int) (Header, error) {
	raw := c.opts.NewBuffer()
	defer raw.Close()
	if _, err := io.Copy(raw, body); err != nil {
		return nil, fmt.Errorf("mime: canonicalize: %w", err)
	}
	br := bufio.NewReader(raw.Reader())
	inner, err := ReadHeader(br, 1<<20)
	if err != nil {
		return c.leaf(w, h, "application/octet-stream", "", raw.Reader())
	}
	other := otherFields(inner)
	// The canonical Content-* fields are known after the body: stage it.
	tmp := c.opts.NewBuffer()
	defer tmp.Close()
	tw := getWriter(tmp)
	defer putWriter(tw)
	ch, err := c.entity(tw, ContentFields(inner), br, depth+1)
	if err != nil {
		return nil, err
	}
	if err := tw.Flush(); err != nil {
		return nil, fmt.Errorf("mime: canonicalize: %w", err)
	}
	if _, err := append(other, ch...).WriteTo(w); err != nil {
		return nil, err
	}
	if _, err := io.Copy(w, tmp.Reader()); err != nil {
		return nil, fmt.Errorf("mime: canonicalize: %w", err)
	}
	return setField(cleanHeader(h), "Content-Transfer-Encoding", "7bit"), nil
}

func (c *canon) multipart(w *bufio.Writer, h Header, mt string, params map[string]string, body io.Reader, depth int) (Header, error) {
	boundary := NewBoundary()
	mr := textproto.NewMultipartReader(body, params["boundary"])
	n := 0
	for {
		p, err := mr.NextPart()
		if err == io.EOF || (n > 0 && errors.Is(err, io.ErrUnexpectedEOF)) {
			// A missing final delimiter ends the multipart, as in every
			// mail client.
			break
		}
		if err != nil {
			return nil, fmt.Errorf("mime: canonicalize %s: %w: %w", mt, ErrMalformed, err)
		}
		ph, err := convertHeader(p.Header)
		if err != nil {
			return nil, err
		}
		if _, err := io.WriteString(w, "--"+boundary+"\r\n"); err != nil {
			return nil, err
		}
		// The part's canonical header is known only after its body is
		// written: stage the body.
		tmp := c.opts.NewBuffer()
		tw := getWriter(tmp)
		tr := &truncReader{r: p}
		ch, err := c.entity(tw, ph, tr, depth+1)
		if err == nil {
			err = tw.Flush()
		}
		putWriter(tw)
		if err != nil {
			tmp.Close()
			return nil, err
		}
		other := otherFields(ph)
		if _, err := append(other, ch...).WriteTo(w); err != nil {
			tmp.Close()
			return nil, err
		}
		_, err = io.Copy(w, tmp.Reader())
		tmp.Close()
		if err != nil {
			return nil, fmt.Errorf("mime: canonicalize: %w", err)
		}
		if _, err := io.WriteString(w, "\r\n"); err != nil {
			return nil, err
		}
		n++
		if tr.truncated {
			break
		}
	}
	if n == 0 {
		return nil, fmt.Errorf("mime: canonicalize %s: %w: no parts", mt, ErrMalformed)
	}
	if _, err := io.WriteString(w, "--"+boundary+"--\r\n"); err != nil {
		return nil, err
	}
	params["boundary"] = boundary
	out := setField(cleanHeader(h), "Content-Type", stdmime.FormatMediaType(mt, params))
	return setField(out, "Content-Transfer-Encoding", "7bit"), nil
}

// leaf writes one leaf part's content in a 7-bit form. body is the part
// as transmitted, in transfer encoding enc.
func (c *canon) leaf(w *bufio.Writer, h Header, mt, enc string, body io.Reader) (Header, error) {
	text := strings.HasPrefix(mt, "text/") || mt == "message/delivery-status" || mt == "message/disposition-notification"
	if !text && enc == "base64" {
		// Re-wrap the base64 text without decoding it: decoders ignore
		// everything else, so the decoded content stays as it was, even
		// for damaged input.
		lw := &lineWrapper{w: w}
		if _, err := io.Copy(lw, &base64Filter{r: body}); err != nil {
			return nil, fmt.Errorf("mime: canonicalize %s: %w", mt, err)
		}
		if err := lw.finish(); err != nil {
			return nil, err
		}
		return setField(cleanHeader(h), "Content-Transfer-Encoding", "base64"), nil
	}
	dec, err := c.decode(enc, body)
	if err != nil {
		return nil, fmt.Errorf("mime: canonicalize %s: %w", mt, err)
	}
	defer dec.Close()
	if !text {
		lw := &lineWrapper{w: w}
		b64 := base64.NewEncoder(base64.StdEncoding, lw)
		if _, err := io.Copy(b64, dec.Reader()); err != nil {
			return nil, fmt.Errorf("mime: canonicalize %s: %w", mt, err)
		}
		if err := b64.Close(); err != nil {
			return nil, err
		}
		if err := lw.finish(); err != nil {
			return nil, err
		}
		return setField(cleanHeader(h), "Content-Transfer-Encoding", "base64"), nil
	}
	chk := &cleanChecker{clean: true, bol: true}
	if _, err := io.Copy(chk, dec.Reader()); err != nil {
		return nil, err
	}
	if chk.finish() {
		if _, err := io.Copy(w, dec.Reader()); err != nil {
			return nil, err
		}
		return setField(cleanHeader(h), "Content-Transfer-Encoding", "7bit"), nil
	}
	qw := NewQPWriter(w)
	if _, err := io.Copy(qw, dec.Reader()); err != nil {
		return nil, err
	}
	if err := qw.Close(); err != nil {
		return nil, err
	}
	return setField(cleanHeader(h), "Content-Transfer-Encoding", "quoted-printable"), nil
}

// decode returns the decoded content of body in a temporary buffer. Data
// that does not decode (damaged quoted-printable or base64) is kept as it
// was transmitted, so that canonicalization never fails on it.
func (c *canon) decode(enc string, body io.Reader) (TempBuffer, error) {
	if enc != "base64" && enc != "quoted-printable" {
		buf := c.opts.NewBuffer()
		if _, err := io.Copy(buf, body); err != nil {
			buf.Close()
			return nil, err
		}
		return buf, nil
	}
	raw := c.opts.NewBuffer()
	if _, err := io.Copy(raw, body); err != nil {
		raw.Close()
		return nil, err
	}
	dec := c.opts.NewBuffer()
	if _, err := io.Copy(dec, decoder(enc, raw.Reader())); err != nil {
		dec.Close()
		return raw, nil
	}
	raw.Close()
	return dec, nil
}

// NewDecoder returns a reader of r's content with the transfer encoding
// enc (a lower-case Content-Transfer-Encoding value) undone.
func NewDecoder(enc string, r io.Reader) io.Reader {
	return decoder(strings.ToLower(strings.TrimSpace(enc)), r)
}

// decoder undoes a Content-Transfer-Encoding.
func decoder(enc string, r io.Reader) io.Reader {
	switch enc {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, &base64Filter{r: r})
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// base64Filter drops everything that is not base64 alphabet (line breaks,
// stray whitespace) and completes a truncated final quantum.
type base64Filter struct {
	r     io.Reader
	done  bool
	count int // alphabet bytes passed on, mod 4
	pad   []byte
}

func (f *base64Filter) Read(p []byte) (int, error) {
	for {
		if len(f.pad) > 0 {
			n := copy(p, f.pad)
			f.pad = f.pad[n:]
			return n, nil
		}
		if f.done {
			return 0, io.EOF
		}
		n, err := f.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '=' {
				p[j] = b
				j++
			}
		}
		f.count = (f.count + j) % 4
		if err == io.EOF {
			f.done = true
			switch f.count {
			case 2:
				f.pad = []byte("==")
			case 3:
				f.pad = []byte("=")
			}
		} else if err != nil {
			return j, err
		}
		if j > 0 {
			return j, nil
		}
	}
}

// cleanChecker decides whether text can go unencoded: 7-bit, no NUL, CRLF
// line ends only, lines of at most maxLine bytes, no trailing whitespace,
// no line starting with "From " or a dot alone.
type cleanChecker struct {
	clean   bool
	bol     bool // at the start of a line
	lineLen int
	prev    byte
	head    []byte // first bytes of the current line
	cr      bool   // previous byte was CR
}

// Write checks p a line segment at a time (up to the next CR).
func (c *cleanChecker) Write(p []byte) (int, error) {
	n := len(p)
	for c.clean && len(p) > 0 {
		if c.cr {
			c.cr = false
			if p[0] != '\n' || c.prev == ' ' || c.prev == '\t' || string(c.head) == "." {
				c.clean = false
				break
			}
			c.bol, c.lineLen, c.head, c.prev = true, 0, c.head[:0], '\n'
			p = p[1:]
			continue
		}
		seg := p
		if k := bytes.IndexByte(p, '\r'); k >= 0 {
			seg, p, c.cr = p[:k], p[k+1:], true
		} else {
			p = nil
		}
		if len(seg) == 0 {
			continue
		}
		for _, b := range seg {
			if b == '\n' || b == 0 || b >= 0x80 {
				c.clean = false
				return n, nil
			}
		}
		if c.lineLen += len(seg); c.lineLen > maxLine {
			c.clean = false
			break
		}
		if len(c.head) < 5 {
			c.head = append(c.head, seg[:min(len(seg), 5-len(c.head))]...)
			if string(c.head) == "From " {
				c.clean = false
				break
			}
		}
		c.prev = seg[len(seg)-1]
		c.bol = false
	}
	return n, nil
}

func (c *cleanChecker) finish() bool {
	if c.cr || (!c.bol && (c.prev == ' ' || c.prev == '\t')) || string(c.head) == "." {
		return false
	}
	return c.clean
}

// cleanField makes a field 7-bit (RFC 2231 parameters for Content-Type
// and Content-Disposition, RFC 2047 encoded words elsewhere) and removes
// trailing whitespace from its lines.
func cleanField(f Field) Field {
	f = SevenBitField(f)
	v := strings.ReplaceAll(strings.ReplaceAll(f.Value, "\r\n", "\n"), "\r", " ")
	v = strings.Map(func(r rune) rune {
		if r < 32 && r != '\t' && r != '\n' || r == 0x7f {
			return ' '
		}
		return r
	}, v)
	var lines []string
	for i, l := range strings.Split(v, "\n") {
		l = strings.TrimRight(l, " \t")
		// An empty continuation line would end the header.
		if i == 0 || l != "" {
			lines = append(lines, l)
		}
	}
	f.Value = strings.Join(lines, "\r\n")
	return f
}

// CleanField is the form a field takes inside a signed entity: 7-bit (see
// SevenBitField), no control characters, no trailing whitespace, no empty
// continuation lines. ok is false for a field whose name is invalid (it
// must be left out).
func CleanField(f Field) (clean Field, ok bool) {
	if !ValidFieldName(f.Name) {
		return f, false
	}
	return cleanField(f), true
}

// cleanHeader cleans every field, dropping those whose name is not a
// valid field name (RFC 5322: printable ASCII but colon).
func cleanHeader(h Header) Header {
	out := make(Header, 0, len(h))
	for _, f := range h {
		if ValidFieldName(f.Name) {
			out = append(out, cleanField(f))
		}
	}
	return out
}

// otherFields returns the clean non-Content-* fields of h.
func otherFields(h Header) Header {
	var out Header
	for _, f := range h {
		if !IsContentField(f.Name) && ValidFieldName(f.Name) {
			out = append(out, cleanField(f))
		}
	}
	return out
}

// ValidFieldName reports whether n is an RFC 5322 field name: printable
// ASCII without the colon.
func ValidFieldName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		if n[i] < 33 || n[i] > 126 || n[i] == ':' {
			return false
		}
	}
	return true
}

// setField sets the first field called name to value (removing others of
// that name) or appends it.
func setField(h Header, name, value string) Header {
	out := make(Header, 0, len(h)+1)
	done := false
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			if !done {
				out = append(out, Field{Name: f.Name, Value: value})
				done = true
			}
			continue
		}
		out = append(out, f)
	}
	if !done {
		out = append(out, Field{Name: name, Value: value})
	}
	return out
}

// SetField is setField for callers outside the package.

func convertHeader(th textproto.Header) (Header, error) {
	var buf bytes.Buffer
	if err := textproto.WriteHeader(&buf, th); err != nil {
		return nil, fmt.Errorf("mime: canonicalize: %w", err)
	}
	h, err := ReadHeader(bufio.NewReader(&buf), 0)
	if err != nil {
		return nil, err
	}
	return h, nil
}

// copyCRLF copies r to w turning bare LF and bare CR into CRLF.
func copyCRLF(w io.Writer, r io.Reader) error {
	cw := NewCRLFWriter(w)
	if _, err := io.Copy(cw, r); err != nil {
		return fmt.Errorf("mime: canonicalize: %w", err)
	}
	return cw.Close()
}

// CRLFWriter turns bare LF (and bare CR) into CRLF.
type CRLFWriter struct {
	w   io.Writer
	cr  bool
	buf []byte
}

// NewCRLFWriter returns a CRLFWriter writing to w; Close flushes a final
// bare CR.
func NewCRLFWriter(w io.Writer) *CRLFWriter { return &CRLFWriter{w: w} }

// Write converts line ends a line at a time: text that already has only
// CRLF line ends is passed on as it is, without a copy.
func (c *CRLFWriter) Write(p []byte) (int, error) {
	out := c.buf[:0]
	start, i := 0, 0 // p[start:] is not yet in out
	changed := false
	// change is called before the first byte goes to out: out gets room
	// for p with a line end added to every 16 bytes, once.
	change := func() {
		if !changed {
			changed = true
			if need := len(p) + len(p)/16 + 4; cap(out) < need {
				out = make([]byte, 0, need)
			}
		}
	}
	if c.cr && len(p) > 0 {
		change()
		c.cr = false
		out = append(out, '\r', '\n')
		if p[0] == '\n' {
			start, i = 1, 1
		}
	}
	for i < len(p) {
		j := bytes.IndexByte(p[i:], '\n')
		end := len(p)
		if j >= 0 {
			end = i + j
		}
		// p[i:end] has no LF; a CR in it is bare unless it ends the
		// segment just before the LF.
		seg := p[i:end]
		for k := bytes.IndexByte(seg, '\r'); k >= 0; k = bytes.IndexByte(seg, '\r') {
			at := end - len(seg) + k
			if at == end-1 && j >= 0 {
				break // CRLF
			}
			change()
			out = append(out, p[start:at]...)
			if at == len(p)-1 {
				c.cr = true // the LF may come in the next write
			} else {
				out = append(out, '\r', '\n')
			}
			start = at + 1
			seg = seg[k+1:]
		}
		if j < 0 {
			break
		}
		if end == 0 || p[end-1] != '\r' {
			change()
			out = append(out, p[start:end]...)
			out = append(out, '\r', '\n')
			start = end + 1
		}
		i = end + 1
	}
	if !changed {
		if _, err := c.w.Write(p); err != nil {
			return 0, err
		}
		return len(p), nil
	}
	out = append(out, p[start:]...)
	c.buf = out
	if _, err := c.w.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes a pending bare CR as CRLF.
func (c *CRLFWriter) Close() error {
	if c.cr {
		c.cr = false
		_, err := c.w.Write([]byte("\r\n"))
		return err
	}
	return nil
}

// lineWrapper breaks base64 output into 76-character CRLF lines.
type lineWrapper struct {
	w *bufio.Writer
	n int
}

func (l *lineWrapper) Write(p []byte) (int, error) {
	total := len(p)
	for len(p) > 0 {
		k := min(76-l.n, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return 0, err
		}
		l.n += k
		p = p[k:]
		if l.n == 76 {
			if _, err := l.w.WriteString("\r\n"); err != nil {
				return 0, err
			}
			l.n = 0
		}
	}
	return total, nil
}

func (l *lineWrapper) finish() error {
	if l.n > 0 {
		_, err := l.w.WriteString("\r\n")
		l.n = 0
		return err
	}
	return nil
}

// QPWriter encodes text as quoted-printable (RFC 2045) with CRLF as the
// hard line break. Beyond RFC 2045 it encodes whitespace before any line
// end, a line-initial "F" and "." (so neither "From " nor a lone dot can
// start a line) and bare CR or LF, and keeps lines at 76 characters.
type QPWriter struct {
	w    io.Writer
	line []byte // current output line, without its end
	cr   bool   // a CR is pending
	out  []byte
}

// NewQPWriter returns a QPWriter writing to w. Close flushes it.
func NewQPWriter(w io.Writer) *QPWriter { return &QPWriter{w: w} }

const hexUpper = "0123456789ABCDEF"

// qpLiteral marks the bytes that may stand for themselves in
// quoted-printable (whitespace only when no line end follows).
var qpLiteral = func() (t [256]bool) {
	for b := range 256 {
		t[b] = b >= 33 && b <= 126 && b != '=' || b == ' ' || b == '\t'
	}
	return t
}()

func (q *QPWriter) Write(p []byte) (int, error) {
	q.out = q.out[:0]
	for i := 0; i < len(p); i++ {
		b := p[i]
		// Inside a line, a run of literal bytes that fits goes in at once
		// (what byte would do for each of them).
		if !q.cr && len(q.line) > 0 && qpLiteral[b] {
			j, end := i+1, min(len(p), i+75-len(q.line))
			for j < end && qpLiteral[p[j]] {
				j++
			}
			if j > i && len(q.line)+1 <= 75 {
				q.line = append(q.line, p[i:j]...)
				i = j - 1
				continue
			}
		}
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

// byte adds one data byte to the current line.
func (q *QPWriter) byte(b byte) {
	literal := b >= 33 && b <= 126 && b != '=' || b == ' ' || b == '\t'
	if !literal {
		q.encoded(b)
		return
	}
	// Whitespace is written literally now and encoded if a line end follows.
	q.room(1)
	if len(q.line) == 0 && (b == 'F' || b == '.') {
		q.encoded(b)
		return
	}
	q.line = append(q.line, b)
}

func (q *QPWriter) encoded(b byte) {
	q.room(3)
	q.line = append(q.line, '=', hexUpper[b>>4], hexUpper[b&15])
}

// room makes space for n more characters on the line, adding a soft
// break when needed.
func (q *QPWriter) room(n int) {
	if len(q.line)+n <= 75 {
		return
	}
	q.flushLine()
	q.out = append(q.out, '=', '\r', '\n')
	q.line = q.line[:0]
}

// flushLine writes the line, encoding trailing whitespace.
func (q *QPWriter) flushLine() {
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

func (q *QPWriter) hardBreak() {
	q.flushLine()
	q.out = append(q.out, '\r', '\n')
	q.line = q.line[:0]
}

// Close ends the encoded text (without a final line break unless the text
// had one).
func (q *QPWriter) Close() error {
	q.out = q.out[:0]
	if q.cr {
		q.cr = false
		q.encoded('\r')
	}
	if len(q.line) > 0 {
		q.flushLine()
		q.line = q.line[:0]
		// Keep the encoded text ending in a line break: a soft one, so
		// the decoded text gains nothing.
		q.out = append(q.out, '=', '\r', '\n')
	}
	_, err := q.w.Write(q.out)
	return err
}

// SevenBitField returns f with a value holding 8-bit bytes made 7-bit:
// Content-Type and Content-Disposition parameters in RFC 2231 form, any
// other value as RFC 2047 encoded words (UTF-8; other bytes are replaced).
func SevenBitField(f Field) Field {
	if !has8bit(f.Value) {
		return f
	}
	v := Unfold(f.Value)
	if strings.EqualFold(f.Name, "Content-Type") || strings.EqualFold(f.Name, "Content-Disposition") {
		if mt, params, err := stdmime.ParseMediaType(v); err == nil {
			if out := stdmime.FormatMediaType(mt, params); out != "" && !has8bit(out) {
				f.Value = out
				return f
			}
		}
	}
	v = strings.ToValidUTF8(v, "\uFFFD")
	f.Value = stdmime.QEncoding.Encode("utf-8", v)
	return f
}

func has8bit(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return true
		}
	}
	return false
}
