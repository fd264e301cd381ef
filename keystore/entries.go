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

// Entry describes one key or certificate for `cryptmilter keys list`.
type Entry struct {
	Protocol    string     `json:"protocol"` // "openpgp" or "smime"
	Kind        string     `json:"kind"`     // "public", "secret" (gateway), "certificate", "identity" (gateway), "ca"
	Addresses   []string   `json:"addresses"`
	Fingerprint string     `json:"fingerprint"` // OpenPGP fingerprint, or SHA-256 of the certificate
	Algorithm   string     `json:"algorithm"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"` // nil: never
	Usable      bool       `json:"usable"`
	Reason      string     `json:"reason,omitempty"` // why not usable
	Subject     string     `json:"subject,omitempty"`
	File        string     `json:"file"`
}

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
	var out []Entry
	pgpEntry := func(k *pgpKey, kind string) Entry {
		e := Entry{Protocol: "openpgp", Kind: kind, Addresses: k.addrs, Fingerprint: k.fpr, Algorithm: k.algorithm(),
			Created: k.created.UTC(), File: k.file}
		exp := k.expiry()
		var err error
		if kind == "secret" {
			err = k.signingUsable(t)
		} else {
			err = k.encryptionUsable(t)
			if ee := k.encryptionExpiry(); err == nil && !ee.IsZero() && (exp.IsZero() || ee.Before(exp)) {
				exp = ee
			}
		}
		e.Expires = timePtr(exp)
		if err == nil {
			valid := 0
			for _, a := range k.addrs {
				if k.addrValid(a, t) {
					valid++
				}
			}
			if valid == 0 {
				err = fmt.Errorf("no validly self-signed user ID with an e-mail address")
			}
		}
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
	certEntryOf := func(c *x509.Certificate, file, hash string, addrs []string, kind string, err error) Entry {
		e := Entry{Protocol: "smime", Kind: kind, Addresses: addrs, Fingerprint: hash, Algorithm: certAlgorithm(c),
			Created: c.NotBefore.UTC(), Expires: timePtr(c.NotAfter), Subject: c.Subject.String(), File: file}
		if e.Addresses == nil {
			e.Addresses = []string{}
		}
		if err != nil {
			e.Reason = err.Error()
		} else {
			e.Usable = true
		}
		return e
	}
	for _, id := range ids {
		err := certTimeValid(id.Cert, t)
		if err == nil && revoked(id.Cert, t, s.crls) {
			err = fmt.Errorf("revoked")
		}
		out = append(out, certEntryOf(id.Cert, id.File, id.hash, id.Addresses, "identity", err))
	}
	for _, c := range certs {
		out = append(out, certEntryOf(c.cert, c.file, c.hash, c.addrs, "certificate", c.encryptionUsable(t, s.crls)))
	}
	for _, c := range anchors {
		err := certTimeValid(c.cert, t)
		out = append(out, certEntryOf(c.cert, c.file, c.hash, c.addrs, "ca", err))
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
	File    string `json:"file"`
	Message string `json:"message"`
}

func (f Finding) String() string { return f.File + ": " + f.Message }

// ExpiryWarning is how far ahead `check` warns about expiring keys.
const ExpiryWarning = 30 * 24 * time.Hour

// Check lists everything an admin should act on at t: files that could
// not be used (including unsafe permissions), keys and certificates that
// are unusable, expired or expire within ExpiryWarning, files in places
// where nothing reads them, and passphrase files without a key.
func (s *Snapshot) Check(t time.Time) []Finding {
	var out []Finding
	for _, p := range s.problems {
		out = append(out, Finding{File: p.File, Message: p.Err.Error()})
	}
	for _, e := range s.Entries(t) {
		what := fmt.Sprintf("%s %s %s %s", e.Protocol, e.Kind, e.Fingerprint, strings.Join(e.Addresses, ","))
		switch {
		case !e.Usable:
			out = append(out, Finding{File: e.File, Message: fmt.Sprintf("%s: unusable: %s", what, e.Reason)})
		case e.Expires != nil && e.Expires.Sub(t) < ExpiryWarning:
			out = append(out, Finding{File: e.File, Message: fmt.Sprintf("%s: expires %s (in %d days)", what,
				e.Expires.Format(time.DateOnly), int(e.Expires.Sub(t).Hours()/24))})
		}
	}
	for _, o := range s.others {
		out = append(out, Finding{File: o, Message: "orphaned: not read by cryptmilter (see the keystore layout)"})
	}
	for _, f := range s.orphanPassphrases() {
		out = append(out, Finding{File: f, Message: "orphaned: passphrase file without a key file"})
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
