package keystore

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/armor"
	"github.com/ProtonMail/gopenpgp/v3/constants"
	"github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
)

// Gateway identity parameters used by Init.
const (
	// SMIMEKeyBits is the RSA size of generated S/MIME keys: S/MIME
	// peers and smallstep/pkcs7 need RSA key transport.
	SMIMEKeyBits = 3072
	// SMIMEValidity is the validity of generated self-signed certificates.
	SMIMEValidity = 3 * 365 * 24 * time.Hour
)

// IsInitialized reports whether the keystore holds any gateway identity
// (an OpenPGP secret key or an S/MIME key with certificate).
// It only looks for files in private/openpgp and private/smime (cheap
// with a large keystore); a broken identity file still counts, so that a
// damaged identity is reported rather than silently replaced. A directory
// that cannot be read is an error (a *ReadError), never "empty": the
// caller must not create a new identity over an unreadable one.
func IsInitialized(opts Options) (bool, error) {
	found := false
	for _, d := range []string{DirPrivate, filepath.Join(DirPrivate, PrivOpenPGP), filepath.Join(DirPrivate, PrivSMIME)} {
		p := filepath.Join(opts.Dir, d)
		ents, err := os.ReadDir(p)
		if errors.Is(err, fs.ErrNotExist) {
			if d == DirPrivate {
				break
			}
			continue
		}
		if err != nil {
			return false, &ReadError{Path: p, Err: err}
		}
		for _, e := range ents {
			n := e.Name()
			if d == DirPrivate || e.IsDir() || strings.HasPrefix(n, ".") || strings.HasSuffix(n, passSuffix) || strings.HasSuffix(n, ".csr") || strings.HasSuffix(n, "~") {
				continue
			}
			found = true
		}
	}
	return found, nil
}

// Init creates the gateway identity for each address that lacks one: an
// OpenPGP key (Ed25519 primary, X25519 encryption subkey, no expiry, v4:
// readable by GnuPG 2.2) and an S/MIME RSA-3072 key with a self-signed
// certificate (SAN rfc822Name, emailProtection, digitalSignature and
// keyEncipherment). With csr it also writes a certificate signing request
// for the S/MIME key to private/smime/ADDR.csr, to have it signed by a CA
// (import the signed certificate later). It returns one line per file
// created; an address that already has an identity of a protocol is
// skipped for that protocol.
func Init(opts Options, addrs []string, csr bool, now time.Time) ([]string, error) {
	snap, w, unlock, err := lockedSnapshot(opts, true)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Never create an identity next to one that cannot be read.
	for _, a := range []Area{AreaGatewayOpenPGP, AreaGatewaySMIME} {
		if err := snap.Unavailable(a); err != nil {
			return nil, err
		}
	}
	var created []string
	for _, addr := range addrs {
		norm := opts.norm(addr)
		if norm == "" {
			return created, fmt.Errorf("keystore: init: %q is not an e-mail address", addr)
		}
		if len(snap.gwByAddr[norm]) == 0 {
			rel, err := initOpenPGP(w, norm, now)
			if err != nil {
				return created, err
			}
			created = append(created, rel)
		}
		if len(snap.smimeByAddr[norm]) == 0 {
			rels, err := initSMIME(w, norm, csr, now)
			if err != nil {
				return created, err
			}
			created = append(created, rels...)
		}
	}
	return created, nil
}

func initOpenPGP(w writer, addr string, now time.Time) (string, error) {
	pgp := crypto.PGPWithProfile(profile.Default())
	key, err := pgp.KeyGeneration().AddUserId("", addr).GenerationTime(now.Unix()).New().GenerateKey()
	if err != nil {
		return "", fmt.Errorf("keystore: init %s: openpgp: %w", addr, err)
	}
	ser, err := key.Serialize()
	if err != nil {
		return "", fmt.Errorf("keystore: init %s: openpgp: %w", addr, err)
	}
	arm, err := armor.ArmorWithTypeChecksum(ser, constants.PrivateKeyHeader, true)
	if err != nil {
		return "", fmt.Errorf("keystore: init %s: openpgp: %w", addr, err)
	}
	fpr := normFpr(key.GetFingerprint())
	rel := filepath.Join(DirPrivate, PrivOpenPGP, safeName(addr)+"-"+fpr+".asc")
	if err := w.write(rel, []byte(arm), 0o600); err != nil {
		return "", err
	}
	return rel, nil
}

func initSMIME(w writer, addr string, csr bool, now time.Time) ([]string, error) {
	key, err := rsa.GenerateKey(rand.Reader, SMIMEKeyBits)
	if err != nil {
		return nil, fmt.Errorf("keystore: init %s: s/mime: %w", addr, err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("keystore: init %s: s/mime: %w", addr, err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: addr},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(SMIMEValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses:        []string{addr},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("keystore: init %s: s/mime: %w", addr, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("keystore: init %s: s/mime: %w", addr, err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("keystore: init %s: s/mime: %w", addr, err)
	}
	var buf bytes.Buffer
	pem.Encode(&buf, &pem.Block{Type: "PRIVATE KEY", Bytes: kder})
	pem.Encode(&buf, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	rel := filepath.Join(DirPrivate, PrivSMIME, safeName(addr)+"-"+certHash(cert)[:16]+".pem")
	if err := w.write(rel, buf.Bytes(), 0o600); err != nil {
		return nil, err
	}
	out := []string{rel}
	if csr {
		creq, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
			Subject:        pkix.Name{CommonName: addr},
			EmailAddresses: []string{addr},
		}, key)
		if err != nil {
			return out, fmt.Errorf("keystore: init %s: csr: %w", addr, err)
		}
		crel := filepath.Join(DirPrivate, PrivSMIME, safeName(addr)+".csr")
		if err := w.write(crel, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: creq}), 0o644); err != nil {
			return out, err
		}
		out = append(out, crel)
	}
	return out, nil
}

// CSR returns the certificate signing request written by Init for addr.
func CSR(opts Options, addr string) ([]byte, error) {
	b, err := readLimited(filepath.Join(opts.Dir, DirPrivate, PrivSMIME, safeName(opts.norm(addr))+".csr"))
	if err != nil {
		return nil, fmt.Errorf("keystore: csr: %w", err)
	}
	return b, nil
}
