package crypto

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// inboundPlan turns the verdict into header operations and, when the
// content changes, a new body.
func (e *Engine) inboundPlan(in *Input, res *inboundResult, body *spool.Buffer) (*Plan, error) {
	h := in.Message.Header
	p := &Plan{Action: Accept, Decision: "passed"}
	del := e.forgedResults(h)
	var adds []HeaderOp
	if res.content != nil {
		for i, f := range h {
			if mime.IsContentField(f.Name) {
				del[i] = true
			}
		}
		// The new body: the content's raw body with CRLF line ends,
		// copied (never held) into a spool buffer.
		buf := e.spool.New()
		content := newCRLFReader(res.content.Body())
		fields := contentFields(res.content)
		var err error
		if e.pol.Inbound.KeepOriginal && res.Enc.Status == verdict.Decrypted {
			fields, err = keepOriginal(buf, fields, content, e.untrusted(h), body.Reader())
		} else {
			_, err = copyBuffered(buf, content)
		}
		if err != nil {
			buf.Close()
			return nil, fmt.Errorf("crypto: inbound body: %w", err)
		}
		if !h.Has("MIME-Version") {
			adds = append(adds, HeaderOp{Kind: OpAdd, Name: "MIME-Version", Value: "1.0"})
		}
		for _, f := range fields {
			adds = append(adds, HeaderOp{Kind: OpAdd, Name: f.Name, Value: f.Value})
		}
		p.Body = buf
	}
	changes, restoreAdds := restoreOps(h, res.restore, del)
	p.HeaderOps = append(deleteOps(h, del), changes...)
	p.HeaderOps = append(p.HeaderOps, adds...)
	p.HeaderOps = append(p.HeaderOps, restoreAdds...)
	// Result headers at the top, in reading order.
	top := res.Fields(verdict.FormatOptions{Hostname: e.pol.Hostname, RT: e.pol.Inbound.RTHeaders})
	for i := len(top) - 1; i >= 0; i-- {
		p.HeaderOps = append(p.HeaderOps, HeaderOp{Kind: OpInsert, Index: 0, Name: top[i].Name, Value: top[i].Value})
	}
	switch {
	case res.Enc.Status == verdict.Decrypted:
		p.Decision = "decrypted"
	case res.Enc.Status == verdict.EncFailed:
		p.Decision = "undecryptable"
	case res.Sig.Status != verdict.SigNone:
		p.Decision = "verified"
	}
	p.Attrs = logAttrs(res)
	return p, nil
}

// forgedResults returns the positions of incoming result fields: every
// X-Cryptmilter-* and RT result field, and Authentication-Results that
// claim our authserv-id.
func (e *Engine) forgedResults(h mime.Header) map[int]bool {
	del := map[int]bool{}
	for i, f := range h {
		if verdict.IsResultField(f.Name) ||
			strings.EqualFold(f.Name, verdict.HeaderAuthResults) && forgedAuthResults(f.Value, e.pol.Hostname) {
			del[i] = true
		}
	}
	return del
}

// untrusted returns h without the result fields that could pass for ours,
// for attaching the original message (keep_original).
func (e *Engine) untrusted(h mime.Header) mime.Header {
	del := e.forgedResults(h)
	var out mime.Header
	for i, f := range h {
		if !del[i] {
			out = append(out, f)
		}
	}
	return out
}

// restoreOps returns the header operations putting the protected fields
// on the outer message: the first field of each name changed, others
// deleted (added to del), missing ones added.
func restoreOps(h, restore mime.Header, del map[int]bool) (changes, adds []HeaderOp) {
	for _, f := range restore {
		idx := indexesOf(h, f.Name)
		if len(idx) == 0 {
			adds = append(adds, HeaderOp{Kind: OpAdd, Name: f.Name, Value: f.Value})
			continue
		}
		changes = append(changes, HeaderOp{Kind: OpChange, Name: f.Name, Index: 1, Value: f.Value})
		for _, i := range idx[1:] {
			del[i] = true
		}
	}
	return changes, adds
}

// logAttrs are the log line's details of an inbound verdict.
func logAttrs(res *inboundResult) []slog.Attr {
	attrs := []slog.Attr{slog.String("encryption", res.Enc.Status.String())}
	if res.Enc.Protocol != 0 {
		attrs = append(attrs, slog.String("enc_protocol", res.Enc.Protocol.String()))
	}
	attrs = append(attrs, slog.String("signature", res.Sig.Status.String()))
	if res.Sig.Protocol != 0 {
		attrs = append(attrs, slog.String("sig_protocol", res.Sig.Protocol.String()))
	}
	if s := verdict.Token(res.Sig.Signer); s != "" {
		attrs = append(attrs, slog.String("signer", s))
	}
	if r := verdict.Token(verdict.Reason(res.Enc.Reason, res.Sig.Reason)); r != "" {
		attrs = append(attrs, slog.String("reason", r))
	}
	var amb *mime.AmbiguousError
	if errors.As(res.ambiguous, &amb) {
		attrs = append(attrs, slog.String("ambiguous", amb.Reason), slog.String("ambiguous_part", amb.Part))
	}
	return attrs
}

func indexesOf(h mime.Header, name string) []int {
	var out []int
	for i, f := range h {
		if strings.EqualFold(f.Name, name) {
			out = append(out, i)
		}
	}
	return out
}

// contentFields are the Content-* fields of an entity.
func contentFields(e *mime.Entity) mime.Header {
	var out mime.Header
	for _, f := range e.Header {
		if mime.IsContentField(f.Name) && mime.ValidFieldName(f.Name) {
			// The fields come from inside the message (decrypted or
			// signed content): a bare CR or LF in them must not become a
			// line break, and so a field, of the outer header.
			f.Value = neutralizeBreaks(f.Value)
			out = append(out, f)
		}
	}
	if len(out) == 0 {
		out = mime.Header{{Name: "Content-Type", Value: "text/plain; charset=us-ascii"}}
	}
	return out
}

// neutralizeBreaks replaces every CR, LF and NUL of a header value that is
// not part of folding (CRLF followed by a space or tab) with a space.
func neutralizeBreaks(v string) string {
	if safeFieldValue(v) {
		return v
	}
	b := []byte(v)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case 0, '\n':
			b[i] = ' '
		case '\r':
			if i+2 < len(b) && b[i+1] == '\n' && (b[i+2] == ' ' || b[i+2] == '\t') {
				i++
				continue
			}
			b[i] = ' '
		}
	}
	return string(b)
}

// keepOriginal writes to w a multipart/mixed of the decrypted content
// (with its fields) and the original (encrypted) message attached as
// message/rfc822, and returns the multipart's fields. The attached header
// has no result fields that could pass for the gateway's.
func keepOriginal(w io.Writer, fields mime.Header, content io.Reader, origHeader mime.Header, origBody io.Reader) (mime.Header, error) {
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "cryptmilter-" + hex.EncodeToString(rnd[:])
	bw := bufio.NewWriterSize(w, 32<<10)
	bw.WriteString("This is a message in MIME format: the decrypted message, then the original encrypted one.\r\n")
	bw.WriteString("--" + boundary + "\r\n")
	fields.WriteTo(bw)
	if _, err := copyBuffered(bw, content); err != nil {
		return nil, err
	}
	bw.WriteString("\r\n--" + boundary + "\r\n")
	bw.WriteString("Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"original-encrypted.eml\"\r\n" +
		"Content-Description: original encrypted message, as received (not verified by the gateway)\r\n\r\n")
	origHeader.WriteTo(bw)
	if _, err := copyBuffered(bw, origBody); err != nil {
		return nil, err
	}
	bw.WriteString("\r\n--" + boundary + "--\r\n")
	if err := bw.Flush(); err != nil {
		return nil, err
	}
	return mime.Header{{Name: "Content-Type", Value: "multipart/mixed; boundary=\"" + boundary + "\""}}, nil
}
