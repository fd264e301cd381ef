package mime

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

// ErrAmbiguous is matched (errors.Is) by every *AmbiguousError.
var ErrAmbiguous = errors.New("mime: ambiguous structure")

// AmbiguousError reports MIME structure that readers of the same bytes can
// read differently (Go's parser here, MIME-tools in Request Tracker,
// Python's email package, mail clients): the number of parts, a boundary,
// a media type or the body of a part. Nothing may be vouched for in such
// an entity.
type AmbiguousError struct {
	// Reason is a short token for result headers and logs:
	// bare-cr, header-syntax, header-unterminated, field-name, header-control,
	// duplicate-field,
	// media-type, param-syntax, comment, control, duplicate-param,
	// rfc2231, rfc2231-mixed, quoted-pair, encoded-word,
	// param-whitespace, boundary, nested-boundary, boundary-in-part,
	// no-delimiter, no-parts, empty-part, mixed-line-ends, transfer-encoding, composite-encoding,
	// message-type, base64, quoted-printable, uuencode.
	Reason string
	// Part is the section of the entity: "root" for the entity checked,
	// "1", "1.2" … for its descendants (1-based; the message inside a
	// message/rfc822 part is its child 1).
	Part string
	// Detail says what was found, for a log line.
	Detail string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("mime: ambiguous structure in part %s: %s: %s", e.Part, e.Reason, e.Detail)
}

// Is makes errors.Is(err, ErrAmbiguous) true.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// Ambiguity checks e and every entity below it for MIME structure that
// readers of the same bytes can read differently, and returns an
// *AmbiguousError for the first such place, or nil. Call it on every
// entity before vouching for it: the message root, and the root of each
// decrypted layer. The check reads the bytes once more, in a bounded
// buffer, and is linear in the size of e. Any other error is a failure to
// read the bytes (errors.Is(err, ErrAmbiguous) tells them apart).
//
// An unterminated multipart (Entity.Unterminated) is not ambiguous by
// itself: every reader ends its last part at the end of the body.
func Ambiguity(e *Entity) error {
	off, err := bareCR(e.Raw())
	if err != nil {
		return err
	}
	if off >= 0 {
		return &AmbiguousError{Reason: "bare-cr", Part: locate(e, e.offsetOf(off), "root"),
			Detail: fmt.Sprintf("a CR not followed by LF at byte %d (Python's email package ends a line there, Go and MIME-tools do not)", off)}
	}
	return check(e, "root", nil)
}

// bareCR returns the offset of the first CR not followed by LF in r, or
// -1.
func bareCR(r io.Reader) (int64, error) {
	found, pos := int64(-1), int64(0)
	cr := false // the last byte seen was a CR
	err := Scan(r, func(b []byte) bool {
		if cr && b[0] != '\n' {
			found = pos - 1
			return false
		}
		for i := 0; ; {
			j := bytes.IndexByte(b[i:], '\r')
			if j < 0 {
				break
			}
			i += j
			if i+1 == len(b) {
				break // the next byte decides
			}
			if b[i+1] != '\n' {
				found = pos + int64(i)
				return false
			}
			i += 2
		}
		cr = b[len(b)-1] == '\r'
		pos += int64(len(b))
		return true
	})
	if found < 0 && cr {
		found = pos - 1
	}
	return found, err
}

// offsetOf turns an offset in e.Raw into one in the message e was parsed
// from (its header given to ParseHeaderBody counts as before its body).
func (e *Entity) offsetOf(off int64) int64 {
	if off < int64(len(e.head)) {
		return -1
	}
	return e.start + off - int64(len(e.head))
}

// locate returns the section of the innermost entity of e that holds byte
// at of the message.
func locate(e *Entity, at int64, path string) string {
	if at < e.bodyStart {
		return path
	}
	for i, c := range e.Parts {
		if at >= c.start && at < c.end {
			return locate(c, at, childPath(path, i))
		}
	}
	return path
}

func childPath(path string, i int) string {
	if path == "root" {
		return itoa(i + 1)
	}
	return path + "." + itoa(i+1)
}

// check checks one entity and its descendants; ancestors are the
// boundaries of the multiparts around it.
func check(e *Entity, path string, ancestors []string) error {
	amb := func(reason, detail string) error {
		return &AmbiguousError{Reason: reason, Part: path, Detail: detail}
	}
	if e.headerErr != nil {
		return amb("header-syntax", fmt.Sprintf("%v (Python ends the header there, MIME-tools fails, Go reads an opaque part)", e.headerErr))
	}
	if e.noBlank {
		return amb("header-unterminated", "no blank line ends the header (MIME-tools then drops the header of a part, Python and Go keep it)")
	}
	var ct, cte, cd []string
	for _, f := range e.Header {
		if !printableName(f.Name) {
			return amb("field-name", "field name "+quote(f.Name)+" has a byte other than a token character (Python ends the header at one outside printable ASCII, Go's net/textproto refuses the header)")
		}
		// A NUL anywhere; other controls only where they shape the
		// structure (raw ISO-2022-JP subjects carry ESC, and every reader
		// but Go's net/textproto takes them).
		if c, ok := headerControl(f.Value); ok && (c == 0 || IsContentField(f.Name) || strings.EqualFold(f.Name, "MIME-Version")) {
			return amb("header-control", fmt.Sprintf("control character 0x%02x in field %s (Go's net/textproto refuses the header, C readers end a value at a NUL)", c, f.Name))
		}
		switch {
		case strings.EqualFold(f.Name, "Content-Type"):
			ct = append(ct, f.Value)
		case strings.EqualFold(f.Name, "Content-Transfer-Encoding"):
			cte = append(cte, f.Value)
		case strings.EqualFold(f.Name, "Content-Disposition"):
			cd = append(cd, f.Value)
		}
	}
	for _, d := range []struct {
		name string
		n    int
	}{{"Content-Type", len(ct)}, {"Content-Transfer-Encoding", len(cte)}, {"Content-Disposition", len(cd)}} {
		if d.n > 1 {
			return amb("duplicate-field", fmt.Sprintf("%d %s fields (Python and MIME-tools read the first, others the last)", d.n, d.name))
		}
	}
	var params []param
	if len(ct) == 1 && Unfold(ct[0]) != "" {
		var serr *syntaxError
		if serr = controls(ct[0]); serr == nil {
			_, params, serr = parseStructured(Unfold(ct[0]), true)
		}
		if serr == nil {
			serr = checkParams(params)
		}
		if serr != nil {
			return amb(serr.reason, "Content-Type: "+serr.detail)
		}
	}
	if len(cd) == 1 && Unfold(cd[0]) != "" {
		var serr *syntaxError
		if serr = controls(cd[0]); serr == nil {
			var dp []param
			_, dp, serr = parseStructured(Unfold(cd[0]), false)
			if serr == nil {
				serr = checkParams(dp)
			}
		}
		if serr != nil {
			return amb(serr.reason, "Content-Disposition: "+serr.detail)
		}
	}
	enc := "7bit"
	if len(cte) == 1 {
		// Python's compat32 compares the value as written (after
		// leading blanks): trailing blanks or folding make it an unknown
		// encoding there.
		enc = strings.ToLower(strings.TrimLeft(cte[0], " \t"))
		switch enc {
		case "7bit", "8bit", "binary", "quoted-printable", "base64":
		default:
			return amb("transfer-encoding", "Content-Transfer-Encoding "+quote(cte[0])+" is not exactly one of 7bit, 8bit, binary, quoted-printable, base64 (readers decode other values differently)")
		}
	}
	identity := enc == "7bit" || enc == "8bit" || enc == "binary"
	switch {
	case e.IsMultipart():
		if !identity {
			return amb("composite-encoding", "a multipart with Content-Transfer-Encoding "+enc)
		}
		b, ok := e.Params["boundary"]
		if !ok || !validBoundary(b) {
			return amb("boundary", "boundary "+quote(b)+" is missing or not of RFC 2046's characters without space")
		}
		for _, a := range ancestors {
			if strings.HasPrefix(a, b) || strings.HasPrefix(b, a) {
				return amb("nested-boundary", "boundary "+quote(b)+" and the enclosing boundary "+quote(a)+" are equal or one begins the other")
			}
		}
		if !e.split.seen {
			return amb("no-delimiter", "no delimiter line for boundary "+quote(b))
		}
		if len(e.Parts) == 0 {
			return amb("no-parts", "a multipart with a closing delimiter and no part (Python reads the preamble as its body)")
		}
		if e.split.empty >= 0 {
			return amb("empty-part", fmt.Sprintf("part %d is empty, not even a blank line (Python drops it, Go and MIME-tools keep it)", e.split.empty+1))
		}
		if e.split.mixed >= 0 {
			return amb("mixed-line-ends", fmt.Sprintf("the delimiter at byte %d of the body has another line break than the first one (Go's mime/multipart and go-message then read the parts differently)", e.split.mixed))
		}
		if e.split.stray >= 0 {
			return amb("boundary-in-part", fmt.Sprintf("%q occurs at byte %d of the body but not as a delimiter line", "--"+b, e.split.stray))
		}
		inner := append(ancestors[:len(ancestors):len(ancestors)], b)
		for i, c := range e.Parts {
			if err := check(c, childPath(path, i), inner); err != nil {
				return err
			}
		}
	case e.MediaType == "message/rfc822":
		if !identity {
			return amb("composite-encoding", "a message/rfc822 with Content-Transfer-Encoding "+enc)
		}
		for i, c := range e.Parts {
			if err := check(c, childPath(path, i), ancestors); err != nil {
				return err
			}
		}
	case strings.HasPrefix(e.MediaType, "message/"):
		// Python reads every message/* as a message, MIME-tools
		// external-body and partial too, Go only rfc822.
		return amb("message-type", e.MediaType+" (readers differ on whether it holds a message)")
	default:
		return checkLeaf(e, enc, amb)
	}
	return nil
}

// checkLeaf checks the body of a leaf against its transfer encoding, and
// text MIME-tools would split into parts.
func checkLeaf(e *Entity, enc string, amb func(reason, detail string) error) error {
	var off int64
	var err error
	switch enc {
	case "base64":
		if off, err = badBase64(e.Body()); err == nil && off >= 0 {
			return amb("base64", fmt.Sprintf("not strict base64 at byte %d of the body (Go refuses it, Python and MIME-tools skip or stop)", off))
		}
	case "quoted-printable":
		if off, err = badQP(e.Body()); err == nil && off >= 0 {
			return amb("quoted-printable", fmt.Sprintf("an \"=\" not followed by two hex digits or a line end at byte %d of the body", off))
		}
	default:
		switch e.MediaType {
		case "text/plain", "application/mac-binhex40", "application/mac-binhex":
			if off, err = uuencodeStart(e.Body()); err == nil && off >= 0 {
				return amb("uuencode", fmt.Sprintf("a line at byte %d that Request Tracker's MIME-tools reads as the start of a uuencoded or BinHex attachment", off))
			}
		}
	}
	return err
}

// controls rejects control characters (other than HTAB and the CRLF of
// folding) in a structured field's raw value.
func controls(v string) *syntaxError {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f {
			return &syntaxError{"control", "byte " + quoteByte(c) + " in the field"}
		}
	}
	return nil
}

// printableName reports whether n is a field name every reader takes:
// RFC 7230 token characters (RFC 5322 allows any printable ASCII but ":",
// but Go's net/textproto refuses the rest, and Python ends the header at
// a byte outside printable ASCII).
// headerControl returns the first control character of a field value
// other than HTAB and the CRLF of folding.
func headerControl(v string) (byte, bool) {
	for i := 0; i < len(v); i++ {
		c := v[i]
		if (c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f {
			return c, true
		}
	}
	return 0, false
}

func printableName(n string) bool {
	for i := 0; i < len(n); i++ {
		c := n[i]
		switch {
		case c >= '0' && c <= '9', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return n != ""
}

// b64Class classes the bytes of a base64 body for badBase64.
const (
	_ = iota // 0: not base64
	b64Data
	b64Space
	b64Pad
)

var b64Class = func() (t [256]byte) {
	for _, c := range []byte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/") {
		t[c] = b64Data
	}
	for _, c := range []byte("\r\n \t") {
		t[c] = b64Space
	}
	t['='] = b64Pad
	return t
}()

// badBase64 returns the offset of the first byte that makes r other than
// strict base64 (alphabet, line breaks and blanks, padding only at the
// end, a whole number of quanta), or -1.
func badBase64(r io.Reader) (int64, error) {
	var n, pad, pos int64
	bad := int64(-1)
	err := Scan(r, func(b []byte) bool {
		for i, c := range b {
			k := b64Class[c]
			if k == b64Data && pad == 0 {
				n++
				continue
			}
			switch k {
			case b64Space:
			case b64Pad:
				pad++
				if pad > 2 {
					bad = pos + int64(i)
					return false
				}
			default: // data after padding, or no base64 at all
				bad = pos + int64(i)
				return false
			}
		}
		pos += int64(len(b))
		return true
	})
	if err != nil || bad >= 0 {
		return bad, err
	}
	if (n+pad)%4 != 0 || (pad > 0 && n%4 == 0) {
		return pos, nil
	}
	return -1, nil
}

// badQP returns the offset of the first "=" that is neither followed by
// two hex digits nor a soft line break ("=", blanks, line end), or -1.
func badQP(r io.Reader) (int64, error) {
	const (
		text   = iota
		eq     // after "="
		hex1   // after "=" and one hex digit
		blanks // after "=" and blanks
		cr     // after "=", blanks and CR
	)
	state := text
	var pos, at int64 // at: the offset of the last "="
	bad := int64(-1)
	err := Scan(r, func(b []byte) bool {
		for i := 0; i < len(b); i++ {
			c := b[i]
			switch state {
			case text:
				j := bytes.IndexByte(b[i:], '=')
				if j < 0 {
					i = len(b)
					continue
				}
				i += j
				at, state = pos+int64(i), eq
				continue
			case eq:
				switch {
				case isHex(c):
					state = hex1
					continue
				case c == ' ' || c == '\t':
					state = blanks
					continue
				}
			case hex1:
				if isHex(c) {
					state = text
					continue
				}
				bad = at
				return false
			case blanks:
				if c == ' ' || c == '\t' {
					continue
				}
			case cr:
				if c == '\n' {
					state = text
					continue
				}
				bad = at
				return false
			}
			// After "=" or "=" and blanks: a line end, or damage.
			switch c {
			case '\n':
				state = text
			case '\r':
				state = cr
			default:
				bad = at
				return false
			}
		}
		pos += int64(len(b))
		return true
	})
	if err == nil && bad < 0 && (state == hex1 || state == cr) {
		bad = at // cut off after "=" and a hex digit, or before the LF
	}
	return bad, err
}

// uuencodeStart returns the offset of the first line that MIME-tools'
// uuencode hunt (Request Tracker turns it on) takes for an attachment:
// "begin" and three octal digits, or BinHex's "(This file must be
// converted with", or -1.
func uuencodeStart(r io.Reader) (int64, error) {
	var head [len(binhexStart)]byte // the start of the current line
	n := 0                          // bytes of it in head
	var pos, lineStart int64
	found := int64(-1)
	match := func() bool { return uuencodeLine(head[:n]) }
	err := Scan(r, func(b []byte) bool {
		for i := 0; i < len(b); {
			if n == len(head) {
				// The start is all that counts: skip to the next line.
				j := bytes.IndexByte(b[i:], '\n')
				if j < 0 {
					break
				}
				i += j
			}
			if b[i] == '\n' {
				if match() {
					found = lineStart
					return false
				}
				n, lineStart = 0, pos+int64(i)+1
				i++
				continue
			}
			head[n] = b[i]
			n++
			if n == len(head) && match() {
				found = lineStart
				return false
			}
			i++
		}
		pos += int64(len(b))
		return true
	})
	if err == nil && found < 0 && match() {
		found = lineStart
	}
	return found, err
}

// binhexStart begins the line before BinHex data, in lower case.
const binhexStart = "(this file must be converted with"

// uuencodeLine reports whether a line beginning with line starts uuencoded
// or BinHex data (for MIME-tools).
func uuencodeLine(line []byte) bool {
	return len(line) >= 9 && string(line[:6]) == "begin " && isOctal(line[6]) && isOctal(line[7]) && isOctal(line[8]) ||
		len(line) >= len(binhexStart) && bytes.EqualFold(line[:len(binhexStart)], []byte(binhexStart))
}

func isOctal(c byte) bool { return c >= '0' && c <= '7' }
