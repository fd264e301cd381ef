package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"

	gomessage "github.com/emersion/go-message"
	"github.com/google/go-cmp/cmp"
)

// transportSafe returns why b is not transport-proof, or "".
func transportSafe(b []byte) string {
	lines := bytes.Split(b, []byte("\r\n"))
	for i, l := range lines {
		if bytes.ContainsAny(l, "\r\n") {
			return fmt.Sprintf("line %d: bare CR or LF", i+1)
		}
		for _, c := range l {
			if c >= 0x80 || c == 0 {
				return fmt.Sprintf("line %d: byte %#x", i+1, c)
			}
		}
		if len(l) > 998 {
			return fmt.Sprintf("line %d: %d bytes", i+1, len(l))
		}
		if len(l) > 0 && (l[len(l)-1] == ' ' || l[len(l)-1] == '\t') {
			return fmt.Sprintf("line %d: trailing whitespace: %q", i+1, l)
		}
		if bytes.HasPrefix(l, []byte("From ")) {
			return fmt.Sprintf("line %d: starts with From", i+1)
		}
	}
	return ""
}

func TestQPWriter(t *testing.T) {
	tests := []string{
		"",
		"plain\r\n",
		"trailing space \r\nand tab\t\r\n",
		"From the start\r\nFrom here\r\n",
		".\r\n.. dots\r\n",
		"ünïcödé text with = signs\r\n",
		"bare\nLF and bare\rCR\r\n",
		strings.Repeat("x", 200) + "\r\n",
		strings.Repeat("a ", 100) + "\r\n",
		strings.Repeat(" ", 80) + "\r\n",
		"no final newline ",
		strings.Repeat("y", 74) + " \r\nFrom x\r\n",
		"ends in CR\r",
	}
	for _, in := range tests {
		var out bytes.Buffer
		q := NewQPWriter(&out)
		// Write byte by byte to exercise state across writes.
		for i := 0; i < len(in); i++ {
			q.Write([]byte{in[i]})
		}
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if why := transportSafe(out.Bytes()); why != "" {
			t.Errorf("QP(%q) = %q: %s", in, out.String(), why)
		}
		for _, l := range strings.Split(out.String(), "\r\n") {
			if len(l) > 76 {
				t.Errorf("QP(%q): line longer than 76: %q", in, l)
			}
		}
		dec, err := io.ReadAll(quotedprintable.NewReader(bytes.NewReader(out.Bytes())))
		if err != nil {
			t.Fatalf("decode QP(%q) = %q: %v", in, out.String(), err)
		}
		if diff := cmp.Diff(in, string(dec)); diff != "" {
			t.Errorf("round trip of %q via %q (-want +got):\n%s", in, out.String(), diff)
		}
	}
}

const mixedMessage = "From: a@example.org\r\n" +
	"Subject: test\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=\"outer\"\r\n" +
	"\r\n" +
	"preamble\r\n" +
	"--outer\r\n" +
	"Content-Type: multipart/alternative; boundary=\"alt\"\r\n" +
	"\r\n" +
	"--alt\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"Content-Transfer-Encoding: 8bit\r\n" +
	"\r\n" +
	"Grüße, trailing space \r\n" +
	"From the gateway\r\n" +
	"tab\t\r\n" +
	"--alt\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"\r\n" +
	"<p>Grüße</p>  \r\n" +
	"--alt--\r\n" +
	"--outer\r\n" +
	"Content-Type: application/octet-stream; name=\"a.bin\"\r\n" +
	"Content-Disposition: attachment; filename=\"a.bin\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1\r\n" +
	"Njc4OTo7PD0+P0BBQkNERUZHSElKS0xNTk9QUVJTVFVWV1hZWltcXV5fYGFiY2RlZmdo\r\n" +
	"--outer\r\n" +
	"Content-Type: message/rfc822\r\n" +
	"\r\n" +
	"Subject: inner\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"\r\n" +
	"inner 8-bit: é \r\n" +
	"--outer\r\n" +
	"Content-Type: text/plain\r\n" +
	"\r\n" +
	"clean 7-bit text\r\n" +
	"--outer--\r\n" +
	"epilogue\r\n"

// leaves returns the decoded content of every leaf of a message, in order,
// each with its media type.
func leaves(t *testing.T, raw []byte) []string {
	t.Helper()
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var out []string
	var walk func(e *gomessage.Entity)
	walk = func(e *gomessage.Entity) {
		mt, _, _ := e.Header.ContentType()
		if mr := e.MultipartReader(); mr != nil {
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("next part: %v", err)
				}
				walk(p)
			}
		}
		if mt == "message/rfc822" {
			inner, err := gomessage.Read(e.Body)
			if err != nil {
				t.Fatalf("inner: %v", err)
			}
			out = append(out, "message: "+inner.Header.Get("Subject"))
			walk(inner)
			return
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, mt+": "+string(b))
	}
	walk(ent)
	return out
}

// canonicalMessage canonicalizes raw and returns it as a message (the
// canonical Content-* fields, then the body).
func canonicalMessage(t *testing.T, raw []byte) []byte {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	ch, err := Canonicalize(&body, h, br, CanonOptions{})
	if err != nil {
		t.Fatalf("Canonicalize: %v", err)
	}
	var out bytes.Buffer
	ch.WriteTo(&out)
	out.Write(body.Bytes())
	return out.Bytes()
}

func TestCanonicalize(t *testing.T) {
	tests := []struct {
		name string
		raw  string
	}{
		{"mixed", mixedMessage},
		{"plain 8bit", "Content-Type: text/plain; charset=utf-8\r\n\r\nFrom me: héllo \r\n.\r\n"},
		{"no content type", "Subject: x\r\n\r\nhello  \r\n"},
		{"clean", "Content-Type: text/plain\r\n\r\nclean\r\n"},
		{"qp in", "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nh=C3=A9llo=20\r\nFrom x\r\n"},
		{"signed kept", "Content-Type: multipart/signed; boundary=s; protocol=\"application/pgp-signature\"\r\n\r\n--s\r\nContent-Type: text/plain\r\n\r\nsigned\r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := canonicalMessage(t, []byte(tt.raw))
			if why := transportSafe(got); why != "" && tt.name != "signed kept" {
				t.Errorf("not transport-safe: %s\n%s", why, got)
			}
			want := leaves(t, []byte(tt.raw))
			if diff := cmp.Diff(want, leaves(t, got)); diff != "" {
				t.Errorf("decoded content changed (-want +got):\n%s\ncanonical:\n%s", diff, got)
			}
		})
	}
}

func TestCanonicalizeKeepsSigned(t *testing.T) {
	body := "--s\r\nContent-Type: text/plain\r\n\r\nsigned \r\n--s\r\nContent-Type: application/pgp-signature\r\n\r\nSIG\r\n--s--\r\n"
	h := Header{{Name: "Content-Type", Value: `multipart/signed; boundary=s; protocol="application/pgp-signature"`}}
	var out bytes.Buffer
	if _, err := Canonicalize(&out, h, strings.NewReader(body), CanonOptions{}); err != nil {
		t.Fatal(err)
	}
	if out.String() != body {
		t.Errorf("multipart/signed changed:\n%q\nwant\n%q", out.String(), body)
	}
}

func TestCanonicalizeLimits(t *testing.T) {
	raw := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n--a--\r\n"
	br := bufio.NewReader(strings.NewReader(raw))
	h, _ := ReadHeader(br, 0)
	_, err := Canonicalize(io.Discard, h, br, CanonOptions{MaxDepth: 1})
	if err != ErrLimit {
		t.Errorf("depth 2 with MaxDepth 1: err = %v, want ErrLimit", err)
	}
	br = bufio.NewReader(strings.NewReader(raw))
	h, _ = ReadHeader(br, 0)
	_, err = Canonicalize(io.Discard, h, br, CanonOptions{MaxParts: 2})
	if err != ErrLimit {
		t.Errorf("3 parts with MaxParts 2: err = %v, want ErrLimit", err)
	}
}

func TestCRLFWriter(t *testing.T) {
	for in, want := range map[string]string{
		"a\nb\r\nc\rd": "a\r\nb\r\nc\r\nd",
		"x\r":          "x\r\n",
		"":             "",
	} {
		var out bytes.Buffer
		w := NewCRLFWriter(&out)
		for i := 0; i < len(in); i++ {
			w.Write([]byte{in[i]})
		}
		w.Close()
		if out.String() != want {
			t.Errorf("CRLF(%q) = %q, want %q", in, out.String(), want)
		}
	}
}

func FuzzCanonicalize(f *testing.F) {
	f.Add([]byte(mixedMessage))
	f.Add([]byte("Content-Type: text/plain\r\n\r\nFrom x \r\n"))
	f.Add([]byte("Content-Type: message/rfc822\r\n\r\nbroken"))
	f.Add([]byte("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\n--x--"))
	f.Fuzz(func(t *testing.T, raw []byte) {
		br := bufio.NewReader(bytes.NewReader(raw))
		h, err := ReadHeader(br, 1<<16)
		if err != nil {
			return
		}
		var out bytes.Buffer
		ch, err := Canonicalize(&out, h, br, CanonOptions{MaxDepth: 8, MaxParts: 100})
		if err != nil {
			return
		}
		mt, _ := mediaType(h)
		if strings.Contains(strings.ToLower(string(raw)), "multipart/signed") || mt == "multipart/signed" {
			return
		}
		var hb bytes.Buffer
		ch.WriteTo(&hb)
		if why := transportSafe(out.Bytes()); why != "" {
			t.Errorf("not transport-safe: %s", why)
		}
	})
}

func TestCanonicalizeTruncated(t *testing.T) {
	raw := "Content-Type: multipart/mixed; boundary=a\r\n\r\n--a\r\nContent-Type: text/plain\r\n\r\none\r\n--a\r\nContent-Type: text/plain\r\n\r\ncut off here"
	br := bufio.NewReader(strings.NewReader(raw))
	h, _ := ReadHeader(br, 0)
	var out bytes.Buffer
	ch, err := Canonicalize(&out, h, br, CanonOptions{})
	if err != nil {
		t.Fatalf("truncated multipart: %v", err)
	}
	var msg bytes.Buffer
	ch.WriteTo(&msg)
	msg.Write(out.Bytes())
	if diff := cmp.Diff([]string{"text/plain: one", "text/plain: cut off here"}, leaves(t, msg.Bytes())); diff != "" {
		t.Errorf("(-want +got):\n%s\n%s", diff, msg.Bytes())
	}
	br = bufio.NewReader(strings.NewReader("Content-Type: multipart/mixed; boundary=a\r\n\r\nno parts at all\r\n"))
	h, _ = ReadHeader(br, 0)
	if _, err := Canonicalize(io.Discard, h, br, CanonOptions{}); !errors.Is(err, ErrMalformed) {
		t.Errorf("multipart without parts: err = %v, want ErrMalformed", err)
	}
}

func TestCleanField(t *testing.T) {
	for in, want := range map[Field]Field{
		{Name: "Subject", Value: "a \r\n   \r\n\tb\t"}:                     {Name: "Subject", Value: "a\r\n\tb"},
		{Name: "Subject", Value: "Grüße"}:                                  {Name: "Subject", Value: "=?utf-8?q?Gr=C3=BC=C3=9Fe?="},
		{Name: "X-A", Value: "bare\rcr"}:                                   {Name: "X-A", Value: "bare cr"},
		{Name: "Content-Type", Value: `application/pdf; name="Grüße.pdf"`}: {Name: "Content-Type", Value: `application/pdf; name*=utf-8''Gr%C3%BC%C3%9Fe.pdf`},
	} {
		if got := cleanField(in); got != want {
			t.Errorf("cleanField(%q) = %q, want %q", in, got, want)
		}
	}
}
