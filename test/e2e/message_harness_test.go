package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
)

// Field is one header field as it appears in the message: Raw is the whole
// field including folded continuation lines, without the final line end.
type Field struct {
	Name  string // as written
	Value string // after the colon and the following blank, folding kept
	Raw   string
}

// Mail is a delivered (or composed) message split into header fields and
// body, with LF line ends (Postfix's maildirs store LF).
type Mail struct {
	Path   string
	Raw    []byte
	Header []Field
	Body   []byte
}

// Get returns the values of the fields named name (case-insensitive).
func (m *Mail) Get(name string) []string {
	var vs []string
	for _, f := range m.Header {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, f.Value)
		}
	}
	return vs
}

// parseMail splits a message into fields and body. CRLF becomes LF.
func parseMail(raw []byte) (*Mail, error) {
	lf := bytes.ReplaceAll(raw, []byte("\r\n"), []byte("\n"))
	m := &Mail{Raw: lf}
	rest := lf
	for len(rest) > 0 {
		if rest[0] == '\n' {
			m.Body = rest[1:]
			return m, nil
		}
		end := 0
		for {
			i := bytes.IndexByte(rest[end:], '\n')
			if i < 0 {
				end = len(rest)
				break
			}
			end += i + 1
			if end >= len(rest) || (rest[end] != ' ' && rest[end] != '\t') {
				break
			}
		}
		raw := strings.TrimSuffix(string(rest[:end]), "\n")
		name, value, ok := strings.Cut(raw, ":")
		if !ok || name == "" || strings.ContainsAny(name, " \t") {
			return nil, fmt.Errorf("bad header field %q", raw)
		}
		m.Header = append(m.Header, Field{Name: name, Value: strings.TrimLeft(value, " \t"), Raw: raw})
		rest = rest[end:]
	}
	return nil, errors.New("message without a body separator")
}

var messageSeq atomic.Int64

// plainMessage composes a plain-text message with CRLF line ends and a body
// meant to catch changes: a dot line, trailing blanks, a "From " line,
// 8-bit UTF-8 text, a long line and no final line end issues. Extra header
// lines (without line ends) come after the standard ones.
func plainMessage(from, to, subject string, extra ...string) []byte {
	n := messageSeq.Add(1)
	var b strings.Builder
	h := []string{
		"From: Alice <" + from + ">",
		"To: " + to,
		"Subject: " + subject,
		"Date: Thu, 26 Nov 2026 21:00:00 +0000",
		fmt.Sprintf("Message-ID: <e2e-%d-%d@example.net>", n, messageSeq.Load()),
		"MIME-Version: 1.0",
		"Content-Type: text/plain; charset=utf-8",
		"Content-Transfer-Encoding: 8bit",
		"X-Folded: first part",
		"\tsecond part",
	}
	h = append(h, extra...)
	for _, l := range h {
		b.WriteString(l + "\r\n")
	}
	b.WriteString("\r\n")
	body := []string{
		"Hello,",
		"",
		".",
		"..leading dots",
		"From the start of a line",
		"trailing blanks   ",
		"Grüße, ünïcödé — 8 bit",
		strings.Repeat("0123456789", 90),
		"",
		"-- ",
		"Alice",
	}
	for _, l := range body {
		b.WriteString(l + "\r\n")
	}
	return []byte(b.String())
}

// largeMessage composes a plain-text message whose body has at least size
// bytes of numbered 7-bit lines.
func largeMessage(from, to, subject string, size int) []byte {
	msg := plainMessage(from, to, subject)
	var b bytes.Buffer
	b.Write(msg)
	for i := 0; b.Len() < len(msg)+size; i++ {
		fmt.Fprintf(&b, "%08d %s\r\n", i, strings.Repeat("abcdefghij", 7))
	}
	return b.Bytes()
}
