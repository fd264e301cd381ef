package verdict

import (
	"strings"

	"github.com/emersion/go-msgauth/authres"
)

// Result header names.
const (
	HeaderEncryption  = "X-Cryptmilter-Encryption"
	HeaderSignature   = "X-Cryptmilter-Signature"
	HeaderAuthResults = "Authentication-Results"
)

// rtFields are RT's own result headers.
var rtFields = []string{"X-RT-Incoming-Encryption", "X-RT-Incoming-Signature", "X-RT-Privacy"}

// IsResultField reports whether a header field name is one of the result
// fields cryptmilter sets (its own X-Cryptmilter-* and RT's
// X-RT-Incoming-* and X-RT-Privacy). Incoming copies are always forged or
// stale: inbound they are removed before cryptmilter adds its own,
// outbound they are removed rather than carried under the gateway's
// signature. (Authentication-Results is removed only when it claims
// cryptmilter's authserv-id: see ClaimsAuthservID.)
func IsResultField(name string) bool {
	if len(name) >= len("X-Cryptmilter-") && strings.EqualFold(name[:len("X-Cryptmilter-")], "X-Cryptmilter-") {
		return true
	}
	for _, f := range rtFields {
		if strings.EqualFold(name, f) {
			return true
		}
	}
	return false
}

// Field is one header field to add.
type Field struct{ Name, Value string }

// FormatOptions choose which fields Fields returns.
type FormatOptions struct {
	// Hostname is the authserv-id of Authentication-Results.
	Hostname string
	// RT adds RT's X-RT-Incoming-* and X-RT-Privacy.
	RT bool
}

// Fields returns the result header fields for r, in reading order.
func (r Result) Fields(o FormatOptions) []Field {
	out := []Field{
		{HeaderEncryption, r.Enc.Format()},
		{HeaderSignature, r.FormatSignature()},
	}
	if ar := r.AuthResults(o.Hostname); ar != "" {
		out = append(out, Field{HeaderAuthResults, ar})
	}
	if o.RT {
		out = append(out, r.RTFields()...)
	}
	return out
}

// Format is the X-Cryptmilter-Encryption value.
func (e Encryption) Format() string {
	var b strings.Builder
	b.WriteString(e.Status.String())
	if e.Status != EncNone || e.Protocol != 0 {
		param(&b, "protocol", e.Protocol.String())
	}
	param(&b, "key", e.Key)
	if e.Status == Decrypted && e.Unauthenticated {
		param(&b, "integrity", "none")
	}
	param(&b, "reason", e.Reason)
	return b.String()
}

// format is one signature's part of the X-Cryptmilter-Signature value;
// prefix names its parameters ("" or "outer-").
func (s Signature) format(b *strings.Builder, prefix string) {
	param(b, prefix+"protocol", s.Protocol.String())
	if s.Status != SigNone {
		param(b, prefix+"signer", s.Signer)
		param(b, prefix+"key", s.Key)
	}
	if prefix == "" && (s.Status == Valid || s.Status == Mismatch) {
		param(b, "headers", s.Headers)
	}
	param(b, prefix+"reason", s.Reason)
}

// FormatSignature is the X-Cryptmilter-Signature value: the content's
// signature, then the best signature that covers only ciphertext as
// outer=… parameters.
func (r Result) FormatSignature() string {
	var b strings.Builder
	b.WriteString(r.Sig.Status.String())
	r.Sig.format(&b, "")
	if o, ok := r.BestOuter(); ok {
		param(&b, "outer", o.Status.String())
		o.format(&b, "outer-")
	}
	return b.String()
}

// BestOuter returns the highest-ranked signature over ciphertext.
func (r Result) BestOuter() (Signature, bool) {
	if len(r.Outer) == 0 {
		return Signature{}, false
	}
	best := r.Outer[0]
	for _, o := range r.Outer[1:] {
		if o.Status.Rank() > best.Status.Rank() {
			best = o
		}
	}
	return best, true
}

func param(b *strings.Builder, name, value string) {
	if v := Token(value); v != "" {
		b.WriteString("; " + name + "=" + v)
	}
}

// Token keeps a header token to a safe character set (no quoting needed,
// nothing that could end a field or a parameter).
func Token(s string) string {
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

// AuthResults is the RFC 7281 Authentication-Results value for an S/MIME
// signature over the content ("" for none).
func (r Result) AuthResults(hostname string) string {
	s := r.Sig
	if s.Protocol != SMIME || s.Status == SigNone {
		return ""
	}
	value := authres.ResultValue(authres.ResultFail)
	switch s.Status {
	case Valid:
		value = authres.ResultPass
	case Mismatch, Untrusted, Expired, Revoked:
		value = authres.ResultPolicy
	case SigPartial:
		value = authres.ResultNeutral
	}
	params := map[string]string{"reason": Token(s.Reason), "body.smime-identifier": Token(s.Signer)}
	if s.SMIME != nil {
		params["body.smime-serial"] = Token(s.SMIME.Serial)
		params["body.smime-issuer"] = printable(s.SMIME.Issuer)
	}
	return strings.TrimSpace(authres.Format(Token(hostname), []authres.Result{
		&authres.GenericResult{Method: "smime", Value: value, Params: params},
	}))
}

// printable keeps printable ASCII without quotes or backslashes.
func printable(s string) string {
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

// RTFields are RT's own result headers (X-RT-Incoming-Encryption,
// X-RT-Incoming-Signature for a valid signature, X-RT-Privacy).
func (r Result) RTFields() []Field {
	enc := "Not encrypted"
	if r.Enc.Status == Decrypted {
		enc = "Success"
	}
	out := []Field{{"X-RT-Incoming-Encryption", enc}}
	if r.Sig.Status == Valid {
		out = append(out, Field{"X-RT-Incoming-Signature", Token(r.Sig.Signer)})
	}
	var p Protocol
	if r.Enc.Status == Decrypted {
		p = r.Enc.Protocol
	} else if r.Sig.Status == Valid {
		p = r.Sig.Protocol
	}
	switch p {
	case OpenPGP:
		out = append(out, Field{"X-RT-Privacy", "GnuPG"})
	case SMIME:
		out = append(out, Field{"X-RT-Privacy", "SMIME"})
	}
	return out
}
