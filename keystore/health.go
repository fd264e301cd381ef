package keystore

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"
)

// Area is a part of the keystore that lookups depend on.
type Area int

// The areas, one per directory that holds keys.
const (
	AreaOpenPGP        Area = iota // openpgp/: correspondents' OpenPGP keys
	AreaCerts                      // certs/: correspondents' certificates
	AreaCA                         // ca/: S/MIME trust anchors
	AreaCRL                        // crl/: revocation lists
	AreaGatewayOpenPGP             // private/openpgp/: the gateway's OpenPGP secret keys
	AreaGatewaySMIME               // private/smime/: the gateway's S/MIME identities
	numAreas
)

var areaNames = [numAreas]string{"correspondents' OpenPGP keys (" + DirOpenPGP + "/)",
	"correspondents' certificates (" + DirCerts + "/)", "trust anchors (" + DirCA + "/)", "CRLs (" + DirCRL + "/)",
	"gateway OpenPGP secret keys (" + DirPrivate + "/" + PrivOpenPGP + "/)",
	"gateway S/MIME identities (" + DirPrivate + "/" + PrivSMIME + "/)"}

func (a Area) String() string {
	if a < 0 || a >= numAreas {
		return fmt.Sprintf("area %d", int(a))
	}
	return areaNames[a]
}

// areasOf returns the areas a path relative to the keystore belongs to
// (private/ itself holds both gateway areas).
func areasOf(rel string) []Area {
	rel = filepath.ToSlash(rel)
	under := func(d string) bool { return rel == d || strings.HasPrefix(rel, d+"/") }
	switch {
	case under(DirOpenPGP):
		return []Area{AreaOpenPGP}
	case under(DirCerts):
		return []Area{AreaCerts}
	case under(DirCA):
		return []Area{AreaCA}
	case under(DirCRL):
		return []Area{AreaCRL}
	case under(DirPrivate + "/" + PrivOpenPGP):
		return []Area{AreaGatewayOpenPGP}
	case under(DirPrivate + "/" + PrivSMIME):
		return []Area{AreaGatewaySMIME}
	case under(DirPrivate):
		return []Area{AreaGatewayOpenPGP, AreaGatewaySMIME}
	}
	return nil
}

// Faults lists the files and directories that could not be read (or were
// refused for unsafe permissions) at this load, with whether what an
// earlier load read there is still in service.
func (s *Snapshot) Faults() []Fault { return append([]Fault(nil), s.faults...) }

// Unavailable returns nil when the keys of area are all known: everything
// there was read, or kept from an earlier load. Otherwise it returns an
// *UnavailableError (wrapping ErrUnavailable) naming what could not be
// read; for the gateway's areas, a secret file that could not be used (a
// damaged file, a missing passphrase) counts too, since it may be the
// identity mail needs.
//
// The lookups of the area (EncryptionKey, Certificate, GatewayOpenPGPAt,
// GatewaySMIMEAt) return this error instead of ErrNoKey when they find
// nothing. The engine must ask itself where no lookup tells it: a
// message encrypted to the gateway that none of GatewayDecryptionKeyRing
// (or GatewaySMIMEAll) decrypts is tempfailed while
// Unavailable(AreaGatewayOpenPGP) (or AreaGatewaySMIME) is non-nil; a
// certificate chain is not called valid while AreaCA or AreaCRL is.
func (s *Snapshot) Unavailable(a Area) error {
	if a < 0 || a >= numAreas || len(s.unavail[a]) == 0 {
		return nil
	}
	return &UnavailableError{Area: a, Faults: append([]Fault(nil), s.unavail[a]...)}
}

// unavailableFor is the lookup error for addr when area is unavailable,
// or nil.
func (s *Snapshot) unavailableFor(a Area, addr string) error {
	if len(s.unavail[a]) == 0 {
		return nil
	}
	return &UnavailableError{Area: a, Addr: addr, Faults: append([]Fault(nil), s.unavail[a]...)}
}

// computeUnavailable fills s.unavail from the faults that kept nothing and,
// for the gateway's areas, the secret files that could not be used.
func (s *Snapshot) computeUnavailable() {
	for _, f := range s.faults {
		if f.Kept {
			continue
		}
		for _, a := range areasOf(f.Path) {
			s.unavail[a] = append(s.unavail[a], f)
		}
	}
	for _, p := range s.secretProblems {
		for _, a := range areasOf(p.File) {
			s.unavail[a] = append(s.unavail[a], Fault{Path: p.File, Err: p.Err})
		}
	}
}

// Health says whether the daemon may call itself healthy at t: the last
// reload succeeded, nothing in the keystore is unreadable, every gateway
// secret file is usable and at least one gateway identity can sign at t.
// reasons has one line per problem (for /healthz and the log).
func (h *Holder) Health(t time.Time) (ok bool, reasons []string) {
	s := h.Current()
	if err := h.reloadErr.Load(); err != nil {
		reasons = append(reasons, fmt.Sprintf("last reload failed, serving the keyring loaded at %s: %v",
			s.loadedAt.UTC().Format(time.RFC3339), *err))
	}
	for _, f := range s.faults {
		reasons = append(reasons, f.String())
	}
	for _, p := range s.secretProblems {
		reasons = append(reasons, p.File+": gateway secret unusable: "+p.Err.Error())
	}
	if !s.canSign(t) {
		reasons = append(reasons, "no gateway identity can sign: no usable secret key or S/MIME identity")
	}
	return len(reasons) == 0, reasons
}

// canSign reports whether some gateway key or identity is usable for
// signing at t.
func (s *Snapshot) canSign(t time.Time) bool {
	for _, k := range s.gwPGP {
		for _, a := range k.addrs {
			if k.usableFor(purposeSign, a, t) == nil {
				return true
			}
		}
	}
	for _, id := range s.smime {
		if id.signingUsable(t, s.crls) == nil {
			return true
		}
	}
	return false
}
