package crypto

import (
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"slices"
	"strings"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/internal/address"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// This file holds the outbound policy as pure functions: which rule
// applies to a recipient, what the recipient's copy gets (its class), and
// how recipients share copies. Keys are looked up once, by the caller.

// treatment is what is done to a recipient's copy.
type treatment int

const (
	treatPlain treatment = iota + 1
	treatSign
	treatEncrypt
	treatReject
	// treatTempfail: a required recipient whose key lookup failed
	// temporarily; the whole message waits.
	treatTempfail
)

func (t treatment) String() string {
	return [...]string{"", "plain", "sign", "encrypt", "reject", "tempfail"}[t]
}

// class is what a copy gets; recipients of equal class can share a copy
// (unless split or Bcc says otherwise).
type class struct {
	treat  treatment
	proto  Protocol // for encrypt and sign
	inline bool     // inline PGP asked by a rule (encrypt, openpgp)
}

func (c class) String() string {
	switch c.treat {
	case treatEncrypt, treatSign:
		return c.treat.String() + "/" + c.proto.String()
	}
	return c.treat.String()
}

// rcpt is one envelope recipient with what it gets.
type rcpt struct {
	addr   string // as in the envelope
	policy OutboundPolicy
	cls    class
	bcc    bool
	pgp    *pgpcrypto.Key
	cert   *x509.Certificate
	// Key discovery: where the keys came from (0: the keystore), whether
	// a lookup failed temporarily, why nothing was found.
	source   Trust
	discTemp bool
	discWhy  string
	// fault is set when a key lookup failed because the keystore could
	// not be read: the message is tempfailed.
	fault error
}

// signers are the gateway's signing keys for one message.
type signers struct {
	pgp      *pgpcrypto.Key
	pgpAddr  string
	smime    *keystore.SMIMEIdentity
	smimeAdr string
}

func (s signers) can(p Protocol) bool {
	switch p {
	case OpenPGP:
		return s.pgp != nil
	case SMIME:
		return s.smime != nil
	}
	return false
}

// match returns the first rule matching addr: an exact address, @domain
// or *. Both sides are compared in their canonical form (canonAddr), so
// that "alice"@x, Alice@X. and the IDN forms of a domain match the same
// rule: a spelling must not bypass a required rule.
func (o *OutboundRules) match(addr string) (Rule, bool) {
	a := canonAddr(addr)
	_, domain, _ := strings.Cut(a, "@")
	for _, r := range o.Rules {
		m := strings.TrimSpace(r.Match)
		switch {
		case m == "*",
			strings.HasPrefix(m, "@") && domain != "" && canonAddr("x"+m) == "x@"+domain,
			!strings.HasPrefix(m, "@") && a != "" && canonAddr(m) == a:
			return r, true
		}
	}
	return Rule{}, false
}

// canonAddr is the form in which rules, Bcc status and copies compare
// addresses: address.Canonical with the local part folded (rules have
// always matched case-insensitively).
func canonAddr(a string) string { return address.Canonical(a, true) }

// ruleFor returns the policy and inline flag for addr: the first matching
// rule, else the default.
func ruleFor(o *OutboundRules, addr string) (OutboundPolicy, bool) {
	if r, ok := o.match(addr); ok {
		return r.Policy, r.Inline
	}
	return o.Default, false
}

// bareAddr strips angle brackets from an envelope address.
func bareAddr(a string) string { return strings.TrimSpace(strings.Trim(strings.TrimSpace(a), "<>")) }

// recipientKeys looks up addr's usable encryption keys at now: an OpenPGP
// key and an S/MIME certificate with an RSA key (S/MIME peers need RSA
// key transport).
func recipientKeys(snap *keystore.Snapshot, addr string, now time.Time) (*pgpcrypto.Key, *x509.Certificate) {
	pk, cert, _ := recipientKeysOrFault(snap, addr, now)
	return pk, cert
}

// recipientKeysOrFault is recipientKeys, with the error of a lookup that
// found nothing because the keystore could not be read (ErrUnavailable):
// the message must then wait, never go out without the key it may have.
func recipientKeysOrFault(snap *keystore.Snapshot, addr string, now time.Time) (*pgpcrypto.Key, *x509.Certificate, error) {
	if snap == nil {
		return nil, nil, nil
	}
	var pk *pgpcrypto.Key
	var cert *x509.Certificate
	var fault error
	if k, err := snap.EncryptionKey(addr, now); err == nil {
		pk = k
	} else if errors.Is(err, keystore.ErrUnavailable) {
		fault = err
	}
	if c, err := snap.Certificate(addr, now); err == nil {
		if _, isRSA := c.PublicKey.(*rsa.PublicKey); isRSA {
			cert = c
		}
	} else if errors.Is(err, keystore.ErrUnavailable) && fault == nil {
		fault = err
	}
	return pk, cert, fault
}

// classify decides addr's class from its policy, its keys (the
// keystore's, failing those the ones discovery found: disc, may be nil)
// and the gateway's signing keys.
func (p *Policy) classify(snap *keystore.Snapshot, sg signers, addr string, now time.Time, disc Discovered) rcpt {
	r := rcpt{addr: addr}
	var inline bool
	r.policy, inline = ruleFor(&p.Outbound, addr)
	a := bareAddr(addr)
	if r.policy != NoCrypto {
		r.pgp, r.cert, r.fault = recipientKeysOrFault(snap, a, now)
	}
	if r.pgp == nil && r.cert == nil && (r.policy == Required || r.policy == Opportunistic) {
		p.useDiscovered(&r, snap, disc, a)
	}
	r.cls = chooseClass(r.policy, r.pgp != nil, r.cert != nil, sg, p.Outbound.Prefer, inline)
	if r.cls.treat == treatReject && r.discTemp {
		r.cls = class{treat: treatTempfail}
	}
	return r
}

// chooseClass is the policy table: what a recipient with the given keys
// gets under policy.
func chooseClass(policy OutboundPolicy, hasPGP, hasCert bool, sg signers, prefer Protocol, inline bool) class {
	order := []Protocol{OpenPGP, SMIME}
	if prefer == SMIME {
		order = []Protocol{SMIME, OpenPGP}
	}
	has := func(p Protocol) bool { return p == OpenPGP && hasPGP || p == SMIME && hasCert }
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
	switch policy {
	case NoCrypto:
		return class{treat: treatPlain}
	case SignOnly:
		return sign()
	}
	for _, p := range order {
		if has(p) {
			return class{treat: treatEncrypt, proto: p, inline: inline && p == OpenPGP}
		}
	}
	if policy == Required {
		return class{treat: treatReject}
	}
	return sign()
}

// group is the recipients of one copy.
type group struct {
	cls   class
	rcpts []rcpt
}

// groupRecipients splits the recipients into copies. Encrypted copies go
// to one recipient each (PerRecipient) or to every visible recipient of a
// class, with each Bcc recipient alone (ByClass). Copies that are not
// encrypted carry no recipient key and are shared by class. The group
// holding the first envelope recipient comes first.
func groupRecipients(rcpts []rcpt, split Split) []group {
	var out []group
	index := map[string]int{}
	for _, r := range rcpts {
		key := r.cls.String()
		if r.cls.treat == treatEncrypt {
			if r.cls.inline {
				key += "/inline"
			}
			if split != ByClass || r.bcc {
				key += "/" + canonAddr(r.addr)
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

// needsOwnCopy reports whether recipient b, offered after a (the first
// recipient of the transaction), needs a copy of its own: another class,
// or an encrypted recipient under PerRecipient.
func needsOwnCopy(a, b rcpt, split Split) bool {
	if a.cls != b.cls {
		return true
	}
	return b.cls.treat == treatEncrypt && split != ByClass && canonAddr(a.addr) != canonAddr(b.addr)
}
