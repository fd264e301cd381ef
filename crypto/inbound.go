package crypto

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/mail"
	"slices"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// inbound handles mail arriving from outside: it walks the message's
// cryptographic layers from the MIME root (decrypting what is encrypted to
// the gateway, verifying signatures), rewrites the message to what the
// layers hold, and replaces every incoming result header with its own.
func (e *Engine) inbound(ctx context.Context, in *Input) (*Plan, error) {
	body := in.Message.Body
	if body == nil {
		body = spool.FromBytes(nil)
	}
	lim := e.mimeLimits()
	a := &analyzer{e: e, in: in, keys: in.Keys, lim: lim}
	defer a.close()
	root, err := mime.ParseHeaderBody(in.Message.Header, a.source(body, body.Size()), body.Size(), lim)
	if errors.Is(err, mime.ErrLimits) {
		return e.refuse(e.pol.Actions.OnLimits, LimitReply, "refused", "limits"), nil
	}
	if err != nil {
		return nil, fmt.Errorf("crypto: inbound: %w", err)
	}
	env, err := a.walk(ctx, root)
	if err != nil {
		return nil, err
	}
	var p *Plan
	onFailure := e.pol.Actions.OnDecryptError
	if env.failure && env.authenticated && (onFailure == Reject || onFailure == Tempfail) {
		p = e.decryptFailed(env.failed.Protocol)
	} else {
		res, err := a.result(env, root)
		if err != nil {
			return nil, err
		}
		if p, err = e.inboundPlan(in, res, body); err != nil {
			return nil, err
		}
		if env.failure && env.authenticated && onFailure == Quarantine {
			// Tagged as an accepted failure is (result headers, forged
			// ones removed), then held by the MTA.
			p.Action, p.Quarantine, p.Decision = Quarantine, quarantineReason, "undecryptable"
		}
	}
	if err := a.readErr(); err != nil {
		p.Close()
		return nil, err
	}
	if a.attempted {
		p.NotBefore = decryptDeadline(in.Now, body.Size())
	}
	return p, nil
}

// quarantineReason is what the MTA is told when on_decrypt_error =
// "quarantine" holds a message (Postfix logs it with the hold).
const quarantineReason = "cryptmilter: message could not be decrypted"

// decryptFailed is the plan for a failed decryption of authenticated
// ciphertext when [actions] on_decrypt_error refuses it (reject or
// tempfail; accept and quarantine tag it).
func (e *Engine) decryptFailed(p Protocol) *Plan {
	attrs := []slog.Attr{slog.String("encryption", verdict.EncFailed.String()), slog.String("protocol", p.String())}
	if e.pol.Actions.OnDecryptError == Tempfail {
		return &Plan{Action: Tempfail, Reply: DecryptTempfailReply, Decision: "undecryptable", Attrs: attrs}
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

// mimeLimits are the structure limits of the policy. The headers of all
// the parts of one parse (the message, or a decrypted layer) together may
// hold four times limits.max_header_size: they are held in memory while
// the message is processed.
func (e *Engine) mimeLimits() mime.Limits {
	l := e.pol.Limits
	return mime.Limits{MaxDepth: l.MaxMIMEDepth, MaxParts: l.MaxParts, MaxHeaderSize: l.MaxHeaderSize, MaxHeaderTotal: 4 * l.MaxHeaderSize}
}

// Every decryption with the gateway's keys, successful or not, is answered
// no sooner than decryptBase plus decryptPerByte for each byte of the
// message after processing began, so that timing tells the sender neither
// which check failed (a format error comes at once, an integrity error at
// the end) nor whether tampered ciphertext still decrypted (a CBC padding
// oracle). The rate is about three times slower than decryption on the
// reference machine; BenchmarkInboundFailureTiming shows the effect.
const (
	decryptBase    = 50 * time.Millisecond
	decryptPerByte = 100 * time.Nanosecond
)

// decryptDeadline is the earliest time a decryption of a message of size
// bytes that began at start may be answered.
func decryptDeadline(start time.Time, size int64) time.Time {
	return start.Add(decryptBase + time.Duration(size)*decryptPerByte)
}

// inboundResult is what the inbound analysis found and what to show.
type inboundResult struct {
	verdict.Result
	// content replaces the message's content (Content-* fields and body)
	// when not nil.
	content *mime.Entity
	// restore are protected header fields from inside the layers to put
	// on the outer message.
	restore mime.Header
	// ambiguous is the first structure ambiguity found, for the log.
	ambiguous error
}

// result turns the envelope into the verdict: the encryption, the
// signature over the displayed content (the innermost one over the
// plaintext), the signatures over ciphertext, the From rule, protected
// headers, and what the walk did not interpret.
func (a *analyzer) result(env *envelope, root *mime.Entity) (*inboundResult, error) {
	res := &inboundResult{content: env.display}
	amb, err := a.ambiguity(env)
	if err != nil {
		return nil, err
	}
	res.Enc = envEncryption(env)
	res.Sig, res.Outer = envSignatures(env)
	if res.Enc.Status == verdict.Decrypted && res.Sig.Status == verdict.Valid {
		// A valid signature inside covers what the ciphertext held.
		res.Enc.Unauthenticated = false
	}
	from := fromAddresses(root.Header)
	res.restore = a.protectedHeaders(env, res, root.Header)
	judge(&res.Sig, from, !a.e.pol.Inbound.ExactLocalPart)
	if amb != nil && res.Enc.Status != verdict.Decrypted {
		// Nothing was decrypted: the message passes as it came.
		res.content, res.restore = nil, nil
	}
	a.uninterpreted(env, res)
	res.ambiguous = a.ambiguous
	return res, nil
}

// envEncryption is the verdict on the encryption layers.
func envEncryption(env *envelope) verdict.Encryption {
	switch {
	case env.failed != nil:
		return *env.failed
	case len(env.encs) == 0:
		return verdict.Encryption{Status: verdict.EncNone}
	}
	enc := env.encs[0]
	enc.Unauthenticated = env.unauthenticated
	if env.innerNotForUs {
		enc.Reason = verdict.Reason(enc.Reason, "inner-not-for-gateway")
	}
	if len(env.encs) > 1 {
		enc.Reason = verdict.Reason(enc.Reason, fmt.Sprintf("layers-%d", len(env.encs)))
	}
	return enc
}

// envSignatures splits the signatures into the one over the displayed
// content (the innermost signature made inside every decrypted layer) and
// the others, which cover ciphertext or are outer wrappers.
func envSignatures(env *envelope) (verdict.Signature, []verdict.Signature) {
	content := contentSig(env)
	var outer []verdict.Signature
	for i, s := range env.sigs {
		if i != content {
			outer = append(outer, s.sig)
		}
	}
	if content < 0 {
		sig := verdict.Signature{Status: verdict.SigNone}
		if len(outer) > 0 && len(env.encs) > 0 {
			sig.Reason = "covers-ciphertext"
		}
		return sig, outer
	}
	return env.sigs[content].sig, outer
}

// contentSig is the index of the signature over the displayed content:
// the innermost one made inside every decrypted layer (-1 for none).
func contentSig(env *envelope) int {
	content := -1
	for i, s := range env.sigs {
		if s.depth == len(env.encs) {
			content = i
		}
	}
	return content
}

// judge applies the From rule to a cryptographically good signature: valid
// only when the signer's address equals the single From address, else
// mismatch. fold compares local parts case-insensitively.
func judge(s *verdict.Signature, from []string, fold bool) {
	if s.Status != verdict.Valid {
		return
	}
	if len(from) != 1 {
		s.Status, s.Reason = verdict.Mismatch, "from-count"
		return
	}
	want := keystore.NormalizeAddress(from[0], fold)
	for _, c := range s.Candidates {
		if keystore.NormalizeAddress(c, fold) == want {
			s.Signer = c
			return
		}
	}
	s.Status, s.Reason = verdict.Mismatch, "signer-not-from"
}

// protectedHeaders returns the fields to restore from the payload's
// protected headers (RFC 9788 and Thunderbird's protected-headers="v1"),
// and records in the signature what its signature covers of the header.
// Fields are restored when they were inside the encryption or under a
// valid signature; the outer From is kept, and an inner From that differs
// makes a valid signature a mismatch.
func (a *analyzer) protectedHeaders(env *envelope, res *inboundResult, outer mime.Header) mime.Header {
	from := fromAddresses(outer)
	inner := protectedFields(env.payload)
	signed := res.Sig.Status != verdict.SigNone
	if signed {
		res.Sig.Headers = "unprotected"
	}
	if inner == nil || env.payload == nil || len(env.encs) == 0 && res.Sig.Status != verdict.Valid {
		return nil
	}
	if innerFrom := fromAddresses(inner); len(innerFrom) > 0 && !sameAddresses(innerFrom, from, !a.e.pol.Inbound.ExactLocalPart) &&
		res.Sig.Status == verdict.Valid {
		res.Sig.Status, res.Sig.Reason = verdict.Mismatch, "inner-from-differs"
	}
	restore := slices.DeleteFunc(inner.Clone(), func(f mime.Field) bool { return strings.EqualFold(f.Name, "From") })
	if signed {
		res.Sig.Headers = "protected"
		for _, f := range restore {
			if vs := outer.Values(f.Name); len(vs) != 1 || vs[0] != mime.Unfold(f.Value) {
				res.Sig.Headers = "replaced"
			}
		}
	}
	return restore
}

// protectedFields returns the header fields a sender protected in the
// payload: its fields that are not Content-* fields, when its Content-Type
// says it carries them.
func protectedFields(e *mime.Entity) mime.Header {
	if e == nil || e.Params["protected-headers"] == "" && e.Params["hp"] == "" {
		return nil
	}
	var h mime.Header
	for _, f := range e.Header {
		switch strings.ToLower(f.Name) {
		case "subject", "from", "to", "cc", "date", "reply-to", "followup-to", "keywords":
			if safeFieldValue(f.Value) {
				h = append(h, f)
			}
		}
	}
	return h
}

// uninterpreted reports encrypted or signed content the walk did not
// reach (deeper in the tree, armor inside other text): partial, never
// spliced into the surrounding content.
func (a *analyzer) uninterpreted(env *envelope, res *inboundResult) {
	p := env.payload
	if env.tooDeep {
		res.Enc.Reason = verdict.Reason(res.Enc.Reason, "too-many-layers")
	}
	if isText(p) && layerOf(p).kind == layerNone {
		found := containsAny(p, armorBeginMsg, armorBeginSigned, "-----BEGIN PGP SIGNATURE-----")
		if res.Enc.Status == verdict.EncNone && found[0] {
			res.Enc = verdict.Encryption{Status: verdict.EncPartial, Protocol: OpenPGP, Reason: "embedded-armor"}
		}
		if res.Sig.Status == verdict.SigNone && (found[1] || found[2]) {
			res.Sig = verdict.Signature{Status: verdict.SigPartial, Protocol: OpenPGP, Reason: "embedded-armor"}
		}
	}
	if res.Enc.Status == verdict.EncNone && hasNested(p, isEncryptedPart) {
		res.Enc = verdict.Encryption{Status: verdict.EncPartial, Reason: "nested-part"}
	}
	if res.Sig.Status == verdict.SigNone && hasNested(p, isSignedPart) {
		res.Sig.Status, res.Sig.Reason = verdict.SigPartial, verdict.Reason(res.Sig.Reason, "nested-part")
	}
}

// ambiguity applies the rule that the gateway never vouches for a
// structure readers of the same bytes could disagree on (mime.Ambiguity):
// a signature whose signed content lies in an ambiguous parse tree is
// made bad (reason=ambiguous-mime). It returns the message's own
// ambiguity (of the tree as received), if any: the message then passes as
// it came unless something was decrypted (what was decrypted does not
// depend on how the outer structure is read). err is a failure to read
// the bytes.
func (a *analyzer) ambiguity(env *envelope) (message, err error) {
	amb := make([]error, len(env.trees))
	for i, t := range env.trees {
		amb[i] = mime.Ambiguity(t)
		if amb[i] != nil && !errors.Is(amb[i], mime.ErrAmbiguous) {
			return nil, fmt.Errorf("crypto: inbound: %w", amb[i]) // the bytes could not be read
		}
	}
	for i := range env.sigs {
		s := &env.sigs[i].sig
		if amb[env.sigs[i].tree] != nil && s.Status != verdict.SigNone {
			s.Status, s.Reason = verdict.Bad, "ambiguous-mime"
		}
	}
	a.ambiguous = amb[0]
	for _, inner := range amb[1:] {
		if a.ambiguous == nil {
			a.ambiguous = inner
		}
	}
	return amb[0], nil
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
