package mime

import (
	"fmt"
	"strconv"
	"strings"
)

// param is one parameter of a Content-Type or Content-Disposition value as
// written: its name in lower case with any RFC 2231 marks ("name*0*"), and
// its value (a token, or the content of a quoted-string with its quoted
// pairs undone).
type param struct {
	name, value string
	quoted      bool
	// oddPair is set when a quoted pair other than \\ or \" was used:
	// Python's email package keeps the backslash of those, other readers
	// drop it.
	oddPair bool
}

// syntaxError is why a structured field value does not parse strictly.
type syntaxError struct{ reason, detail string }

// tspecials are RFC 2045's specials: a token holds none of them.
const tspecials = `()<>@,;:\"/[]?=`

func isTokenChar(c byte) bool {
	return c > 0x20 && c < 0x7f && strings.IndexByte(tspecials, c) < 0
}

// parseStructured reads a Content-Type value (subtype true: type "/"
// subtype) or a Content-Disposition value (a single token) and its
// parameters by the strict grammar of RFC 2045 5.1 and RFC 2183, with
// nothing any reader would read differently: no comments, no whitespace
// around the "/", exactly one ";" between parameters (one trailing ";"
// allowed, as every reader ignores it), tokens and quoted strings only.
// Only SP and HTAB count as whitespace. v is the unfolded value.
func parseStructured(v string, subtype bool) (value string, params []param, serr *syntaxError) {
	i := 0
	skip := func() {
		for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
			i++
		}
	}
	token := func() string {
		j := i
		for i < len(v) && isTokenChar(v[i]) {
			i++
		}
		return v[j:i]
	}
	bad := func(reason, what string) *syntaxError {
		if i < len(v) && v[i] == '(' {
			return &syntaxError{"comment", "a comment at byte " + itoa(i) + " (readers strip or keep it)"}
		}
		if i < len(v) && (v[i] < 0x20 || v[i] >= 0x7f) {
			return &syntaxError{"control", "byte " + quoteByte(v[i]) + " at " + itoa(i)}
		}
		return &syntaxError{reason, what + " at byte " + itoa(i)}
	}
	skip()
	t := token()
	if t == "" {
		return "", nil, bad("media-type", "no type")
	}
	if subtype {
		if i >= len(v) || v[i] != '/' {
			return "", nil, bad("media-type", "no \"/\" subtype after "+quote(t))
		}
		i++
		st := token()
		if st == "" {
			return "", nil, bad("media-type", "no subtype after "+quote(t+"/"))
		}
		t += "/" + st
	}
	value = strings.ToLower(t)
	for {
		skip()
		if i == len(v) {
			return value, params, nil
		}
		if v[i] != ';' {
			return value, params, bad("param-syntax", "expected \";\"")
		}
		i++
		skip()
		if i == len(v) {
			return value, params, nil // one trailing ";"
		}
		name := token()
		if name == "" {
			return value, params, bad("param-syntax", "expected a parameter name")
		}
		skip()
		if i >= len(v) || v[i] != '=' {
			return value, params, bad("param-syntax", "expected \"=\" after parameter "+quote(name))
		}
		i++
		skip()
		p := param{name: strings.ToLower(name)}
		if i < len(v) && v[i] == '"' {
			i++
			var b strings.Builder
			closed := false
			for i < len(v) {
				c := v[i]
				if c == '"' {
					i++
					closed = true
					break
				}
				if c == '\\' && i+1 < len(v) {
					if v[i+1] != '\\' && v[i+1] != '"' {
						p.oddPair = true
					}
					c = v[i+1]
					i++
				}
				if c < 0x20 && c != '\t' || c == 0x7f {
					return value, params, &syntaxError{"control", "byte " + quoteByte(c) + " in the value of parameter " + quote(name)}
				}
				b.WriteByte(c)
				i++
			}
			if !closed {
				return value, params, &syntaxError{"param-syntax", "unterminated quoted string in parameter " + quote(name)}
			}
			p.value, p.quoted = b.String(), true
		} else {
			p.value = token()
			if p.value == "" {
				return value, params, bad("param-syntax", "expected a value for parameter "+quote(name))
			}
		}
		params = append(params, p)
	}
}

// structural are the parameters that decide how a message is read or
// shown, on which no two readers may differ at all.
var structural = map[string]bool{
	"boundary": true, "protocol": true, "micalg": true, "smime-type": true,
	"charset": true, "format": true, "delsp": true, "protected-headers": true, "hp": true,
}

// checkParams finds parameter lists that readers resolve differently:
// a name given twice (Go refuses the field, Python takes the first,
// MIME-tools the last), RFC 2231 sections mixed with a plain value or
// with gaps, RFC 2231 values Go cannot decode (it drops them), quoted
// pairs Python keeps, and for the structural parameters any RFC 2231
// form, encoded-word, or surrounding whitespace.
func checkParams(params []param) *syntaxError {
	type group struct {
		plain, ext int
		sections   map[int]int
		firstEnc   *param // value of base* or base*0*
	}
	groups := map[string]*group{}
	var order []string
	for i := range params {
		p := &params[i]
		base, section, encoded, ok := splitParamName(p.name)
		if !ok {
			return &syntaxError{"rfc2231", "malformed RFC 2231 parameter name " + quote(p.name)}
		}
		g := groups[base]
		if g == nil {
			g = &group{sections: map[int]int{}}
			groups[base] = g
			order = append(order, base)
		}
		switch {
		case section < 0 && !encoded:
			g.plain++
		case section < 0:
			g.ext++
			g.firstEnc = p
		default:
			g.sections[section]++
			if section == 0 && encoded {
				g.firstEnc = p
			}
		}
		if p.oddPair {
			return &syntaxError{"quoted-pair", "a quoted pair other than \\\\ or \\\" in parameter " + quote(p.name) + " (Python keeps the backslash)"}
		}
	}
	for _, base := range order {
		g := groups[base]
		kinds := 0
		for _, n := range []int{g.plain, g.ext, len(g.sections)} {
			if n > 0 {
				kinds++
			}
		}
		if g.plain > 1 || g.ext > 1 {
			return &syntaxError{"duplicate-param", "parameter " + quote(base) + " given more than once"}
		}
		for s, n := range g.sections {
			if n > 1 {
				return &syntaxError{"duplicate-param", "section " + itoa(s) + " of parameter " + quote(base) + " given more than once"}
			}
		}
		if kinds > 1 {
			return &syntaxError{"rfc2231-mixed", "parameter " + quote(base) + " given both plain and in RFC 2231 form"}
		}
		for s := 0; s < len(g.sections); s++ {
			if g.sections[s] == 0 {
				return &syntaxError{"rfc2231", "section " + itoa(s) + " of parameter " + quote(base) + " is missing"}
			}
		}
		if g.firstEnc != nil {
			if serr := checkExtValue(base, g.firstEnc.value); serr != nil {
				return serr
			}
		}
	}
	for i := range params {
		p := &params[i]
		base, section, encoded, _ := splitParamName(p.name)
		if !structural[base] {
			continue
		}
		switch {
		case section >= 0 || encoded:
			return &syntaxError{"rfc2231", "RFC 2231 form of the structural parameter " + quote(p.name)}
		case strings.Contains(p.value, "=?"):
			return &syntaxError{"encoded-word", "an encoded-word in parameter " + quote(p.name) + " (Python's default policy decodes it)"}
		case strings.TrimLeft(p.value, " \t") != p.value || strings.TrimRight(p.value, " \t") != p.value:
			return &syntaxError{"param-whitespace", "whitespace around the value of parameter " + quote(p.name) + " (Python strips it)"}
		case hasNonASCII(p.value):
			return &syntaxError{"control", "a non-ASCII byte in parameter " + quote(p.name)}
		}
	}
	for i := range params {
		p := &params[i]
		_, section, encoded, _ := splitParamName(p.name)
		if !encoded {
			continue
		}
		rest := p.value
		if section <= 0 {
			// charset'language'value, the prefix checked above.
			if k := strings.LastIndexByte(rest, '\''); k >= 0 {
				rest = rest[k+1:]
			}
		}
		if !validPercent(rest) {
			return &syntaxError{"rfc2231", "bad percent-encoding in parameter " + quote(p.name)}
		}
	}
	return nil
}

// splitParamName splits an RFC 2231 parameter name: "name" (-1, false),
// "name*" (-1, true), "name*N" (N, false), "name*N*" (N, true). Section
// numbers have no leading zeros (readers disagree on "*01").
func splitParamName(n string) (base string, section int, encoded bool, ok bool) {
	base, rest, found := strings.Cut(n, "*")
	if !found {
		return n, -1, false, true
	}
	if base == "" {
		return "", 0, false, false
	}
	if rest == "" {
		return base, -1, true, true
	}
	if strings.HasSuffix(rest, "*") {
		encoded = true
		rest = rest[:len(rest)-1]
	}
	if rest == "" || len(rest) > 3 || (len(rest) > 1 && rest[0] == '0') {
		return base, 0, false, false
	}
	section = 0
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return base, 0, false, false
		}
		section = section*10 + int(rest[i]-'0')
	}
	return base, section, encoded, true
}

// checkExtValue checks the charset'language'value form that opens an
// RFC 2231 encoded value. Go decodes only UTF-8 and US-ASCII (and drops
// the parameter otherwise), Python decodes any charset it knows, and
// MIME-tools rewrites the value as an encoded-word: only the first two
// are read alike.
func checkExtValue(base, v string) *syntaxError {
	cs, rest, ok := strings.Cut(v, "'")
	if !ok {
		return &syntaxError{"rfc2231", "parameter " + quote(base) + " lacks the charset'language' prefix"}
	}
	if _, _, ok := strings.Cut(rest, "'"); !ok {
		return &syntaxError{"rfc2231", "parameter " + quote(base) + " lacks the charset'language' prefix"}
	}
	switch strings.ToLower(cs) {
	case "utf-8", "us-ascii":
		return nil
	}
	return &syntaxError{"rfc2231", "parameter " + quote(base) + " in charset " + quote(cs) + ", which Go does not decode"}
}

func validPercent(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' {
			if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
				return false
			}
			i += 2
		}
	}
	return true
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hasNonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] < 0x20 {
			return true
		}
	}
	return false
}

// validBoundary reports whether b is a boundary every reader finds the
// same delimiters for: RFC 2046's bcharsnospace only (no space at all:
// readers strip, fold or keep it differently). RFC 2046's limit of 70 is
// not enforced: every reader takes longer ones alike.
func validBoundary(b string) bool {
	if b == "" {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte("'()+_,-./:=?", c) >= 0:
		default:
			return false
		}
	}
	return true
}

func itoa(n int) string { return strconv.Itoa(n) }

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "…"
	}
	return strconv.Quote(s)
}

func quoteByte(c byte) string { return fmt.Sprintf("0x%02x", c) }
