package openpgp

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
)

// ErrNoUsableKey means a signer or recipient key cannot be used now
// (expired, revoked, no signing or encryption capability, locked).
var ErrNoUsableKey = errors.New("openpgp: key is not usable")

// outboundProfile is gopenpgp's Default profile: v4 signatures, SHA-256,
// AES-256, no AEAD. SEIPDv1 is further forced by v1View.
func outboundProfile() *profile.Custom { return profile.Default() }

// SignEncrypt writes an armored "PGP MESSAGE" holding plaintext signed by
// signer (one-pass signature, SHA-256) and encrypted to every recipient,
// in the profile GnuPG 2.2 reads: v4 PKESK, SEIPDv1 with MDC, AES-256 (or
// the best cipher all recipients prefer), never AEAD/SEIPDv2 even when a
// recipient key advertises it, no compression. The literal data is
// binary, so the plaintext bytes (a CRLF MIME entity) come out unchanged.
// With hiddenRecipients every PKESK carries key ID 0 (the "anonymous
// recipient" of gpg) and no intended-recipient fingerprints are signed.
// Data is streamed: memory does not grow with the plaintext size.
// signer may be nil for an unsigned message.
func SignEncrypt(w io.Writer, plaintext io.Reader, signer *pgpcrypto.Key, recipients []*pgpcrypto.Key, hiddenRecipients bool) error {
	return signEncryptAt(w, plaintext, signer, recipients, hiddenRecipients, time.Now())
}

func signEncryptAt(w io.Writer, plaintext io.Reader, signer *pgpcrypto.Key, recipients []*pgpcrypto.Key, hiddenRecipients bool, now time.Time) error {
	if len(recipients) == 0 {
		return errors.New("openpgp: sign and encrypt: no recipients")
	}
	kr, err := pgpcrypto.NewKeyRing(nil)
	if err != nil {
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	for _, rk := range recipients {
		if rk == nil || rk.GetEntity() == nil {
			return errors.New("openpgp: sign and encrypt: nil recipient key")
		}
		pub, err := pgpcrypto.NewKeyFromEntity(v1View(rk.GetEntity()))
		if err != nil {
			return fmt.Errorf("openpgp: sign and encrypt: %w", err)
		}
		if !pub.CanEncrypt(now.Unix()) {
			return fmt.Errorf("openpgp: sign and encrypt: recipient %s: %w", rk.GetFingerprint(), ErrNoUsableKey)
		}
		if err := kr.AddKey(pub); err != nil {
			return fmt.Errorf("openpgp: sign and encrypt: %w", err)
		}
	}
	b := pgpcrypto.PGPWithProfile(outboundProfile()).Encryption().EncryptionTime(now.Unix()).SignTime(now.Unix())
	if hiddenRecipients {
		b = b.HiddenRecipients(kr)
	} else {
		b = b.Recipients(kr)
	}
	if signer != nil {
		if !signer.CanVerify(now.Unix()) {
			return fmt.Errorf("openpgp: sign and encrypt: signer %s: %w", signer.GetFingerprint(), ErrNoUsableKey)
		}
		b = b.SigningKey(signer)
	}
	h, err := b.New()
	if err != nil {
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	// gopenpgp writes binary packets; the gateway's own armor encoder
	// (armor.go) armors them, with go-crypto's exact output at a fifth of
	// its cost. It writes whole blocks of lines, so w needs no buffer.
	aw, err := newArmorWriter(w, "PGP MESSAGE")
	if err != nil {
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	wc, err := h.EncryptingWriter(aw, pgpcrypto.Bytes)
	if err != nil {
		aw.Close()
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	if err := copyPooled(wc, plaintext); err != nil {
		wc.Close()
		aw.Close()
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	if err := wc.Close(); err != nil {
		aw.Close()
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	if err := aw.Close(); err != nil {
		return fmt.Errorf("openpgp: sign and encrypt: %w", err)
	}
	return nil
}

// v1View returns a shallow copy of e whose self-signatures do not
// advertise SEIPDv2 (or AEAD cipher suites), so that go-crypto encrypts
// with SEIPDv1 + MDC, which GnuPG 2.2 reads. e itself is not modified.
func v1View(e *openpgp.Entity) *openpgp.Entity {
	c := *e
	c.Identities = make(map[string]*openpgp.Identity, len(e.Identities))
	for name, id := range e.Identities {
		ic := *id
		ic.SelfCertifications = v1Sigs(id.SelfCertifications)
		c.Identities[name] = &ic
	}
	c.DirectSignatures = v1Sigs(e.DirectSignatures)
	return &c
}

func v1Sigs(in []*packet.VerifiableSignature) []*packet.VerifiableSignature {
	if in == nil {
		return nil
	}
	out := make([]*packet.VerifiableSignature, len(in))
	for i, vs := range in {
		p := *vs.Packet
		p.SEIPDv2 = false
		p.PreferredCipherSuites = nil
		out[i] = &packet.VerifiableSignature{Valid: vs.Valid, Packet: &p}
	}
	return out
}

// SignDetached writes an armored detached binary (0x00) signature over
// data by signer and returns the RFC 3156 micalg of its hash (for example
// "pgp-sha256"). Bare LF line ends in data are hashed as CRLF, so the
// signature verifies over the CRLF-canonical entity that goes on the wire;
// callers should pass that entity anyway. Data is streamed.
func SignDetached(w io.Writer, data io.Reader, signer *pgpcrypto.Key) (micalg string, err error) {
	return signDetachedAt(w, data, signer, time.Now())
}

func signDetachedAt(w io.Writer, data io.Reader, signer *pgpcrypto.Key, now time.Time) (string, error) {
	if signer == nil || !signer.CanVerify(now.Unix()) {
		return "", fmt.Errorf("openpgp: sign detached: %w", ErrNoUsableKey)
	}
	h, err := pgpcrypto.PGPWithProfile(outboundProfile()).Sign().SigningKey(signer).Detached().SignTime(now.Unix()).New()
	if err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	var sig bytes.Buffer
	wc, err := h.SigningWriter(&sig, pgpcrypto.Bytes)
	if err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	cw := openpgp.NewCanonicalTextWriteCloser(nopWriteCloser{wc})
	if _, err := io.Copy(cw, bufio.NewReaderSize(data, 32<<10)); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	if err := cw.Close(); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	if err := wc.Close(); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	p, err := packet.Read(bytes.NewReader(sig.Bytes()))
	if err != nil {
		return "", fmt.Errorf("openpgp: sign detached: parse own signature: %w", err)
	}
	sp, ok := p.(*packet.Signature)
	if !ok || Micalg(sp.Hash) == "" {
		return "", errors.New("openpgp: sign detached: unexpected signature")
	}
	aw, err := newArmorWriter(w, "PGP SIGNATURE")
	if err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	if _, err := aw.Write(sig.Bytes()); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	if err := aw.Close(); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	if _, err := io.WriteString(w, "\n"); err != nil {
		return "", fmt.Errorf("openpgp: sign detached: %w", err)
	}
	return Micalg(sp.Hash), nil
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// Prepare verifies and caches, once, every self-signature, binding and
// revocation of the key, so that later use of the same key from several
// goroutines only reads it. go-crypto verifies those signatures lazily
// and stores the result in the key: without Prepare, concurrent first use
// of a shared key is a data race. Call it when a keyring snapshot is
// built; it is cheap on a key already prepared.
func Prepare(k *pgpcrypto.Key) {
	if k == nil || k.GetEntity() == nil {
		return
	}
	e := k.GetEntity()
	cfg := &packet.Config{}
	// Asking for the latest valid signature as of each signature's own
	// creation time makes go-crypto verify (and cache) that signature.
	e.Revoked(time.Time{})
	for _, vs := range e.DirectSignatures {
		e.LatestValidDirectSignature(vs.Packet.CreationTime, cfg)
	}
	for _, id := range e.Identities {
		for _, vs := range id.SelfCertifications {
			id.LatestValidSelfCertification(vs.Packet.CreationTime, cfg)
		}
		id.Revoked(nil, time.Time{}, cfg)
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		for _, vs := range sk.Bindings {
			sk.LatestValidBindingSignature(vs.Packet.CreationTime, cfg)
		}
		sk.Revoked(nil, time.Time{})
	}
}
