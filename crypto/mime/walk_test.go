package mime

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

const signedMsg = "Content-Type: multipart/signed; protocol=\"application/pgp-signature\";\r\n boundary=\"b1\"\r\n\r\n" +
	"preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nsigned text \r\n\r\n--b1\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--b1--\r\nepilogue\r\n"

func TestParseExactParts(t *testing.T) {
	e, err := Parse([]byte(signedMsg), Limits{MaxDepth: 5, MaxParts: 10})
	if err != nil {
		t.Fatal(err)
	}
	if e.MediaType != "multipart/signed" || e.Params["protocol"] != "application/pgp-signature" || len(e.Parts) != 2 {
		t.Fatalf("root %s %v with %d parts", e.MediaType, e.Params, len(e.Parts))
	}
	// The signed part is exactly the bytes between the delimiters, without
	// the CRLF that belongs to the next delimiter; trailing space and the
	// empty line inside are kept.
	if got, want := string(rawBytes(e.Parts[0])), "Content-Type: text/plain\r\n\r\nsigned text \r\n"; got != want {
		t.Errorf("signed part %q, want %q", got, want)
	}
	if got := string(bodyBytes(e.Parts[1])); got != "SIG" {
		t.Errorf("signature body %q", got)
	}
}

func TestSplitMultipartDelimiters(t *testing.T) {
	body := "--b\r\nA\r\n--bx\r\nnot a delimiter\r\n--b  \r\nB\r\n--b--"
	e, err := Parse([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n"+body), Limits{})
	if err != nil || e.Unterminated {
		t.Fatal(e.Unterminated, err)
	}
	var got []string
	for _, p := range e.Parts {
		got = append(got, string(rawBytes(p)))
	}
	if diff := cmp.Diff([]string{"A\r\n--bx\r\nnot a delimiter", "B"}, got); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
	if e, err := Parse([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\nno delimiter\r\n--bx\r\n"), Limits{}); err != nil || e.split.seen || len(e.Parts) != 0 {
		t.Errorf("a body without a delimiter line split: %v, %d parts", err, len(e.Parts))
	}
}

func TestParseLimits(t *testing.T) {
	nested := "Content-Type: text/plain\r\n\r\nleaf"
	for i := 0; i < 8; i++ {
		b := "x" + strings.Repeat("y", i)
		nested = "Content-Type: multipart/mixed; boundary=" + b + "\r\n\r\n--" + b + "\r\n" + nested + "\r\n--" + b + "--\r\n"
	}
	if _, err := Parse([]byte(nested), Limits{MaxDepth: 5, MaxParts: 100}); !errors.Is(err, ErrLimits) {
		t.Errorf("depth 8 with MaxDepth 5: %v, want ErrLimits", err)
	}
	if _, err := Parse([]byte(nested), Limits{MaxDepth: 10, MaxParts: 5}); !errors.Is(err, ErrLimits) {
		t.Errorf("9 parts with MaxParts 5: %v, want ErrLimits", err)
	}
	if _, err := Parse([]byte(nested), Limits{MaxDepth: 10, MaxParts: 100}); err != nil {
		t.Errorf("within limits: %v", err)
	}
}

func TestTransferDecoder(t *testing.T) {
	for _, tt := range []struct{ cte, in, want string }{
		{"base64", "aGVs\r\nbG8=\r\n", "hello"},
		{"base64", "aGVsbG8", "hello"},
		{"Quoted-Printable", "caf=C3=A9 =\r\nend", "café end"},
		{"7bit", "as is\r\n", "as is\r\n"},
	} {
		got, err := io.ReadAll(NewTransferDecoder(tt.cte, strings.NewReader(tt.in)))
		if err != nil || string(got) != tt.want {
			t.Errorf("NewTransferDecoder(%s, %q) = %q, %v; want %q", tt.cte, tt.in, got, err, tt.want)
		}
	}
	for _, tt := range []struct{ cte, in string }{
		{"base64", "aGVs=bG8="},
		{"base64", "aGVs*bG8="},
		{"base64", "aGVsb"},
		{"quoted-printable", "caf=\x01"},
	} {
		_, err := io.ReadAll(NewTransferDecoder(tt.cte, strings.NewReader(tt.in)))
		if !errors.Is(err, ErrTransferEncoding) {
			t.Errorf("NewTransferDecoder(%s, %q): %v, want ErrTransferEncoding", tt.cte, tt.in, err)
		}
	}
	// A failure to read the body is not a body that does not decode.
	broken := io.MultiReader(strings.NewReader("aGVs"), iotest.ErrReader(errors.New("disk on fire")))
	if _, err := io.ReadAll(NewTransferDecoder("base64", broken)); err == nil || errors.Is(err, ErrTransferEncoding) {
		t.Errorf("read error: %v, want the error itself", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(signedMsg))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b--\r\n--a--"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data, Limits{MaxDepth: 8, MaxParts: 64})
		if err != nil {
			return
		}
		n := 0
		e.Walk(func(p *Entity) {
			n++
			if p.Depth > 8 {
				t.Fatalf("depth %d beyond the limit", p.Depth)
			}
			if !bytes.Contains(data, rawBytes(p)) {
				t.Fatal("a part's Raw is not a slice of the input")
			}
		})
		if n > 64 {
			t.Fatalf("%d parts beyond the limit", n)
		}
	})
}

func TestParseUnterminated(t *testing.T) {
	lim := Limits{MaxDepth: 5, MaxParts: 20}
	// A signed message cut off inside its signature part: the signed
	// part is complete (a delimiter follows it), the signature runs to
	// the end.
	cut := signedMsg[:strings.Index(signedMsg, "SIG")+3] + "\r\n"
	e, err := Parse([]byte(cut), lim)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Unterminated || len(e.Parts) != 2 {
		t.Fatalf("cut signed message: Unterminated %v, %d parts; want true, 2", e.Unterminated, len(e.Parts))
	}
	if got, want := string(rawBytes(e.Parts[0])), "Content-Type: text/plain\r\n\r\nsigned text \r\n"; got != want {
		t.Errorf("signed part %q, want %q", got, want)
	}
	if got := string(bodyBytes(e.Parts[1])); got != "SIG\r\n" {
		t.Errorf("cut-off last part body %q, want %q (to the end of the body)", got, "SIG\r\n")
	}
	if err := Ambiguity(e); err != nil {
		t.Errorf("Ambiguity(cut signed message) = %v", err)
	}
	// Cut inside the signed part: one part, which the engine must not
	// verify as a multipart/signed (it needs two).
	cut = signedMsg[:strings.Index(signedMsg, "signed text")+6]
	e, err = Parse([]byte(cut), lim)
	if err != nil {
		t.Fatal(err)
	}
	if !e.Unterminated || len(e.Parts) != 1 {
		t.Fatalf("signed message cut in the signed part: Unterminated %v, %d parts; want true, 1", e.Unterminated, len(e.Parts))
	}
	// Inner multipart cut off by its parent's delimiter: the inner one is
	// unterminated, the outer one complete.
	nested := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/alternative; boundary=b\r\n\r\n--b\r\n\r\ninner\r\n--a\r\n\r\nlast\r\n--a--\r\n"
	e, err = Parse([]byte(nested), lim)
	if err != nil {
		t.Fatal(err)
	}
	if e.Unterminated || len(e.Parts) != 2 || !e.Parts[0].Unterminated || len(e.Parts[0].Parts) != 1 {
		t.Fatalf("nested: outer Unterminated %v with %d parts, inner Unterminated %v", e.Unterminated, len(e.Parts), len(e.Parts) > 0 && e.Parts[0].Unterminated)
	}
	if got := string(bodyBytes(e.Parts[0].Parts[0])); got != "inner" {
		t.Errorf("inner part %q, want %q", got, "inner")
	}
	// A complete message is not Unterminated.
	if e, _ := Parse([]byte(signedMsg), lim); e.Unterminated {
		t.Error("complete message marked Unterminated")
	}
}

func TestParseDigestDefault(t *testing.T) {
	msg := "Content-Type: multipart/digest; boundary=d\r\n\r\n--d\r\n\r\nSubject: one\r\n\r\nbody\r\n--d\r\nContent-Type: text/plain\r\n\r\ntext\r\n--d--\r\n"
	e, err := Parse([]byte(msg), Limits{MaxDepth: 5, MaxParts: 20})
	if err != nil {
		t.Fatal(err)
	}
	if len(e.Parts) != 2 || e.Parts[0].MediaType != "message/rfc822" || len(e.Parts[0].Parts) != 1 || e.Parts[1].MediaType != "text/plain" {
		t.Fatalf("digest parts: %d, first %s", len(e.Parts), e.Parts[0].MediaType)
	}
	if got := e.Parts[0].Parts[0].Header.Get("Subject"); got != "one" {
		t.Errorf("digest message Subject %q", got)
	}
}

func TestAmbiguousErrorIs(t *testing.T) {
	e, err := Parse(mixed("multipart/mixed; boundary=A; boundary=B", twoParts), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	err = Ambiguity(e)
	if !errors.Is(err, ErrAmbiguous) {
		t.Fatalf("Ambiguity = %v, want ErrAmbiguous", err)
	}
	var ae *AmbiguousError
	if !errors.As(err, &ae) || ae.Reason != "duplicate-param" || ae.Part != "root" {
		t.Fatalf("Ambiguity = %#v", err)
	}
	// The part is named.
	e, _ = Parse(mixed("multipart/mixed; boundary=A", "--A\n\nfirst\n--A\nContent-Type: multipart/mixed; boundary=B\n\n--B\nContent-Type: text/plain; charset=a; charset=b\n\nx\n--B--\n--A--\n"), Limits{})
	if err := Ambiguity(e); !errors.As(err, &ae) || ae.Part != "2.1" {
		t.Fatalf("nested: %v, want part 2.1", err)
	}
	e, _ = Parse([]byte("Content-Type: multipart/mixed; boundary=A\r\n\r\n--A\r\n\r\nfirst\r\n--A\r\n\r\nse\rcond\r\n--A--\r\n"), Limits{})
	if err := Ambiguity(e); !errors.As(err, &ae) || ae.Reason != "bare-cr" || ae.Part != "2" {
		t.Fatalf("bare CR: %v, want part 2", err)
	}
}

// rawBytes and bodyBytes read an entity's raw bytes and raw body.
func rawBytes(e *Entity) []byte {
	b, err := io.ReadAll(e.Raw())
	if err != nil {
		panic(err)
	}
	return b
}

func bodyBytes(e *Entity) []byte {
	b, err := io.ReadAll(e.Body())
	if err != nil {
		panic(err)
	}
	return b
}

// TestOutside: the bytes of a multipart outside its parts, complete or cut
// off in its last part, and the bound.
func TestOutside(t *testing.T) {
	for _, tc := range []struct{ body, want string }{
		{"pre\r\n--b\r\nA\r\n--b\r\nB\r\n--b--\r\nepi", "pre\r\n--b\r\n\r\n--b\r\n\r\n--b--\r\nepi"},
		{"--b\r\nA\r\n--b\r\nB", "--b\r\n\r\n--b\r\n"},
	} {
		e, err := Parse([]byte("Content-Type: multipart/mixed; boundary=b\r\n\r\n"+tc.body), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		got, ok, err := e.Outside(100)
		if err != nil || !ok || string(got) != tc.want {
			t.Errorf("Outside(%q) = %q, %v, %v; want %q", tc.body, got, ok, err, tc.want)
		}
		if _, ok, _ := e.Outside(3); ok {
			t.Errorf("Outside(%q) within 3 bytes", tc.body)
		}
	}
}
