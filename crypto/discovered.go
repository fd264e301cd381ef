package crypto

import (
	"crypto/rsa"
	"crypto/x509"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// DiscoveredKey is what one discovery source answered for a recipient,
// handed to the engine as data (the engine itself never looks anything
// up). The caller has checked the keys for the address at the message's
// time; unusable answers carry no key.
type DiscoveredKey struct {
	Source  Trust             // TrustDANE or TrustWKD
	OpenPGP *pgpcrypto.Key    // a usable encryption key, or nil
	Cert    *x509.Certificate // a usable certificate, or nil
	// Temporary says the lookup failed in a way worth retrying (timeout,
	// SERVFAIL, server unreachable): a required recipient then waits.
	Temporary bool
	Reason    string // why there is no key, for the log
}

// Discovered maps an envelope recipient (bare address, as in the
// envelope) to the answers of the sources consulted for it.
type Discovered map[string][]DiscoveredKey

// DiscoveryTarget is a recipient key discovery should look up, with the
// sources its rule accepts (configured sources of at least min_trust).
type DiscoveryTarget struct {
	Addr    string
	Sources []Trust
}

// DiscoveryTargets returns the envelope recipients of an outbound message
// worth a lookup: policy required or opportunistic, no usable key in the
// keystore (a manual key always wins), not pinned ([keyring.pin]: a
// pinned address never falls back to another key), and a rule whose
// min_trust admits a configured source.
func (e *Engine) DiscoveryTargets(keys *keystore.Snapshot, rcpts []string, now time.Time) []DiscoveryTarget {
	if len(e.pol.Discovery) == 0 {
		return nil
	}
	var out []DiscoveryTarget
	seen := map[string]bool{}
	for _, r := range rcpts {
		a := bareAddr(r)
		if seen[a] {
			continue
		}
		seen[a] = true
		policy, _ := ruleFor(&e.pol.Outbound, a)
		if policy != Required && policy != Opportunistic {
			continue
		}
		if keys != nil && keys.Pinned(a) {
			continue
		}
		if pgp, cert := recipientKeys(keys, a, now); pgp != nil || cert != nil {
			continue
		}
		if srcs := e.pol.discoverySources(a); len(srcs) > 0 {
			out = append(out, DiscoveryTarget{Addr: a, Sources: srcs})
		}
	}
	return out
}

// discoverySources returns the configured sources the rule of addr
// accepts, highest trust first.
func (p *Policy) discoverySources(addr string) []Trust {
	floor := p.Outbound.minTrust(addr)
	var out []Trust
	for _, s := range []Trust{TrustDANE, TrustWKD} {
		if slices.Contains(p.Discovery, s) && s >= floor {
			out = append(out, s)
		}
	}
	return out
}

// minTrust returns the min_trust of the rule for addr (default wkd).
func (o *OutboundRules) minTrust(addr string) Trust {
	if r, ok := o.match(addr); ok && r.MinTrust != 0 {
		return r.MinTrust
	}
	return TrustWKD
}

// useDiscovered gives r the discovered keys of the highest trust its rule
// admits, for a recipient without a keystore key that is not pinned. When
// none qualifies and an admitted source failed temporarily, r.discTemp
// says so (a required recipient then waits rather than bounces).
func (p *Policy) useDiscovered(r *rcpt, snap *keystore.Snapshot, disc Discovered, a string) {
	answers := disc[a]
	if len(answers) == 0 || (snap != nil && snap.Pinned(a)) {
		return
	}
	floor := p.Outbound.minTrust(a)
	byTrust := slices.Clone(answers)
	slices.SortStableFunc(byTrust, func(x, y DiscoveredKey) int { return int(y.Source) - int(x.Source) })
	var why []string
	for _, d := range byTrust {
		if d.Source < floor || d.Source >= TrustManual || !d.Source.Valid() {
			continue
		}
		if d.OpenPGP != nil || d.Cert != nil {
			r.pgp, r.cert, r.source = d.OpenPGP, d.Cert, d.Source
			if r.cert != nil {
				if _, isRSA := r.cert.PublicKey.(*rsa.PublicKey); !isRSA {
					r.cert = nil
				}
			}
			if r.pgp != nil || r.cert != nil {
				return
			}
		}
		if d.Temporary {
			r.discTemp = true
		}
		if d.Reason != "" {
			why = append(why, d.Source.String()+": "+d.Reason)
		}
	}
	r.discWhy = strings.Join(why, "; ")
}

// DiscoveryTempfailReply is the reply when a required recipient has no
// key and discovery could not tell yet: the MTA retries later.
func DiscoveryTempfailReply(addr string) Reply {
	return Reply{451, "4.7.0", fmt.Sprintf("<%s>: encryption key lookup failed temporarily, try again later", addr)}
}

// discoveryAttrs are the log line's details about discovered keys: which
// recipient's key came from where, and which lookups gave nothing.
func discoveryAttrs(rcpts []rcpt) []slog.Attr {
	var used, failed []string
	for _, r := range rcpts {
		a := bareAddr(r.addr)
		switch {
		case r.source != 0 && r.cls.treat == treatEncrypt:
			used = append(used, a+"="+r.source.String())
		case r.discWhy != "":
			failed = append(failed, a+" ("+r.discWhy+")")
		}
	}
	var out []slog.Attr
	if len(used) > 0 {
		out = append(out, slog.String("discovered", strings.Join(used, ",")))
	}
	if len(failed) > 0 {
		out = append(out, slog.String("discovery_failed", strings.Join(failed, "; ")))
	}
	return out
}

// discoveryTempfail is the plan for a message with such a recipient.
func discoveryTempfail(r rcpt) *Plan {
	a := bareAddr(r.addr)
	return &Plan{
		Action:   Tempfail,
		Reply:    DiscoveryTempfailReply(a),
		Decision: "tempfailed",
		Attrs:    []slog.Attr{slog.String("reason", "key discovery failed temporarily"), slog.String("rcpt", a), slog.String("discovery", r.discWhy)},
	}
}
