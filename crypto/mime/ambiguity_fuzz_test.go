package mime

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"mime/multipart"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzAmbiguity checks the invariant the engine relies on: when Ambiguity
// is silent, the structure is the only one the bytes have. Two other
// readings must then give this package's: the message written out again
// canonically (delimiters without padding, no preamble or epilogue, CRLF
// headers) and parsed once more, and the standard library's readers
// (net/textproto for headers, mime/multipart for parts), which share no
// code with this package.
func FuzzAmbiguity(f *testing.F) {
	for _, c := range tableCases() {
		f.Add(c.raw)
	}
	files, _ := filepath.Glob("testdata/ambiguous/*.eml")
	for _, name := range files {
		if b, err := os.ReadFile(name); err == nil {
			f.Add(b)
		}
	}
	lim := Limits{MaxDepth: 8, MaxParts: 64}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Parse(data, lim)
		if err != nil || Ambiguity(e) != nil {
			return
		}
		want := structure(e, false)
		var b bytes.Buffer
		writeCanonical(&b, e)
		e2, err := Parse(b.Bytes(), lim)
		if err != nil {
			t.Fatalf("canonical form does not parse: %v\n%q", err, b.Bytes())
		}
		if got := structure(e2, false); got != want {
			t.Fatalf("canonical re-parse differs:\nwant %s\ngot  %s\ninput %q\ncanonical %q", want, got, data, b.Bytes())
		}
		if hasControlField(e) {
			// Go's net/textproto refuses a control character in any
			// field; Ambiguity lets them by outside Content-* fields.
			return
		}
		got, err := stdStructure(data)
		if err != nil {
			t.Fatalf("the standard library cannot read what Ambiguity passed: %v\nours %s\ninput %q", err, want, data)
		}
		if want := structure(e, true); got != want {
			t.Fatalf("the standard library reads another structure:\nwant %s\ngot  %s\ninput %q", want, got, data)
		}
	})
}

// structure describes an entity tree: media type, parameters, and for
// leaves the raw body. With trimCutOff the last part of an unterminated
// multipart is left out: the standard library reads less of a cut-off
// part than the others (it drops the last line break, reads no part
// after a final delimiter line, and fails on a cut-off header), and the
// differential test compares that part with Python and MIME-tools.
func structure(e *Entity, trimCutOff bool) string {
	var b strings.Builder
	var walk func(e *Entity)
	walk = func(e *Entity) {
		fmt.Fprintf(&b, "(%s %s", e.MediaType, stdmime.FormatMediaType("x/x", e.Params))
		if len(e.Parts) == 0 {
			fmt.Fprintf(&b, " %q", bodyBytes(e))
		}
		for i, p := range e.Parts {
			if trimCutOff && e.Unterminated && i == len(e.Parts)-1 {
				break
			}
			walk(p)
		}
		b.WriteString(")")
	}
	walk(e)
	return b.String()
}

// writeCanonical writes e again: its header as parsed, multipart bodies
// with plain delimiters and nothing around the parts.
func writeCanonical(w *bytes.Buffer, e *Entity) {
	e.Header.WriteTo(w)
	switch {
	case e.IsMultipart() && e.split.seen:
		delim := "--" + e.Params["boundary"]
		for _, p := range e.Parts {
			w.WriteString(delim + "\r\n")
			writeCanonical(w, p)
			w.WriteString("\r\n")
		}
		w.WriteString(delim + "--\r\n")
	case e.MediaType == "message/rfc822" && len(e.Parts) == 1:
		writeCanonical(w, e.Parts[0])
	default:
		w.Write(bodyBytes(e))
	}
}

// stdStructure reads raw with the standard library into structure's form.
func stdStructure(raw []byte) (string, error) {
	var b strings.Builder
	err := stdEntity(&b, raw, "text/plain")
	return b.String(), err
}

func stdEntity(b *strings.Builder, raw []byte, defaultType string) error {
	r := bufio.NewReader(bytes.NewReader(raw))
	h, err := textproto.NewReader(r).ReadMIMEHeader()
	if err != nil && !(err == io.EOF && len(h) >= 0) {
		return fmt.Errorf("header: %w", err)
	}
	body, _ := io.ReadAll(r)
	mt, params := defaultType, map[string]string{}
	if v := h.Get("Content-Type"); v != "" {
		mt, params, err = stdmime.ParseMediaType(v)
		if err != nil {
			return fmt.Errorf("content-type %q: %w", v, err)
		}
	}
	fmt.Fprintf(b, "(%s %s", mt, stdmime.FormatMediaType("x/x", params))
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		childType := "text/plain"
		if mt == "multipart/digest" {
			childType = "message/rfc822"
		}
		mr := multipart.NewReader(bytes.NewReader(body), params["boundary"])
		for {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				break
			}
			if errors.Is(err, io.EOF) {
				break // a cut-off part header (see structure)
			}
			if err != nil {
				return fmt.Errorf("multipart: %w", err)
			}
			pb, err := io.ReadAll(p)
			if errors.Is(err, io.ErrUnexpectedEOF) {
				break // a cut-off last part (see structure)
			}
			if err != nil {
				return fmt.Errorf("part: %w", err)
			}
			var hb bytes.Buffer
			for k, vs := range p.Header {
				for _, v := range vs {
					hb.WriteString(k + ": " + v + "\r\n")
				}
			}
			hb.WriteString("\r\n")
			hb.Write(pb)
			if err := stdEntity(b, hb.Bytes(), childType); err != nil {
				return err
			}
		}
	case mt == "message/rfc822":
		if err := stdEntity(b, body, "text/plain"); err != nil {
			return err
		}
	default:
		fmt.Fprintf(b, " %q", body)
	}
	b.WriteString(")")
	return nil
}

// hasControlField reports whether a field of e or below holds a control
// character other than HTAB.
func hasControlField(e *Entity) bool {
	found := false
	e.Walk(func(x *Entity) {
		for _, f := range x.Header {
			if _, ok := headerControl(f.Value); ok {
				found = true
			}
		}
	})
	return found
}
