package keystore

import (
	"bytes"
	gocrypto "crypto"
	"errors"
	"fmt"
	"io"
	"net/mail"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	pgperrors "github.com/ProtonMail/go-crypto/openpgp/errors"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
	"github.com/ProtonMail/gopenpgp/v3/crypto"

	cpgp "github.com/cryptmilter/cryptmilter/crypto/openpgp"
)

// maxKeyFileSize bounds every file read from the keystore or import.
const maxKeyFileSize = 64 << 20

// pgpConfig is the policy for using OpenPGP keys: RSA below 2047 bits
// (i.e. below the 2048-bit class) and MD5, SHA-1 and RIPEMD-160
// self-signatures are not acceptable.
var pgpConfig = &packet.Config{
	MinRSABits: 2047,
	RejectHashAlgorithms: map[gocrypto.Hash]bool{
		gocrypto.MD5: true, gocrypto.SHA1: true, gocrypto.RIPEMD160: true,
	},
}

// pgpKey is one OpenPGP key (an entity) from a file. Keys of the public
// directories are indexed from a cheap scan of their packets (fingerprint,
// key IDs, user ID addresses) and parsed and verified in full only when
// first used, so that a keyring of 100,000 keys loads in little time.
type pgpKey struct {
	file    string
	raw     []byte // the key's packets, binary (lazy keys)
	fpr     string // upper-case hex of the primary key fingerprint
	keyIDs  []uint64
	addrs   []string // normalised addresses of the user IDs, sorted, unique
	created time.Time
	secret  bool // holds secret key material (a gateway key)
	fold    bool // addresses were normalised with FoldLocalPart

	once      sync.Once
	ent       *openpgp.Entity
	key       *crypto.Key
	idsByAddr map[string][]*openpgp.Identity
	parseErr  error

	// Usability memos, one slot per purpose: the result of the last
	// evaluation and the interval over which it cannot change.
	memo [2]atomic.Pointer[usableMemo]
}

type usableMemo struct {
	norm        string
	from, until time.Time
	err         error
}

// usableFor returns nil if the key may be used for purpose (encryption,
// or signing) with the user ID address norm at t. Validity changes only at
// the creation and expiry times in the key, so a result is reused for
// later t up to the next such time.
func (k *pgpKey) usableFor(purpose int, norm string, t time.Time) error {
	slot := &k.memo[purpose]
	if m := slot.Load(); m != nil && m.norm == norm && !t.Before(m.from) && t.Before(m.until) {
		return m.err
	}
	var err error
	if !k.addrValid(norm, t) {
		if err = k.ready(); err == nil {
			err = fmt.Errorf("user ID %s not validly self-signed at %s", norm, t.UTC().Format(time.RFC3339))
		}
	} else if purpose == purposeEncrypt {
		err = k.encryptionUsable(t)
	} else {
		err = k.signingUsable(t)
	}
	if k.ready() == nil {
		slot.Store(&usableMemo{norm: norm, from: t, until: k.nextEvent(t), err: err})
	}
	return err
}

// nextEvent returns a time before which nothing about the key's validity
// changes after t: one second before the earliest creation or expiry time
// of a key or self-signature that lies after t.
func (k *pgpKey) nextEvent(t time.Time) time.Time {
	next := time.Unix(1<<40, 0)
	consider := func(x time.Time) {
		if x.After(t) && x.Before(next) {
			next = x
		}
	}
	lifetime := func(base time.Time, secs *uint32) {
		if secs != nil && *secs != 0 {
			consider(base.Add(time.Duration(*secs) * time.Second))
		}
	}
	sig := func(base time.Time, s *packet.VerifiableSignature) {
		p := s.Packet
		consider(p.CreationTime)
		lifetime(p.CreationTime, p.SigLifetimeSecs)
		lifetime(base, p.KeyLifetimeSecs)
		if p.EmbeddedSignature != nil {
			lifetime(p.EmbeddedSignature.CreationTime, p.EmbeddedSignature.SigLifetimeSecs)
		}
	}
	e := k.ent
	pc := e.PrimaryKey.CreationTime
	consider(pc)
	for _, id := range e.Identities {
		for _, s := range id.SelfCertifications {
			sig(pc, s)
		}
		for _, s := range id.Revocations {
			sig(pc, s)
		}
	}
	for _, s := range e.Revocations {
		sig(pc, s)
	}
	for _, s := range e.DirectSignatures {
		sig(pc, s)
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		consider(sk.PublicKey.CreationTime)
		for _, s := range sk.Bindings {
			sig(sk.PublicKey.CreationTime, s)
		}
		for _, s := range sk.Revocations {
			sig(sk.PublicKey.CreationTime, s)
		}
	}
	return next.Add(-time.Second)
}

// ready parses the key if it was only scanned, and verifies every
// self-signature once, filling go-crypto's per-signature cache. go-crypto
// otherwise verifies lazily and writes that cache on first use, which
// races when two goroutines use one key; after ready the entity is only
// read. Every use of k.ent or k.key must follow a successful ready.
func (k *pgpKey) ready() error {
	k.once.Do(func() {
		if k.ent == nil {
			e, err := openpgp.ReadEntity(packet.NewReader(bytes.NewReader(k.raw)))
			if err != nil {
				k.parseErr = fmt.Errorf("cannot parse key %s: %w", k.fpr, err)
				return
			}
			if got := strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint)); got != k.fpr {
				k.parseErr = fmt.Errorf("key %s: fingerprint mismatch", k.fpr)
				return
			}
			k.ent = e
			k.key, _ = crypto.NewKeyFromEntity(e)
		}
		warmEntity(k.ent)
		k.idsByAddr = make(map[string][]*openpgp.Identity, len(k.ent.Identities))
		for _, id := range k.ent.Identities {
			if a := NormalizeAddress(uidAddress(id.UserId), k.fold); a != "" {
				k.idsByAddr[a] = append(k.idsByAddr[a], id)
			}
		}
	})
	return k.parseErr
}

// cryptoKey returns the parsed, verified key, or nil if it cannot be parsed.
func (k *pgpKey) cryptoKey() *crypto.Key {
	if k.ready() != nil {
		return nil
	}
	return k.key
}

func setValid(s *packet.VerifiableSignature, err error, strict bool) {
	if err == nil && strict {
		err = checkSelfSig(s.Packet)
	}
	v := err == nil
	s.Valid = &v
}

// checkSelfSig applies the hash and notation policy to a self-signature
// that grants something (binding, certification, direct key signature).
func checkSelfSig(sig *packet.Signature) error {
	if pgpConfig.RejectHashAlgorithm(sig.Hash) {
		return fmt.Errorf("self-signature uses %v", sig.Hash)
	}
	for _, n := range sig.Notations {
		if n.IsCritical {
			return errors.New("unknown critical notation")
		}
	}
	if sig.EmbeddedSignature != nil && pgpConfig.RejectHashAlgorithm(sig.EmbeddedSignature.Hash) {
		return fmt.Errorf("cross-signature uses %v", sig.EmbeddedSignature.Hash)
	}
	return nil
}

func warmEntity(e *openpgp.Entity) {
	pk := e.PrimaryKey
	for _, id := range e.Identities {
		for _, s := range id.SelfCertifications {
			setValid(s, pk.VerifyUserIdSignature(id.Name, pk, s.Packet), true)
		}
		for _, s := range id.Revocations {
			// Revocations are honoured whatever their hash: believing a
			// weak revocation can only make a key unusable.
			setValid(s, pk.VerifyUserIdSignature(id.Name, pk, s.Packet), false)
		}
	}
	for _, s := range e.Revocations {
		setValid(s, pk.VerifyRevocationSignature(s.Packet), false)
	}
	for _, s := range e.DirectSignatures {
		setValid(s, pk.VerifyDirectKeySignature(s.Packet), true)
	}
	for i := range e.Subkeys {
		sk := &e.Subkeys[i]
		for _, s := range sk.Bindings {
			setValid(s, pk.VerifyKeySignature(sk.PublicKey, s.Packet), true)
		}
		for _, s := range sk.Revocations {
			setValid(s, pk.VerifySubkeyRevocationSignature(s.Packet, sk.PublicKey), false)
		}
	}
}

// addrValid reports whether one of the key's user IDs carrying the
// normalised address norm is validly self-signed and not revoked at t.
func (k *pgpKey) addrValid(norm string, t time.Time) bool {
	if k.ready() != nil {
		return false
	}
	for _, id := range k.idsByAddr[norm] {
		if _, err := id.Verify(t, pgpConfig); err == nil {
			return true
		}
	}
	return false
}

// Reasons a key is not usable that say it once was: such keys are kept
// (to verify old signatures, or to decrypt old mail) but never used to
// encrypt or sign.
var (
	errExpired = errors.New("expired")
	errRevoked = errors.New("revoked")
)

// errSignOnly says that a key has no encryption (sub)key at all.
var errSignOnly = errors.New("sign-only key: no encryption subkey")

// encryptionUsable returns nil if the key can be encrypted to at t.
func (k *pgpKey) encryptionUsable(t time.Time) error {
	if err := k.ready(); err != nil {
		return err
	}
	// EncryptionKeyWithError checks the primary key (revocation, expiry,
	// self-signature, algorithm) too; look closer only on failure.
	if _, err := k.ent.EncryptionKeyWithError(t, pgpConfig); err != nil {
		if perr := k.primaryUsable(t); perr != nil {
			return perr
		}
		derr := describePGPError(err, "no usable encryption subkey")
		var weak pgperrors.WeakAlgorithmError
		if !errors.As(err, &weak) && !strings.HasPrefix(derr.Error(), "weak") {
			if _, err := k.ent.EncryptionKeyWithError(time.Time{}, pgpConfig); err != nil {
				return errSignOnly // none at any time
			}
		}
		return derr
	}
	return nil
}

// retired returns errExpired or errRevoked when the key is expired or
// revoked at t and was once validly self-certified for an address: a key
// that may be kept (for old signatures, for old mail), never used. It
// returns nil for a key that is usable, or unusable for another reason.
func (k *pgpKey) retired(t time.Time) error {
	if k.ready() != nil {
		return nil
	}
	err := k.primaryUsable(t)
	if !errors.Is(err, errExpired) && !errors.Is(err, errRevoked) {
		return nil
	}
	for _, ids := range k.idsByAddr {
		for _, id := range ids {
			for _, s := range id.SelfCertifications {
				if s.Valid != nil && *s.Valid {
					return err
				}
			}
		}
	}
	return nil
}

// canDecrypt reports whether the key holds secret key material that can
// decrypt, whatever its validity now (expired and revoked keys still
// decrypt old mail).
func (k *pgpKey) canDecrypt() bool {
	if !k.secret || k.ready() != nil {
		return false
	}
	return len(k.ent.DecryptionKeys(0, time.Time{}, pgpConfig)) > 0
}

// signingUsable returns nil if signatures by the key are acceptable at t.
func (k *pgpKey) signingUsable(t time.Time) error {
	if err := k.ready(); err != nil {
		return err
	}
	if err := k.primaryUsable(t); err != nil {
		return err
	}
	if _, ok := k.ent.SigningKey(t, pgpConfig); !ok {
		return errors.New("no usable signing key")
	}
	return nil
}

func (k *pgpKey) primaryUsable(t time.Time) error {
	if k.ent.Revoked(t) {
		return errRevoked
	}
	if _, err := k.ent.VerifyPrimaryKey(t, pgpConfig); err != nil {
		return describePGPError(err, "no valid self-signature")
	}
	return nil
}

func describePGPError(err error, fallback string) error {
	var sel pgperrors.ErrEncryptionKeySelection
	var psel *pgperrors.ErrEncryptionKeySelection
	if errors.As(err, &psel) && psel != nil {
		sel = *psel
		err = sel
	}
	switch {
	case errors.Is(err, pgperrors.ErrKeyExpired):
		return errExpired
	case errors.Is(err, pgperrors.ErrKeyRevoked):
		return errRevoked
	case errors.As(err, &sel):
		if sel.PrimaryKeyErr != nil {
			return describePGPError(sel.PrimaryKeyErr, fallback)
		}
		if sel.EncSelectionErr != nil {
			switch {
			case errors.Is(sel.EncSelectionErr, pgperrors.ErrKeyExpired):
				return errors.New("encryption subkey expired")
			case errors.Is(sel.EncSelectionErr, pgperrors.ErrKeyRevoked):
				return errors.New("encryption subkey revoked")
			}
			var weak pgperrors.WeakAlgorithmError
			if errors.As(sel.EncSelectionErr, &weak) {
				return fmt.Errorf("weak algorithm: %s", string(weak))
			}
		}
		return errors.New(fallback)
	}
	var weak pgperrors.WeakAlgorithmError
	if errors.As(err, &weak) {
		return fmt.Errorf("weak algorithm: %s", string(weak))
	}
	return errors.New(fallback)
}

// expiry returns when the key (primary) expires, zero if never or unknown.
func (k *pgpKey) expiry() time.Time {
	if k.ready() != nil {
		return time.Time{}
	}
	sig, err := k.ent.PrimarySelfSignature(time.Time{}, pgpConfig)
	if err != nil || sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
		return time.Time{}
	}
	return k.ent.PrimaryKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second)
}

// encryptionExpiry returns the latest expiry of the encryption-capable
// subkeys (zero = one never expires).
func (k *pgpKey) encryptionExpiry() time.Time {
	if k.ready() != nil {
		return time.Time{}
	}
	var latest time.Time
	for i := range k.ent.Subkeys {
		sk := &k.ent.Subkeys[i]
		sig, err := sk.LatestValidBindingSignature(time.Time{}, pgpConfig)
		if err != nil || !sk.PublicKey.PubKeyAlgo.CanEncrypt() {
			continue
		}
		if sig.FlagsValid && !sig.FlagEncryptCommunications && !sig.FlagEncryptStorage {
			continue
		}
		if sig.KeyLifetimeSecs == nil || *sig.KeyLifetimeSecs == 0 {
			return time.Time{}
		}
		if e := sk.PublicKey.CreationTime.Add(time.Duration(*sig.KeyLifetimeSecs) * time.Second); e.After(latest) {
			latest = e
		}
	}
	return latest
}

func (k *pgpKey) algorithm() string {
	if k.ready() != nil {
		return "unknown"
	}
	return pgpAlgorithm(k.ent.PrimaryKey)
}

func pgpAlgorithm(pk *packet.PublicKey) string {
	switch pk.PubKeyAlgo {
	case packet.PubKeyAlgoRSA, packet.PubKeyAlgoRSASignOnly, packet.PubKeyAlgoRSAEncryptOnly:
		n, _ := pk.BitLength()
		return fmt.Sprintf("rsa%d", n)
	case packet.PubKeyAlgoEdDSA, packet.PubKeyAlgoECDSA, packet.PubKeyAlgoECDH:
		c, _ := pk.Curve()
		if c == packet.Curve25519 && pk.PubKeyAlgo == packet.PubKeyAlgoEdDSA {
			return "ed25519"
		}
		return strings.ToLower(string(c))
	case packet.PubKeyAlgoEd25519:
		return "ed25519"
	case packet.PubKeyAlgoEd448:
		return "ed448"
	case packet.PubKeyAlgoDSA:
		n, _ := pk.BitLength()
		return fmt.Sprintf("dsa%d", n)
	}
	return fmt.Sprintf("algo%d", pk.PubKeyAlgo)
}

// uidAddress extracts the e-mail address of a user ID.
func uidAddress(u *packet.UserId) string {
	if u == nil {
		return ""
	}
	if u.Email != "" {
		return u.Email
	}
	if strings.Contains(u.Id, "@") {
		if a, err := mail.ParseAddress(u.Id); err == nil {
			return a.Address
		}
	}
	return ""
}

// newPGPKey wraps a parsed entity (import, secret keys).
func newPGPKey(file string, e *openpgp.Entity, fold bool) *pgpKey {
	k := &pgpKey{file: file, ent: e, secret: e.PrivateKey != nil, created: e.PrimaryKey.CreationTime, fold: fold}
	k.key, _ = crypto.NewKeyFromEntity(e) // never fails for a non-nil entity
	k.fpr = strings.ToUpper(fmt.Sprintf("%x", e.PrimaryKey.Fingerprint))
	k.keyIDs = append(k.keyIDs, e.PrimaryKey.KeyId)
	for _, sk := range e.Subkeys {
		k.keyIDs = append(k.keyIDs, sk.PublicKey.KeyId)
	}
	var ids []string
	for _, id := range e.Identities {
		ids = append(ids, uidAddress(id.UserId))
	}
	k.addrs = normAddrs(ids, fold)
	return k
}

func normAddrs(in []string, fold bool) []string {
	seen := map[string]bool{}
	var out []string
	for _, a := range in {
		if n := NormalizeAddress(a, fold); n != "" && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// looksLikeOpenPGP reports whether data is plausibly OpenPGP (armored, or
// binary starting with a key packet tag).
func looksLikeOpenPGP(data []byte) bool {
	if cpgp.IsArmored(data) {
		return true
	}
	if len(data) == 0 || data[0]&0x80 == 0 {
		return false
	}
	var tag byte
	if data[0]&0x40 != 0 {
		tag = data[0] & 0x3f
	} else {
		tag = (data[0] >> 2) & 0x0f
	}
	return tag == 5 || tag == 6 // secret key, public key
}

// keyBlocks decodes the armored blocks of data, which must all be keys.
func keyBlocks(data []byte) ([][]byte, error) {
	blocks, err := cpgp.DecodeArmorBlocks(data)
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(blocks))
	for i, b := range blocks {
		if b.Type != openpgp.PublicKeyType && b.Type != openpgp.PrivateKeyType {
			return nil, fmt.Errorf("armor block %d is a %s, not a key", i+1, b.Type)
		}
		out[i] = b.Body
	}
	return out, nil
}

// parseOpenPGP parses every key in data (armored with any number of
// blocks, or binary). It fails if any block or key cannot be read, so that
// a damaged file is reported rather than half used.
func parseOpenPGP(data []byte) ([]*openpgp.Entity, error) {
	var bins [][]byte
	if cpgp.IsArmored(data) {
		var err error
		if bins, err = keyBlocks(data); err != nil {
			return nil, err
		}
	} else {
		bins = [][]byte{data}
	}
	var ents []*openpgp.Entity
	for bi, bin := range bins {
		pr := packet.NewReader(bytes.NewReader(bin))
		for {
			e, err := openpgp.ReadEntity(pr)
			if err == io.EOF {
				break
			}
			if err != nil {
				where := fmt.Sprintf("key %d", len(ents)+1)
				if len(bins) > 1 {
					where = fmt.Sprintf("armor block %d, %s", bi+1, where)
				}
				if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "unexpected EOF") {
					return nil, fmt.Errorf("%s: truncated", where)
				}
				return nil, fmt.Errorf("%s: %w", where, err)
			}
			ents = append(ents, e)
		}
	}
	if len(ents) == 0 {
		return nil, errors.New("no OpenPGP key found")
	}
	return ents, nil
}
