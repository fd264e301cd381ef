package keystore

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Entry describes one key or certificate for `cryptmilter keys list`; its
// JSON form is the stable output of `keys list --json` (every field is
// always present; see README).
type Entry struct {
	Protocol    string     `json:"protocol"` // "openpgp" or "smime"
	Kind        string     `json:"kind"`     // "public", "secret" (gateway), "certificate", "identity" (gateway), "ca", "discovered"
	Addresses   []string   `json:"addresses"`
	Fingerprint string     `json:"fingerprint"` // OpenPGP fingerprint, or SHA-256 of the certificate
	Algorithm   string     `json:"algorithm"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires"` // null: never
	// Usable says whether it serves its main purpose at the time asked:
	// encryption for correspondents' keys and certificates, signing for
	// the gateway's, being a trust anchor for CA certificates.
	Usable bool `json:"usable"`
	// Uses lists what it may be used for at that time: "encrypt",
	// "verify" (correspondents'), "sign", "decrypt" (the gateway's),
	// "anchor" (CA certificates). A sign-only key is ["verify"], an
	// expired gateway key kept after a rollover ["decrypt"].
	Uses    []string `json:"uses"`
	Reason  string   `json:"reason"`  // why not usable ("" when usable)
	Subject string   `json:"subject"` // of a certificate ("" for OpenPGP)
	File    string   `json:"file"`    // relative to the keystore
	// Source is where a discovered key came from ("wkd", "dane"; "" for
	// the admin's keys).
	Source string `json:"source"`
}

// Uses of keys, as in Entry.Uses.
const (
	UseEncrypt = "encrypt"
	UseVerify  = "verify"
	UseSign    = "sign"
	UseDecrypt = "decrypt"
	UseAnchor  = "anchor"
)

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC()
	return &t
}

// Entries lists every loaded key and certificate with its usability at t,
// sorted by protocol, kind, first address and fingerprint.
func (s *Snapshot) Entries(t time.Time) []Entry {
	s.readyAll()
	return s.entries(t, s.gwPGP, s.pgp, s.smime, s.certs, s.anchors)
}

func (s *Snapshot) entries(t time.Time, gw, pub []*pgpKey, ids []*SMIMEIdentity, certs, anchors []*certEntry) []Entry {
	out := []Entry{}
	pgpEntry := func(k *pgpKey, kind string) Entry {
		e := Entry{Protocol: "openpgp", Kind: kind, Addresses: k.addrs, Fingerprint: k.fpr, Algorithm: k.algorithm(),
			Created: k.created.UTC(), Uses: []string{}, File: k.file}
		if e.Addresses == nil {
			e.Addresses = []string{}
		}
		exp := k.expiry()
		var err error
		if kind == "secret" {
			err = usableForSomeAddr(k, t, (*pgpKey).signingUsable)
			if err == nil {
				e.Uses = append(e.Uses, UseSign)
			}
			if k.canDecrypt() {
				e.Uses = append(e.Uses, UseDecrypt)
			}
		} else {
			err = usableForSomeAddr(k, t, (*pgpKey).encryptionUsable)
			if err == nil {
				e.Uses = append(e.Uses, UseEncrypt)
				if ee := k.encryptionExpiry(); !ee.IsZero() && (exp.IsZero() || ee.Before(exp)) {
					exp = ee
				}
			}
			if usableForSomeAddr(k, t, (*pgpKey).signingUsable) == nil {
				e.Uses = append(e.Uses, UseVerify)
			}
		}
		e.Expires = timePtr(exp)
		if err != nil {
			e.Reason = err.Error()
		} else {
			e.Usable = true
		}
		return e
	}
	for _, k := range gw {
		out = append(out, pgpEntry(k, "secret"))
	}
	for _, k := range pub {
		out = append(out, pgpEntry(k, "public"))
	}
	certEntryOf := func(c *x509.Certificate, file, hash string, addrs []string, kind string, err error, uses ...string) Entry {
		e := Entry{Protocol: "smime", Kind: kind, Addresses: addrs, Fingerprint: hash, Algorithm: certAlgorithm(c),
			Created: c.NotBefore.UTC(), Expires: timePtr(c.NotAfter), Uses: uses, Subject: subjectString(c), File: file}
		if e.Addresses == nil {
			e.Addresses = []string{}
		}
		if e.Uses == nil {
			e.Uses = []string{}
		}
		if err != nil {
			e.Reason = err.Error()
		} else {
			e.Usable = true
		}
		return e
	}
	for _, id := range ids {
		err := id.signingUsable(t, s.crls)
		uses := []string{UseDecrypt}
		if err == nil {
			uses = []string{UseSign, UseDecrypt}
		}
		out = append(out, certEntryOf(id.Cert, id.File, id.hash, id.Addresses, "identity", err, uses...))
	}
	for _, c := range certs {
		err := c.encryptionUsable(t, s.crls)
		var uses []string
		if err == nil {
			uses = append(uses, UseEncrypt)
		}
		if c.signingUsable(t, s.crls) == nil {
			uses = append(uses, UseVerify)
		}
		out = append(out, certEntryOf(c.cert, c.file, c.hash, c.addrs, "certificate", err, uses...))
	}
	for _, c := range anchors {
		err := certTimeValid(c.cert, t)
		var uses []string
		if err == nil {
			uses = append(uses, UseAnchor)
		}
		out = append(out, certEntryOf(c.cert, c.file, c.hash, c.addrs, "ca", err, uses...))
	}
	kindOrder := map[string]int{"secret": 0, "identity": 0, "public": 1, "certificate": 1, "ca": 2}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Protocol != b.Protocol {
			return a.Protocol < b.Protocol
		}
		if kindOrder[a.Kind] != kindOrder[b.Kind] {
			return kindOrder[a.Kind] < kindOrder[b.Kind]
		}
		fa, fb := first(a.Addresses), first(b.Addresses)
		if fa != fb {
			return fa < fb
		}
		return a.Fingerprint < b.Fingerprint
	})
	return out
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

// Finding is one thing `keys check` reports.
type Finding struct {
	File    string `json:"file"` // relative to the keystore, or "(gateway ADDR)", "(config)"
	Message string `json:"message"`
	// Problem is true for what needs the admin's action (and makes
	// `keys check` fail); false for a note (a key kept for old signatures
	// or old mail, a sign-only key).
	Problem bool  `json:"problem"`
	Err     error `json:"-"` // the error behind it, if any (*PermissionError, *ReadError, …)
}

func (f Finding) String() string { return f.File + ": " + f.Message }

// DefaultExpiryWarning is how far ahead `keys check` warns about
// expiring keys unless told otherwise.
const DefaultExpiryWarning = 30 * 24 * time.Hour

// Check lists everything an admin should act on at t (problems) or know
// about (notes): places that could not be read and files that could not
// be used (unsafe permissions included); gateway addresses (those with a
// gateway key or certificate, and identities) without a usable secret key
// for signing; keys and certificates that are unusable, or usable but
// expire within warn; files where nothing reads them and passphrase files
// without a key. Correspondents' keys kept only to verify signatures
// (sign-only, expired, revoked) and gateway keys kept only to decrypt
// (after a rollover) are notes.
func (s *Snapshot) Check(t time.Time, warn time.Duration, identities []string) []Finding {
	var out []Finding
	problem := func(file, msg string, err error) {
		out = append(out, Finding{File: file, Message: msg, Problem: true, Err: err})
	}
	note := func(file, msg string) { out = append(out, Finding{File: file, Message: msg}) }
	for _, f := range s.faults {
		problem(f.Path, strings.TrimPrefix(f.String(), f.Path+": "), f.Err)
	}
	for _, p := range s.problems {
		problem(p.File, p.Err.Error(), p.Err)
	}
	entries := s.Entries(t)
	// Gateway addresses: each protocol present must have a usable key.
	type gw struct{ pgp, pgpOK, smime, smimeOK bool }
	gws := map[string]*gw{}
	for _, a := range identities {
		if n := s.opts.norm(a); n != "" {
			gws[n] = &gw{}
		}
	}
	for _, e := range entries {
		if e.Kind != "secret" && e.Kind != "identity" {
			continue
		}
		for _, a := range e.Addresses {
			g := gws[a]
			if g == nil {
				g = &gw{}
				gws[a] = g
			}
			if e.Protocol == "openpgp" {
				g.pgp, g.pgpOK = true, g.pgpOK || e.Usable
			} else {
				g.smime, g.smimeOK = true, g.smimeOK || e.Usable
			}
		}
	}
	addrs := make([]string, 0, len(gws))
	for a := range gws {
		addrs = append(addrs, a)
	}
	sort.Strings(addrs)
	for _, a := range addrs {
		g := gws[a]
		switch {
		case !g.pgp && !g.smime:
			problem("(gateway "+a+")", "identity without any secret key or S/MIME identity", nil)
		case g.pgp && !g.pgpOK:
			problem("(gateway "+a+")", "no usable OpenPGP secret key: it cannot sign", nil)
		}
		if g.smime && !g.smimeOK {
			problem("(gateway "+a+")", "no usable S/MIME identity: it cannot sign", nil)
		}
	}
	for _, e := range entries {
		what := fmt.Sprintf("%s %s %s %s", e.Protocol, e.Kind, e.Fingerprint, strings.Join(e.Addresses, ","))
		switch {
		case e.Usable && e.Expires != nil && e.Expires.Sub(t) < warn:
			problem(e.File, fmt.Sprintf("%s: expires %s (in %d days)", what, e.Expires.Format(time.DateOnly), int(e.Expires.Sub(t).Hours()/24)), nil)
		case e.Usable:
		case len(e.Uses) > 0:
			note(e.File, fmt.Sprintf("%s: %s only: %s", what, strings.Join(e.Uses, "+"), e.Reason))
		case e.Kind != "secret" && e.Kind != "identity" && (e.Reason == errExpired.Error() || e.Reason == errRevoked.Error()):
			note(e.File, fmt.Sprintf("%s: %s: kept to verify old signatures", what, e.Reason))
		default:
			problem(e.File, fmt.Sprintf("%s: unusable: %s", what, e.Reason), nil)
		}
	}
	for _, o := range s.others {
		problem(o, "orphaned: not read by cryptmilter (see the keystore layout)", nil)
	}
	for _, f := range s.orphanPassphrases() {
		problem(f, "orphaned: passphrase file without a key file", nil)
	}
	return out
}

func (s *Snapshot) orphanPassphrases() []string {
	var out []string
	for _, sub := range []string{PrivOpenPGP, PrivSMIME} {
		d := DirPrivate + "/" + sub
		names, _ := readDirNames(s.opts.Dir + "/" + d)
		have := map[string]bool{}
		for _, n := range names {
			if !strings.HasSuffix(n, passSuffix) {
				have[strings.TrimSuffix(n, filepath.Ext(n))] = true
			}
		}
		for _, n := range names {
			if strings.HasSuffix(n, passSuffix) && !have[strings.TrimSuffix(n, passSuffix)] {
				out = append(out, d+"/"+n)
			}
		}
	}
	return out
}

// readyAll parses and verifies every OpenPGP key, in parallel.
func (s *Snapshot) readyAll() {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(s.pgp) {
					return
				}
				s.pgp[i].ready()
			}
		})
	}
	wg.Wait()
}
