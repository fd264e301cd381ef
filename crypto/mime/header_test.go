package mime

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestReadHeader(t *testing.T) {
	tests := []struct {
		name, in string
		want     Header
		rest     string
	}{
		{"crlf", "From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n",
			Header{{"From", "a@example.org"}, {"Subject", "hi"}}, "body\r\n"},
		{"lf", "From: a@example.org\nSubject: hi\n\nbody\n",
			Header{{"From", "a@example.org"}, {"Subject", "hi"}}, "body\n"},
		{"folded", "Subject: one\r\n two\r\n\tthree\r\nTo: b\r\n\r\n",
			Header{{"Subject", "one\r\n two\r\n\tthree"}, {"To", "b"}}, ""},
		{"no-space", "X-A:v\r\nX-B:  two spaces\r\nX-C:\r\n\r\n",
			Header{{"X-A", "v"}, {"X-B", " two spaces"}, {"X-C", ""}}, ""},
		{"eof-no-blank", "From: a\r\nTo: b", Header{{"From", "a"}, {"To", "b"}}, ""},
		{"empty", "\r\nbody", nil, "body"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			br := bufio.NewReader(strings.NewReader(tt.in))
			h, err := ReadHeader(br, 0)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, h); diff != "" {
				t.Errorf("header (-want +got):\n%s", diff)
			}
			rest := new(bytes.Buffer)
			rest.ReadFrom(br)
			if rest.String() != tt.rest {
				t.Errorf("rest = %q, want %q", rest, tt.rest)
			}
		})
	}
}

func TestReadHeaderErrors(t *testing.T) {
	for _, tt := range []struct{ in, want string }{
		{" folded first\r\n\r\n", "continuation line before the first field"},
		{"From: a\r\nnot a header\r\n\r\n", `"not a header" after field From is not a header field`},
		{"no colon\r\n\r\n", `"no colon" is not a header field`},
	} {
		_, err := ReadHeader(bufio.NewReader(strings.NewReader(tt.in)), 0)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ReadHeader(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
	big := "X-Big: " + strings.Repeat("a", 200) + "\r\n\r\n"
	if _, err := ReadHeader(bufio.NewReader(strings.NewReader(big)), 100); !errors.Is(err, ErrHeaderTooLarge) {
		t.Errorf("oversized header: err = %v, want ErrHeaderTooLarge", err)
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	in := "From: a@example.org\r\nSubject: one\r\n two\r\nX-Empty:\r\n\r\n"
	h, err := ReadHeader(bufio.NewReader(strings.NewReader(in)), 0)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	h.WriteTo(&b)
	if b.String() != in {
		t.Errorf("WriteTo = %q, want %q", b.String(), in)
	}
	if got := h.Get("subject"); got != "one two" {
		t.Errorf("Get(subject) = %q", got)
	}
	if f := FromMilter("Subject", "one\n two"); f.Value != "one\r\n two" {
		t.Errorf("FromMilter = %q", f.Value)
	}
}

func FuzzReadHeader(f *testing.F) {
	f.Add([]byte("From: a\r\nSubject: x\r\n y\r\n\r\nbody"))
	f.Add([]byte(" bad\r\n"))
	f.Add([]byte("A:\nB:c\n\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := ReadHeader(bufio.NewReader(bytes.NewReader(data)), 1<<16)
		if err != nil {
			return
		}
		// What was read writes back and reads again to the same header.
		var b bytes.Buffer
		h.WriteTo(&b)
		h2, err := ReadHeader(bufio.NewReader(&b), 0)
		if err != nil {
			t.Fatalf("re-read of %q: %v", b.String(), err)
		}
		if len(h) != len(h2) {
			t.Fatalf("round trip changed the field count: %q -> %q", h, h2)
		}
	})
}
