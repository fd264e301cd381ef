package mime

import (
	"bytes"
	"errors"
	"strings"
	"testing"

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
	if got, want := string(e.Parts[0].Raw), "Content-Type: text/plain\r\n\r\nsigned text \r\n"; got != want {
		t.Errorf("signed part %q, want %q", got, want)
	}
	if got := string(e.Parts[1].Body); got != "SIG" {
		t.Errorf("signature body %q", got)
	}
}

func TestSplitMultipartDelimiters(t *testing.T) {
	body := "--b\r\nA\r\n--bx\r\nnot a delimiter\r\n--b  \r\nB\r\n--b--"
	parts, unterminated, err := SplitMultipart([]byte(body), "b")
	if err != nil || unterminated {
		t.Fatal(unterminated, err)
	}
	var got []string
	for _, p := range parts {
		got = append(got, string(p))
	}
	if diff := cmp.Diff([]string{"A\r\n--bx\r\nnot a delimiter", "B"}, got); diff != "" {
		t.Errorf("parts (-want +got):\n%s", diff)
	}
	if _, _, err := SplitMultipart([]byte("no delimiter\r\n--bx\r\n"), "b"); err == nil {
		t.Error("a body without a delimiter line split")
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

func TestDecodeTransfer(t *testing.T) {
	for _, tt := range []struct{ cte, in, want string }{
		{"base64", "aGVs\r\nbG8=\r\n", "hello"},
		{"Quoted-Printable", "caf=C3=A9 =\r\nend", "café end"},
		{"7bit", "as is\r\n", "as is\r\n"},
	} {
		got, err := DecodeTransfer(tt.cte, []byte(tt.in))
		if err != nil || string(got) != tt.want {
			t.Errorf("DecodeTransfer(%s, %q) = %q, %v; want %q", tt.cte, tt.in, got, err, tt.want)
		}
	}
	e := &Entity{Header: Header{{"Content-Transfer-Encoding", "quoted-printable"}}, Params: map[string]string{"charset": "iso-8859-1"}, Body: []byte("caf=E9")}
	if s, err := e.Text(); err != nil || s != "café" {
		t.Errorf("Text = %q, %v", s, err)
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
			if !bytes.Contains(data, p.Raw) {
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
	if got, want := string(e.Parts[0].Raw), "Content-Type: text/plain\r\n\r\nsigned text \r\n"; got != want {
		t.Errorf("signed part %q, want %q", got, want)
	}
	if got := string(e.Parts[1].Body); got != "SIG\r\n" {
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
	if got := string(e.Parts[0].Parts[0].Body); got != "inner" {
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
