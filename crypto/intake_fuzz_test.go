package crypto

import (
	"bytes"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// FuzzIntake feeds arbitrary messages to the intake the two ways the
// gateway does: whole (ReadMessage, as `cryptmilter process` does) and as
// milter body chunks of arbitrary sizes (Write). The body must come out
// the same however it is chunked, with every LF preceded by a CR, and
// with nothing but CRs added; the header fields must be written back as
// they were read; the size limits must refuse exactly what exceeds them;
// an LF-only message must read as its CRLF form.
func FuzzIntake(f *testing.F) {
	for _, s := range []string{
		"From: a@example.net\r\nSubject: s\r\n\r\nbody\r\n",
		"From: a@example.net\nSubject: folded\n\tline\n\nbody\nline\n",
		"Subject: x\r\n\r\n\r\r\n\n\r",
		"Subject: no body",
		"Subject: x\r\n\r\nno final line end",
		"X: a\r\n b\r\n\tc\r\nY:\r\n\r\n\r\n\r\n",
		"bad line\r\n\r\n",
		" continuation first\r\n\r\n",
		"A:\r\r\n\r\nx",
	} {
		f.Add([]byte(s), uint16(1), uint16(0))
		f.Add([]byte(s), uint16(7), uint16(12))
	}
	sp, err := spool.Open(f.TempDir(), 1<<10) // small: bodies go to disk too
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, msg []byte, chunk, limit uint16) {
		whole := NewIntake(Limits{}, sp)
		defer whole.Close()
		if err := whole.ReadMessage(bytes.NewReader(msg)); err != nil {
			if !strings.HasPrefix(err.Error(), "crypto: read message: ") {
				t.Fatalf("ReadMessage: error %q", err)
			}
			return
		}
		m, reply, err := whole.Message()
		if err != nil || !reply.IsZero() {
			t.Fatalf("Message without limits: %v, %q", err, reply)
		}
		body, err := m.Body.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Count(body, []byte("\n")) != bytes.Count(body, []byte("\r\n")) {
			t.Errorf("body has a bare LF: %q", body)
		}
		// The raw body is what follows the header in msg; only CRs are
		// added to it.
		raw := msg[len(msg)-int(whole.Size()):]
		if !bytes.Equal(bytes.ReplaceAll(body, []byte("\r"), nil), bytes.ReplaceAll(raw, []byte("\r"), nil)) {
			t.Errorf("body %q is not raw body %q with CRs added", body, raw)
		}

		// The same body in chunks of size chunk (1 or more), as milter
		// body callbacks hand it over.
		n := max(int(chunk)%1024, 1)
		chunked := NewIntake(Limits{}, sp)
		defer chunked.Close()
		for p := raw; len(p) > 0; {
			k := min(n, len(p))
			chunked.Write(p[:k])
			p = p[k:]
		}
		cm, _, err := chunked.Message()
		if err != nil {
			t.Fatal(err)
		}
		if cb, _ := cm.Body.Bytes(); !bytes.Equal(cb, body) {
			t.Errorf("in chunks of %d the body is %q, whole it is %q", n, cb, body)
		}

		// The header, written and read again, is the same.
		var hb bytes.Buffer
		if _, err := m.Header.WriteTo(&hb); err != nil {
			t.Fatal(err)
		}
		again := NewIntake(Limits{}, sp)
		defer again.Close()
		if err := again.ReadMessage(&hb); err != nil {
			t.Fatalf("header %q written back does not read: %v", hb.Bytes(), err)
		}
		am, _, _ := again.Message()
		if !sameHeader(am.Header, m.Header) {
			t.Errorf("header read back as %q, was %q", am.Header, m.Header)
		}

		// Without CRs, a message reads as the same (CRs in the header's
		// line ends and the body's are the only difference).
		if !bytes.Contains(bytes.ReplaceAll(msg, []byte("\r\n"), nil), []byte("\r")) {
			lf := NewIntake(Limits{}, sp)
			defer lf.Close()
			if err := lf.ReadMessage(bytes.NewReader(bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n")))); err != nil {
				t.Fatalf("the LF form does not read: %v", err)
			}
			lm, _, _ := lf.Message()
			lb, _ := lm.Body.Bytes()
			if !sameHeader(lm.Header, m.Header) || !bytes.Equal(lb, body) {
				t.Errorf("the LF form reads as %q %q, the message as %q %q", lm.Header, lb, m.Header, body)
			}
		}

		// Limits: refused exactly when the body or the header is larger.
		lim := int64(limit)
		byBody := NewIntake(Limits{MaxMessageSize: lim}, sp)
		defer byBody.Close()
		byBody.ReadMessage(bytes.NewReader(msg))
		if refused := !byBody.Refused().IsZero(); lim > 0 && refused != (whole.Size() > lim) {
			t.Errorf("max_message_size %d, body %d bytes: refused = %v", lim, whole.Size(), refused)
		}
		byHeader := NewIntake(Limits{MaxHeaderSize: lim}, sp)
		defer byHeader.Close()
		byHeader.ReadMessage(bytes.NewReader(msg))
		if refused := !byHeader.Refused().IsZero(); lim > 0 && refused != (whole.headerSize > lim) {
			t.Errorf("max_header_size %d, header %d bytes: refused = %v", lim, whole.headerSize, refused)
		}
	})
}

func sameHeader(a, b mime.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name || a[i].Value != b[i].Value {
			return false
		}
	}
	return true
}
