package crypto

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	netmail "net/mail"
	"slices"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// outbound handles mail leaving the site: each envelope recipient gets a
// copy encrypted to its own key (OpenPGP or S/MIME), signed by the
// gateway, signed only, or unchanged, as the policy says.
func (e *Engine) outbound(ctx context.Context, in *Input) (*Plan, error) {
	h := in.Message.Header
	body := in.Message.Body
	if body == nil {
		body = e.spool.New()
		defer body.Close()
	}
	if len(in.Envelope.Rcpts) == 0 {
		return e.passed(h, "no recipients"), nil
	}
	if e.alreadyEncrypted(h, body) {
		return e.passed(h, "already encrypted"), nil
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	from := fromAddress(h)
	sg, err := e.gatewaySigners(in.Keys, from, now)
	if err != nil {
		return nil, err
	}
	rcpts, refused := e.classifyAll(in, sg, now)
	if refused != nil {
		return refused, nil
	}
	for _, r := range rcpts {
		if r.fault != nil && r.cls.treat != treatEncrypt {
			// The keystore could not be read where this recipient's key
			// may be: wait rather than send it unencrypted.
			return nil, fmt.Errorf("crypto: outbound: key of %s: %w", bareAddr(r.addr), r.fault)
		}
	}
	groups := groupRecipients(rcpts, e.pol.Outbound.Split)
	if len(groups) == 1 && groups[0].cls.treat == treatPlain {
		return e.passed(h, "no encryption or signature by policy or keys"), nil
	}
	b := &builder{e: e, in: in, body: body, sg: sg, now: now, from: from}
	defer b.close()
	plan, err := e.buildCopies(ctx, b, groups)
	if errors.Is(err, mime.ErrLimit) {
		return e.refuse(e.pol.Actions.OnLimits, LimitReply, "rejected", "MIME structure exceeds limits"), nil
	}
	if errors.Is(err, mime.ErrMalformed) {
		return e.refuse(e.pol.Actions.OnMalformed, MalformedReply, "rejected", "malformed MIME structure"), nil
	}
	if err != nil {
		return nil, err
	}
	summarize(plan, groups, sg)
	plan.Attrs = append(plan.Attrs, discoveryAttrs(rcpts)...)
	return plan, nil
}

// passed is the plan for a message left as it is, but for the result
// fields it carries: on outbound mail they can only be forged (a local
// sender writing "signature good" for a ticket system behind the
// gateway), so they are removed here as from signed copies.
func (e *Engine) passed(h mime.Header, reason string) *Plan {
	del := map[int]bool{}
	for i, f := range h {
		if e.outboundResultField(f) {
			del[i] = true
		}
	}
	return &Plan{Action: Accept, Decision: "passed", HeaderOps: deleteOps(h, del), Attrs: []slog.Attr{slog.String("reason", reason)}}
}

// classifyAll classifies every envelope recipient. A required recipient
// without a key refuses the whole message (the returned plan).
func (e *Engine) classifyAll(in *Input, sg signers, now time.Time) ([]rcpt, *Plan) {
	visible := visibleAddresses(in.Message.Header)
	rcpts := make([]rcpt, 0, len(in.Envelope.Rcpts))
	var wait *Plan
	for _, a := range in.Envelope.Rcpts {
		r := e.pol.classify(in.Keys, sg, a, now, in.Discovered)
		if r.cls.treat == treatTempfail && wait == nil {
			wait = discoveryTempfail(r)
		}
		if r.cls.treat == treatReject {
			p := &Plan{
				Action:   Reject,
				Reply:    NoKeyReply(bareAddr(a), e.pol.Actions.OnNoKey == Tempfail),
				Decision: "rejected",
				Attrs:    []slog.Attr{slog.String("reason", "no usable encryption key"), slog.String("rcpt", bareAddr(a))},
			}
			if e.pol.Actions.OnNoKey == Tempfail {
				p.Action = Tempfail
			}
			return nil, p
		}
		r.bcc = !visible[canonAddr(a)]
		rcpts = append(rcpts, r)
	}
	// A permanent refusal of another recipient (above) takes precedence
	// over waiting for a key lookup.
	if wait != nil {
		return nil, wait
	}
	return rcpts, nil
}

// buildCopies makes one copy per group: the first rewrites the original,
// the others are extra copies.
func (e *Engine) buildCopies(ctx context.Context, b *builder, groups []group) (*Plan, error) {
	plan := &Plan{Action: Accept}
	for i, g := range groups {
		if err := ctx.Err(); err != nil {
			plan.Close()
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		addrs := make([]string, len(g.rcpts))
		for j, r := range g.rcpts {
			addrs[j] = r.addr
		}
		if g.cls.treat == treatPlain {
			if i == 0 {
				continue
			}
			buf := e.spool.New()
			if _, err := io.Copy(buf, b.body.Reader()); err != nil {
				buf.Close()
				plan.Close()
				return nil, fmt.Errorf("crypto: outbound: %w", err)
			}
			plan.Copies = append(plan.Copies, Copy{Recipients: addrs, Header: b.in.Message.Header.Clone(), Body: buf})
			continue
		}
		out, err := b.build(g)
		if err != nil {
			plan.Close()
			return nil, err
		}
		if i == 0 {
			plan.HeaderOps, plan.Body = out.ops, out.body
		} else {
			plan.Copies = append(plan.Copies, Copy{Recipients: addrs, Header: out.header, Body: out.body})
		}
	}
	return plan, nil
}

// summarize sets the plan's decision and log details.
func summarize(plan *Plan, groups []group, sg signers) {
	counts := map[string]int{}
	for _, g := range groups {
		counts[g.cls.String()] += len(g.rcpts)
	}
	switch {
	case counts["encrypt/openpgp"]+counts["encrypt/smime"] > 0:
		plan.Decision = "encrypted"
	case counts["sign/openpgp"]+counts["sign/smime"] > 0:
		plan.Decision = "signed"
	default:
		plan.Decision = "passed"
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		plan.Attrs = append(plan.Attrs, slog.Int(k, counts[k]))
	}
	plan.Attrs = append(plan.Attrs, slog.Int("copies", len(groups)))
	if sg.pgp != nil {
		plan.Attrs = append(plan.Attrs, slog.String("signer_openpgp", sg.pgpAddr))
	}
	if sg.smime != nil {
		plan.Attrs = append(plan.Attrs, slog.String("signer_smime", sg.smimeAdr))
	}
}

// RcptDefer is the RCPT-time check for SMTP submissions with
// [outbound] defer_rcpt = true: given the first recipient already accepted
// in this transaction (first, "" for none) and the recipient now offered,
// it returns the zero Reply to accept rcpt or DeferReply when rcpt would
// need a copy of its own (another class, or any encrypted recipient with
// split = per-recipient), so that the client sends it in a new
// transaction. Bcc status is unknown at RCPT time: such copies are still
// split at the end of the message. Never call it for non_smtpd_milters
// submissions.
func (e *Engine) RcptDefer(keys *keystore.Snapshot, now time.Time, envFrom, first, rcpt string) Reply {
	o := &e.pol.Outbound
	if !o.DeferRcpt || first == "" {
		return Reply{}
	}
	sg, _ := e.gatewaySigners(keys, bareAddr(envFrom), now)
	if needsOwnCopy(e.pol.classify(keys, sg, first, now, nil), e.pol.classify(keys, sg, rcpt, now, nil), o.Split) {
		return DeferReply
	}
	return Reply{}
}

// gatewaySigners finds the signing keys: the From address when it is a
// gateway identity, else sign_as, else the first gateway address (for
// each protocol, the first of these that has a key). It fails when the
// gateway's keys could not be read (the message waits, never goes out
// unsigned).
func (e *Engine) gatewaySigners(snap *keystore.Snapshot, from string, now time.Time) (signers, error) {
	var sg signers
	if snap == nil {
		return sg, nil
	}
	for _, area := range []keystore.Area{keystore.AreaGatewayOpenPGP, keystore.AreaGatewaySMIME} {
		if err := snap.Unavailable(area); err != nil {
			return sg, fmt.Errorf("crypto: outbound: signing keys: %w", err)
		}
	}
	gw := snap.GatewayAddresses()
	var cands []string
	if from != "" && slices.ContainsFunc(gw, func(g string) bool { return strings.EqualFold(g, from) }) {
		cands = append(cands, from)
	}
	if e.pol.Outbound.SignAs != "" {
		cands = append(cands, e.pol.Outbound.SignAs)
	}
	cands = append(cands, gw...)
	for _, a := range cands {
		if sg.pgp == nil {
			if k, err := snap.GatewayOpenPGPAt(a, now); err == nil {
				sg.pgp, sg.pgpAddr = k, a
			}
		}
		if sg.smime == nil {
			if id, err := snap.GatewaySMIMEAt(a, now); err == nil {
				sg.smime, sg.smimeAdr = id, a
			}
		}
	}
	return sg, nil
}

// fromAddress returns the single address of the From field, or "".
func fromAddress(h mime.Header) string {
	l, err := netmail.ParseAddressList(h.Get("From"))
	if err != nil || len(l) == 0 {
		return ""
	}
	return l[0].Address
}

// visibleAddresses returns the addresses in To and Cc, in canonAddr form.
func visibleAddresses(h mime.Header) map[string]bool {
	seen := map[string]bool{}
	for _, name := range []string{"To", "Cc"} {
		for _, v := range h.Values(name) {
			l, err := netmail.ParseAddressList(v)
			if err != nil {
				// Fall back to a crude scan so that a sloppy header does
				// not make everybody Bcc (which only costs copies).
				for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(" ,;<>", r) }) {
					if strings.Contains(tok, "@") {
						seen[canonAddr(tok)] = true
					}
				}
				continue
			}
			for _, a := range l {
				seen[canonAddr(a.Address)] = true
			}
		}
	}
	return seen
}

// alreadyEncrypted reports whether the message is encrypted at its root
// and holds nothing else: PGP/MIME whose every byte outside the boundaries
// is structure, S/MIME enveloped data, or an inline PGP message, each with
// complete ciphertext (see openpgp.IsCiphertext, smime.IsEnvelope). A
// message that merely claims to be encrypted is not.
func (e *Engine) alreadyEncrypted(h mime.Header, body *spool.Buffer) bool {
	if len(h.Values("Content-Type")) > 1 || len(h.Values("Content-Transfer-Encoding")) > 1 {
		return false // ambiguous: readers disagree on the structure
	}
	ct := strings.ToLower(h.Get("Content-Type"))
	if !strings.HasPrefix(ct, "multipart/encrypted") && !strings.Contains(ct, "pkcs7-mime") &&
		!strings.HasPrefix(ct, "text/plain") && ct != "" && !strings.HasPrefix(ct, "application/octet-stream") {
		return false
	}
	if plain := ct == "" || strings.HasPrefix(ct, "text/plain"); plain &&
		!strings.EqualFold(strings.TrimSpace(h.Get("Content-Transfer-Encoding")), "base64") {
		// Most outbound mail: look at the start before reading it all.
		head := make([]byte, 4096)
		n, _ := io.ReadFull(body.Reader(), head)
		if !bytes.HasPrefix(bytes.TrimLeft(head[:n], " \t\r\n"), []byte(armorBeginMsg)) {
			return false
		}
	}
	root, err := mime.ParseHeaderBody(h, body, body.Size(), e.mimeLimits())
	if err != nil {
		return false
	}
	// The ciphertext is read into memory: bounded by
	// limits.max_message_size on the way in.
	switch l := layerOf(root); l.kind {
	case layerPGPMIME:
		return pgpMIMEOnly(root)
	case layerCMSEnveloped, layerCMSAuthEnveloped:
		der, err := io.ReadAll(root.Decoded())
		return err == nil && smime.IsEnvelope(der)
	case layerPGPInline:
		armor, err := io.ReadAll(l.text.Decoded())
		return err == nil && openpgp.IsCiphertext(armor)
	}
	return false
}

// pgpMIMEPreambles are the preambles mail clients write before PGP/MIME
// parts (Thunderbird, Enigmail, Mutt): structure, not content.
var pgpMIMEPreambles = []string{
	"This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)",
	"This is an OpenPGP/MIME encrypted message (RFC 2440 and 3156)",
}

// partFields are the header fields a PGP/MIME part may carry and still
// count as structure, each at most maxPartField characters unfolded: what
// Thunderbird, Enigmail, GnuPG's clients and cryptmilter write
// ("Content-Description: OpenPGP encrypted message", a file name). Any
// other field, or a longer value, is text in clear beside the ciphertext.
var partFields = []string{"Content-Type", "Content-Transfer-Encoding", "Content-Description", "Content-Disposition", "Content-ID"}

const maxPartField = 128

// structureOnly reports whether a PGP/MIME part's header is structure
// (partFields, each at most once, short values).
func structureOnly(h mime.Header) bool {
	for _, f := range h {
		if !slices.ContainsFunc(partFields, func(n string) bool { return strings.EqualFold(n, f.Name) }) ||
			len(h.Values(f.Name)) > 1 || len(mime.Unfold(f.Value)) > maxPartField {
			return false
		}
	}
	return true
}

// pgpMIMEOnly reports whether a multipart/encrypted is exactly RFC 3156's
// two parts, nothing but whitespace around them, part headers that are
// only structure (structureOnly), the version part saying only
// "Version: 1" and the data part complete ciphertext.
func pgpMIMEOnly(root *mime.Entity) bool {
	if len(root.Parts) != 2 {
		return false
	}
	version, data := root.Parts[0], root.Parts[1]
	if version.MediaType != "application/pgp-encrypted" || data.MediaType != "application/octet-stream" {
		return false
	}
	if !structureOnly(version.Header) || !structureOnly(data.Header) {
		return false
	}
	v, err := decodedUpTo(version, 4096)
	if err != nil || strings.TrimSpace(string(v)) != "Version: 1" {
		return false
	}
	// Preamble and epilogue: what is left of the body without the parts
	// and the delimiter lines.
	rest, ok, err := root.Outside(64 << 10)
	if err != nil || !ok {
		return false
	}
	delim := "--" + root.Params["boundary"]
	rest = bytes.ReplaceAll(rest, []byte(delim+"--"), nil)
	rest = bytes.ReplaceAll(rest, []byte(delim), nil)
	for _, boilerplate := range pgpMIMEPreambles {
		rest = bytes.Replace(rest, []byte(boilerplate), nil, 1)
	}
	if len(bytes.TrimSpace(rest)) > 0 {
		return false
	}
	ct, err := io.ReadAll(data.Decoded())
	return err == nil && openpgp.IsCiphertext(ct)
}
