package milter

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"sync"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// maxBodyPacket is the largest body replacement packet sent to the MTA
// (libmilter's MILTER_CHUNK_SIZE).
const maxBodyPacket = 65535

// apply changes the original message as the plan says: header deletions
// and changes (in the plan's order, which lists deletions last-first),
// insertions and additions, body replacement, and the recipients of the
// original's delivery (d) against the envelope's (rcpts).
func apply(m dj.Modifier, p *crypto.Plan, d crypto.Delivery, rcpts []string) error {
	for _, op := range p.HeaderOps {
		var err error
		switch op.Kind {
		case crypto.OpDelete:
			err = m.ChangeHeader(op.Index, op.Name, "")
		case crypto.OpChange:
			err = m.ChangeHeader(op.Index, op.Name, op.Value)
		case crypto.OpInsert:
			err = m.InsertHeader(op.Index, op.Name, op.Value)
		case crypto.OpAdd:
			err = m.AddHeader(op.Name, op.Value)
		default:
			err = fmt.Errorf("unknown header operation %d", op.Kind)
		}
		if err != nil {
			return fmt.Errorf("milter: header %s: %w", op.Name, err)
		}
	}
	if p.Body != nil {
		if err := replaceBody(m.ReplaceBodyRawChunk, p.Body.Reader()); err != nil {
			return err
		}
	}
	for _, r := range d.Recipients {
		if !slices.Contains(rcpts, r) {
			if err := m.AddRecipient(r, ""); err != nil {
				return fmt.Errorf("milter: add recipient: %w", err)
			}
		}
	}
	for _, r := range rcpts {
		if !slices.Contains(d.Recipients, r) {
			if err := m.DeleteRecipient(r); err != nil {
				return fmt.Errorf("milter: delete recipient: %w", err)
			}
		}
	}
	if p.Action == crypto.Quarantine {
		if err := m.Quarantine(p.Quarantine); err != nil {
			return fmt.Errorf("milter: quarantine: %w", err)
		}
	}
	return nil
}

// bodyBufs are the buffers of body replacements (one packet each).
var bodyBufs = sync.Pool{New: func() any { b := make([]byte, maxBodyPacket); return &b }}

// replaceBody streams r (CRLF line ends) to send in packets of at most
// maxBodyPacket bytes with LF line ends, as Postfix expects, converting
// in place in one reused buffer. A CR at the end of a read is held back
// so that a CRLF split across reads still becomes LF. send must not keep
// the slice.
func replaceBody(send func([]byte) error, r io.Reader) error {
	bp := bodyBufs.Get().(*[]byte)
	defer bodyBufs.Put(bp)
	buf := *bp
	var carry bool // a CR was held back
	sent := false
	for {
		off := 0
		if carry {
			buf[0] = '\r'
			off = 1
		}
		n, err := io.ReadFull(r, buf[off:])
		n += off
		end := err == io.EOF || err == io.ErrUnexpectedEOF
		if err != nil && !end {
			return fmt.Errorf("milter: read replacement body: %w", err)
		}
		carry = false
		if !end && n > 0 && buf[n-1] == '\r' {
			n, carry = n-1, true
		}
		out := crlfToLF(buf[:n])
		if len(out) > 0 || (!sent && end) {
			if err := send(out); err != nil {
				return fmt.Errorf("milter: replace body: %w", err)
			}
			sent = true
		}
		if end {
			return nil
		}
	}
}

// crlfToLF turns every CRLF of b into LF in place and returns the
// shortened slice.
func crlfToLF(b []byte) []byte {
	i := bytes.Index(b, crlf)
	if i < 0 {
		return b
	}
	w := i
	for {
		i++ // drop the CR at i: b[i] is now the LF
		j := bytes.Index(b[i+1:], crlf)
		if j < 0 {
			w += copy(b[w:], b[i:])
			return b[:w]
		}
		end := i + 1 + j
		w += copy(b[w:], b[i:end])
		i = end
	}
}

var crlf = []byte("\r\n")
