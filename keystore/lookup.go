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
// encryption (sub)key. The error wraps ErrNoKey when there is none.
func (s *Snapshot) EncryptionKey(addr string, t time.Time) (*crypto.Key, error) {
	norm := s.opts.norm(addr)
	k, err := s.choosePGP(norm, s.pgpByAddr[norm], t, purposeEncrypt)
	if err != nil {
		return nil, err
	}
	return k.key, nil
}

// HasOpenPGP reports cheaply whether any OpenPGP key is indexed for addr
// (usable or not).
func (s *Snapshot) HasOpenPGP(addr string) bool { return len(s.pgpByAddr[s.opts.norm(addr)]) > 0 }

// HasCertificate reports cheaply whether any certificate is indexed for addr.
func (s *Snapshot) HasCertificate(addr string) bool {
	return len(s.certByAddr[s.opts.norm(addr)]) > 0
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

// OpenPGPByFingerprint returns the key with that primary fingerprint (hex,
// any case, spaces allowed).
func (s *Snapshot) OpenPGPByFingerprint(fpr string) (*crypto.Key, bool) {
	k, ok := s.pgpByFpr[normFpr(fpr)]
	if !ok || k.cryptoKey() == nil {
		return nil, false
	}
	return k.key, true
}

// OpenPGPAddresses returns the normalised addresses of the user IDs of the
// key with that fingerprint that are validly self-signed at t.
func (s *Snapshot) OpenPGPAddresses(fpr string, t time.Time) []string {
	k, ok := s.pgpByFpr[normFpr(fpr)]
	if !ok {
		return nil
	}
	var out []string
	for _, a := range k.addrs {
		if k.addrValid(a, t) {
			out = append(out, a)
		}
	}
	return out
}

// VerificationUsable returns nil if signatures made by the key with that
// fingerprint are acceptable at t (key valid, not expired or revoked, a
// signing-capable (sub)key, acceptable algorithms). The error wraps
// ErrNoKey.
func (s *Snapshot) VerificationUsable(fpr string, t time.Time) error {
	k, ok := s.pgpByFpr[normFpr(fpr)]
	if !ok {
		return fmt.Errorf("%w: %s not in keystore", ErrNoKey, fpr)
	}
	if err := k.signingUsable(t); err != nil {
		return fmt.Errorf("%w: key %s: %w", ErrNoKey, k.fpr, err)
	}
	return nil
}

// VerificationKeyRing returns every OpenPGP key of the keystore
// (correspondents' public keys and the gateway's keys) for signature
// verification. It is built on first use; with a very large keystore
// prefer OpenPGPByKeyID with the signature's issuer.
func (s *Snapshot) VerificationKeyRing() *crypto.KeyRing {
	s.verifyOnce.Do(func() {
		kr, _ := crypto.NewKeyRing(nil)
		for _, k := range s.gwPGP {
			if pub, err := k.key.ToPublic(); err == nil {
				warmEntity(pub.GetEntity())
				kr.AddKey(pub)
			}
		}
		for _, k := range s.pgp {
			if ck := k.cryptoKey(); ck != nil {
				kr.AddKey(ck)
			}
		}
		s.verifyRing = kr
	})
	return s.verifyRing
}

// GatewayOpenPGP returns the gateway's unlocked secret key for addr that
// can sign at the current time (newest first; a pin applies).
func (s *Snapshot) GatewayOpenPGP(addr string) (*crypto.Key, error) {
	return s.GatewayOpenPGPAt(addr, time.Now())
}

// GatewayOpenPGPAt is GatewayOpenPGP at time t.
func (s *Snapshot) GatewayOpenPGPAt(addr string, t time.Time) (*crypto.Key, error) {
	norm := s.opts.norm(addr)
	k, err := s.choosePGP(norm, s.gwByAddr[norm], t, purposeSign)
	if err != nil {
		return nil, err
	}
	return k.key, nil
}

// GatewayDecryptionKeyRing returns all unlocked gateway OpenPGP secret
// keys, expired ones included (old mail must still decrypt).
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
// ErrNoKey.
func (s *Snapshot) Certificate(addr string, t time.Time) (*x509.Certificate, error) {
	return s.chooseCert(addr, t, func(c *certEntry) error { return c.encryptionUsable(t, s.crls) })
}

// SigningCertificates returns the correspondent certificates for addr that
// may vouch for a signature at t (for pinning a signer to a known
// certificate); chain validation against TrustAnchors is separate.
func (s *Snapshot) SigningCertificates(addr string, t time.Time) []*x509.Certificate {
	var out []*x509.Certificate
	for _, c := range s.certByAddr[s.opts.norm(addr)] {
		if c.signingUsable(t, s.crls) == nil {
			out = append(out, c.cert)
		}
	}
	return out
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

// GatewaySMIMEAt is GatewaySMIME at time t.
func (s *Snapshot) GatewaySMIMEAt(addr string, t time.Time) (*SMIMEIdentity, error) {
	norm := s.opts.norm(addr)
	var best *SMIMEIdentity
	var lastErr error
	for _, id := range s.smimeByAddr[norm] {
		if err := certTimeValid(id.Cert, t); err != nil {
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
// expired ones included).
func (s *Snapshot) GatewaySMIMEAll() []*SMIMEIdentity {
	return append([]*SMIMEIdentity(nil), s.smime...)
}
