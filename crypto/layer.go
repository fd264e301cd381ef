package crypto

import (
	"bytes"
	"io"
	stdmime "mime"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
)

// layerKind is the kind of cryptographic layer an entity is.
type layerKind int

const (
	layerNone layerKind = iota
	// Encryption layers.
	layerPGPMIME      // multipart/encrypted, application/pgp-encrypted (RFC 3156)
	layerPGPExchange  // PGP/MIME rearranged by Microsoft Exchange into a multipart/mixed
	layerPGPInline    // text/plain that is exactly one armored, encrypted PGP message
	layerCMSEnveloped // application/pkcs7-mime enveloped-data (CBC: no integrity)
	layerCMSAuthEnveloped
	// Signature layers.
	layerPGPSigned       // multipart/signed, application/pgp-signature
	layerPGPInlineSigned // text/plain that is exactly one armored, signed (not encrypted) PGP message
	layerPGPCleartext    // text/plain that is exactly one cleartext-signed block
	layerCMSDetached     // multipart/signed, application/pkcs7-signature
	layerCMSOpaque       // application/pkcs7-mime signed-data
)

func (k layerKind) encryption() bool { return k >= layerPGPMIME && k <= layerCMSAuthEnveloped }
func (k layerKind) signature() bool  { return k >= layerPGPSigned }

func (k layerKind) protocol() Protocol {
	switch k {
	case layerNone:
		return 0
	case layerCMSEnveloped, layerCMSAuthEnveloped, layerCMSDetached, layerCMSOpaque:
		return SMIME
	}
	return OpenPGP
}

// layer is what layerOf found.
type layer struct {
	kind layerKind
	// text is the entity of an inline layer: its decoded body, trimmed of
	// white space, is the armored block (see armorText).
	text *mime.Entity
	// ciphertext is the part holding PGP/MIME ciphertext.
	ciphertext *mime.Entity
}

// armorText returns a reader of an inline layer's armored block: the
// decoded body without the white space before it.
func (l layer) armorText() io.Reader { return skipSpace(l.text.Decoded()) }

// The armor lines that start and end inline PGP blocks.
const (
	armorBeginMsg    = "-----BEGIN PGP MESSAGE-----"
	armorEndMsg      = "-----END PGP MESSAGE-----"
	armorBeginSigned = "-----BEGIN PGP SIGNED MESSAGE-----"
	armorEndSig      = "-----END PGP SIGNATURE-----"
)

// layerOf classifies e: the one classifier of cryptographic layers, used
// by the inbound walk (what to decrypt or verify next) and by outbound
// (whether a message is already encrypted). It looks only at e itself, never
// below it: layers count only at the root of each stage.
func layerOf(e *mime.Entity) layer {
	switch {
	case e.MediaType == "multipart/encrypted" && strings.EqualFold(e.Params["protocol"], "application/pgp-encrypted"):
		l := layer{kind: layerPGPMIME}
		if len(e.Parts) == 2 {
			l.ciphertext = e.Parts[1]
		}
		return l
	case e.MediaType == "multipart/signed":
		switch strings.ToLower(e.Params["protocol"]) {
		case "application/pgp-signature":
			return layer{kind: layerPGPSigned}
		case "application/pkcs7-signature", "application/x-pkcs7-signature":
			return layer{kind: layerCMSDetached}
		}
	case isSMIMEType(e.MediaType) || isP7MOctetStream(e):
		switch cmsKindOf(e) {
		case "enveloped":
			return layer{kind: layerCMSEnveloped}
		case "authenveloped":
			return layer{kind: layerCMSAuthEnveloped}
		case "signed":
			return layer{kind: layerCMSOpaque}
		}
	case e.MediaType == "multipart/mixed":
		if ct, ok := exchangeMangled(e); ok {
			return layer{kind: layerPGPExchange, ciphertext: ct}
		}
	case e.MediaType == "text/plain":
		return inlineLayer(e)
	}
	return layer{}
}

// inlineLayer classifies a text/plain entity: inline PGP counts only when
// the whole text is exactly one armored block. Most text does not begin
// with armor and is not read further than its start.
func inlineLayer(e *mime.Entity) layer {
	switch armorKind(e.Decoded()) {
	case armorMessage:
		if info, err := openpgp.InspectArmored(skipSpace(e.Decoded())); err == nil && info.Kind != openpgp.KindEncrypted {
			return layer{kind: layerPGPInlineSigned, text: e}
		}
		return layer{kind: layerPGPInline, text: e}
	case armorSigned:
		return layer{kind: layerPGPCleartext, text: e}
	}
	return layer{}
}

// What a text is, for armorKind.
const (
	armorNone    = iota
	armorMessage // exactly one armored PGP message
	armorSigned  // exactly one cleartext-signed block
)

// armorKind tells whether the text r holds, trimmed of white space, is
// exactly one armored block from its BEGIN line to its END line: an
// armored message, or a cleartext-signed block (which holds its signature
// block too). It reads r once, and stops at the start unless the text
// begins with armor. A text that does not decode is none.
func armorKind(r io.Reader) int {
	br := skipSpace(r)
	head, _ := br.Peek(len(armorBeginSigned))
	begin, end, blocks, kind := armorBeginMsg, armorEndMsg, 1, armorMessage
	switch {
	case bytes.HasPrefix(head, []byte(armorBeginMsg)):
	case bytes.HasPrefix(head, []byte(armorBeginSigned)):
		begin, end, blocks, kind = armorBeginSigned, armorEndSig, 2, armorSigned
	default:
		return armorNone
	}
	c := newCounter(begin, "-----BEGIN PGP", "-----END PGP")
	var t textEnd
	if err := mime.Scan(br, func(b []byte) bool { c.write(b); t.write(b); return true }); err != nil {
		return armorNone
	}
	t.flush()
	if !bytes.HasSuffix(t.last, []byte(end)) || c.n[0] != 1 || c.n[1] != blocks || c.n[2] != 1 {
		return armorNone
	}
	return kind
}

// exchangeMangled recognizes PGP/MIME that Microsoft Exchange rewrote into
// a multipart/mixed (Thunderbird repairs these; fixExchangeMsg.jsm): a
// text/plain or text/html part that is empty or a short placeholder, an
// application/pgp-encrypted version part, and an application/octet-stream
// part holding the armored message. It returns the ciphertext part. The
// first part is never shown: only the decrypted content is.
func exchangeMangled(e *mime.Entity) (*mime.Entity, bool) {
	if len(e.Parts) != 3 {
		return nil, false
	}
	first, version, data := e.Parts[0], e.Parts[1], e.Parts[2]
	if first.MediaType != "text/plain" && first.MediaType != "text/html" {
		return nil, false
	}
	if version.MediaType != "application/pgp-encrypted" || data.MediaType != "application/octet-stream" {
		return nil, false
	}
	// The placeholder and version parts are small: larger ones are not
	// read (and not what Exchange writes).
	if t, err := decodedUpTo(first, exchangeMaxPart); err != nil || len(bytes.TrimSpace(stripHTML(t))) > 512 {
		return nil, false
	}
	v, err := decodedUpTo(version, exchangeMaxPart)
	if err != nil || !bytes.Contains(v, []byte("Version: 1")) {
		return nil, false
	}
	if armorKind(data.Decoded()) != armorMessage {
		return nil, false
	}
	return data, true
}

// exchangeMaxPart bounds the placeholder and version parts read.
const exchangeMaxPart = 64 << 10

// stripHTML removes tags, for judging whether an HTML part is empty.
func stripHTML(b []byte) []byte {
	var out []byte
	in := false
	for _, c := range b {
		switch {
		case c == '<':
			in = true
		case c == '>':
			in = false
		case !in:
			out = append(out, c)
		}
	}
	return bytes.ReplaceAll(out, []byte("&nbsp;"), nil)
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

// cmsKindOf tells what a pkcs7-mime entity holds: its smime-type
// parameter, else the CMS content type at the start of its data.
func cmsKindOf(e *mime.Entity) string {
	switch strings.ToLower(e.Params["smime-type"]) {
	case "enveloped-data":
		if k := cmsKind(e); k == "authenveloped" {
			return k
		}
		return "enveloped"
	case "authenveloped-data":
		return "authenveloped"
	case "signed-data":
		return "signed"
	case "":
		return cmsKind(e)
	}
	return ""
}

// cmsKind peeks at a CMS ContentInfo's content type without parsing more.
func cmsKind(e *mime.Entity) string {
	der, err := e.DecodedPrefix(32)
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

// isText tells the text types armor can hide in: text/plain, and text/html
// (an armored block in a <pre>, as some clients send and EFAIL abused).
func isText(e *mime.Entity) bool { return e.MediaType == "text/plain" || e.MediaType == "text/html" }

func containsArmor(e *mime.Entity, markers ...string) bool {
	for _, found := range containsAny(e, markers...) {
		if found {
			return true
		}
	}
	return false
}

// isEncryptedPart tells encrypted content below the root: a layer, armor
// in text, or an armored message as an attachment (up to 1 MiB; larger
// attachments are not decoded for this).
func isEncryptedPart(e *mime.Entity) bool {
	if layerOf(e).kind.encryption() {
		return true
	}
	switch {
	case isText(e):
		return containsArmor(e, armorBeginMsg)
	case e.MediaType == "application/pgp-encrypted", e.MediaType == "application/octet-stream" && e.BodySize() <= 1<<20:
		return containsArmor(e, armorBeginMsg)
	}
	return false
}

// isSignedPart tells signed content below the root.
func isSignedPart(e *mime.Entity) bool {
	if layerOf(e).kind.signature() {
		return true
	}
	return isText(e) && containsArmor(e, armorBeginSigned, "-----BEGIN PGP SIGNATURE-----")
}

// hasNested reports whether a strict descendant of e satisfies fn. A
// message/rfc822 part counts too (a forwarded encrypted message).
func hasNested(e *mime.Entity, fn func(*mime.Entity) bool) bool {
	found := false
	for _, p := range e.Parts {
		p.Walk(func(x *mime.Entity) {
			if !found && fn(x) {
				found = true
			}
		})
	}
	return found
}
