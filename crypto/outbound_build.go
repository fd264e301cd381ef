package crypto

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	stdmime "mime"
	"strings"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// errNoSigner is returned when a signed-only copy has no signing key (a
// classification bug: classify only signs with available keys).
var errNoSigner = errors.New("crypto: outbound: no signing key")

// builder makes the copies of one message, canonicalizing it once.
type builder struct {
	e    *Engine
	in   *Input
	body interface{ Reader() io.Reader }
	sg   signers
	now  time.Time
	from string

	canonDone bool
	canonHdr  mime.Header // Content-* of the canonical entity
	canonBody *spool.Buffer
	// S/MIME multipart/signed entities, by encrypted (see smimeSigned)
	signed map[bool]*signedEntity
}

// signedEntity is a multipart/signed S/MIME entity: its Content-Type and
// its body in the spool.
type signedEntity struct {
	ctype string
	body  *spool.Buffer
}

// reader returns the whole entity (header and body) and its size.
func (s *signedEntity) reader() (io.Reader, int64) {
	var hb bytes.Buffer
	mime.Header{{Name: "Content-Type", Value: s.ctype}}.WriteTo(&hb)
	return io.MultiReader(bytes.NewReader(hb.Bytes()), s.body.Reader()), int64(hb.Len()) + s.body.Size()
}

func (b *builder) close() {
	if b.canonBody != nil {
		b.canonBody.Close()
	}
	for _, s := range b.signed {
		s.body.Close()
	}
}

func (b *builder) canonicalize() error {
	if b.canonDone {
		return nil
	}
	buf := b.e.spool.New()
	ch, err := mime.Canonicalize(buf, b.in.Message.Header, b.body.Reader(), mime.CanonOptions{
		MaxDepth:  b.e.pol.Limits.MaxMIMEDepth,
		MaxParts:  b.e.pol.Limits.MaxParts,
		NewBuffer: func() mime.TempBuffer { return b.e.spool.New() },
	})
	if err != nil {
		buf.Close()
		return fmt.Errorf("crypto: outbound: %w", err)
	}
	b.canonDone, b.canonHdr, b.canonBody = true, ch, buf
	return nil
}

// unprotected are the fields never copied into the protected header:
// trace and transport fields, Bcc, MIME structure.
var unprotected = map[string]bool{
	"received": true, "return-path": true, "dkim-signature": true, "arc-seal": true,
	"arc-message-signature": true, "arc-authentication-results": true,
	"authentication-results": true, "received-spf": true, "delivered-to": true,
	"x-original-to": true, "bcc": true, "resent-bcc": true, "mime-version": true,
	"hp-outer": true,
}

// outboundResultField reports whether f is one of the inbound result
// headers: cryptmilter's and RT's (verdict.IsResultField), or an
// Authentication-Results field that claims the gateway's authserv-id with
// a result of cryptmilter's methods (forgedAuthResults, as inbound). On
// outbound mail they can only be forged or stale, and are removed from
// every copy rather than carried, or signed, by the gateway.
func (e *Engine) outboundResultField(f mime.Field) bool {
	if verdict.IsResultField(f.Name) {
		return true
	}
	return strings.EqualFold(f.Name, verdict.HeaderAuthResults) && forgedAuthResults(f.Value, e.pol.Hostname)
}

// obscured are the outer fields header protection removes; Subject is
// replaced by "[...]" (RFC 9788 baseline policy).
var obscured = map[string]bool{"keywords": true, "comments": true}

const obscuredSubject = "[...]"

// innerHeader returns the header of the signed/encrypted entity.
func (b *builder) innerHeader(encrypted bool) mime.Header {
	ch := b.canonHdr.Clone()
	if !b.e.pol.Outbound.ProtectHeaders {
		return ch
	}
	hp := "clear"
	if encrypted {
		hp = "cipher"
	}
	ct := "text/plain; charset=us-ascii"
	if v := ch.Get("Content-Type"); v != "" {
		ct = ch.Get("Content-Type")
	}
	var out mime.Header
	out = append(out, mime.Field{Name: "Content-Type", Value: mime.AddParam(ct, "hp", hp)})
	for _, f := range ch {
		if !strings.EqualFold(f.Name, "Content-Type") {
			out = append(out, f)
		}
	}
	var outer mime.Header
	hide := b.hidesHeaders(encrypted)
	for _, f := range b.in.Message.Header {
		n := strings.ToLower(f.Name)
		if mime.IsContentField(f.Name) || unprotected[n] || b.e.outboundResultField(f) {
			continue
		}
		cf, ok := mime.CleanField(f)
		if !ok {
			continue
		}
		out = append(out, cf)
		if !encrypted {
			continue
		}
		switch {
		case hide && obscured[n]:
		case hide && n == "subject":
			outer = append(outer, mime.Field{Name: "HP-Outer", Value: f.Name + ": " + obscuredSubject})
		default:
			hpo, _ := mime.CleanField(mime.Field{Name: "HP-Outer", Value: cf.Name + ": " + cf.Value})
			outer = append(outer, hpo)
		}
	}
	return append(out, outer...)
}

// entity returns the inner entity (header and canonical body).
func (b *builder) entity(encrypted bool) io.Reader {
	r, _ := b.entitySized(encrypted)
	return r
}

// entitySized returns the inner entity and its size.
func (b *builder) entitySized(encrypted bool) (io.Reader, int64) {
	var hb bytes.Buffer
	b.innerHeader(encrypted).WriteTo(&hb)
	return io.MultiReader(bytes.NewReader(hb.Bytes()), b.canonBody.Reader()), int64(hb.Len()) + b.canonBody.Size()
}

// smimeSigned returns the multipart/signed S/MIME entity over the inner
// entity, made once per variant and kept in the spool until close: the
// inner entity is spooled, signed while read (smime.SignDetachedReader)
// and copied again into the multipart/signed body, so that memory stays
// flat whatever the message size.
func (b *builder) smimeSigned(encrypted bool) (*signedEntity, error) {
	if s, ok := b.signed[encrypted]; ok {
		return s, nil
	}
	inner := b.e.spool.New()
	defer inner.Close()
	if _, err := io.Copy(inner, b.entity(encrypted)); err != nil {
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	id := b.sg.smime
	sig, err := smime.SignDetachedReader(inner.Reader(), smime.Identity{Cert: id.Cert, Key: id.Key}, id.Chain)
	if err != nil {
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	var sb bytes.Buffer
	if err := mime.WriteBase64(&sb, sig); err != nil {
		return nil, err
	}
	boundary := mime.NewBoundary()
	body := b.e.spool.New()
	bw := bufio.NewWriterSize(body, 64<<10)
	err = mime.WriteMultipartSigned(bw, boundary, inner.Reader(), mime.SMIMESignatureHeader(), &sb)
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		body.Close()
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	s := &signedEntity{ctype: mime.SignedContentType(mime.ProtocolPKCS7Signature, "sha-256", boundary), body: body}
	if b.signed == nil {
		b.signed = map[bool]*signedEntity{}
	}
	b.signed[encrypted] = s
	return s, nil
}

type built struct {
	header mime.Header
	ops    []HeaderOp
	body   *spool.Buffer
}

// copyWriter writes the body of one kind of copy and returns its
// Content-Type and Content-Transfer-Encoding ("" for 7bit).
type copyWriter func(b *builder, g group, out *spool.Buffer) (ctype, cte string, err error)

// writerFor returns the writer for a class.
func writerFor(c class) (copyWriter, bool) {
	switch {
	case c.treat == treatSign && c.proto == OpenPGP:
		return (*builder).pgpSigned, true
	case c.treat == treatSign && c.proto == SMIME:
		return (*builder).smimeSignedCopy, true
	case c.treat == treatEncrypt && c.proto == OpenPGP:
		return (*builder).pgpEncrypted, true
	case c.treat == treatEncrypt && c.proto == SMIME:
		return (*builder).smimeEnveloped, true
	}
	return nil, false
}

// build makes the copy for one group.
func (b *builder) build(g group) (*built, error) {
	if err := b.canonicalize(); err != nil {
		return nil, err
	}
	if g.cls.treat == treatEncrypt && g.cls.proto == OpenPGP && g.cls.inline && b.inlineable() {
		return b.buildInline(g)
	}
	write, ok := writerFor(g.cls)
	if !ok {
		return nil, fmt.Errorf("crypto: outbound: no way to build a %s copy", g.cls)
	}
	out := b.e.spool.New()
	ctype, cte, err := write(b, g, out)
	if err != nil {
		out.Close()
		return nil, err
	}
	hdr, ops := b.outerHeader(ctype, cte, g.cls.treat == treatEncrypt)
	return &built{header: hdr, ops: ops, body: out}, nil
}

// pgpSigned writes a PGP/MIME multipart/signed copy.
func (b *builder) pgpSigned(_ group, out *spool.Buffer) (string, string, error) {
	if b.sg.pgp == nil {
		return "", "", errNoSigner
	}
	var sig bytes.Buffer
	inner := b.e.spool.New()
	defer inner.Close()
	if _, err := io.Copy(inner, b.entity(false)); err != nil {
		return "", "", fmt.Errorf("crypto: outbound: %w", err)
	}
	micalg, err := openpgp.SignDetached(&sig, inner.Reader(), b.sg.pgp)
	if err != nil {
		return "", "", fmt.Errorf("crypto: outbound: %w", err)
	}
	boundary := mime.NewBoundary()
	if err := mime.WriteMultipartSigned(out, boundary, inner.Reader(), mime.PGPSignatureHeader(), &sig); err != nil {
		return "", "", err
	}
	return mime.SignedContentType(mime.ProtocolPGPSignature, micalg, boundary), "", nil
}

// smimeSignedCopy writes an S/MIME multipart/signed copy.
func (b *builder) smimeSignedCopy(_ group, out *spool.Buffer) (string, string, error) {
	if b.sg.smime == nil {
		return "", "", errNoSigner
	}
	ent, err := b.smimeSigned(false)
	if err != nil {
		return "", "", err
	}
	if _, err := io.Copy(out, ent.body.Reader()); err != nil {
		return "", "", fmt.Errorf("crypto: outbound: %w", err)
	}
	return ent.ctype, "", nil
}

// pgpEncrypted writes a PGP/MIME multipart/encrypted copy, signed and
// encrypted in one pass to the group's keys.
func (b *builder) pgpEncrypted(g group, out *spool.Buffer) (string, string, error) {
	// One key per holder: two envelope forms of one address (or two
	// addresses of one correspondent) in a shared copy name it once.
	keys := make([]*pgpcrypto.Key, 0, len(g.rcpts))
	seenKey := make(map[string]bool, len(g.rcpts))
	for _, r := range g.rcpts {
		fp := r.pgp.GetFingerprint()
		if !seenKey[fp] {
			seenKey[fp] = true
			keys = append(keys, r.pgp)
		}
	}
	armored := b.e.spool.New()
	defer armored.Close()
	if err := openpgp.SignEncrypt(armored, b.entity(true), b.sg.pgp, keys, false); err != nil {
		return "", "", fmt.Errorf("crypto: outbound: %w", err)
	}
	boundary := mime.NewBoundary()
	if err := mime.WritePGPEncrypted(out, boundary, armored.Reader()); err != nil {
		return "", "", err
	}
	return mime.EncryptedContentType(boundary), "", nil
}

// smimeEnveloped writes an S/MIME enveloped copy of the signed entity (or
// of the entity itself when the gateway has no S/MIME signing key).
func (b *builder) smimeEnveloped(g group, out *spool.Buffer) (string, string, error) {
	var content io.Reader
	var size int64
	if b.sg.smime != nil {
		ent, err := b.smimeSigned(true)
		if err != nil {
			return "", "", err
		}
		content, size = ent.reader()
	} else {
		content, size = b.entitySized(true)
	}
	certs := make([]*x509.Certificate, 0, len(g.rcpts))
	seenCert := make(map[string]bool, len(g.rcpts))
	for _, r := range g.rcpts {
		if !seenCert[string(r.cert.Raw)] {
			seenCert[string(r.cert.Raw)] = true
			certs = append(certs, r.cert)
		}
	}
	// The DER goes straight through a base64 encoder into the copy.
	bw := bufio.NewWriterSize(out, 64<<10)
	lw := &base64Lines{w: bw}
	enc := base64.NewEncoder(base64.StdEncoding, lw)
	err := smime.EncryptTo(enc, content, size, certs)
	if err == nil {
		err = enc.Close()
	}
	if err == nil {
		err = lw.Close()
	}
	if err == nil {
		err = bw.Flush()
	}
	if err != nil {
		return "", "", fmt.Errorf("crypto: outbound: %w", err)
	}
	return mime.EnvelopedContentType, "base64", nil
}

// outerHeader returns the header of a rewritten copy and the operations
// that turn the original header into it: MIME fields replaced, and with
// header protection and confidentiality on an encrypted copy Subject
// obscured and Keywords and Comments removed (outbound_hcp.go).
func (b *builder) outerHeader(ctype, cte string, encrypted bool) (mime.Header, []HeaderOp) {
	orig := b.in.Message.Header
	protect := b.hidesHeaders(encrypted)
	count := map[string]int{}
	del := map[int]bool{}
	var changes []HeaderOp
	var hdr mime.Header
	for i, f := range orig {
		n := strings.ToLower(f.Name)
		count[n]++
		switch {
		case mime.IsContentField(f.Name) || n == "mime-version" || n == "bcc" || n == "resent-bcc" || (protect && obscured[n]) ||
			b.e.outboundResultField(f):
			del[i] = true
		case protect && n == "subject":
			changes = append(changes, HeaderOp{Kind: OpChange, Name: f.Name, Index: count[n], Value: obscuredSubject})
			hdr = append(hdr, mime.Field{Name: f.Name, Value: obscuredSubject})
		default:
			hdr = append(hdr, f)
		}
	}
	adds := []HeaderOp{
		{Kind: OpAdd, Name: "MIME-Version", Value: "1.0"},
		{Kind: OpAdd, Name: "Content-Type", Value: ctype},
	}
	if cte != "" {
		adds = append(adds, HeaderOp{Kind: OpAdd, Name: "Content-Transfer-Encoding", Value: cte})
	}
	if cte == "base64" {
		adds = append(adds,
			HeaderOp{Kind: OpAdd, Name: "Content-Disposition", Value: `attachment; filename="smime.p7m"`})
	}
	for _, a := range adds {
		hdr = append(hdr, mime.Field{Name: a.Name, Value: a.Value})
	}
	ops := append(deleteOps(orig, del), changes...)
	return hdr, append(ops, adds...)
}

// inlineable reports whether the message is a single text/plain part,
// the only kind sent as inline PGP.
func (b *builder) inlineable() bool {
	ct := b.in.Message.Header.Get("Content-Type")
	if ct == "" {
		return true
	}
	mt, _, err := stdmime.ParseMediaType(ct)
	return err == nil && mt == "text/plain"
}

// buildInline makes an inline PGP copy (a rule's inline = true): the
// decoded text, with CRLF line ends, signed and encrypted as one armored
// block in a 7-bit text/plain body. The charset parameter is kept so that
// the reader's client decodes the decrypted text; headers cannot be
// protected in this form.
func (b *builder) buildInline(g group) (*built, error) {
	h := b.in.Message.Header
	out := b.e.spool.New()
	ok := false
	defer func() {
		if !ok {
			out.Close()
		}
	}()
	// One key per holder: two envelope forms of one address (or two
	// addresses of one correspondent) in a shared copy name it once.
	keys := make([]*pgpcrypto.Key, 0, len(g.rcpts))
	seenKey := make(map[string]bool, len(g.rcpts))
	for _, r := range g.rcpts {
		fp := r.pgp.GetFingerprint()
		if !seenKey[fp] {
			seenKey[fp] = true
			keys = append(keys, r.pgp)
		}
	}
	text := b.e.spool.New()
	defer text.Close()
	cw := mime.NewCRLFWriter(text)
	if _, err := io.Copy(cw, mime.NewDecoder(h.Get("Content-Transfer-Encoding"), b.body.Reader())); err != nil {
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	if err := cw.Close(); err != nil {
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	armored := b.e.spool.New()
	defer armored.Close()
	if err := openpgp.SignEncrypt(armored, text.Reader(), b.sg.pgp, keys, false); err != nil {
		return nil, fmt.Errorf("crypto: outbound: %w", err)
	}
	if err := copyCRLFText(out, armored.Reader()); err != nil {
		return nil, err
	}
	charset := "us-ascii"
	if _, params, err := stdmime.ParseMediaType(h.Get("Content-Type")); err == nil && params["charset"] != "" {
		charset = params["charset"]
	}
	ctype := stdmime.FormatMediaType("text/plain", map[string]string{"charset": charset})
	// Not an encrypted MIME payload: the outer header stays as it is
	// apart from the MIME fields.
	hdr, ops := b.outerHeader(ctype, "7bit", false)
	ok = true
	return &built{header: hdr, ops: ops, body: out}, nil
}

func copyCRLFText(w io.Writer, r io.Reader) error {
	cw := mime.NewCRLFWriter(w)
	if _, err := io.Copy(cw, r); err != nil {
		return fmt.Errorf("crypto: outbound: %w", err)
	}
	return cw.Close()
}

// base64Lines breaks base64 text written to it into CRLF lines of 76
// characters, the last one shorter and also ended by CRLF on Close (the
// layout of mime.WriteBase64).
type base64Lines struct {
	w   io.Writer
	col int
}

func (l *base64Lines) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(76-l.col, len(p))
		if _, err := l.w.Write(p[:k]); err != nil {
			return n, err
		}
		n += k
		l.col += k
		p = p[k:]
		if l.col == 76 {
			if _, err := io.WriteString(l.w, "\r\n"); err != nil {
				return n, err
			}
			l.col = 0
		}
	}
	return n, nil
}

// Close ends a last, partial line.
func (l *base64Lines) Close() error {
	if l.col == 0 {
		return nil
	}
	l.col = 0
	_, err := io.WriteString(l.w, "\r\n")
	return err
}
