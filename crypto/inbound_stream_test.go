package crypto

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"testing/iotest"
	"time"
	"unicode/utf8"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// The stream helpers must decide what the in-memory code they replaced
// decided. These tests keep that code as references and compare, with the
// interesting bytes placed across the edges of the scan buffers.

// referenceArmorKind is inlineLayer's test before it read a stream.
func referenceArmorKind(data []byte) int {
	t := bytes.TrimSpace(data)
	single := func(begin, end string, blocks int) bool {
		return bytes.HasPrefix(t, []byte(begin)) && bytes.HasSuffix(t, []byte(end)) &&
			bytes.Count(t, []byte(begin)) == 1 && bytes.Count(t, []byte("-----BEGIN PGP")) == blocks &&
			bytes.Count(t, []byte("-----END PGP")) == 1
	}
	switch {
	case single(armorBeginMsg, armorEndMsg, 1):
		return armorMessage
	case single(armorBeginSigned, armorEndSig, 2):
		return armorSigned
	}
	return armorNone
}

var armorSeeds = []string{
	armorBeginMsg + "\r\n\r\nhQEMA0l=\r\n" + armorEndMsg,
	"  \r\n\t" + armorBeginMsg + "\r\nx\r\n" + armorEndMsg + "\r\n \u00a0\u2028",
	"\u00a0" + armorBeginMsg + "\r\n" + armorEndMsg + "\u0085",
	armorBeginMsg + "\r\n" + armorEndMsg + "\r\ntext after",
	"text before\r\n" + armorBeginMsg + "\r\n" + armorEndMsg,
	armorBeginMsg + "\r\n" + armorBeginMsg + "\r\n" + armorEndMsg,
	armorBeginMsg + "-----BEGIN PGP MESSAGE-----\r\n" + armorEndMsg,
	armorBeginMsg + "\r\n" + armorEndMsg + armorEndMsg,
	armorBeginMsg + armorEndMsg[:10],
	armorBeginSigned + "\r\nHash: SHA256\r\n\r\nhi\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\nwsBc\r\n" + armorEndSig + "\r\n",
	armorBeginSigned + "\r\n\r\nhi\r\n" + armorEndSig,
	armorBeginSigned + "\r\n-----BEGIN PGP SIGNATURE-----\r\n-----END PGP MESSAGE-----\r\n" + armorEndSig,
	armorBeginMsg + "\r\n" + armorEndMsg + "\xc2",
	armorBeginMsg + "\r\n" + armorEndMsg + "\xe2\x80",
	"", " ", armorBeginMsg,
}

func TestArmorKindStream(t *testing.T) {
	for _, s := range armorSeeds {
		checkArmorKind(t, []byte(s))
	}
}

func FuzzArmorKind(f *testing.F) {
	for _, s := range armorSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkArmorKind(t, data) })
}

func checkArmorKind(t *testing.T, data []byte) {
	t.Helper()
	want := referenceArmorKind(data)
	// Leading white space moves the text across the scan buffer's edge
	// without changing what it is; so does text after it, when it
	// counts.
	if got := armorKind(iotest.OneByteReader(bytes.NewReader(data))); got != want {
		t.Fatalf("armorKind(%q, a byte at a time) = %d, want %d", data, got, want)
	}
	for _, shift := range []int{0, 1, 7, 30} {
		pad := 0
		if shift > 0 {
			pad = 32<<10 - shift
		}
		in := append(bytes.Repeat([]byte(" "), pad), data...)
		if got := armorKind(bytes.NewReader(in)); got != want {
			t.Fatalf("armorKind(%q after %d spaces) = %d, want %d", data, pad, got, want)
		}
	}
	// Text long enough to end in another buffer than it starts.
	if want == armorMessage {
		long := bytes.Replace(data, []byte("\r\n"), append([]byte("\r\n"), bytes.Repeat([]byte("QUJD"), 20000)...), 1)
		if got := armorKind(bytes.NewReader(long)); got != referenceArmorKind(long) {
			t.Fatalf("armorKind(%q with a long body) = %d, want %d", data, got, referenceArmorKind(long))
		}
	}
}

// TestCRLFReader: newCRLFReader gives toCRLF's output however it is read,
// and hasBareLF tells when the two differ.
func TestCRLFReader(t *testing.T) {
	for _, s := range []string{"", "a\nb", "a\r\nb\n", "\n\n", "\r\r\n\r", "x\r", "\rx\n", strings.Repeat("line\n", 20000) + "\r\n"} {
		want := toCRLF([]byte(s))
		for _, r := range []io.Reader{strings.NewReader(s), iotest.OneByteReader(strings.NewReader(s)), iotest.HalfReader(strings.NewReader(s))} {
			got, err := io.ReadAll(newCRLFReader(r))
			if err != nil || !bytes.Equal(got, want) {
				t.Fatalf("crlfReader(%.40q) = %.40q, %v; want %.40q", s, got, err, want)
			}
		}
		// A reader of one byte at a time must keep the LF it had no room for.
		var got []byte
		cr := newCRLFReader(strings.NewReader(s))
		for {
			var b [1]byte
			n, err := cr.Read(b[:])
			got = append(got, b[:n]...)
			if err == io.EOF {
				break
			}
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("crlfReader(%.40q) read a byte at a time = %.40q", s, got)
		}
		bare, err := hasBareLF(strings.NewReader(s))
		if err != nil || bare != !bytes.Equal(want, []byte(s)) {
			t.Errorf("hasBareLF(%.40q) = %v, %v", s, bare, err)
		}
	}
}

// TestTextKind: textKind decides what mime.EncodeTextBody and the charset
// rule decided on text in memory.
func TestTextKind(t *testing.T) {
	long := strings.Repeat("x", 900)
	for _, s := range []string{"", "ascii\r\n", "caf\xc3\xa9", "caf\xe9", long, long + "x", long + "\r\n" + long, "a\rb", "a\x00", "x\r", "\xe2\x82", "\xe2\x82\xac"} {
		crlf := toCRLF([]byte(s))
		var k textKind
		// Written in pieces of 3 bytes: runes and CRLFs cut in two.
		for b := crlf; len(b) > 0; b = b[min(3, len(b)):] {
			k.write(b[:min(3, len(b))])
		}
		k.finish()
		_, cte := mime.EncodeTextBody(crlf)
		if k.plain != (cte == "7bit") || k.ascii != isASCII(crlf) || k.utf8 != utf8.Valid(crlf) {
			t.Errorf("%.20q: plain %v ascii %v utf8 %v; want %s, %v, %v", s, k.plain, k.ascii, k.utf8, cte, isASCII(crlf), utf8.Valid(crlf))
		}
	}
}

// TestCounter: counter counts as bytes.Count does, occurrences across
// writes included.
func TestCounter(t *testing.T) {
	pats := []string{"-----BEGIN PGP MESSAGE-----", "-----BEGIN PGP", "aa"}
	for _, s := range []string{"", "aaaa", "aaa", "-----BEGIN PGP MESSAGE-----BEGIN PGP MESSAGE-----", "x-----BEGIN PGPaa-----BEGIN PGP"} {
		for piece := 1; piece <= len(s)+1; piece++ {
			c := newCounter(pats...)
			for b := []byte(s); len(b) > 0; b = b[min(piece, len(b)):] {
				c.write(b[:min(piece, len(b))])
			}
			for i, p := range pats {
				if want := strings.Count(s, p); c.n[i] != want {
					t.Fatalf("%q in pieces of %d: %d × %q, want %d", s, piece, c.n[i], p, want)
				}
			}
		}
	}
}

// TestLFReader: newLFReader gives what replacing every CRLF with LF gives,
// however it is read.
func TestLFReader(t *testing.T) {
	for _, s := range []string{"", "a\r\nb", "\r\r\n\r", "x\r", "\r\n\r\n", strings.Repeat("line\r\n", 20000)} {
		want := strings.ReplaceAll(s, "\r\n", "\n")
		for _, r := range []io.Reader{strings.NewReader(s), iotest.OneByteReader(strings.NewReader(s))} {
			got, err := io.ReadAll(newLFReader(r))
			if err != nil || string(got) != want {
				t.Fatalf("lfReader(%.40q) = %.40q, %v; want %.40q", s, got, err, want)
			}
		}
	}
}

func isASCII(b []byte) bool {
	for _, c := range b {
		if c >= 0x80 {
			return false
		}
	}
	return true
}

// TestStickyAt: a read that ends at the end of the bytes is no error; a
// short one before it, or any other error, is kept.
func TestStickyAt(t *testing.T) {
	data := []byte("0123456789")
	s := &stickyAt{r: bytes.NewReader(data), size: int64(len(data))}
	buf := make([]byte, 4)
	for off := int64(0); off < 10; off += 4 {
		s.ReadAt(buf, off)
	}
	if err := s.failed(); err != nil {
		t.Fatalf("reads to the end: %v", err)
	}
	short := &stickyAt{r: bytes.NewReader(data[:5]), size: int64(len(data))}
	short.ReadAt(buf, 3)
	if short.failed() == nil {
		t.Error("a file shorter than its size read without error")
	}
}

// TestInboundUnreadableSpool: a message whose spooled body cannot be read
// is an error (the milter tempfails it), never a verdict on what could be
// read.
func TestInboundUnreadableSpool(t *testing.T) {
	e := inEngine(t, nil)
	sp, err := spool.Open(t.TempDir(), 16)
	if err != nil {
		t.Fatal(err)
	}
	body := sp.New()
	body.Write([]byte("-----BEGIN PGP MESSAGE-----\r\n\r\nhQEMA0l=\r\n-----END PGP MESSAGE-----\r\n"))
	body.Close() // the spool file is gone
	_, err = e.Process(context.Background(), &Input{
		Direction: Inbound,
		Envelope:  Envelope{From: "a@example.net", Rcpts: []string{"rt@example.org"}},
		Message:   Message{Header: mime.Header{{Name: "From", Value: "a@example.net"}}, Body: body},
		Now:       time.Now(),
	})
	if err == nil {
		t.Fatal("Process of an unreadable body succeeded")
	}
}
