package mime

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"mime/quotedprintable"
	"strings"

	"github.com/emersion/go-message/charset"
)

// Limits bound a MIME walk.
type Limits struct {
	MaxDepth int // deepest nesting of multiparts (root = 0)
	MaxParts int // most entities in the tree
}

// ErrLimits is returned when a message exceeds Limits.
var ErrLimits = errors.New("mime: message structure exceeds limits")

// Entity is one MIME entity, holding slices of the raw message bytes so that
// signed content can be verified over the exact bytes that were sent.
//
// Written by hand rather than with go-message's multipart reader because
// verification needs the exact raw bytes of each part (header, blank line,
// body) between the boundary delimiters, which RFC 1847 defines as the
// signed data.
type Entity struct {
	Header    Header
	MediaType string            // lower case, "text/plain" when absent
	Params    map[string]string // Content-Type parameters, names lower case
	// Raw is the whole entity: header, blank line and body, as received.
	Raw []byte
	// Body is the raw (still transfer-encoded) body.
	Body  []byte
	Parts []*Entity // children of a multipart; the one message of a message/rfc822
	Depth int
	// Unterminated is set on a multipart whose closing delimiter is
	// missing (the message was cut short, or its sender never wrote it):
	// its last part runs to the end of the body, as mail clients read it.
	// A part followed by a delimiter is complete either way.
	Unterminated bool

	// What the parse saw and Ambiguity judges.
	headerErr error // the header could not be read: the entity is an opaque leaf
	noBlank   bool  // the header has fields and no blank line ends it
	split     split // the delimiters of a multipart body
	off       int   // offset of Raw in the parent's Body
}

// IsMultipart reports whether e is a multipart.
func (e *Entity) IsMultipart() bool { return strings.HasPrefix(e.MediaType, "multipart/") }

// Parse parses raw (a whole message or entity, CRLF or LF line ends) into
// an entity tree within lim.
func Parse(raw []byte, lim Limits) (*Entity, error) {
	count := 0
	return parse(raw, 0, "text/plain", lim, &count)
}

// ParseHeaderBody parses an entity given its header and raw body.
func ParseHeaderBody(h Header, body []byte, lim Limits) (*Entity, error) {
	count := 1
	e := &Entity{Header: h, Body: body}
	e.setType("text/plain")
	var b bytes.Buffer
	h.WriteTo(&b)
	b.Write(body)
	e.Raw = b.Bytes()
	return e, e.parseChildren(lim, &count)
}

func parse(raw []byte, depth int, defaultType string, lim Limits, count *int) (*Entity, error) {
	*count++
	if lim.MaxParts > 0 && *count > lim.MaxParts {
		return nil, fmt.Errorf("%w: more than %d parts", ErrLimits, lim.MaxParts)
	}
	if lim.MaxDepth > 0 && depth > lim.MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrLimits, lim.MaxDepth)
	}
	r := bytes.NewReader(raw)
	// A small buffer: a message can have thousands of parts, and
	// ReadHeader takes longer lines in pieces.
	br := bufio.NewReaderSize(r, 512)
	h, err := ReadHeader(br, 0)
	// The body starts right after the line that ended the header, as
	// ReadHeader saw it.
	bodyStart := len(raw) - r.Len() - br.Buffered()
	e := &Entity{Header: h, Raw: raw, Depth: depth}
	if err != nil {
		// A part whose header cannot be read is an opaque leaf: nothing
		// in it is interpreted.
		e.Header, bodyStart, e.headerErr = Header{{Name: "Content-Type", Value: "application/octet-stream"}}, 0, err
	}
	e.Body = raw[bodyStart:]
	if err == nil && len(h) > 0 {
		head := raw[:bodyStart]
		e.noBlank = !bytes.HasSuffix(head, []byte("\n\n")) && !bytes.HasSuffix(head, []byte("\n\r\n"))
	}
	e.setType(defaultType)
	return e, e.parseChildren(lim, count)
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

func (e *Entity) parseChildren(lim Limits, count *int) error {
	if e.MediaType == "message/rfc822" {
		return e.parseMessage(lim, count)
	}
	if !e.IsMultipart() {
		return nil
	}
	boundary := e.Params["boundary"]
	if boundary == "" {
		return nil // treated as a leaf
	}
	e.split = splitMultipart(e.Body, boundary)
	if e.split.parts == nil {
		// No delimiter at all: the multipart is an opaque leaf, nothing
		// in it is interpreted.
		return nil
	}
	e.Unterminated = !e.split.closed
	childType := "text/plain"
	if e.MediaType == "multipart/digest" {
		childType = "message/rfc822"
	}
	for i, p := range e.split.parts {
		child, err := parse(p, e.Depth+1, childType, lim, count)
		if err != nil {
			return err
		}
		child.off = e.split.offsets[i]
		if child.noBlank && bytes.HasSuffix(p, []byte("\n")) {
			// The line break before the next delimiter follows the
			// header's last one: every reader sees the blank line.
			child.noBlank = false
		}
		e.Parts = append(e.Parts, child)
	}
	return nil
}

// parseMessage parses the body of a message/rfc822 entity (a forwarded
// message) as its one child, so that what it holds is seen (and counted
// against the limits). A body with a transfer encoding other than the
// identity ones, which RFC 2046 forbids for message/rfc822, stays a leaf.
func (e *Entity) parseMessage(lim Limits, count *int) error {
	switch strings.ToLower(strings.TrimSpace(e.Header.Get("Content-Transfer-Encoding"))) {
	case "", "7bit", "8bit", "binary":
	default:
		return nil
	}
	child, err := parse(e.Body, e.Depth+1, "text/plain", lim, count)
	if errors.Is(err, ErrLimits) {
		return err
	}
	if err != nil {
		return nil // a broken forwarded message stays an opaque leaf
	}
	e.Parts = []*Entity{child}
	return nil
}

// split is what splitMultipart found in a multipart body.
type split struct {
	parts   [][]byte // nil when there is no delimiter line at all
	offsets []int    // where each part starts in the body
	closed  bool     // the closing delimiter was found
	// stray is the offset of the first occurrence of "--" boundary that
	// is not a delimiter line (inside a line, followed by other text, or
	// after the closing delimiter), or -1.
	stray int
	// mixed is the offset of the first delimiter whose line breaks (the
	// one before it, the one ending it) differ from the one ending the
	// first delimiter line (CRLF or LF), or -1.
	mixed int
	// empty is the index of the first part with not even a line break
	// (a delimiter line right after another), or -1.
	empty int
}

// SplitMultipart returns the raw bytes of each body part of a multipart
// body: what lies between a delimiter line and the line break before the
// next delimiter (RFC 2046 5.1.1), exactly as received. When the closing
// delimiter is missing, the last part runs to the end of the body (as mail
// clients read it) and unterminated is true. It fails only when there is
// no delimiter line at all.
func SplitMultipart(body []byte, boundary string) (parts [][]byte, unterminated bool, err error) {
	s := splitMultipart(body, boundary)
	if s.parts == nil {
		return nil, false, errors.New("mime: multipart body without a boundary delimiter")
	}
	return s.parts, !s.closed, nil
}

func splitMultipart(body []byte, boundary string) split {
	s := split{stray: -1, empty: -1, mixed: -1}
	nl := "" // the line break of the first delimiter line
	delim := []byte("--" + boundary)
	start := -1 // start of the current part
	pos := 0
	stray := func(at int) {
		if s.stray < 0 {
			s.stray = at
		}
	}
	for pos <= len(body) {
		// Find the next line that starts with the delimiter.
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		after := i + len(delim)
		if s.closed {
			// Anything that looks like a delimiter after the closing one
			// is read as one by some parsers.
			stray(i)
			break
		}
		if i > 0 && body[i-1] != '\n' {
			stray(i)
			pos = after
			continue
		}
		closing := bytes.HasPrefix(body[after:], []byte("--"))
		rest := after
		if closing {
			rest += 2
		}
		// Only linear whitespace may follow on the delimiter line.
		eol := bytes.IndexByte(body[rest:], '\n')
		var lineEnd int
		if eol < 0 {
			lineEnd = len(body)
		} else {
			lineEnd = rest + eol + 1
		}
		if len(bytes.Trim(body[rest:lineEnd], " \t\r\n")) != 0 {
			stray(i)
			pos = after
			continue
		}
		// Go's mime/multipart and go-message's reader take the line
		// break of the first delimiter line as the one that precedes
		// every later delimiter
		// break (and the one ending every delimiter line).
		own := ""
		switch {
		case bytes.HasSuffix(body[rest:lineEnd], []byte("\r\n")):
			own = "\r\n"
		case bytes.HasSuffix(body[rest:lineEnd], []byte("\n")):
			own = "\n"
		}
		if start < 0 {
			nl = own
		} else {
			before := "\n"
			if i >= 2 && body[i-2] == '\r' {
				before = "\r\n"
			}
			if (before != nl || own != nl && own != "") && s.mixed < 0 {
				s.mixed = i
			}
		}
		if start >= 0 {
			end := i
			// The line break before the delimiter belongs to it.
			if end > start && body[end-1] == '\n' {
				end--
				if end > start && body[end-1] == '\r' {
					end--
				}
			}
			if i == start && s.empty < 0 {
				s.empty = len(s.parts)
			}
			s.parts = append(s.parts, body[start:end])
			s.offsets = append(s.offsets, start)
		} else {
			s.parts = [][]byte{} // a delimiter was seen
		}
		if closing {
			s.closed = true
			pos = lineEnd
			continue
		}
		start = lineEnd
		pos = lineEnd
	}
	if !s.closed && start >= 0 {
		s.parts = append(s.parts, body[start:])
		s.offsets = append(s.offsets, start)
	}
	return s
}

// Decoded returns the body with its Content-Transfer-Encoding undone.
func (e *Entity) Decoded() ([]byte, error) {
	return DecodeTransfer(e.Header.Get("Content-Transfer-Encoding"), e.Body)
}

// DecodeTransfer undoes a Content-Transfer-Encoding.
func DecodeTransfer(cte string, body []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := make([]byte, 0, len(body))
		for _, c := range body {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				clean = append(clean, c)
			}
		}
		clean = bytes.TrimRight(clean, "=")
		out, err := base64.RawStdEncoding.DecodeString(string(clean))
		if err != nil {
			return nil, fmt.Errorf("mime: base64 body: %w", err)
		}
		return out, nil
	case "quoted-printable":
		out, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
		if err != nil {
			return nil, fmt.Errorf("mime: quoted-printable body: %w", err)
		}
		return out, nil
	}
	return body, nil
}

// Text returns a text body decoded to UTF-8 from its charset.
func (e *Entity) Text() (string, error) {
	b, err := e.Decoded()
	if err != nil {
		return "", err
	}
	cs := strings.ToLower(e.Params["charset"])
	if cs == "" || cs == "utf-8" || cs == "us-ascii" || cs == "utf8" {
		return string(b), nil
	}
	r, err := charset.Reader(cs, bytes.NewReader(b))
	if err != nil {
		return "", fmt.Errorf("mime: charset %q: %w", cs, err)
	}
	out, err := io.ReadAll(r)
	if err != nil {
		return "", fmt.Errorf("mime: charset %q: %w", cs, err)
	}
	return string(out), nil
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
