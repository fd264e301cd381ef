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
