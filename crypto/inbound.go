package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdmime "mime"
	"net/mail"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Protocol names used in result headers.
const (
	protoOpenPGP = "openpgp"
	protoSMIME   = "smime"
)

// Encryption verdicts.
const (
	encNone      = "none"
	encDecrypted = "decrypted"
	encPartial   = "partial"
	encFailed    = "failed"
)

// Signature verdicts.
const (
	sigNone      = "none"
	sigValid     = "valid"
	sigMismatch  = "mismatch"
	sigUntrusted = "untrusted"
	sigExpired   = "expired"
	sigRevoked   = "revoked"
	sigBad       = "bad"
	sigPartial   = "partial"
)

// encResult is the verdict on the encryption layer.
type encResult struct {
	status, protocol, key, reason string
}

// sigResult is the verdict on the signature over the displayed message.
type sigResult struct {
	status, protocol, signer, key, reason string
	// candidates are the signer's addresses, matched against From.
	candidates []string
	// smime is set for S/MIME signatures, for Authentication-Results.
	smime *smime.SignerResult
}

// inboundResult is what the inbound analysis found and what to show.
type inboundResult struct {
	enc encResult
	sig sigResult
	// content replaces the message's content (Content-* fields and body)
	// when not nil.
	content *mime.Entity
	// restore are protected header fields from inside the encryption to
	// put on the outer message.
	restore mime.Header
	// failure is set when decryption for the gateway failed;
	// authenticated tells whether the ciphertext had an integrity check
	// (OpenPGP MDC/AEAD, CMS AuthEnvelopedData): only then may
	// [actions] on_decrypt_error refuse the message (a refusal of CBC
	// EnvelopedData would be a padding oracle).
	failure, authenticated bool
}

// inbound handles mail arriving from outside: it decrypts what is
// encrypted to the gateway at the MIME root, verifies signatures at the
// root, rewrites the message to plaintext, and replaces every incoming
// result header with its own.
func (e *Engine) inbound(ctx context.Context, in *Input) (*Plan, error) {
	body, err := readBody(in.Message.Body)
	if err != nil {
		return nil, err
	}
	lim := e.mimeLimits()
	root, err := mime.ParseHeaderBody(in.Message.Header, body, lim)
	if errors.Is(err, mime.ErrLimits) {
		return e.refuse(e.pol.Actions.OnLimits, LimitReply, "refused", "limits"), nil
	}
	if err != nil {
		// A multipart whose delimiters are broken: nothing in it is
		// interpreted; a crypto root fails like any decryption failure.
		root = &mime.Entity{Header: in.Message.Header, Body: body}
		root.MediaType = "application/octet-stream"
	}
	a := &analyzer{e: e, in: in, keys: in.Keys, lim: lim}
	res, err := a.analyze(ctx, root, in.Message.Header)
	var notBefore time.Time
	if a.attempted {
		notBefore = decryptDeadline(in.Now, len(body))
	}
	if errors.Is(err, mime.ErrLimits) {
		p := e.refuse(e.pol.Actions.OnLimits, LimitReply, "refused", "limits")
		p.NotBefore = notBefore
		return p, nil
	}
	if err != nil {
		return nil, err
	}
	var p *Plan
	if res.failure && res.authenticated && e.pol.Actions.OnDecryptError != Accept {
		p = e.decryptFailed(res)
	} else if p, err = e.inboundPlan(in, res, body); err != nil {
		return nil, err
	}
	p.NotBefore = notBefore
	return p, nil
}

// decryptFailed is the plan for a failed decryption of authenticated
// ciphertext when [actions] on_decrypt_error does not tag it.
func (e *Engine) decryptFailed(res *inboundResult) *Plan {
	attrs := []slog.Attr{slog.String("encryption", encFailed), slog.String("protocol", res.enc.protocol)}
	switch e.pol.Actions.OnDecryptError {
	case Tempfail:
		return &Plan{Action: Tempfail, Reply: DecryptTempfailReply, Decision: "undecryptable", Attrs: attrs}
	case Quarantine:
		return &Plan{Action: Quarantine, Quarantine: "cryptmilter: message could not be decrypted", Decision: "undecryptable", Attrs: attrs}
	}
	return &Plan{Action: Reject, Reply: DecryptRejectReply, Decision: "undecryptable", Attrs: attrs}
}

// refuse is the plan for a message refused by action (reject or tempfail;
// tempfail turns reply into its temporary form).
func (e *Engine) refuse(action Action, reply Reply, decision, reason string) *Plan {
	p := &Plan{Action: Reject, Reply: reply, Decision: decision, Attrs: []slog.Attr{slog.String("reason", reason)}}
	if action == Tempfail {
		p.Action, p.Reply = Tempfail, TempfailOf(reply)
	}
	return p
}

// mimeLimits are the structure limits of the policy.
func (e *Engine) mimeLimits() mime.Limits {
	return mime.Limits{MaxDepth: e.pol.Limits.MaxMIMEDepth, MaxParts: e.pol.Limits.MaxParts}
}

// Every decryption with the gateway's keys, successful or not, is answered
// no sooner than decryptBase plus decryptPerByte for each byte of the
// message after it began, so that timing tells the sender neither which
// check failed (a format error comes at once, an integrity error at the
// end) nor whether tampered ciphertext still decrypted (a CBC padding
// oracle). The rate is about three times slower than decryption on the
// reference machine; BenchmarkInboundFailureTiming shows the effect.
const (
	decryptBase    = 50 * time.Millisecond
	decryptPerByte = 100 * time.Nanosecond
)

// decryptDeadline is the earliest time a decryption of a message of size
// bytes that began at start may be answered.
func decryptDeadline(start time.Time, size int) time.Time {
	return start.Add(decryptBase + time.Duration(size)*decryptPerByte)
}

// readBody reads a spooled body (bounded by limits.max_message_size when
// it was received).
func readBody(b interface{ Reader() io.Reader }) ([]byte, error) {
	if b == nil {
		return nil, nil
	}
	data, err := io.ReadAll(b.Reader())
	if err != nil {
		return nil, fmt.Errorf("crypto: read body: %w", err)
	}
	return data, nil
}

// analyzer carries one message's analysis.
type analyzer struct {
	e    *Engine
	in   *Input
	keys *keystore.Snapshot
	lim  mime.Limits
	// err is the first local failure (spool, read): the message is
	// tempfailed, never reported as undecryptable.
	err error
	// attempted is set once a decryption with the gateway's keys was
	// tried: the reply then waits for the decryption deadline.
	attempted bool
}

func (a *analyzer) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}

func (a *analyzer) analyze(ctx context.Context, root *mime.Entity, outer mime.Header) (*inboundResult, error) {
	res := &inboundResult{enc: encResult{status: encNone}, sig: sigResult{status: sigNone}}
	switch {
	case isPGPEncrypted(root):
		inner, err := a.decryptPGPMIME(root, res)
		if err != nil || inner == nil {
			return res, err
		}
		a.afterDecrypt(ctx, inner, res)
	case isSMIMEEnveloped(root):
		inner, err := a.decryptSMIME(root, res)
		if err != nil || inner == nil {
			return res, err
		}
		a.afterDecrypt(ctx, inner, res)
	default:
		a.verifyRoot(ctx, root, res, outer)
	}
	if res.enc.status == encNone && hasNested(root, isEncryptedPart) {
		res.enc = encResult{status: encPartial, reason: "nested-part"}
	}
	return res, a.err
}

// afterDecrypt handles the decrypted entity: protected headers, and a
// signature layer inside.
func (a *analyzer) afterDecrypt(ctx context.Context, inner *mime.Entity, res *inboundResult) {
	res.content = inner
	res.restore = protectedHeaders(inner)
	if res.sig.status == sigNone {
		// Sign-then-encrypt with a multipart/signed or opaque signed-data
		// inside the encryption.
		a.verifyRoot(ctx, inner, res, nil)
	} else if hasNested(inner, isSignedPart) && res.sig.status != sigValid {
		res.sig.reason = joinReason(res.sig.reason, "nested-signature")
	}
}

// verifyRoot verifies a signature at the root of e (the message, or the
// decrypted entity). It sets res.content when the signed content is to
// be shown instead of e (opaque signed-data, or unwrap_signed).
func (a *analyzer) verifyRoot(ctx context.Context, e *mime.Entity, res *inboundResult, outer mime.Header) {
	switch {
	case isPGPSigned(e):
		a.verifyPGPMIME(e, res)
	case isSMIMEDetached(e):
		a.verifySMIMEDetached(e, res)
	case isSMIMEOpaque(e):
		a.verifySMIMEOpaque(e, res)
	case e.MediaType == "text/plain":
		a.inlinePGP(e, res)
	case e.MediaType == "text/html":
		// Armor inside HTML is never decrypted or verified (it cannot be
		// shown apart from the markup around it): reported partial.
		a.armorInHTML(e, res)
	}
	if res.sig.status == sigNone && hasNested(e, isSignedPart) {
		res.sig = sigResult{status: sigPartial, reason: "nested-part"}
	}
}

// judge applies the From rule to a cryptographically good signature: valid
// only when the signer's address equals the single From address, else
// mismatch.
func judge(res *sigResult, from []string, fold bool) {
	if res.status != sigValid {
		return
	}
	if len(from) != 1 {
		res.status, res.reason = sigMismatch, "from-count"
		return
	}
	want := keystore.NormalizeAddress(from[0], fold)
	for _, c := range res.candidates {
		if keystore.NormalizeAddress(c, fold) == want {
			res.signer = c
			return
		}
	}
	res.status, res.reason = sigMismatch, "signer-not-from"
}

// fromAddresses returns the addr-specs of the From field(s).
func fromAddresses(h mime.Header) []string {
	var out []string
	for _, v := range h.Values("From") {
		list, err := mail.ParseAddressList(v)
		if err != nil {
			// Unparsable From: no single address to match.
			return append(out, "", "")
		}
		for _, ad := range list {
			out = append(out, ad.Address)
		}
	}
	return out
}

// joinReason joins reason tokens with a comma.
func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "," + b
}

// ---- structure tests ----

func isPGPEncrypted(e *mime.Entity) bool {
	return e.MediaType == "multipart/encrypted" && strings.EqualFold(e.Params["protocol"], "application/pgp-encrypted")
}

func isPGPSigned(e *mime.Entity) bool {
	return e.MediaType == "multipart/signed" && strings.EqualFold(e.Params["protocol"], "application/pgp-signature")
}

func isSMIMEType(mt string) bool {
	return mt == "application/pkcs7-mime" || mt == "application/x-pkcs7-mime"
}

// isP7MOctetStream tells application/octet-stream with a .p7m file name,
// which some agents send instead of application/pkcs7-mime (RFC 8551
// 3.2.1); what it holds is decided from the CMS content type.
func isP7MOctetStream(e *mime.Entity) bool {
	if e.MediaType != "application/octet-stream" {
		return false
	}
	name := strings.ToLower(e.Params["name"])
	if name == "" {
		if _, p, err := stdmime.ParseMediaType(e.Header.Get("Content-Disposition")); err == nil {
			name = strings.ToLower(p["filename"])
		}
	}
	return strings.HasSuffix(name, ".p7m")
}

// smimeType returns the smime-type of an application/pkcs7-mime entity,
// guessing from the file name when the parameter is absent.
func smimeType(e *mime.Entity) string {
	if t := strings.ToLower(e.Params["smime-type"]); t != "" {
		return t
	}
	return "" // decided from the CMS content type
}

func isSMIMEEnveloped(e *mime.Entity) bool {
	if !isSMIMEType(e.MediaType) && !isP7MOctetStream(e) {
		return false
	}
	switch smimeType(e) {
	case "enveloped-data", "authenveloped-data":
		return true
	case "":
		k := cmsKind(e)
		return k == "enveloped" || k == "authenveloped"
	}
	return false
}

func isSMIMEOpaque(e *mime.Entity) bool {
	if !isSMIMEType(e.MediaType) && !isP7MOctetStream(e) {
		return false
	}
	switch smimeType(e) {
	case "signed-data":
		return true
	case "":
		return cmsKind(e) == "signed"
	}
	return false
}

func isSMIMEDetached(e *mime.Entity) bool {
	if e.MediaType != "multipart/signed" {
		return false
	}
	p := strings.ToLower(e.Params["protocol"])
	return p == "application/pkcs7-signature" || p == "application/x-pkcs7-signature"
}

// cmsKind peeks at a CMS ContentInfo's content type without parsing more.
func cmsKind(e *mime.Entity) string {
	der, err := e.Decoded()
	if err != nil {
		return ""
	}
	// ContentInfo ::= SEQUENCE { contentType OID, ... }: the OID is near
	// the start; compare its encoding.
	head := der[:min(len(der), 32)]
	switch {
	case bytes.Contains(head, []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x03}):
		return "enveloped"
	case bytes.Contains(head, []byte{0x06, 0x0b, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x09, 0x10, 0x01, 0x17}):
		return "authenveloped"
	case bytes.Contains(head, []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02}):
		return "signed"
	}
	return ""
}

// isEncryptedPart tells encrypted content below the root.
func isEncryptedPart(e *mime.Entity) bool {
	if isPGPEncrypted(e) || isSMIMEEnveloped(e) {
		return true
	}
	return isText(e) && containsArmor(e, "-----BEGIN PGP MESSAGE-----")
}

// isText tells the text types armor can hide in: text/plain, and text/html
// (an armored block in a <pre>, as some clients send and EFAIL abused).
func isText(e *mime.Entity) bool { return e.MediaType == "text/plain" || e.MediaType == "text/html" }

// isSignedPart tells signed content below the root.
func isSignedPart(e *mime.Entity) bool {
	if isPGPSigned(e) || isSMIMEDetached(e) || isSMIMEOpaque(e) {
		return true
	}
	return isText(e) && containsArmor(e, "-----BEGIN PGP SIGNED MESSAGE-----")
}

func containsArmor(e *mime.Entity, marker string) bool {
	b, err := e.Decoded()
	return err == nil && bytes.Contains(b, []byte(marker))
}

// hasNested reports whether a strict descendant of e satisfies fn. A
// message/rfc822 part counts too (a forwarded encrypted message).
func hasNested(e *mime.Entity, fn func(*mime.Entity) bool) bool {
	found := false
	for _, p := range e.Parts {
		p.Walk(func(x *mime.Entity) {
			if fn(x) {
				found = true
			}
		})
	}
	return found
}

// protectedHeaders returns the header fields a sender protected inside the
// encryption (RFC 9788, and Thunderbird's protected-headers="v1"): the
// fields of the decrypted root that are not Content-* fields.
func protectedHeaders(inner *mime.Entity) mime.Header {
	if inner.MediaType == "multipart/signed" && len(inner.Parts) == 2 {
		// Signed, then encrypted: the protected fields are on the signed
		// content.
		inner = inner.Parts[0]
	}
	if inner.Params["protected-headers"] == "" && inner.Params["hp"] == "" {
		return nil
	}
	var h mime.Header
	for _, f := range inner.Header {
		switch strings.ToLower(f.Name) {
		case "subject", "from", "to", "cc", "date", "reply-to", "followup-to", "keywords":
			if safeFieldValue(f.Value) {
				h = append(h, f)
			}
		}
	}
	return h
}

// safeFieldValue reports whether a header value holds no line break other
// than folding (CRLF followed by a space or tab) and no NUL, so that it
// cannot smuggle a field (a forged result header) into the outer header.
func safeFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case 0, '\n':
			return false
		case '\r':
			if i+2 >= len(v) || v[i+1] != '\n' || (v[i+2] != ' ' && v[i+2] != '\t') {
				return false
			}
			i++
		}
	}
	return true
}

// sanitize keeps a header token to a safe character set.
func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x80 && (r == '@' || r == '.' || r == '-' || r == '_' || r == '+' || r == '=' || r == ',' ||
			r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			b.WriteRune(r)
		}
		if b.Len() >= 200 {
			break
		}
	}
	return b.String()
}
