package crypto

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"log/slog"
	"slices"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// inboundPlan turns the analysis into header operations and, when the
// content changes, a new body.
func (e *Engine) inboundPlan(in *Input, res *inboundResult, body []byte) (*Plan, error) {
	h := in.Message.Header
	fold := e.cfg.Keyring.FoldLocalPart
	from := fromAddresses(h)
	restore := res.restore
	// A From protected inside the encryption must name the outer From;
	// the outer one is kept either way.
	if inner := fromAddresses(restore); len(inner) > 0 {
		if !sameAddresses(inner, from, fold) && res.sig.status == sigValid {
			res.sig.status, res.sig.reason = sigMismatch, "inner-from-differs"
		}
		restore = slices.DeleteFunc(slices.Clone(restore), func(f mime.Field) bool { return strings.EqualFold(f.Name, "From") })
	}
	judge(&res.sig, from, fold)

	p := &Plan{Action: Accept, Decision: "passed"}
	// Fields to delete, by name and 1-based index among that name.
	del := map[int]bool{}
	strip := func(pred func(mime.Field) bool) {
		for i, f := range h {
			if pred(f) {
				del[i] = true
			}
		}
	}
	strip(func(f mime.Field) bool { return hasPrefixFold(f.Name, "X-Cryptmilter-") })
	if e.cfg.Inbound.RTHeaders {
		strip(func(f mime.Field) bool {
			return slices.ContainsFunc(rtHeaders, func(n string) bool { return strings.EqualFold(n, f.Name) })
		})
	}
	strip(func(f mime.Field) bool {
		return strings.EqualFold(f.Name, "Authentication-Results") && forgedAuthResults(f.Value, e.cfg.Hostname)
	})

	var adds []HeaderOp
	if res.content != nil {
		strip(func(f mime.Field) bool { return mime.IsContentField(f.Name) })
		newBody := contentBody(res.content)
		fields := contentFields(res.content)
		if e.cfg.Inbound.KeepOriginal && res.enc.status == encDecrypted {
			fields, newBody = keepOriginal(fields, newBody, h, body)
		}
		if !h.Has("MIME-Version") {
			adds = append(adds, HeaderOp{Kind: OpAdd, Name: "MIME-Version", Value: "1.0"})
		}
		for _, f := range fields {
			adds = append(adds, HeaderOp{Kind: OpAdd, Name: f.Name, Value: f.Value})
		}
		buf := e.spool.New()
		if _, err := buf.Write(newBody); err != nil {
			buf.Close()
			return nil, err
		}
		p.Body = buf
	}
	var changes []HeaderOp
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
	p.HeaderOps = append(deleteOps(h, del), changes...)
	p.HeaderOps = append(p.HeaderOps, adds...)

	// Result headers at the top, in reading order.
	top := []mime.Field{
		{Name: HeaderEncryption, Value: res.enc.format()},
		{Name: HeaderSignature, Value: res.sig.format()},
	}
	if ar := e.authResults(res); ar != "" {
		top = append(top, mime.Field{Name: "Authentication-Results", Value: ar})
	}
	if e.cfg.Inbound.RTHeaders {
		top = append(top, rtFields(res)...)
	}
	for i := len(top) - 1; i >= 0; i-- {
		p.HeaderOps = append(p.HeaderOps, HeaderOp{Kind: OpInsert, Index: 0, Name: top[i].Name, Value: top[i].Value})
	}
	switch {
	case res.enc.status == encDecrypted:
		p.Decision = "decrypted"
	case res.enc.status == encFailed:
		p.Decision = "undecryptable"
	case res.sig.status != sigNone:
		p.Decision = "verified"
	}
	p.Attrs = append(p.Attrs,
		slog.String("encryption", res.enc.status), slog.String("enc_protocol", res.enc.protocol),
		slog.String("signature", res.sig.status), slog.String("signer", sanitize(res.sig.signer)),
		slog.String("reason", sanitize(joinReason(res.enc.reason, res.sig.reason))))
	return p, nil
}

func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}

// authservID returns the authserv-id of an Authentication-Results value.
func authservID(v string) string {
	id, _, _ := strings.Cut(mime.Unfold(v), ";")
	// RFC 8601 allows comments around it and a quoted-string form.
	id = stripComments(id)
	id = strings.TrimSpace(id)
	if i := strings.IndexAny(id, " \t"); i >= 0 {
		id = id[:i]
	}
	return strings.ToLower(strings.Trim(id, `"`))
}

// stripComments removes RFC 5322 comments (nested parentheses).
func stripComments(s string) string {
	var b strings.Builder
	depth := 0
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			escaped = false
			if depth == 0 {
				b.WriteRune(r)
			}
		case r == '\\':
			escaped = true
			if depth == 0 {
				b.WriteRune(r)
			}
		case r == '(':
			depth++
		case r == ')' && depth > 0:
			depth--
			b.WriteRune(' ')
		case depth == 0:
			b.WriteRune(r)
		}
	}
	return b.String()
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

func contentBody(e *mime.Entity) []byte { return toCRLF(e.Body) }

// keepOriginal wraps the decrypted content in a multipart/mixed with the
// original (encrypted) message attached as message/rfc822.
func keepOriginal(fields mime.Header, content []byte, origHeader mime.Header, origBody []byte) (mime.Header, []byte) {
	var rnd [12]byte
	rand.Read(rnd[:])
	boundary := "cryptmilter-" + hex.EncodeToString(rnd[:])
	var b bytes.Buffer
	b.WriteString("This is a message in MIME format: the decrypted message, then the original encrypted one.\r\n")
	b.WriteString("--" + boundary + "\r\n")
	fields.WriteTo(&b)
	b.Write(content)
	b.WriteString("\r\n--" + boundary + "\r\n")
	b.WriteString("Content-Type: message/rfc822\r\nContent-Disposition: attachment; filename=\"original-encrypted.eml\"\r\nContent-Description: original encrypted message\r\n\r\n")
	origHeader.WriteTo(&b)
	b.Write(origBody)
	b.WriteString("\r\n--" + boundary + "--\r\n")
	return mime.Header{{Name: "Content-Type", Value: "multipart/mixed; boundary=\"" + boundary + "\""}}, b.Bytes()
}

func sameAddresses(a, b []string, fold bool) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if keystore.NormalizeAddress(a[i], fold) != keystore.NormalizeAddress(b[i], fold) {
			return false
		}
	}
	return true
}

func (r encResult) format() string {
	var b strings.Builder
	b.WriteString(r.status)
	if r.status != encNone || r.protocol != "" {
		param(&b, "protocol", r.protocol)
	}
	param(&b, "key", r.key)
	param(&b, "reason", r.reason)
	return b.String()
}

func (r sigResult) format() string {
	var b strings.Builder
	b.WriteString(r.status)
	param(&b, "protocol", r.protocol)
	if r.status != sigNone {
		param(&b, "signer", r.signer)
		param(&b, "key", r.key)
	}
	param(&b, "reason", r.reason)
	return b.String()
}

func param(b *strings.Builder, name, value string) {
	if v := sanitize(value); v != "" {
		b.WriteString("; " + name + "=" + v)
	}
}

// authResults builds the RFC 7281 smime method for an S/MIME signature.
func (e *Engine) authResults(res *inboundResult) string {
	if res.sig.protocol != protoSMIME || res.sig.status == sigNone {
		return ""
	}
	result := "fail"
	switch res.sig.status {
	case sigValid:
		result = "pass"
	case sigMismatch, sigUntrusted, sigExpired, sigRevoked:
		result = "policy"
	case sigPartial:
		result = "neutral"
	}
	var b strings.Builder
	b.WriteString(e.cfg.Hostname + "; smime=" + result)
	if res.sig.reason != "" {
		b.WriteString(" (" + sanitize(res.sig.reason) + ")")
	}
	if s := sanitize(res.sig.signer); s != "" {
		b.WriteString(" body.smime-identifier=" + s)
	}
	if r := res.sig.smime; r != nil {
		if s := sanitize(r.Serial); s != "" {
			b.WriteString(" body.smime-serial=" + s)
		}
		if iss := cleanQuoted(r.Issuer); iss != "" {
			b.WriteString(" body.smime-issuer=\"" + iss + "\"")
		}
	}
	return b.String()
}

// cleanQuoted keeps printable ASCII without quotes or backslashes.
func cleanQuoted(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f && r != '"' && r != '\\' {
			b.WriteRune(r)
		}
		if b.Len() > 200 {
			break
		}
	}
	return b.String()
}

// rtFields are RT's own result headers.
func rtFields(res *inboundResult) []mime.Field {
	enc := "Not encrypted"
	if res.enc.status == encDecrypted {
		enc = "Success"
	}
	out := []mime.Field{{Name: "X-RT-Incoming-Encryption", Value: enc}}
	if res.sig.status == sigValid {
		out = append(out, mime.Field{Name: "X-RT-Incoming-Signature", Value: sanitize(res.sig.signer)})
	}
	proto := ""
	if res.enc.status == encDecrypted {
		proto = res.enc.protocol
	} else if res.sig.status == sigValid {
		proto = res.sig.protocol
	}
	switch proto {
	case protoOpenPGP:
		out = append(out, mime.Field{Name: "X-RT-Privacy", Value: "GnuPG"})
	case protoSMIME:
		out = append(out, mime.Field{Name: "X-RT-Privacy", Value: "SMIME"})
	}
	return out
}
