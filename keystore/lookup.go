package keystore

import (
	"crypto/x509"
	"fmt"
	"sort"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/crypto"
)

// pin returns the normalised pinned fingerprint/hash for addr, or "".
func (s *Snapshot) pin(norm string) string {
	if len(s.opts.Pins) == 0 {
		return ""
	}
	return s.pins[norm]
}

// Purposes of an OpenPGP key lookup.
const (
	purposeEncrypt = iota
	purposeSign
)

// choosePGP returns the key to use among candidates for the normalised
// address: the pinned one if a pin exists, else the newest (primary key
// creation time, then fingerprint) that is usable for purpose at t.
func (s *Snapshot) choosePGP(norm string, cands []*pgpKey, t time.Time, purpose int) (*pgpKey, error) {
	if norm == "" {
		return nil, fmt.Errorf("%w: not an address", ErrNoKey)
	}
	pin := s.pin(norm)
	var best *pgpKey
	var lastErr error
	for _, k := range cands {
		if pin != "" && k.fpr != pin {
			continue
		}
		if err := k.usableFor(purpose, norm, t); err != nil {
			lastErr = fmt.Errorf("key %s: %w", k.fpr, err)
			continue
		}
		if best == nil || newerPGP(k, best) {
			best = k
		}
	}
	if best == nil {
		if lastErr == nil {
			if pin != "" {
				return nil, fmt.Errorf("%w for %s: pinned key %s not in keystore", ErrNoKey, norm, pin)
			}
			return nil, fmt.Errorf("%w for %s", ErrNoKey, norm)
		}
		return nil, fmt.Errorf("%w for %s: %w", ErrNoKey, norm, lastErr)
	}
	return best, nil
}

func newerPGP(a, b *pgpKey) bool {
	ta, tb := a.created, b.created
	if !ta.Equal(tb) {
		return ta.After(tb)
	}
	return a.fpr < b.fpr
}

// EncryptionKey returns the correspondent's OpenPGP public key to encrypt
// to at time t: the pinned key if the address is pinned, else the newest
// key (by creation time) whose user ID for addr is validly self-signed,
// not expired or revoked, with an acceptable algorithm and a usable
// encryption (sub)key. Sign-only, expired and revoked keys are never
// chosen. The error wraps ErrNoKey when there is none, or ErrUnavailable
// when there is none and openpgp/ could not be read (see Unavailable).
func (s *Snapshot) EncryptionKey(addr string, t time.Time) (*crypto.Key, error) {
	norm := s.opts.norm(addr)
	k, err := s.choosePGP(norm, s.pgpByAddr[norm], t, purposeEncrypt)
	if err != nil {
		if u := s.unavailableFor(AreaOpenPGP, norm); u != nil {
			return nil, u
		}
		return nil, err
	}
	return k.key, nil
}

// OpenPGPByKeyID returns the keys (correspondents' and the gateway's public
// halves are not separated: secret keys come back as they are) whose
// primary key or a subkey has the given key ID. Use it to find the signer
// of a signature.
func (s *Snapshot) OpenPGPByKeyID(keyID uint64) []*crypto.Key {
	var out []*crypto.Key
	for _, k := range s.pgpByKeyID[keyID] {
		if ck := k.cryptoKey(); ck != nil {
			out = append(out, ck)
		}
	}
	return out
}

// GatewayOpenPGPAt returns the gateway's unlocked secret key for addr
// that can sign at t (newest first; a pin applies). A key that is expired
// or revoked is never chosen: it is kept for decryption only. The error
// wraps ErrNoKey, or ErrUnavailable when the gateway's OpenPGP keys are
// not all known (see Unavailable).
func (s *Snapshot) GatewayOpenPGPAt(addr string, t time.Time) (*crypto.Key, error) {
	norm := s.opts.norm(addr)
	k, err := s.choosePGP(norm, s.gwByAddr[norm], t, purposeSign)
	if err != nil {
		if u := s.unavailableFor(AreaGatewayOpenPGP, norm); u != nil {
			return nil, u
		}
		return nil, err
	}
	return k.key, nil
}

// GatewayDecryptionKeyRing returns all unlocked gateway OpenPGP secret
// keys, expired and revoked ones included (old mail must still decrypt).
// When none of them decrypts a message, ask Unavailable(AreaGatewayOpenPGP)
// whether a key might be missing.
func (s *Snapshot) GatewayDecryptionKeyRing() *crypto.KeyRing {
	kr, _ := crypto.NewKeyRing(nil)
	for _, k := range s.gwPGP {
		kr.AddKey(k.key)
	}
	return kr
}

// GatewayAddresses lists the addresses that have a gateway identity
// (OpenPGP or S/MIME), sorted.
func (s *Snapshot) GatewayAddresses() []string {
	set := map[string]bool{}
	for a := range s.gwByAddr {
		set[a] = true
	}
	for a := range s.smimeByAddr {
		set[a] = true
	}
	out := make([]string, 0, len(set))
	for a := range set {
		out = append(out, a)
	}
	sort.Strings(out)
	return out
}

// Certificate returns the correspondent's certificate to encrypt to at t:
// pinned, else the one valid at t with the latest NotBefore (then hash),
// RSA ≥ 2048 bits, key usage allowing key encipherment, extended key usage
// e-mail protection or none, not revoked by a loaded CRL. The error wraps
// ErrNoKey, or ErrUnavailable when certs/ could not be read and nothing
// was found, or when crl/ could not be read (revocation unknown).
func (s *Snapshot) Certificate(addr string, t time.Time) (*x509.Certificate, error) {
	if u := s.unavailableFor(AreaCRL, s.opts.norm(addr)); u != nil {
		return nil, u
	}
	c, err := s.chooseCert(addr, t, func(c *certEntry) error { return c.encryptionUsable(t, s.crls) })
	if err != nil {
		if u := s.unavailableFor(AreaCerts, s.opts.norm(addr)); u != nil {
			return nil, u
		}
		return nil, err
	}
	return c, nil
}

// CertificateByHash returns the correspondent certificate with that
// SHA-256 hash of its DER encoding.
func (s *Snapshot) CertificateByHash(hash string) (*x509.Certificate, bool) {
	c, ok := s.certByHash[normFpr(hash)]
	if !ok {
		return nil, false
	}
	return c.cert, true
}

func (s *Snapshot) chooseCert(addr string, t time.Time, usable func(*certEntry) error) (*x509.Certificate, error) {
	norm := s.opts.norm(addr)
	if norm == "" {
		return nil, fmt.Errorf("%w: %q is not an address", ErrNoKey, addr)
	}
	pin := s.pin(norm)
	var best *certEntry
	var lastErr error
	for _, c := range s.certByAddr[norm] {
		if pin != "" && c.hash != pin {
			continue
		}
		if err := usable(c); err != nil {
			lastErr = fmt.Errorf("certificate %s: %w", c.hash, err)
			continue
		}
		if best == nil || c.cert.NotBefore.After(best.cert.NotBefore) ||
			(c.cert.NotBefore.Equal(best.cert.NotBefore) && c.hash < best.hash) {
			best = c
		}
	}
	if best == nil {
		if lastErr != nil {
			return nil, fmt.Errorf("%w for %s: %w", ErrNoKey, norm, lastErr)
		}
		return nil, fmt.Errorf("%w for %s", ErrNoKey, norm)
	}
	return best.cert, nil
}

// TrustAnchors returns the S/MIME trust anchors (a fresh pool each call).
func (s *Snapshot) TrustAnchors() *x509.CertPool { return s.anchorPool.Clone() }

// CRLs returns the CRLs signed by a trust anchor.
func (s *Snapshot) CRLs() []*x509.RevocationList {
	return append([]*x509.RevocationList(nil), s.crls...)
}

// IsRevoked reports whether a loaded CRL revokes the certificate at t.
func (s *Snapshot) IsRevoked(c *x509.Certificate, t time.Time) bool { return revoked(c, t, s.crls) }

// GatewaySMIME returns the gateway S/MIME identity for addr whose
// certificate is valid now (latest NotBefore first).
func (s *Snapshot) GatewaySMIME(addr string) (*SMIMEIdentity, error) {
	return s.GatewaySMIMEAt(addr, time.Now())
}

// GatewaySMIMEAt returns the gateway S/MIME identity for addr whose
// certificate is valid at t and not revoked (latest NotBefore first); an
// expired or revoked identity is kept for decryption only. The error
// wraps ErrNoKey, or ErrUnavailable when the gateway's S/MIME identities
// are not all known (see Unavailable).
func (s *Snapshot) GatewaySMIMEAt(addr string, t time.Time) (*SMIMEIdentity, error) {
	norm := s.opts.norm(addr)
	id, err := s.gatewaySMIMEAt(norm, t)
	if err != nil {
		if u := s.unavailableFor(AreaGatewaySMIME, norm); u != nil {
			return nil, u
		}
		return nil, err
	}
	return id, nil
}

func (s *Snapshot) gatewaySMIMEAt(norm string, t time.Time) (*SMIMEIdentity, error) {
	var best *SMIMEIdentity
	var lastErr error
	for _, id := range s.smimeByAddr[norm] {
		if err := id.signingUsable(t, s.crls); err != nil {
			lastErr = fmt.Errorf("certificate %s: %w", id.hash, err)
			continue
		}
		if best == nil || id.Cert.NotBefore.After(best.Cert.NotBefore) {
			best = id
		}
	}
	if best == nil {
		if lastErr != nil {
			return nil, fmt.Errorf("%w: gateway S/MIME identity for %s: %w", ErrNoKey, norm, lastErr)
		}
		return nil, fmt.Errorf("%w: no gateway S/MIME identity for %s", ErrNoKey, norm)
	}
	return best, nil
}

// GatewaySMIMEAll returns every gateway S/MIME identity (for decryption:
// expired and revoked ones included). When none of them decrypts a
// message, ask Unavailable(AreaGatewaySMIME) whether one might be missing.
func (s *Snapshot) GatewaySMIMEAll() []*SMIMEIdentity {
	return append([]*SMIMEIdentity(nil), s.smime...)
}
