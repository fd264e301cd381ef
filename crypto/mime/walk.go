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
}

// IsMultipart reports whether e is a multipart.
func (e *Entity) IsMultipart() bool { return strings.HasPrefix(e.MediaType, "multipart/") }

// Parse parses raw (a whole message or entity, CRLF or LF line ends) into
// an entity tree within lim.
func Parse(raw []byte, lim Limits) (*Entity, error) {
	count := 0
	return parse(raw, 0, lim, &count)
}

// ParseHeaderBody parses an entity given its header and raw body.
func ParseHeaderBody(h Header, body []byte, lim Limits) (*Entity, error) {
	count := 1
	e := &Entity{Header: h, Body: body}
	e.setType()
	var b bytes.Buffer
	h.WriteTo(&b)
	b.Write(body)
	e.Raw = b.Bytes()
	return e, e.parseChildren(lim, &count)
}

func parse(raw []byte, depth int, lim Limits, count *int) (*Entity, error) {
	*count++
	if lim.MaxParts > 0 && *count > lim.MaxParts {
		return nil, fmt.Errorf("%w: more than %d parts", ErrLimits, lim.MaxParts)
	}
	if lim.MaxDepth > 0 && depth > lim.MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", ErrLimits, lim.MaxDepth)
	}
	h, err := ReadHeader(bufio.NewReader(bytes.NewReader(raw)), 0)
	bodyStart := headerEnd(raw)
	if err != nil {
		// A part whose header cannot be read is an opaque leaf: nothing
		// in it is interpreted.
		h, bodyStart = Header{{Name: "Content-Type", Value: "application/octet-stream"}}, 0
	}
	e := &Entity{Header: h, Raw: raw, Body: raw[bodyStart:], Depth: depth}
	e.setType()
	return e, e.parseChildren(lim, count)
}

// headerEnd returns the offset just past the blank line ending the header,
// or len(raw) when there is none, or 0 when the entity starts with it.
func headerEnd(raw []byte) int {
	if bytes.HasPrefix(raw, []byte("\r\n")) {
		return 2
	}
	if bytes.HasPrefix(raw, []byte("\n")) {
		return 1
	}
	if i := bytes.Index(raw, []byte("\r\n\r\n")); i >= 0 {
		if j := bytes.Index(raw, []byte("\n\n")); j >= 0 && j < i {
			return j + 2
		}
		return i + 4
	}
	if j := bytes.Index(raw, []byte("\n\n")); j >= 0 {
		return j + 2
	}
	return len(raw)
}

func (e *Entity) setType() {
	e.MediaType, e.Params = "text/plain", map[string]string{}
	if len(e.Header.Values("Content-Type")) > 1 || len(e.Header.Values("Content-Transfer-Encoding")) > 1 {
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
	parts, err := SplitMultipart(e.Body, boundary)
	if err != nil {
		// Broken delimiters: the multipart is an opaque leaf, nothing in
		// it is interpreted.
		return nil
	}
	for _, p := range parts {
		child, err := parse(p, e.Depth+1, lim, count)
		if err != nil {
			return err
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
	child, err := parse(e.Body, e.Depth+1, lim, count)
	if errors.Is(err, ErrLimits) {
		return err
	}
	if err != nil {
		return nil // a broken forwarded message stays an opaque leaf
	}
	e.Parts = []*Entity{child}
	return nil
}

// SplitMultipart returns the raw bytes of each body part of a multipart
// body: what lies between a delimiter line and the line break before the
// next delimiter (RFC 2046 5.1.1), exactly as received.
func SplitMultipart(body []byte, boundary string) ([][]byte, error) {
	delim := []byte("--" + boundary)
	var parts [][]byte
	start := -1 // start of the current part
	pos := 0
	for pos <= len(body) {
		// Find the next line that starts with the delimiter.
		i := bytes.Index(body[pos:], delim)
		if i < 0 {
			break
		}
		i += pos
		atLineStart := i == 0 || body[i-1] == '\n'
		after := i + len(delim)
		if !atLineStart {
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
		if strings.Trim(string(body[rest:lineEnd]), " \t\r\n") != "" {
			pos = after
			continue
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
			parts = append(parts, body[start:end])
		}
		if closing {
			return parts, nil
		}
		start = lineEnd
		pos = lineEnd
	}
	if start < 0 {
		return nil, errors.New("mime: multipart body without a boundary delimiter")
	}
	return nil, errors.New("mime: multipart body without its closing delimiter")
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
