package crypto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	stdmime "mime"
	netmail "net/mail"
	"slices"
	"strings"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/openpgp"
	"github.com/cryptmilter/cryptmilter/crypto/smime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Outbound policies ([outbound] policy and rule policy).
const (
	PolicyRequired      = "required"
	PolicyOpportunistic = "opportunistic"
	PolicySignOnly      = "sign-only"
	PolicyNone          = "none"
)

// Protocols.
const (
	ProtoOpenPGP = "openpgp"
	ProtoSMIME   = "smime"
)

// What is done to a recipient's copy.
const (
	treatEncrypt = "encrypt"
	treatSign    = "sign"
	treatPlain   = "plain"
	treatReject  = "reject"
)

// DeferReply is the RCPT-time reply that makes an SMTP client send a
// recipient of another class in a new transaction.
const DeferReply = "452 4.5.3 Too many recipients for one encryption class; send the rest in another transaction"

// LimitReply refuses a message whose MIME structure is too deep or has too
// many parts to be canonicalized for signing.
const LimitReply = "552 5.3.4 Message structure exceeds the MIME depth or part limit"

// MalformedReply refuses a message whose MIME structure cannot be read
// (so it cannot be signed or encrypted as it is).
const MalformedReply = "554 5.6.0 Message has a malformed MIME structure and cannot be signed or encrypted"

// class is what a copy gets; recipients of equal class can share a copy
// (unless split or Bcc says otherwise).
type class struct {
	treat  string // treatEncrypt | treatSign | treatPlain | treatReject
	proto  string // ProtoOpenPGP | ProtoSMIME for encrypt and sign
	inline bool   // inline PGP asked by a rule (encrypt, openpgp)
}

func (c class) String() string {
	switch c.treat {
	case treatEncrypt, treatSign:
		return c.treat + "/" + c.proto
	}
	return c.treat
}

type rcpt struct {
	addr   string
	policy string
	cls    class
	bcc    bool
	pgp    *pgpcrypto.Key
	cert   *x509.Certificate
}

// signers are the gateway's signing keys for one message.
type signers struct {
	pgp      *pgpcrypto.Key
	pgpAddr  string
	smime    *keystore.SMIMEIdentity
	smimeAdr string
}

func (s signers) can(proto string) bool {
	switch proto {
	case ProtoOpenPGP:
		return s.pgp != nil
	case ProtoSMIME:
		return s.smime != nil
	}
	return false
}

// rule returns the policy and inline flag for addr: the first matching
// [[outbound.rule]] (an exact address, @domain or *), else the default.
func rule(cfg *config.Outbound, addr string) (string, bool) {
	a := strings.ToLower(strings.Trim(addr, "<> "))
	_, domain, _ := strings.Cut(a, "@")
	for _, r := range cfg.Rules {
		m := strings.ToLower(strings.TrimSpace(r.Match))
		switch {
		case m == "*",
			strings.HasPrefix(m, "@") && domain != "" && m[1:] == domain,
			m == a:
			return r.Policy, r.Inline
		}
	}
	return cfg.Policy, false
}

// bareAddr strips angle brackets from an envelope address.
func bareAddr(a string) string { return strings.TrimSpace(strings.Trim(strings.TrimSpace(a), "<>")) }

// classify decides recipient addr's class with the keys in snap.
func (e *Engine) classify(snap *keystore.Snapshot, sg signers, addr string, now time.Time) rcpt {
	r := rcpt{addr: addr}
	var inline bool
	r.policy, inline = rule(&e.cfg.Outbound, addr)
	a := bareAddr(addr)
	if snap != nil && r.policy != PolicyNone {
		if k, err := snap.EncryptionKey(a, now); err == nil {
			r.pgp = k
		}
		if c, err := snap.Certificate(a, now); err == nil {
			if _, isRSA := c.PublicKey.(*rsa.PublicKey); isRSA {
				r.cert = c
			}
		}
	}
	order := []string{ProtoOpenPGP, ProtoSMIME}
	if e.cfg.Outbound.Prefer == ProtoSMIME {
		order = []string{ProtoSMIME, ProtoOpenPGP}
	}
	has := func(p string) bool {
		return p == ProtoOpenPGP && r.pgp != nil || p == ProtoSMIME && r.cert != nil
	}
	// sign picks the signature protocol: one the recipient is known to
	// use, else the preferred one the gateway can sign with.
	sign := func() class {
		for _, p := range order {
			if has(p) && sg.can(p) {
				return class{treat: treatSign, proto: p}
			}
		}
		for _, p := range order {
			if sg.can(p) {
				return class{treat: treatSign, proto: p}
			}
		}
		return class{treat: treatPlain}
	}
	switch r.policy {
	case PolicyNone:
		r.cls = class{treat: treatPlain}
	case PolicySignOnly:
		r.cls = sign()
	default:
		for _, p := range order {
			if has(p) {
				r.cls = class{treat: treatEncrypt, proto: p, inline: inline && p == ProtoOpenPGP}
				return r
			}
		}
		if r.policy == PolicyRequired {
			r.cls = class{treat: treatReject}
		} else {
			r.cls = sign()
		}
	}
	return r
}

// gatewaySigners finds the signing keys: the From address when it is a
// gateway identity, else sign_as, else the first gateway address (for
// each protocol, the first of these that has a key).
func (e *Engine) gatewaySigners(snap *keystore.Snapshot, from string, now time.Time) signers {
	var sg signers
	if snap == nil {
		return sg
	}
	gw := snap.GatewayAddresses()
	var cands []string
	if from != "" && slices.ContainsFunc(gw, func(g string) bool { return strings.EqualFold(g, from) }) {
		cands = append(cands, from)
	}
	if e.cfg.Outbound.SignAs != "" {
		cands = append(cands, e.cfg.Outbound.SignAs)
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
	return sg
}

// fromAddress returns the single address of the From field, or "".
func fromAddress(h mime.Header) string {
	l, err := netmail.ParseAddressList(h.Get("From"))
	if err != nil || len(l) == 0 {
		return ""
	}
	return l[0].Address
}

// visibleAddresses returns the lower-cased addresses in To and Cc.
func visibleAddresses(h mime.Header) map[string]bool {
	seen := map[string]bool{}
	for _, name := range []string{"To", "Cc"} {
		for _, v := range h.Values(name) {
			l, err := netmail.ParseAddressList(v)
			if err != nil {
				// Fall back to a crude scan so that a sloppy header does
				// not make everybody Bcc (which only costs copies).
				for _, tok := range strings.FieldsFunc(v, func(r rune) bool { return strings.ContainsRune(" ,;<>\"", r) }) {
					if strings.Contains(tok, "@") {
						seen[strings.ToLower(tok)] = true
					}
				}
				continue
			}
			for _, a := range l {
				seen[strings.ToLower(a.Address)] = true
			}
		}
	}
	return seen
}

// alreadyEncrypted reports whether the message is encrypted at its root:
// PGP/MIME, S/MIME enveloped data, or an inline PGP message.
func (e *Engine) alreadyEncrypted(h mime.Header, body *spool.Buffer) bool {
	if len(h.Values("Content-Type")) > 1 {
		return false // ambiguous: readers disagree on the structure
	}
	ct := strings.ToLower(h.Get("Content-Type"))
	if !strings.HasPrefix(ct, "multipart/encrypted") && !strings.Contains(ct, "pkcs7-mime") &&
		!strings.HasPrefix(ct, "text/plain") && ct != "" {
		return false
	}
	if plain := ct == "" || strings.HasPrefix(ct, "text/plain"); plain &&
		!strings.EqualFold(strings.TrimSpace(h.Get("Content-Transfer-Encoding")), "base64") {
		// Most outbound mail: look at the start before reading it all.
		head := make([]byte, 4096)
		n, _ := io.ReadFull(body.Reader(), head)
		if !bytes.HasPrefix(bytes.TrimLeft(head[:n], " \t\r\n"), []byte("-----BEGIN PGP MESSAGE-----")) {
			return false
		}
	}
	// Only real ciphertext counts: a message that merely claims to be
	// encrypted must not pass in plaintext where policy requires
	// encryption. Bounded by limits.max_message_size on the way in.
	data, err := io.ReadAll(body.Reader())
	if err != nil {
		return false
	}
	lim := mime.Limits{MaxDepth: e.cfg.Limits.MaxMIMEDepth, MaxParts: e.cfg.Limits.MaxParts}
	root, err := mime.ParseHeaderBody(h, data, lim)
	if err != nil {
		return false
	}
	switch {
	case isPGPEncrypted(root):
		if len(root.Parts) != 2 {
			return false
		}
		ct, err := root.Parts[1].Decoded()
		return err == nil && isPGPCiphertext(ct)
	case isSMIMEType(root.MediaType):
		k := cmsKind(root)
		return k == "enveloped" || k == "authenveloped"
	case root.MediaType == "text/plain":
		t, err := root.Decoded()
		return err == nil && isPGPCiphertext(t)
	}
	return false
}

// isPGPCiphertext reports whether data is exactly one OpenPGP encrypted
// message (armored, with nothing but whitespace around it, or binary).
func isPGPCiphertext(data []byte) bool {
	info, err := openpgp.Inspect(data)
	return err == nil && info.Kind == openpgp.KindEncrypted && !info.Surrounded &&
		bytes.Count(data, []byte("-----BEGIN PGP")) <= 1
}

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
		return &Plan{Action: Accept, Decision: "passed", Attrs: []slog.Attr{slog.String("reason", "no recipients")}}, nil
	}
	if e.alreadyEncrypted(h, body) {
		return &Plan{Action: Accept, Decision: "passed", Attrs: []slog.Attr{slog.String("reason", "already encrypted")}}, nil
	}
	now := in.Now
	if now.IsZero() {
		now = time.Now()
	}
	from := fromAddress(h)
	sg := e.gatewaySigners(in.Keys, from, now)
	visible := visibleAddresses(h)
	rcpts := make([]rcpt, 0, len(in.Envelope.Rcpts))
	for _, a := range in.Envelope.Rcpts {
		r := e.classify(in.Keys, sg, a, now)
		if r.cls.treat == treatReject {
			return &Plan{
				Action:   Reject,
				Reply:    fmt.Sprintf("550 5.7.1 <%s>: no usable encryption key", bareAddr(a)),
				Decision: "rejected",
				Attrs:    []slog.Attr{slog.String("reason", "no usable encryption key"), slog.String("rcpt", bareAddr(a))},
			}, nil
		}
		r.bcc = !visible[strings.ToLower(bareAddr(a))]
		rcpts = append(rcpts, r)
	}
	groups := e.group(rcpts)
	if len(groups) == 1 && groups[0].cls.treat == treatPlain {
		return &Plan{Action: Accept, Decision: "passed", Attrs: []slog.Attr{slog.String("reason", "no encryption or signature by policy or keys")}}, nil
	}
	b := &builder{e: e, in: in, body: body, sg: sg, now: now, from: from}
	defer b.close()
	plan := &Plan{Action: Accept}
	counts := map[string]int{}
	for i, g := range groups {
		if err := ctx.Err(); err != nil {
			plan.Close()
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		counts[g.cls.String()] += len(g.rcpts)
		addrs := make([]string, len(g.rcpts))
		for j, r := range g.rcpts {
			addrs[j] = r.addr
		}
		if g.cls.treat == treatPlain {
			if i == 0 {
				continue
			}
			buf := e.spool.New()
			if _, err := io.Copy(buf, body.Reader()); err != nil {
				buf.Close()
				plan.Close()
				return nil, fmt.Errorf("crypto: outbound: %w", err)
			}
			plan.Copies = append(plan.Copies, Copy{Recipients: addrs, Header: h.Clone(), Body: buf})
			continue
		}
		out, err := b.build(g)
		if errors.Is(err, mime.ErrLimit) {
			plan.Close()
			return &Plan{Action: Reject, Reply: LimitReply, Decision: "rejected",
				Attrs: []slog.Attr{slog.String("reason", "MIME structure exceeds limits")}}, nil
		}
		if errors.Is(err, mime.ErrMalformed) {
			plan.Close()
			return &Plan{Action: Reject, Reply: MalformedReply, Decision: "rejected",
				Attrs: []slog.Attr{slog.String("reason", "malformed MIME structure")}}, nil
		}
		if err != nil {
			plan.Close()
			return nil, err
		}
		if i == 0 {
			plan.HeaderOps = out.ops
			plan.Body = out.body
		} else {
			plan.Copies = append(plan.Copies, Copy{Recipients: addrs, Header: out.header, Body: out.body})
		}
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
	return plan, nil
}

type group struct {
	cls   class
	rcpts []rcpt
}

// group splits the recipients into copies. Encrypted copies go to one
// recipient each (split = per-recipient) or to every visible recipient of
// a class, with each Bcc recipient alone (split = by-class). Copies that
// are not encrypted carry no recipient key and are shared by class. The
// group holding the first envelope recipient comes first.
func (e *Engine) group(rcpts []rcpt) []group {
	var out []group
	index := map[string]int{}
	for _, r := range rcpts {
		key := r.cls.String()
		if r.cls.treat == treatEncrypt {
			if r.cls.inline {
				key += "/inline"
			}
			if e.cfg.Outbound.Split != "by-class" || r.bcc {
				key += "/" + strings.ToLower(bareAddr(r.addr))
			}
		}
		if i, ok := index[key]; ok {
			// Every envelope form stays (bob@x and BOB@x are two envelope
			// recipients): one left out would stay on the original copy.
			if !slices.ContainsFunc(out[i].rcpts, func(o rcpt) bool { return o.addr == r.addr }) {
				out[i].rcpts = append(out[i].rcpts, r)
			}
			continue
		}
		index[key] = len(out)
		out = append(out, group{cls: r.cls, rcpts: []rcpt{r}})
	}
	return out
}

// RcptDefer is the RCPT-time check for SMTP submissions with
// [outbound] defer_rcpt = true: given the first recipient already accepted
// in this transaction (first, "" for none) and the recipient now offered,
// it returns "" to accept rcpt or DeferReply when rcpt would need a copy of
// its own (another class, or any encrypted recipient with split =
// per-recipient), so that the client sends it in a new transaction. Bcc
// status is unknown at RCPT time: such copies are still split at the end
// of the message. Never call it for non_smtpd_milters submissions.
func (e *Engine) RcptDefer(keys *keystore.Snapshot, now time.Time, envFrom, first, rcpt string) string {
	if !e.cfg.Outbound.DeferRcpt || first == "" {
		return ""
	}
	sg := e.gatewaySigners(keys, bareAddr(envFrom), now)
	a := e.classify(keys, sg, first, now)
	b := e.classify(keys, sg, rcpt, now)
	if a.cls != b.cls {
		return DeferReply
	}
	if b.cls.treat == treatEncrypt && e.cfg.Outbound.Split != "by-class" && !strings.EqualFold(bareAddr(first), bareAddr(rcpt)) {
		return DeferReply
	}
	return ""
}

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
		MaxDepth:  b.e.cfg.Limits.MaxMIMEDepth,
		MaxParts:  b.e.cfg.Limits.MaxParts,
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

// resultField reports whether a (lower-case) field name is one of the
// inbound result headers (cryptmilter's, RT's): on outbound mail they can
// only be forged or stale, and are removed from signed copies rather than
// carried under the gateway's signature.
func resultField(n string) bool {
	return strings.HasPrefix(n, "x-cryptmilter-") || strings.HasPrefix(n, "x-rt-incoming-")
}

// obscured are the outer fields header protection removes; Subject is
// replaced by "[...]" (RFC 9788 baseline policy).
var obscured = map[string]bool{"keywords": true, "comments": true}

const obscuredSubject = "[...]"

// innerHeader returns the header of the signed/encrypted entity.
func (b *builder) innerHeader(encrypted bool) mime.Header {
	ch := b.canonHdr.Clone()
	if !b.e.cfg.Outbound.ProtectHeaders {
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
		if mime.IsContentField(f.Name) || unprotected[n] || resultField(n) {
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

// build makes the copy for one group.
func (b *builder) build(g group) (*built, error) {
	if err := b.canonicalize(); err != nil {
		return nil, err
	}
	out := b.e.spool.New()
	ok := false
	defer func() {
		if !ok {
			out.Close()
		}
	}()
	var ctype, cte string
	encrypted := g.cls.treat == treatEncrypt
	switch {
	case g.cls.treat == treatSign && g.cls.proto == ProtoOpenPGP:
		if b.sg.pgp == nil {
			return nil, errNoSigner
		}
		var sig bytes.Buffer
		inner := b.e.spool.New()
		defer inner.Close()
		if _, err := io.Copy(inner, b.entity(false)); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		micalg, err := openpgp.SignDetached(&sig, inner.Reader(), b.sg.pgp)
		if err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		boundary := mime.NewBoundary()
		ctype = mime.SignedContentType(mime.ProtocolPGPSignature, micalg, boundary)
		if err := mime.WriteMultipartSigned(out, boundary, inner.Reader(), mime.PGPSignatureHeader(), &sig); err != nil {
			return nil, err
		}
	case g.cls.treat == treatSign && g.cls.proto == ProtoSMIME:
		if b.sg.smime == nil {
			return nil, errNoSigner
		}
		ent, err := b.smimeSigned(false)
		if err != nil {
			return nil, err
		}
		ctype = ent.ctype
		if _, err := io.Copy(out, ent.body.Reader()); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
	case encrypted && g.cls.proto == ProtoOpenPGP && g.cls.inline && b.inlineable():
		return b.buildInline(g, out, &ok)
	case encrypted && g.cls.proto == ProtoOpenPGP:
		keys := make([]*pgpcrypto.Key, 0, len(g.rcpts))
		for _, r := range g.rcpts {
			keys = append(keys, r.pgp)
		}
		armored := b.e.spool.New()
		defer armored.Close()
		if err := openpgp.SignEncrypt(armored, b.entity(true), b.sg.pgp, keys, false); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		boundary := mime.NewBoundary()
		ctype = mime.EncryptedContentType(boundary)
		if err := mime.WritePGPEncrypted(out, boundary, armored.Reader()); err != nil {
			return nil, err
		}
	case encrypted && g.cls.proto == ProtoSMIME:
		var content io.Reader
		var size int64
		if b.sg.smime != nil {
			ent, err := b.smimeSigned(true)
			if err != nil {
				return nil, err
			}
			content, size = ent.reader()
		} else {
			content, size = b.entitySized(true)
		}
		certs := make([]*x509.Certificate, 0, len(g.rcpts))
		for _, r := range g.rcpts {
			certs = append(certs, r.cert)
		}
		// The DER goes straight through a base64 encoder into the copy.
		bw := bufio.NewWriterSize(out, 64<<10)
		lw := &base64Lines{w: bw}
		enc := base64.NewEncoder(base64.StdEncoding, lw)
		if err := smime.EncryptTo(enc, content, size, certs); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		if err := enc.Close(); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		if err := lw.Close(); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		if err := bw.Flush(); err != nil {
			return nil, fmt.Errorf("crypto: outbound: %w", err)
		}
		ctype, cte = mime.EnvelopedContentType, "base64"
	default:
		return nil, fmt.Errorf("crypto: outbound: no way to build a %s copy", g.cls)
	}
	hdr, ops := b.outerHeader(ctype, cte, encrypted)
	ok = true
	return &built{header: hdr, ops: ops, body: out}, nil
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
			resultField(n):
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
func (b *builder) buildInline(g group, out *spool.Buffer, ok *bool) (*built, error) {
	h := b.in.Message.Header
	keys := make([]*pgpcrypto.Key, 0, len(g.rcpts))
	for _, r := range g.rcpts {
		keys = append(keys, r.pgp)
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
	*ok = true
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
