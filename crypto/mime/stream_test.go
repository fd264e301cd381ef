package mime

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"testing/iotest"
)

// The streaming parse and scans must read exactly what the in-memory
// ones they replaced read. These tests keep those (as they were before
// the entity was backed by an io.ReaderAt) as references and compare,
// with windows small enough that every pattern crosses a window edge.

// TestSplitMultipartStream compares the streaming splitter with the
// reference on the seeds of FuzzSplitMultipart.
func TestSplitMultipartStream(t *testing.T) {
	for _, c := range splitSeeds() {
		checkSplit(t, c.body, c.boundary)
	}
}

func FuzzSplitMultipart(f *testing.F) {
	for _, c := range splitSeeds() {
		f.Add(c.body, c.boundary)
	}
	f.Fuzz(func(t *testing.T, body []byte, boundary string) {
		if boundary == "" {
			return
		}
		checkSplit(t, body, boundary)
	})
}

type splitSeed struct {
	body     []byte
	boundary string
}

func splitSeeds() []splitSeed {
	var seeds []splitSeed
	add := func(body, boundary string) { seeds = append(seeds, splitSeed{[]byte(body), boundary}) }
	add("--b\r\nA\r\n--bx\r\nnot a delimiter\r\n--b  \r\nB\r\n--b--", "b")
	add("pre\n--b\nA\n--b\r\nB\r\n--b--\r\n--b\n", "b")
	add("--b\r\n--b\r\n\r\n--b--\r\nepilogue --b\r\n", "b")
	add("--b--b\r\n--b-x\r\n--b\r\nlast", "b")
	add("x--b\n--b \t\r\n\n--b--", "b")
	add("--=_b\r\n"+strings.Repeat("text line\r\n", 30)+"--=_b\r\n\r\n--=_b--", "=_b")
	add("-- \r\n-- \r\n--  \r\n--", " ")
	for _, m := range []string{"\r\n", "\n"} {
		var b strings.Builder
		for i := range 5 {
			b.WriteString("--abc" + m + strings.Repeat("y", i*7) + m)
		}
		b.WriteString("--abc--" + m)
		add(b.String(), "abc")
	}
	return seeds
}

// checkSplit compares the splitter with the reference for several window
// sizes.
func checkSplit(t *testing.T, body []byte, boundary string) {
	t.Helper()
	want := referenceSplit(body, boundary)
	for _, chunk := range []int{1, 3, 7, 64, windowSize} {
		p := newParser(bytes.NewReader(body), int64(len(body)), Limits{})
		p.w.chunk = chunk
		got := p.splitMultipart(0, int64(len(body)), boundary)
		if p.w.err != nil {
			t.Fatal(p.w.err)
		}
		var parts [][]byte
		for _, s := range got.parts {
			parts = append(parts, body[s.start:s.end])
		}
		g := fmt.Sprintf("seen %v parts %q closed %v stray %d mixed %d empty %d", got.seen, parts, got.closed, got.stray, got.mixed, got.empty)
		w := fmt.Sprintf("seen %v parts %q closed %v stray %d mixed %d empty %d", want.parts != nil, want.parts, want.closed, want.stray, want.mixed, want.empty)
		if g != w {
			t.Fatalf("window %d, body %q, boundary %q:\nwant %s\ngot  %s", chunk, body, boundary, w, g)
		}
	}
}

// TestTransferDecoderStream compares the streaming transfer decoder with
// the reference on the seeds of FuzzTransferDecoder.
func TestTransferDecoderStream(t *testing.T) {
	for _, s := range decoderSeeds {
		checkDecoder(t, "base64", []byte(s))
		checkDecoder(t, "quoted-printable", []byte(s))
	}
}

var decoderSeeds = []string{
	"aGVs\r\nbG8=\r\n", "aGVsbG8", "aGVsbA==", "aGVsbA===", "aGVs=bG8=", "aGVs bG8 =\r\n", "a", "ab", "abc", "=", "",
	"aGVsbA=\r\n=\r\n", "aGVs*bG8", "caf=C3=A9 =\r\nend", "=\r\n", "=4", "=4x", "== ", "soft = \r\nbreak",
	strings.Repeat("QUJD", 3000) + "\r\n", base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{0xff, 0x00, 0x7f}, 5000)),
}

func FuzzTransferDecoder(f *testing.F) {
	for _, s := range decoderSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkDecoder(t, "base64", data)
		checkDecoder(t, "quoted-printable", data)
	})
}

func checkDecoder(t *testing.T, enc string, data []byte) {
	t.Helper()
	want, werr := referenceDecode(enc, data)
	for _, r := range []io.Reader{bytes.NewReader(data), iotest.OneByteReader(bytes.NewReader(data)), iotest.HalfReader(bytes.NewReader(data))} {
		got, err := io.ReadAll(NewTransferDecoder(enc, r))
		if (err != nil) != (werr != nil) || err != nil && !errors.Is(err, ErrTransferEncoding) {
			t.Fatalf("%s %q: error %v, reference %v", enc, data, err, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("%s %q: %q, reference %q", enc, data, got, want)
		}
	}
}

// TestScansStream compares the ambiguity scans with the references, the
// interesting bytes placed across the edge of a scan buffer.
func TestScansStream(t *testing.T) {
	for _, s := range scanSeeds {
		checkScans(t, []byte(s))
	}
}

var scanSeeds = []string{
	"a\r\nb\rc", "\r", "x\r", "\r\n\r\n", "QUJD\r\nQUI=\r\n", "QUJD=QUJD", "QU", "QUJ==", "QUJD===", "=4", "=41=\r\n", "= \t\r\n",
	"=\r", "=\rx", "==", "begin 644 f\r\n", "x\nbegin 644 f", "(This file must be converted with BinHex 4.0)\r\n", "begin 64", "BEGIN 644",
}

func FuzzScans(f *testing.F) {
	for _, s := range scanSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkScans(t, data) })
}

func checkScans(t *testing.T, data []byte) {
	t.Helper()
	for _, sc := range []struct {
		name   string
		filler byte // neutral for the scan
		ref    func([]byte) int
		scan   func(io.Reader) (int64, error)
	}{
		{"bareCR", 'x', referenceBareCR, bareCR},
		{"badBase64", ' ', referenceBadBase64, badBase64},
		{"badQP", 'x', referenceBadQP, badQP},
		{"uuencodeStart", '\n', referenceUuencodeStart, uuencodeStart},
	} {
		for _, shift := range []int{0, 1, 2, 3, 5, 40} {
			pad := 0
			if shift > 0 {
				pad = windowSize - shift
			}
			in := append(bytes.Repeat([]byte{sc.filler}, pad), data...)
			want := int64(sc.ref(in))
			got, err := sc.scan(bytes.NewReader(in))
			if err != nil || got != want {
				t.Fatalf("%s, %q after %d filler bytes: %d, %v; reference %d", sc.name, data, pad, got, err, want)
			}
		}
	}
}

// The references: the in-memory code the streaming code replaced.

type refSplit struct {
	parts   [][]byte
	offsets []int
	closed  bool
	stray   int
	mixed   int
	empty   int
}

func referenceSplit(body []byte, boundary string) refSplit {
	s := refSplit{stray: -1, empty: -1, mixed: -1}
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

func referenceDecode(cte string, body []byte) ([]byte, error) {
	switch strings.ToLower(strings.TrimSpace(cte)) {
	case "base64":
		clean := make([]byte, 0, len(body))
		for _, c := range body {
			if c != '\r' && c != '\n' && c != ' ' && c != '\t' {
				clean = append(clean, c)
			}
		}
		clean = bytes.TrimRight(clean, "=")
		return base64.RawStdEncoding.DecodeString(string(clean))
	case "quoted-printable":
		return io.ReadAll(quotedprintable.NewReader(bytes.NewReader(body)))
	}
	return body, nil
}

func referenceBareCR(b []byte) int {
	for pos := 0; ; {
		i := bytes.IndexByte(b[pos:], '\r')
		if i < 0 {
			return -1
		}
		i += pos
		if i+1 >= len(b) || b[i+1] != '\n' {
			return i
		}
		pos = i + 2
	}
}
func referenceBadBase64(b []byte) int {
	n, pad := 0, 0
	for i, c := range b {
		switch {
		case c == '\r' || c == '\n' || c == ' ' || c == '\t':
		case c == '=':
			pad++
			if pad > 2 {
				return i
			}
		case pad > 0:
			return i // data after padding
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '+', c == '/':
			n++
		default:
			return i
		}
	}
	if (n+pad)%4 != 0 || (pad > 0 && n%4 == 0) {
		return len(b)
	}
	return -1
}
func referenceBadQP(b []byte) int {
	for pos := 0; ; {
		i := bytes.IndexByte(b[pos:], '=')
		if i < 0 {
			return -1
		}
		i += pos
		if i+2 < len(b) && isHex(b[i+1]) && isHex(b[i+2]) {
			pos = i + 3
			continue
		}
		j := i + 1
		for j < len(b) && (b[j] == ' ' || b[j] == '\t') {
			j++
		}
		if j == len(b) || b[j] == '\n' || (b[j] == '\r' && j+1 < len(b) && b[j+1] == '\n') {
			pos = j
			continue
		}
		return i
	}
}
func referenceUuencodeStart(b []byte) int {
	const binhex = "(this file must be converted with"
	for pos := 0; pos < len(b); {
		line := b[pos:]
		if i := bytes.IndexByte(line, '\n'); i >= 0 {
			line = line[:i]
		}
		if len(line) >= 9 && string(line[:6]) == "begin " && isOctal(line[6]) && isOctal(line[7]) && isOctal(line[8]) {
			return pos
		}
		if len(line) >= len(binhex) && strings.EqualFold(string(line[:len(binhex)]), binhex) {
			return pos
		}
		pos += len(line) + 1
	}
	return -1
}
