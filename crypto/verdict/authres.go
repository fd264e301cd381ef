// Package verdict implements cryptmilter's result vocabulary: for now,
// recognising Authentication-Results fields (RFC 8601) that claim the
// gateway's authserv-id, so that forged ones are removed.
package verdict

import (
	stdmime "mime"
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// AuthservID returns the authserv-id of an Authentication-Results field
// value read by RFC 8601 section 2.2: comments and folding white space
// (CFWS) anywhere between the parts, the id a token or a quoted-string
// (quoted pairs undone), an optional version (digits), and then ";" or
// the end of the value. ok is false when the value does not begin so.
// The id is returned as written (compare it case-insensitively).
//
// go-msgauth's authres.Parse splits the value at every ";" (even in a
// comment or quoted-string), takes no comment out and reads no
// quoted-string: "(a; b) mx.example.org; smime=pass" gives it "(a". It is
// one of the readings ClaimsAuthservID considers, not this one.
func AuthservID(value string) (id string, ok bool) {
	p := arParser{s: value}
	if !p.cfws() {
		return "", false
	}
	id, ok = p.value()
	if !ok || id == "" {
		return "", false
	}
	sep := p.cfws()
	if !sep {
		return "", false
	}
	if p.i < len(p.s) && isDigit(p.s[p.i]) && p.i > 0 && p.sawSpace {
		for p.i < len(p.s) && isDigit(p.s[p.i]) {
			p.i++
		}
		if !p.cfws() {
			return "", false
		}
	}
	if p.i == len(p.s) || p.s[p.i] == ';' {
		return id, true
	}
	return "", false
}

// ClaimsAuthservID reports whether an Authentication-Results field value
// may be read as coming from ourID (compared case-insensitively, a final
// "." ignored), and so must be removed from incoming mail (RFC 8601
// section 5). It fails closed: the value claims ourID when the RFC 8601
// reading (AuthservID) gives it, when any lenient reading a consumer may
// make gives it (go-msgauth's authres.Parse; the first word once comments
// are removed; the text before the first ";"), or when the value does
// not parse by RFC 8601 and mentions ourID anywhere (also inside an
// encoded-word or behind quoted pairs).
func ClaimsAuthservID(value, ourID string) bool {
	our := normID(ourID)
	if our == "" {
		return false
	}
	value = unfold(value)
	id, ok := AuthservID(value)
	if ok && normID(id) == our {
		return true
	}
	for _, r := range lenientReadings(value) {
		if normID(r) == our {
			return true
		}
	}
	if ok {
		return false
	}
	return mentions(value, our)
}

// lenientReadings are the ids that parsers short of RFC 8601 take from a
// value.
func lenientReadings(v string) []string {
	var out []string
	if id, _, err := authres.Parse(v); err == nil || id != "" {
		out = append(out, id)
	}
	if w := firstWord(stripComments(v)); w != "" {
		out = append(out, w)
	}
	before, _, _ := strings.Cut(v, ";")
	out = append(out, strings.TrimSpace(before))
	if w := firstWord(before); w != "" {
		out = append(out, w)
	}
	return out
}

// mentions reports whether our (normalized) appears in v, literally, with
// backslashes, quotes, comments or white space removed, or in a decoded
// encoded-word.
func mentions(v, our string) bool {
	forms := []string{v, stripComments(v)}
	if d, err := (&stdmime.WordDecoder{}).DecodeHeader(v); err == nil {
		forms = append(forms, d)
	}
	for _, f := range forms {
		f = strings.ToLower(f)
		if strings.Contains(f, our) {
			return true
		}
		squeezed := strings.Map(func(r rune) rune {
			switch r {
			case '\\', '"', ' ', '\t', '\r', '\n':
				return -1
			}
			return r
		}, f)
		if strings.Contains(squeezed, our) {
			return true
		}
	}
	return false
}

func normID(s string) string {
	s = strings.Trim(strings.TrimSpace(s), `"`)
	return strings.ToLower(strings.TrimSuffix(s, "."))
}

func unfold(v string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(v)
}

func firstWord(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexAny(s, " \t;"); i >= 0 {
		s = s[:i]
	}
	return strings.Trim(s, `"`)
}

// stripComments removes RFC 5322 comments (nested, with quoted pairs),
// each replaced by a space.
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && i+1 < len(s):
			if depth == 0 {
				b.WriteByte(c)
				b.WriteByte(s[i+1])
			}
			i++
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
			if depth == 0 {
				b.WriteByte(' ')
			}
		case depth == 0:
			b.WriteByte(c)
		}
	}
	return b.String()
}

// arParser reads the start of an Authentication-Results value.
type arParser struct {
	s        string
	i        int
	sawSpace bool // the last cfws consumed something
}

// cfws skips comments and white space; false on an unterminated comment.
func (p *arParser) cfws() bool {
	start := p.i
	for p.i < len(p.s) {
		switch c := p.s[p.i]; {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			p.i++
		case c == '(':
			depth := 0
			for {
				if p.i >= len(p.s) {
					return false
				}
				c := p.s[p.i]
				switch {
				case c == '\\':
					p.i++
				case c == '(':
					depth++
				case c == ')':
					depth--
				}
				p.i++
				if depth == 0 {
					break
				}
			}
		default:
			p.sawSpace = p.i > start
			return true
		}
	}
	p.sawSpace = p.i > start
	return true
}

// value reads a token or a quoted-string (RFC 2045 value).
func (p *arParser) value() (string, bool) {
	if p.i < len(p.s) && p.s[p.i] == '"' {
		p.i++
		var b strings.Builder
		for p.i < len(p.s) {
			c := p.s[p.i]
			switch c {
			case '"':
				p.i++
				return b.String(), true
			case '\\':
				p.i++
				if p.i >= len(p.s) {
					return "", false
				}
				c = p.s[p.i]
			}
			b.WriteByte(c)
			p.i++
		}
		return "", false
	}
	start := p.i
	for p.i < len(p.s) && isTokenChar(p.s[p.i]) {
		p.i++
	}
	if p.i == start {
		return "", false
	}
	// The token must end at white space, a comment, ";" or the end.
	if p.i < len(p.s) && !strings.ContainsRune(" \t\r\n(;", rune(p.s[p.i])) {
		return "", false
	}
	return p.s[start:p.i], true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// isTokenChar tells RFC 2045 token characters.
func isTokenChar(c byte) bool {
	return c > 0x20 && c < 0x7f && !strings.ContainsRune(`()<>@,;:\"/[]?=`, rune(c))
}
