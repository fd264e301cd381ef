package discover

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// SMIMEA certificate usages (RFC 6698 2.1.1, RFC 7218 names).
const (
	usagePKIXTA uint8 = 0
	usagePKIXEE uint8 = 1
	usageDANETA uint8 = 2
	usageDANEEE uint8 = 3
)

// dane looks addr up in DNS: an OPENPGPKEY record (RFC 7929) and an
// SMIMEA record (RFC 8162), asked in parallel. Records count only when the
// resolver, on loopback, set the AD bit: it validated them with DNSSEC.
// Of the SMIMEA records only those holding a whole end-entity certificate
// (selector 0 "Cert", matching type 0 "Full") can be encrypted to:
// usage 3 (DANE-EE) as it is, usage 1 (PKIX-EE) when it also chains to a
// trust anchor of the keystore (ca/). Trust-anchor usages (0, 2) and
// hashes name a certificate without giving it, and are skipped.
func (d *Discoverer) dane(ctx context.Context, addr string, now time.Time) Answer {
	local, domain, err := splitAddress(addr)
	if err != nil {
		return Answer{Status: NotFound, Reason: err.Error()}
	}
	pgpName := DANEName(local, labelOpenPGPKey, domain)
	smimeName := DANEName(local, labelSMIMECert, domain)
	from := strings.TrimSuffix(pgpName, ".") + " OPENPGPKEY, " + strings.TrimSuffix(smimeName, ".") + " SMIMEA"
	if !resolverOnLoopback(d.opts.Resolver) {
		return Answer{Status: Insecure, From: from, Reason: "the resolver " + d.opts.Resolver + " is not on loopback: its AD bit cannot be trusted"}
	}
	type part struct {
		status Status
		key    *Key
		reason string
	}
	pgpc, smimec := make(chan part, 1), make(chan part, 1)
	go func() {
		ans, err := d.query(ctx, pgpName, dns.TypeOPENPGPKEY)
		if p, done := daneStatus("OPENPGPKEY", ans, err); done {
			pgpc <- part{status: p.status, reason: p.reason}
			return
		}
		k, why := d.openpgpkey(ans.rrs, addr, now)
		if k == nil {
			pgpc <- part{status: Unusable, reason: "OPENPGPKEY: " + why}
			return
		}
		pgpc <- part{status: Found, key: k}
	}()
	go func() {
		ans, err := d.query(ctx, smimeName, dns.TypeSMIMEA)
		if p, done := daneStatus("SMIMEA", ans, err); done {
			smimec <- part{status: p.status, reason: p.reason}
			return
		}
		k, why := d.smimea(ans.rrs, addr, now)
		if k == nil {
			smimec <- part{status: Unusable, reason: "SMIMEA: " + why}
			return
		}
		smimec <- part{status: Found, key: k}
	}()
	pp, sp := <-pgpc, <-smimec
	a := Answer{From: from, OpenPGP: pp.key, SMIME: sp.key}
	var reasons []string
	for _, p := range []part{pp, sp} {
		if p.reason != "" {
			reasons = append(reasons, p.reason)
		}
	}
	a.Reason = strings.Join(reasons, "; ")
	has := func(s Status) bool { return pp.status == s || sp.status == s }
	switch {
	case has(Found):
		a.Status = Found
	case has(Temporary):
		a.Status = Temporary
	case has(Unusable):
		a.Status = Unusable
	case has(Insecure):
		a.Status = Insecure
	default:
		a.Status = NotFound
	}
	return a
}

// daneStatus classifies a DNS answer before its records are looked at:
// done is true when there is nothing (more) to look at.
func daneStatus(rrtype string, ans dnsAnswer, err error) (p struct {
	status Status
	reason string
}, done bool) {
	switch {
	case err != nil:
		p.status, p.reason = Temporary, err.Error()
	case len(ans.rrs) == 0:
		p.status = NotFound
	case !ans.ad:
		p.status, p.reason = Insecure, rrtype+": not DNSSEC-validated (the resolver did not set the AD bit); ignored"
	default:
		return p, false
	}
	return p, true
}

// openpgpkey checks the keys of OPENPGPKEY records (binary transferable
// public keys) for addr.
func (d *Discoverer) openpgpkey(rrs []dns.RR, addr string, now time.Time) (*Key, string) {
	var all []byte
	for _, rr := range rrs {
		r, ok := rr.(*dns.OPENPGPKEY)
		if !ok {
			continue
		}
		b, err := base64.StdEncoding.DecodeString(r.PublicKey)
		if err != nil {
			return nil, "record is not base64"
		}
		all = append(all, b...)
	}
	k, err := keystore.CheckOpenPGP(all, addr, d.opts.FoldLocalPart, now)
	if err != nil {
		return nil, trimErr(err)
	}
	return &Key{CheckedKey: *k}, ""
}

// smimea returns the newest usable certificate of SMIMEA records.
func (d *Discoverer) smimea(rrs []dns.RR, addr string, now time.Time) (*Key, string) {
	var best *Key
	var why []string
	for _, rr := range rrs {
		r, ok := rr.(*dns.SMIMEA)
		if !ok {
			continue
		}
		switch {
		case r.Usage == usagePKIXTA || r.Usage == usageDANETA:
			why = append(why, fmt.Sprintf("usage %d names a trust anchor, not the recipient's certificate", r.Usage))
			continue
		case r.Usage != usagePKIXEE && r.Usage != usageDANEEE:
			why = append(why, fmt.Sprintf("unknown usage %d", r.Usage))
			continue
		case r.Selector != 0 || r.MatchingType != 0:
			why = append(why, fmt.Sprintf("selector %d, matching type %d: no whole certificate to encrypt to", r.Selector, r.MatchingType))
			continue
		}
		der, err := hex.DecodeString(r.Certificate)
		if err != nil {
			why = append(why, "record is not hex")
			continue
		}
		k, err := d.checkCert(der, addr, r.Usage, now)
		if err != nil {
			why = append(why, err.Error())
			continue
		}
		if best == nil || k.Created.After(best.Created) {
			best = k
		}
	}
	if best == nil {
		if len(why) == 0 {
			why = append(why, "no record")
		}
		return nil, strings.Join(why, "; ")
	}
	return best, ""
}

// verifyPKIX checks that a PKIX-EE certificate chains to a keystore trust
// anchor for e-mail protection at t.
func (d *Discoverer) verifyPKIX(c *x509.Certificate, t time.Time) error {
	if d.opts.Anchors == nil {
		return errNoAnchors
	}
	roots := d.opts.Anchors()
	if roots == nil {
		return errNoAnchors
	}
	_, err := c.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: t, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})
	if err != nil {
		return fmt.Errorf("PKIX-EE certificate does not chain to a trust anchor of the keystore: %v", err)
	}
	return nil
}
