package keystore

import (
	"bytes"
	gocrypto "crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/armor"
	"github.com/ProtonMail/gopenpgp/v3/constants"

	"github.com/cryptmilter/cryptmilter/crypto/pkcs12"
)

// Input is one file (or standard input) given to Import.
type Input struct {
	Name string // shown in messages: the file name, or "-" / "(stdin)"
	Data []byte
}

// ImportResult reports what happened to one key or certificate.
type ImportResult struct {
	Source      string   `json:"source"`
	Action      string   `json:"action"` // "imported", "updated", "unchanged", "skipped"
	Protocol    string   `json:"protocol"`
	Kind        string   `json:"kind"` // as in Entry.Kind, or "crl"
	Fingerprint string   `json:"fingerprint"`
	Addresses   []string `json:"addresses"`
	File        string   `json:"file,omitempty"` // relative to the keystore
	Reason      string   `json:"reason,omitempty"`
	// Err tells a skipped item's reason apart where a caller can do
	// something about it: ErrNeedPassphrase, ErrWrongPassphrase,
	// ErrIsCA, ErrCRLWithoutAnchor; nil otherwise.
	Err error `json:"-"`
}

// Reasons for skipping an import item that ImportResult.Err carries.
var (
	// ErrIsCA: a CA certificate given as a correspondent's certificate.
	ErrIsCA = errors.New("a CA certificate, not a correspondent's")
	// ErrCRLWithoutAnchor: a CRL whose issuer is not a trust anchor (yet).
	ErrCRLWithoutAnchor = errors.New("CRL not signed by a trust anchor")
)

// joinReason appends a note to a reason.
func joinReason(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// plannedWrite is a file Import will write once every input validated.
type plannedWrite struct {
	rel  string
	data []byte
	perm os.FileMode
}

type importer struct {
	opts   Options
	snap   *Snapshot
	now    time.Time
	asCA   bool
	pass   []byte
	seen   map[string]string // fingerprint/hash → source, within this import
	writes []plannedWrite
	res    []ImportResult
}

// Import imports one input; see ImportAll.
func Import(opts Options, data []byte, name string, asCA bool, passphrase []byte, now time.Time) ([]ImportResult, error) {
	return ImportAll(opts, []Input{{Name: name, Data: data}}, asCA, passphrase, now)
}

// ImportAll validates every input and, only if all are valid, writes the
// keys and certificates they hold into the keystore, each file atomically,
// under the writers' lock. Each key or certificate gets an ImportResult.
// An input that cannot be parsed or holds nothing usable makes the whole
// import fail with nothing written; the error names the input and the
// problem. passphrase unlocks PKCS#12 files and protected OpenPGP secret
// keys (it is stored next to such a key as its .passphrase file).
func ImportAll(opts Options, inputs []Input, asCA bool, passphrase []byte, now time.Time) ([]ImportResult, error) {
	snap, w, unlock, err := lockedSnapshot(opts, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	im := &importer{opts: opts, snap: snap, now: now, asCA: asCA, pass: passphrase, seen: map[string]string{}}
	var errs []error
	for _, in := range inputs {
		before := len(im.res)
		err := im.input(in)
		if err == nil {
			useful := false
			for _, r := range im.res[before:] {
				if r.Action != "skipped" {
					useful = true
				}
			}
			if !useful {
				reasons := []string{}
				for _, r := range im.res[before:] {
					reasons = append(reasons, r.Reason)
				}
				err = fmt.Errorf("nothing usable: %s", strings.Join(reasons, "; "))
			}
		}
		if err != nil {
			errs = append(errs, &InputError{Name: in.Name, Err: err})
		}
	}
	if len(errs) > 0 {
		return im.res, errors.Join(errs...)
	}
	for _, pw := range im.writes {
		if err := w.write(pw.rel, pw.data, pw.perm); err != nil {
			return im.res, err
		}
	}
	return im.res, nil
}

func (im *importer) add(r ImportResult) { im.res = append(im.res, r) }

func (im *importer) plan(rel string, data []byte, perm os.FileMode) {
	im.writes = append(im.writes, plannedWrite{rel, data, perm})
}

func (im *importer) input(in Input) error {
	data := in.Data
	switch {
	case len(bytes.TrimSpace(data)) == 0:
		return errors.New("empty")
	case looksLikeOpenPGP(data):
		return im.openpgp(in)
	case bytes.Contains(data, []byte("-----BEGIN ")):
		return im.pemOrDER(in)
	case pkcs12.LooksLikePFX(data):
		if _, err := x509.ParseCertificate(data); err == nil {
			return im.pemOrDER(in)
		}
		if _, err := x509.ParseRevocationList(data); err == nil {
			return im.pemOrDER(in)
		}
		return im.pkcs12(in)
	default:
		if _, err := x509.ParseCertificate(data); err == nil {
			return im.pemOrDER(in)
		}
		if _, err := x509.ParseRevocationList(data); err == nil {
			return im.pemOrDER(in)
		}
		return errors.New("not an OpenPGP key, PEM or DER certificate, CRL, key+certificate bundle or PKCS#12 file")
	}
}

func (im *importer) openpgp(in Input) error {
	if im.asCA {
		return errors.New("trust anchors are CA certificates, not OpenPGP keys")
	}
	ents, err := parseOpenPGP(in.Data)
	if err != nil {
		return err
	}
	for _, e := range ents {
		k := newPGPKey("", e, im.opts.FoldLocalPart)
		r := ImportResult{Source: in.Name, Protocol: "openpgp", Kind: "public", Fingerprint: k.fpr, Addresses: k.addrs}
		if k.secret {
			r.Kind = "secret"
		}
		if prev, dup := im.seen[k.fpr]; dup {
			r.Action, r.Reason = "skipped", "duplicate: same key earlier in "+prev
			im.add(r)
			continue
		}
		im.seen[k.fpr] = in.Name
		if len(k.addrs) == 0 {
			r.Action, r.Reason = "skipped", fmt.Sprintf("key %s has no user ID with an e-mail address", k.fpr)
			im.add(r)
			continue
		}
		if k.secret {
			im.secretPGP(in, k, r)
			continue
		}
		switch encErr := usableForSomeAddr(k, im.now, (*pgpKey).encryptionUsable); {
		case encErr == nil:
		case usableForSomeAddr(k, im.now, (*pgpKey).signingUsable) == nil:
			// Sign-only, or its encryption subkey expired: verifies
			// signatures, is never encrypted to.
			r.Reason = fmt.Sprintf("for signature verification only, never used for encryption: %v", encErr)
		case k.retired(im.now) != nil:
			// Kept so that old signatures read expired or revoked rather
			// than untrusted.
			r.Reason = fmt.Sprintf("%v: kept to verify old signatures, never used for encryption", k.retired(im.now))
		default:
			r.Action, r.Reason = "skipped", fmt.Sprintf("key %s: %v", k.fpr, encErr)
			im.add(r)
			continue
		}
		pub, err := k.key.Serialize()
		if err != nil {
			return fmt.Errorf("key %s: %w", k.fpr, err)
		}
		arm, err := armor.ArmorWithTypeChecksum(pub, constants.PublicKeyHeader, true)
		if err != nil {
			return fmt.Errorf("key %s: %w", k.fpr, err)
		}
		rel := filepath.Join(DirOpenPGP, safeName(k.addrs[0])+"-"+k.fpr+".asc")
		r.Action = "imported"
		if old, ok := im.snap.pgpByFpr[k.fpr]; ok {
			if old.secret {
				r.Action, r.Reason, r.File = "unchanged", "public half of the gateway key in "+old.file, old.file
				im.add(r)
				continue
			}
			var oldPub []byte
			if old.ready() == nil {
				oldPub, _ = old.key.Serialize()
			}
			if bytes.Equal(oldPub, pub) {
				r.Action, r.Reason, r.File = "unchanged", "already in "+old.file, old.file
				im.add(r)
				continue
			}
			if f := im.snap.files[old.file]; f != nil && len(f.pgp) > 1 {
				r.Action, r.Reason, r.File = "skipped", fmt.Sprintf("an older version is in %s together with other keys; edit that file by hand", old.file), old.file
				im.add(r)
				continue
			}
			rel, r.Action = old.file, "updated"
		}
		r.File = rel
		im.plan(rel, []byte(arm), 0o644)
		im.add(r)
	}
	return nil
}

// usableForSomeAddr returns nil if usable(k, t) holds and one user ID with
// an address is valid at t.
func usableForSomeAddr(k *pgpKey, t time.Time, usable func(*pgpKey, time.Time) error) error {
	if err := usable(k, t); err != nil {
		return err
	}
	for _, a := range k.addrs {
		if k.addrValid(a, t) {
			return nil
		}
	}
	return errors.New("no validly self-signed user ID with an e-mail address")
}

func (im *importer) secretPGP(in Input, k *pgpKey, r ImportResult) {
	locked, _ := k.key.IsLocked()
	usableKey := k
	if locked {
		if im.pass == nil {
			r.Action, r.Err = "skipped", ErrNeedPassphrase
			r.Reason = fmt.Sprintf("secret key %s is protected by a passphrase, and none was given", k.fpr)
			im.add(r)
			return
		}
		u, err := k.key.Unlock(im.pass)
		if err != nil {
			r.Action, r.Err = "skipped", ErrWrongPassphrase
			r.Reason = fmt.Sprintf("secret key %s: wrong passphrase", k.fpr)
			im.add(r)
			return
		}
		usableKey = newPGPKey("", u.GetEntity(), im.opts.FoldLocalPart)
	}
	if err := usableForSomeAddr(usableKey, im.now, (*pgpKey).signingUsable); err != nil {
		// An expired or revoked gateway key still decrypts old mail (key
		// rollover); it never signs and is never a recipient.
		ret := usableKey.retired(im.now)
		if ret == nil || !usableKey.canDecrypt() {
			r.Action, r.Reason = "skipped", fmt.Sprintf("secret key %s: %v", k.fpr, err)
			im.add(r)
			return
		}
		r.Reason = fmt.Sprintf("%v: for decryption only (key rollover), never used to sign", ret)
	}
	if old, ok := im.snap.pgpByFpr[k.fpr]; ok && old.secret {
		r.Action, r.Reason, r.File = "unchanged", "already in "+old.file, old.file
		im.add(r)
		return
	}
	ser, err := k.key.Serialize()
	if err == nil {
		var arm string
		arm, err = armor.ArmorWithTypeChecksum(ser, constants.PrivateKeyHeader, true)
		if err == nil {
			base := safeName(k.addrs[0]) + "-" + k.fpr
			rel := filepath.Join(DirPrivate, PrivOpenPGP, base+".asc")
			im.plan(rel, []byte(arm), 0o600)
			if locked {
				im.plan(filepath.Join(DirPrivate, PrivOpenPGP, base+passSuffix), append(append([]byte(nil), im.pass...), '\n'), 0o600)
				r.Reason = joinReason(r.Reason, "passphrase stored in "+filepath.Join(DirPrivate, PrivOpenPGP, base+passSuffix))
			}
			r.Action, r.File = "imported", rel
			im.add(r)
			return
		}
	}
	r.Action, r.Reason = "skipped", fmt.Sprintf("secret key %s: %v", k.fpr, err)
	im.add(r)
}

func (im *importer) pkcs12(in Input) error {
	if im.pass == nil {
		return fmt.Errorf("PKCS#12 file: %w", ErrNeedPassphrase)
	}
	key, leaf, chain, err := pkcs12.Decode(in.Data, im.pass)
	if errors.Is(err, pkcs12.ErrIncorrectPassword) {
		return fmt.Errorf("PKCS#12 file: %w", ErrWrongPassphrase)
	}
	if err != nil {
		return err
	}
	return im.identity(in, key, leaf, chain)
}

// identity imports a gateway S/MIME key with its certificate.
func (im *importer) identity(in Input, key gocrypto.Signer, leaf *x509.Certificate, chain []*x509.Certificate) error {
	if im.asCA {
		return errors.New("trust anchors are CA certificates, not private keys")
	}
	ce := newCertEntry("", leaf, im.opts.FoldLocalPart)
	r := ImportResult{Source: in.Name, Protocol: "smime", Kind: "identity", Fingerprint: ce.hash, Addresses: ce.addrs}
	if len(ce.addrs) == 0 {
		r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q has no e-mail address (neither rfc822Name nor subject emailAddress)", subjectString(leaf))
		im.add(r)
		return nil
	}
	if err := certTimeValid(leaf, im.now); err != nil {
		if !errors.Is(err, errExpired) {
			r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q: %v", subjectString(leaf), err)
			im.add(r)
			return nil
		}
		// An expired identity still decrypts old mail (key rollover).
		r.Reason = "expired: for decryption only (key rollover), never used to sign"
	}
	if prev, dup := im.seen[ce.hash]; dup {
		r.Action, r.Reason = "skipped", "duplicate: same certificate earlier in "+prev
		im.add(r)
		return nil
	}
	im.seen[ce.hash] = in.Name
	for _, id := range im.snap.smime {
		if id.hash == ce.hash {
			r.Action, r.Reason, r.File = "unchanged", "already in "+id.File, id.File
			im.add(r)
			return nil
		}
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("private key: %w", err)
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: leaf.Raw})
	for _, c := range chain {
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
	}
	rel := filepath.Join(DirPrivate, PrivSMIME, safeName(ce.addrs[0])+"-"+ce.hash[:16]+".pem")
	im.plan(rel, buf.Bytes(), 0o600)
	r.Action, r.File = "imported", rel
	if len(chain) > 0 {
		r.Reason = joinReason(r.Reason, fmt.Sprintf("%d more certificate(s) kept as chain, not trusted as anchors", len(chain)))
	}
	im.add(r)
	return nil
}

func (im *importer) pemOrDER(in Input) error {
	pc, err := parsePEMOrDERPass(in.Data, im.pass)
	if errors.Is(err, errEncryptedPEM) {
		return fmt.Errorf("the private key: %w", ErrNeedPassphrase)
	}
	if err != nil {
		return err
	}
	if len(pc.keys) > 0 {
		if len(pc.keys) != 1 {
			return fmt.Errorf("expected one private key, found %d", len(pc.keys))
		}
		var leaf *x509.Certificate
		var chain []*x509.Certificate
		for _, c := range pc.certs {
			if leaf == nil && keyMatchesCert(pc.keys[0], c) {
				leaf = c
			} else {
				chain = append(chain, c)
			}
		}
		if leaf == nil {
			return errors.New("private key without its certificate")
		}
		return im.identity(in, pc.keys[0], leaf, chain)
	}
	for _, c := range pc.certs {
		if im.asCA {
			im.caCert(in, c)
		} else {
			im.cert(in, c)
		}
	}
	for _, l := range pc.crls {
		im.crl(in, l)
	}
	return nil
}

func (im *importer) cert(in Input, c *x509.Certificate) {
	ce := newCertEntry("", c, im.opts.FoldLocalPart)
	r := ImportResult{Source: in.Name, Protocol: "smime", Kind: "certificate", Fingerprint: ce.hash, Addresses: ce.addrs}
	if len(ce.addrs) == 0 {
		r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q has no e-mail address (neither rfc822Name nor subject emailAddress)", subjectString(c))
		if c.IsCA {
			r.Reason += "; it is a CA certificate (a trust anchor if you trust it)"
			r.Err = ErrIsCA
		}
		im.add(r)
		return
	}
	if prev, dup := im.seen[ce.hash]; dup {
		r.Action, r.Reason = "skipped", "duplicate: same certificate earlier in "+prev
		im.add(r)
		return
	}
	im.seen[ce.hash] = in.Name
	for _, id := range im.snap.smime {
		if !keyMatchesCert(id.Key, c) || id.hash == ce.hash {
			continue
		}
		// A certificate for a gateway key (e.g. signed from `init --csr`).
		r.Kind = "identity"
		if err := certTimeValid(c, im.now); err != nil {
			r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q for gateway key in %s: %v", c.Subject.String(), id.File, err)
			im.add(r)
			return
		}
		der, err := x509.MarshalPKCS8PrivateKey(id.Key)
		if err != nil {
			r.Action, r.Reason = "skipped", err.Error()
			im.add(r)
			return
		}
		var buf bytes.Buffer
		pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		im.plan(id.File, buf.Bytes(), 0o600)
		r.Action, r.File, r.Reason = "updated", id.File, "new certificate for the gateway key"
		im.add(r)
		return
	}
	if err := ce.encryptionUsable(im.now, im.snap.crls); err != nil {
		switch serr := ce.signingUsable(im.now, im.snap.crls); {
		case serr == nil:
			r.Reason = fmt.Sprintf("for signature verification only, never used for encryption: %v", err)
		case errors.Is(serr, errExpired) && !weakSignature(c):
			// Kept so that old signatures read expired, not untrusted.
			r.Reason = "expired: kept to verify old signatures, never used for encryption"
		case errors.Is(serr, errRevoked) && !weakSignature(c):
			// Kept so that signatures read revoked, not untrusted.
			r.Reason = "revoked by a CRL: kept so that its signatures read revoked, never used for encryption"
		default:
			r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q: %v", subjectString(c), err)
			im.add(r)
			return
		}
	}
	if old, ok := im.snap.certByHash[ce.hash]; ok {
		r.Action, r.Reason, r.File = "unchanged", "already in "+old.file, old.file
		im.add(r)
		return
	}
	rel := filepath.Join(DirCerts, safeName(ce.addrs[0])+"-"+ce.hash[:16]+".pem")
	im.plan(rel, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
	r.Action, r.File = "imported", rel
	im.add(r)
}

func (im *importer) caCert(in Input, c *x509.Certificate) {
	ce := newCertEntry("", c, im.opts.FoldLocalPart)
	r := ImportResult{Source: in.Name, Protocol: "smime", Kind: "ca", Fingerprint: ce.hash, Addresses: ce.addrs}
	if r.Addresses == nil {
		r.Addresses = []string{}
	}
	if !c.IsCA && !bytes.Equal(c.RawIssuer, c.RawSubject) {
		r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q is neither a CA certificate nor self-signed", subjectString(c))
		im.add(r)
		return
	}
	if err := certTimeValid(c, im.now); err != nil {
		r.Action, r.Reason = "skipped", fmt.Sprintf("certificate %q: %v", c.Subject.String(), err)
		im.add(r)
		return
	}
	if prev, dup := im.seen[ce.hash]; dup {
		r.Action, r.Reason = "skipped", "duplicate: same certificate earlier in "+prev
		im.add(r)
		return
	}
	im.seen[ce.hash] = in.Name
	for _, a := range im.snap.anchors {
		if a.hash == ce.hash {
			r.Action, r.Reason, r.File = "unchanged", "already in "+a.file, a.file
			im.add(r)
			return
		}
	}
	name := c.Subject.CommonName
	if name == "" {
		name = "ca"
	}
	rel := filepath.Join(DirCA, safeName(name)+"-"+ce.hash[:16]+".pem")
	im.plan(rel, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw}), 0o644)
	r.Action, r.File = "imported", rel
	im.add(r)
}

func (im *importer) crl(in Input, l *x509.RevocationList) {
	r := ImportResult{Source: in.Name, Protocol: "smime", Kind: "crl", Addresses: []string{}}
	var signer *certEntry
	for _, a := range im.snap.anchors {
		if bytes.Equal(a.cert.RawSubject, l.RawIssuer) && l.CheckSignatureFrom(a.cert) == nil {
			signer = a
		}
	}
	if signer == nil {
		r.Action, r.Reason, r.Err = "skipped", "CRL not signed by a trust anchor in "+DirCA, ErrCRLWithoutAnchor
		im.add(r)
		return
	}
	r.Fingerprint = fmt.Sprintf("%s#%v", signer.hash[:16], l.Number)
	rel := filepath.Join(DirCRL, safeName(signer.cert.Subject.CommonName)+"-"+signer.hash[:16]+".crl")
	im.plan(rel, pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: l.Raw}), 0o644)
	r.Action, r.File = "imported", rel
	im.add(r)
}

// Remove deletes the key or certificate with the given fingerprint or
// certificate hash. A file holding only that item is removed; a file
// holding several keys is rewritten without it. Gateway secrets are
// removed only with secret set. It returns the files changed.
func Remove(opts Options, fpr string, secret bool) ([]string, error) {
	f := normFpr(fpr)
	if f == "" {
		return nil, fmt.Errorf("keystore: remove: %q is not a fingerprint", fpr)
	}
	snap, w, unlock, err := lockedSnapshot(opts, false)
	if err != nil {
		return nil, err
	}
	defer unlock()
	var files []string
	if k, ok := snap.pgpByFpr[f]; ok {
		if k.secret && !secret {
			return nil, &SecretError{Fingerprint: k.fpr, File: k.file}
		}
		r := snap.files[k.file]
		if len(r.pgp) == 1 {
			if err := w.remove(k.file); err != nil {
				return nil, err
			}
			pass := strings.TrimSuffix(k.file, filepath.Ext(k.file)) + passSuffix
			if _, err := os.Stat(filepath.Join(opts.Dir, pass)); err == nil {
				if err := w.remove(pass); err != nil {
					return nil, err
				}
			}
		} else {
			var buf bytes.Buffer
			for _, o := range r.pgp {
				if o == k {
					continue
				}
				b := o.raw
				var err error
				if b == nil {
					b, err = o.key.Serialize()
				}
				if err != nil {
					return nil, fmt.Errorf("keystore: remove: rewrite %s: %w", k.file, err)
				}
				buf.Write(b)
			}
			typ := constants.PublicKeyHeader
			perm := os.FileMode(0o644)
			if k.secret {
				typ, perm = constants.PrivateKeyHeader, 0o600
			}
			arm, err := armor.ArmorWithTypeChecksum(buf.Bytes(), typ, true)
			if err != nil {
				return nil, fmt.Errorf("keystore: remove: %w", err)
			}
			if err := w.write(k.file, []byte(arm), perm); err != nil {
				return nil, err
			}
		}
		files = append(files, k.file)
	}
	removeCert := func(file, hash string) error {
		r := snap.files[file]
		var keep [][]byte
		if r != nil {
			for _, c := range r.certs {
				if c.hash != hash {
					keep = append(keep, c.cert.Raw)
				}
			}
		}
		files = append(files, file)
		if len(keep) == 0 {
			return w.remove(file)
		}
		var buf bytes.Buffer
		for _, k := range keep {
			pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: k})
		}
		return w.write(file, buf.Bytes(), 0o644)
	}
	if c, ok := snap.certByHash[f]; ok {
		if err := removeCert(c.file, c.hash); err != nil {
			return nil, err
		}
	}
	for _, a := range snap.anchors {
		if a.hash == f {
			if err := removeCert(a.file, a.hash); err != nil {
				return nil, err
			}
		}
	}
	for _, id := range snap.smime {
		if id.hash == f {
			if !secret {
				return files, &SecretError{Fingerprint: f, File: id.File}
			}
			if err := w.remove(id.File); err != nil {
				return nil, err
			}
			files = append(files, id.File)
		}
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no key or certificate %s", ErrNotFound, fpr)
	}
	return files, nil
}

// Protocols, as in Entry.Protocol.
const (
	ProtocolOpenPGP = "openpgp"
	ProtocolSMIME   = "smime"
)

// Export returns the public material for query (an address, an OpenPGP
// fingerprint or a certificate hash): armored OpenPGP public keys and PEM
// certificates. With secret, it returns the gateway's secret files for
// query instead (armored secret keys, PEM key+certificate).
func (s *Snapshot) Export(query string, secret bool) ([]byte, error) {
	return s.ExportProtocol(query, secret, "")
}

// ExportProtocol is Export of one protocol only (ProtocolOpenPGP or
// ProtocolSMIME; "" for both), so that the output is one kind of file.
func (s *Snapshot) ExportProtocol(query string, secret bool, protocol string) ([]byte, error) {
	var pgp []*pgpKey
	var certs []*x509.Certificate
	var ids []*SMIMEIdentity
	if norm := s.opts.norm(query); norm != "" && strings.Contains(query, "@") {
		pgp = append(pgp, s.gwByAddr[norm]...)
		pgp = append(pgp, s.pgpByAddr[norm]...)
		for _, c := range s.certByAddr[norm] {
			certs = append(certs, c.cert)
		}
		ids = s.smimeByAddr[norm]
	} else {
		f := normFpr(query)
		if k, ok := s.pgpByFpr[f]; ok {
			pgp = append(pgp, k)
		}
		if c, ok := s.certByHash[f]; ok {
			certs = append(certs, c.cert)
		}
		for _, a := range s.anchors {
			if a.hash == f {
				certs = append(certs, a.cert)
			}
		}
		for _, id := range s.smime {
			if id.hash == f {
				ids = append(ids, id)
			}
		}
	}
	switch protocol {
	case "":
	case ProtocolOpenPGP:
		certs, ids = nil, nil
	case ProtocolSMIME:
		pgp = nil
	default:
		return nil, fmt.Errorf("keystore: export: unknown protocol %q", protocol)
	}
	var out bytes.Buffer
	for _, k := range pgp {
		if secret && !k.secret {
			continue
		}
		if err := k.ready(); err != nil {
			return nil, fmt.Errorf("keystore: export: %w", err)
		}
		var arm string
		var err error
		if secret {
			arm, err = k.key.Armor()
		} else {
			arm, err = k.key.GetArmoredPublicKey()
		}
		if err != nil {
			return nil, fmt.Errorf("keystore: export %s: %w", k.fpr, err)
		}
		out.WriteString(arm)
		if !strings.HasSuffix(arm, "\n") {
			out.WriteByte('\n')
		}
	}
	for _, id := range ids {
		if secret {
			der, err := x509.MarshalPKCS8PrivateKey(id.Key)
			if err != nil {
				return nil, fmt.Errorf("keystore: export %s: %w", id.hash, err)
			}
			pem.Encode(&out, &pem.Block{Type: "PRIVATE KEY", Bytes: der})
		}
		pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw})
	}
	if !secret {
		for _, c := range certs {
			pem.Encode(&out, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	if out.Len() == 0 {
		what := "key or certificate"
		switch protocol {
		case ProtocolOpenPGP:
			what = "OpenPGP key"
		case ProtocolSMIME:
			what = "certificate"
		}
		if secret {
			return nil, fmt.Errorf("%w: no gateway secret %s for %s", ErrNotFound, what, query)
		}
		return nil, fmt.Errorf("%w: no %s for %s", ErrNotFound, what, query)
	}
	return out.Bytes(), nil
}

// Describe returns the entries (as in Entries) for an address, an OpenPGP
// fingerprint or key ID (16 hex digits), or a certificate hash, for
// `keys show`.
func (s *Snapshot) Describe(query string, t time.Time) []Entry {
	var gw, pub []*pgpKey
	var ids []*SMIMEIdentity
	var certs, anchors []*certEntry
	split := func(ks []*pgpKey) {
		for _, k := range ks {
			if k.secret {
				gw = append(gw, k)
			} else {
				pub = append(pub, k)
			}
		}
	}
	if norm := s.opts.norm(query); norm != "" && strings.Contains(query, "@") {
		gw = append(gw, s.gwByAddr[norm]...)
		pub = append(pub, s.pgpByAddr[norm]...)
		ids = s.smimeByAddr[norm]
		certs = s.certByAddr[norm]
		for _, a := range s.anchors {
			if slices.Contains(a.addrs, norm) {
				anchors = append(anchors, a)
			}
		}
	} else if f := normFpr(query); f != "" {
		if k, ok := s.pgpByFpr[f]; ok {
			split([]*pgpKey{k})
		} else if len(f) == 16 {
			if id, err := strconv.ParseUint(f, 16, 64); err == nil {
				split(s.pgpByKeyID[id])
			}
		}
		if c, ok := s.certByHash[f]; ok {
			certs = append(certs, c)
		}
		for _, id := range s.smime {
			if id.hash == f {
				ids = append(ids, id)
			}
		}
		for _, a := range s.anchors {
			if a.hash == f {
				anchors = append(anchors, a)
			}
		}
	}
	return s.entries(t, gw, pub, ids, certs, anchors)
}
