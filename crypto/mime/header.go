// Package mime implements the MIME handling shared by the engine: an
// ordered header that keeps every field as received (so milter header
// indexes stay right), reading and writing messages, and canonical forms.
package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// Field is one header field. Value is the raw text after the colon with
// one leading space removed; folded lines are joined with "\r\n".
type Field struct {
	Name  string
	Value string
}

// Header is an ordered list of fields.
type Header []Field

// ErrHeaderTooLarge is returned when a header exceeds the allowed size.
var ErrHeaderTooLarge = errors.New("mime: header too large")

// Get returns the first value of name (case-insensitive), unfolded and
// trimmed, or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return Unfold(f.Value)
		}
	}
	return ""
}

// Values returns all unfolded values of name.
func (h Header) Values(name string) []string {
	var v []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			v = append(v, Unfold(f.Value))
		}
	}
	return v
}

// Has reports whether a field called name exists.
func (h Header) Has(name string) bool {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return true
		}
	}
	return false
}

// Clone returns a copy of h.
func (h Header) Clone() Header { return append(Header(nil), h...) }

// Unfold removes folding line breaks and trims the value.
func Unfold(v string) string {
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// WriteTo writes the header and the blank line that ends it, with CRLF
// line ends.
func (h Header) WriteTo(w io.Writer) (int64, error) {
	var b strings.Builder
	for _, f := range h {
		b.WriteString(f.Name)
		b.WriteString(":")
		if f.Value != "" && f.Value[0] != '\r' {
			b.WriteString(" ")
		}
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(f.Value, "\r\n", "\n"), "\n", "\r\n"))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	n, err := io.WriteString(w, b.String())
	return int64(n), err
}

// FromMilter converts a value as milters receive it (folded with "\n") to
// the Field form.
func FromMilter(name, value string) Field {
	value = strings.ReplaceAll(value, "\r\n", "\n")
	value = strings.ReplaceAll(value, "\n", "\r\n")
	return Field{Name: name, Value: value}
}

// ReadHeader reads a header block up to and including the blank line that
// ends it. Lines may end in CRLF or LF. It fails if the header holds more
// than max bytes (max <= 0: no limit), without reading much further. A
// message without a blank line ends its header at EOF.
func ReadHeader(r *bufio.Reader, max int64) (Header, error) {
	var h Header
	var n int64
	var line []byte
	// The field being read: its value grows by its continuation lines.
	var name string
	var value []byte
	have := false
	flush := func() {
		if have {
			h = append(h, Field{Name: name, Value: string(value)})
			have = false
		}
	}
	for {
		var err error
		line, err = readLine(r, line[:0], max-n, max > 0)
		n += int64(len(line))
		if err == ErrHeaderTooLarge {
			return nil, err
		}
		if err != nil && err != io.EOF {
			return nil, fmt.Errorf("mime: read header: %w", err)
		}
		trimmed := bytes.TrimRight(line, "\r\n")
		if len(trimmed) == 0 {
			// The blank line that ends the header, or EOF.
			flush()
			return h, nil
		}
		if trimmed[0] == ' ' || trimmed[0] == '\t' {
			if !have {
				return nil, errors.New("mime: read header: continuation line before the first field")
			}
			value = append(append(value, "\r\n"...), trimmed...)
		} else {
			f, v, ok := bytes.Cut(trimmed, []byte(":"))
			if !ok || len(f) == 0 || bytes.ContainsAny(f, " \t") {
				if !have {
					return nil, fmt.Errorf("mime: read header: %q is not a header field", clip(string(trimmed)))
				}
				return nil, fmt.Errorf("mime: read header: %q after field %s is not a header field", clip(string(trimmed)), name)
			}
			if len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
				v = v[1:]
			}
			flush()
			name, value, have = string(f), append(value[:0], v...), true
		}
		if err == io.EOF {
			flush()
			return h, nil
		}
	}
}

// readLine appends the next line of r (with its LF) to buf. With bounded
// set it reads no more than room bytes: a longer line is ErrHeaderTooLarge.
func readLine(r *bufio.Reader, buf []byte, room int64, bounded bool) ([]byte, error) {
	for {
		frag, err := r.ReadSlice('\n')
		if bounded && int64(len(buf)+len(frag)) > room {
			return buf, ErrHeaderTooLarge
		}
		buf = append(buf, frag...)
		if err != bufio.ErrBufferFull {
			return buf, err
		}
	}
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
