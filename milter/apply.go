package milter

import (
	"bytes"
	"fmt"
	"io"
	"slices"

	gomilter "github.com/emersion/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// maxBodyPacket is the largest body replacement packet sent to the MTA
// (libmilter's MILTER_CHUNK_SIZE).
const maxBodyPacket = 65535

// apply changes the original message as the plan says: header deletions
// and changes (in the plan's order, which lists deletions last-first),
// insertions and additions, body replacement, and the recipients of the
// original's delivery (d) against the envelope's (rcpts).
func apply(m *gomilter.Modifier, p *crypto.Plan, d crypto.Delivery, rcpts []string) error {
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
		if err := replaceBody(m.ReplaceBody, p.Body.Reader()); err != nil {
			return err
		}
	}
	for _, r := range d.Recipients {
		if !slices.Contains(rcpts, r) {
			if err := m.AddRecipient(r); err != nil {
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

// replaceBody streams r (CRLF line ends) to send in packets of at most
// maxBodyPacket bytes with LF line ends, as Postfix expects. A CR at the end
// of a read is held back so that a CRLF split across reads still becomes LF.
func replaceBody(send func([]byte) error, r io.Reader) error {
	buf := make([]byte, maxBodyPacket)
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
		chunk := buf[:n]
		carry = false
		if !end && n > 0 && chunk[n-1] == '\r' {
			chunk, carry = chunk[:n-1], true
		}
		out := bytes.ReplaceAll(chunk, []byte("\r\n"), []byte("\n"))
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
