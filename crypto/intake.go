package crypto

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// Intake receives one message the way the MTA hands it over (header
// fields one by one, then body chunks) and applies the size limits and
// the line-end rules on the way in. The milter feeds it from its Header
// and BodyChunk callbacks; `cryptmilter process` feeds it from a file
// through ReadMessage, so both see the same message and the same
// refusals.
type Intake struct {
	lim        Limits
	header     mime.Header
	headerSize int64
	bodySize   int64
	body       *spool.Buffer
	// cr is set when the last body byte written was a CR.
	cr bool
	// refused is the reply for the first limit exceeded.
	refused Reply
	err     error
}

// NewIntake returns an intake for one message, spooling the body to sp.
func NewIntake(lim Limits, sp *spool.Dir) *Intake {
	return &Intake{lim: lim, body: sp.New()}
}

// Field adds a header field with value as milters receive it (without the
// space after the colon, folded lines joined with "\n").
func (t *Intake) Field(name, value string) {
	if !t.refused.IsZero() {
		return
	}
	t.headerSize += int64(len(name) + len(value) + 4)
	if t.lim.MaxHeaderSize > 0 && t.headerSize > t.lim.MaxHeaderSize {
		t.refused = HeaderTooBigReply
		t.header = nil
		return
	}
	t.header = append(t.header, mime.FromMilter(name, value))
}

// Write adds a chunk of the body. Line ends become CRLF (an LF without a
// CR before it gets one; a CR alone stays as it is). It never fails: a
// limit or spool error is reported by Message.
func (t *Intake) Write(p []byte) (int, error) {
	n := len(p)
	if !t.refused.IsZero() || t.err != nil {
		return n, nil
	}
	t.bodySize += int64(n)
	if t.lim.MaxMessageSize > 0 && t.bodySize > t.lim.MaxMessageSize {
		t.refused = TooBigReply
		return n, nil
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.write(p)
			t.cr = p[len(p)-1] == '\r'
			break
		}
		bare := i == 0 && !t.cr || i > 0 && p[i-1] != '\r'
		if bare {
			t.write(p[:i])
			t.write([]byte("\r\n"))
		} else {
			t.write(p[:i+1])
		}
		t.cr = false
		p = p[i+1:]
	}
	return n, nil
}

func (t *Intake) write(p []byte) {
	if t.err == nil && len(p) > 0 {
		if _, err := t.body.Write(p); err != nil {
			t.err = fmt.Errorf("crypto: spool: %w", err)
		}
	}
}

// Refused returns the refusal reply once a limit was exceeded.
func (t *Intake) Refused() Reply { return t.refused }

// Size is the number of body bytes received.
func (t *Intake) Size() int64 { return t.bodySize }

// Message returns the message received. A non-zero Reply means a limit
// was exceeded (the message is refused with it, or its temporary form);
// an error means the spool failed (the message is tempfailed). The
// message's body belongs to the intake until Close.
func (t *Intake) Message() (Message, Reply, error) {
	if !t.refused.IsZero() {
		return Message{}, t.refused, nil
	}
	if t.err != nil {
		return Message{}, Reply{}, t.err
	}
	return Message{Header: t.header, Body: t.body}, Reply{}, nil
}

// Release gives up the body: the caller closes it (an engine that timed
// out may still be reading it).
func (t *Intake) Release() *spool.Buffer {
	b := t.body
	t.body = nil
	return b
}

// Close releases the spooled body.
func (t *Intake) Close() {
	if t.body != nil {
		t.body.Close()
		t.body = nil
	}
}

// ReadMessage feeds the intake with a whole message from r (header, blank
// line, body; CRLF or LF line ends), as the MTA would have handed it over.
// It stops early once a limit is exceeded. A header that is not a header
// (a line without a colon) is an error.
func (t *Intake) ReadMessage(r io.Reader) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var name, value string
	have := false
	flush := func() {
		if have {
			t.Field(name, value)
			have = false
		}
	}
	for {
		line, err := br.ReadString('\n')
		if err != nil && err != io.EOF {
			return fmt.Errorf("crypto: read message: %w", err)
		}
		trimmed := strings.TrimRight(line, "\r\n")
		switch {
		case trimmed == "":
			// The blank line that ends the header, or EOF.
			flush()
			if err == io.EOF {
				return nil
			}
			return t.readBody(br)
		case trimmed[0] == ' ' || trimmed[0] == '\t':
			if !have {
				return errors.New("crypto: read message: continuation line before the first header field")
			}
			value += "\n" + trimmed
		default:
			flush()
			n, v, ok := strings.Cut(trimmed, ":")
			if !ok || n == "" || strings.ContainsAny(n, " \t") {
				return fmt.Errorf("crypto: read message: %q is not a header field", clip(trimmed))
			}
			if len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
				v = v[1:]
			}
			name, value, have = n, v, true
		}
		if !t.refused.IsZero() {
			return nil
		}
		if err == io.EOF {
			flush()
			return nil
		}
	}
}

func (t *Intake) readBody(r io.Reader) error {
	buf := make([]byte, 64<<10)
	for t.refused.IsZero() {
		n, err := r.Read(buf)
		t.Write(buf[:n])
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("crypto: read message: %w", err)
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "…"
	}
	return s
}
