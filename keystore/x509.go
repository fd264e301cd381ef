package keystore

import (
	"bytes"
	gocrypto "crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/pkcs12"
)

// oidEmailAddress is PKCS#9 emailAddress, used in the subject of legacy
// S/MIME certificates (NSS test certificates carry only this).
var oidEmailAddress = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}

// certEntry is one X.509 certificate from a file.
type certEntry struct {
	file  string
	cert  *x509.Certificate
	hash  string   // SHA-256 of the DER encoding, upper-case hex
	addrs []string // normalised addresses, sorted, unique
}

func certHash(c *x509.Certificate) string {
	h := sha256.Sum256(c.Raw)
	return strings.ToUpper(hex.EncodeToString(h[:]))
}

// certAddresses returns the rfc822Name SANs and, for legacy certificates,
// the subject emailAddress attributes.
func certAddresses(c *x509.Certificate) []string {
	var out []string
	out = append(out, c.EmailAddresses...)
	for _, n := range c.Subject.Names {
		if n.Type.Equal(oidEmailAddress) {
			if s, ok := n.Value.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func newCertEntry(file string, c *x509.Certificate, fold bool) *certEntry {
	e := &certEntry{file: file, cert: c, hash: certHash(c)}
	seen := map[string]bool{}
	for _, a := range certAddresses(c) {
		if n := NormalizeAddress(a, fold); n != "" && !seen[n] {
			seen[n] = true
			e.addrs = append(e.addrs, n)
		}
	}
	sort.Strings(e.addrs)
	return e
}

// attrNames are the short names of distinguished name attributes, as
// OpenSSL prints them (emailAddress included, which Go prints as an OID).
var attrNames = map[string]string{
	"2.5.4.3": "CN", "2.5.4.4": "SN", "2.5.4.5": "SERIALNUMBER", "2.5.4.6": "C", "2.5.4.7": "L", "2.5.4.8": "ST",
	"2.5.4.9": "STREET", "2.5.4.10": "O", "2.5.4.11": "OU", "2.5.4.12": "title", "2.5.4.17": "postalCode",
	"2.5.4.42": "GN", "2.5.4.43": "initials", "2.5.4.46": "dnQualifier", "2.5.4.65": "pseudonym",
	"0.9.2342.19200300.100.1.1": "UID", "0.9.2342.19200300.100.1.25": "DC", "1.2.840.113549.1.9.1": "emailAddress",
}

// subjectString formats a certificate's subject as RFC 4514 does
// (last RDN first), with readable names and values for every attribute
// mail certificates carry; an unknown attribute keeps Go's OID=#hex form.
func subjectString(c *x509.Certificate) string {
	var rdns pkix.RDNSequence
	if rest, err := asn1.Unmarshal(c.RawSubject, &rdns); err != nil || len(rest) != 0 {
		return c.Subject.String()
	}
	var parts []string
	for i := len(rdns) - 1; i >= 0; i-- {
		var attrs []string
		for _, a := range rdns[i] {
			name, known := attrNames[a.Type.String()]
			v, isString := a.Value.(string)
			if !known || !isString {
				attrs = append(attrs, pkix.RDNSequence{{a}}.String())
				continue
			}
			attrs = append(attrs, name+"="+escapeDN(v))
		}
		parts = append(parts, strings.Join(attrs, "+"))
	}
	return strings.Join(parts, ",")
}

// escapeDN escapes an attribute value as RFC 4514 section 2.4 says.
func escapeDN(v string) string {
	var b strings.Builder
	for i, r := range v {
		switch {
		case strings.ContainsRune(",+\"<>;\\=", r),
			(r == '#' || r == ' ') && i == 0,
			r == ' ' && i == len(v)-1:
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < ' ':
			fmt.Fprintf(&b, "\\%02x", r)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// certAlgorithm names the public key algorithm and size.
func certAlgorithm(c *x509.Certificate) string {
	switch k := c.PublicKey.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("rsa%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "ecdsa-" + strings.ToLower(k.Curve.Params().Name)
	case ed25519.PublicKey:
		return "ed25519"
	}
	return strings.ToLower(c.PublicKeyAlgorithm.String())
}

// weakSignature reports certificate signatures that are not acceptable.
func weakSignature(c *x509.Certificate) bool {
	switch c.SignatureAlgorithm {
	case x509.MD2WithRSA, x509.MD5WithRSA, x509.SHA1WithRSA, x509.DSAWithSHA1, x509.ECDSAWithSHA1, x509.UnknownSignatureAlgorithm:
		return true
	}
	return false
}

// hasEmailProtection reports whether the certificate's extended key usage
// allows e-mail (absent EKU allows everything).
func hasEmailProtection(c *x509.Certificate) bool {
	if len(c.ExtKeyUsage) == 0 && len(c.UnknownExtKeyUsage) == 0 {
		return true
	}
	for _, u := range c.ExtKeyUsage {
		if u == x509.ExtKeyUsageEmailProtection || u == x509.ExtKeyUsageAny {
			return true
		}
	}
	return false
}

// encryptionUsable returns nil if a message can be encrypted to the
// certificate at t. Encryption needs RSA key transport (what PKCS#7
// EnvelopedData peers and smallstep/pkcs7 support) with at least 2048 bits.
func (e *certEntry) encryptionUsable(t time.Time, crls []*x509.RevocationList) error {
	c := e.cert
	if err := certTimeValid(c, t); err != nil {
		return err
	}
	if weakSignature(c) {
		return fmt.Errorf("weak signature algorithm %v", c.SignatureAlgorithm)
	}
	k, ok := c.PublicKey.(*rsa.PublicKey)
	if !ok {
		return fmt.Errorf("%s key cannot be used for encryption (RSA needed)", certAlgorithm(c))
	}
	if k.N.BitLen() < 2048 {
		return fmt.Errorf("weak algorithm: rsa%d", k.N.BitLen())
	}
	if c.KeyUsage != 0 && c.KeyUsage&x509.KeyUsageKeyEncipherment == 0 {
		return errors.New("key usage does not allow key encipherment")
	}
	if !hasEmailProtection(c) {
		return errors.New("extended key usage does not allow e-mail protection")
	}
	if revoked(c, t, crls) {
		return errRevoked
	}
	return nil
}

// signingUsable returns nil if the certificate may vouch for a signature
// made at t (chain building is the verifier's job).
func (e *certEntry) signingUsable(t time.Time, crls []*x509.RevocationList) error {
	c := e.cert
	if err := certTimeValid(c, t); err != nil {
		return err
	}
	if c.KeyUsage != 0 && c.KeyUsage&(x509.KeyUsageDigitalSignature|x509.KeyUsageContentCommitment) == 0 {
		return errors.New("key usage does not allow signatures")
	}
	if !hasEmailProtection(c) {
		return errors.New("extended key usage does not allow e-mail protection")
	}
	if revoked(c, t, crls) {
		return errRevoked
	}
	return nil
}

// signingUsable returns nil if the gateway may sign with the identity at t.
func (id *SMIMEIdentity) signingUsable(t time.Time, crls []*x509.RevocationList) error {
	if err := certTimeValid(id.Cert, t); err != nil {
		return err
	}
	if revoked(id.Cert, t, crls) {
		return errRevoked
	}
	return nil
}

func certTimeValid(c *x509.Certificate, t time.Time) error {
	if t.Before(c.NotBefore) {
		return fmt.Errorf("not valid before %s", c.NotBefore.UTC().Format(time.DateOnly))
	}
	if t.After(c.NotAfter) {
		return errExpired
	}
	return nil
}

// revoked reports whether a (verified) CRL of the certificate's issuer lists it.
func revoked(c *x509.Certificate, t time.Time, crls []*x509.RevocationList) bool {
	for _, l := range crls {
		if !bytes.Equal(l.RawIssuer, c.RawIssuer) {
			continue
		}
		for _, r := range l.RevokedCertificateEntries {
			if r.SerialNumber.Cmp(c.SerialNumber) == 0 && !r.RevocationTime.After(t) {
				return true
			}
		}
	}
	return false
}

// pemContents is what a PEM/DER file held.
type pemContents struct {
	certs []*x509.Certificate
	keys  []gocrypto.Signer
	crls  []*x509.RevocationList
}

// errEncryptedPEM is returned for a passphrase-protected PEM private key
// when no passphrase was given.
var errEncryptedPEM = errors.New("the private key is protected by a passphrase")

// parsePEMOrDER parses PEM (any number of CERTIFICATE, private key and
// X509 CRL blocks) or a single DER certificate or CRL. Encrypted private
// keys fail with errEncryptedPEM.
func parsePEMOrDER(data []byte) (*pemContents, error) {
	return parsePEMOrDERPass(data, nil)
}

// parsePEMOrDERPass is parsePEMOrDER with a passphrase for encrypted
// private keys: PKCS#8 "ENCRYPTED PRIVATE KEY" (PBES2) and OpenSSL's
// traditional "Proc-Type: 4,ENCRYPTED" PEM.
func parsePEMOrDERPass(data, passphrase []byte) (*pemContents, error) {
	var pc pemContents
	if !bytes.Contains(data, []byte("-----BEGIN ")) {
		if c, err := x509.ParseCertificate(data); err == nil {
			pc.certs = append(pc.certs, c)
			return &pc, nil
		}
		if l, err := x509.ParseRevocationList(data); err == nil {
			pc.crls = append(pc.crls, l)
			return &pc, nil
		}
		return nil, errors.New("not a PEM file, DER certificate or DER CRL")
	}
	rest := data
	n := 0
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		n++
		if _, enc := b.Headers["Proc-Type"]; enc {
			if passphrase == nil {
				return nil, errEncryptedPEM
			}
			//lint:ignore SA1019 OpenSSL's traditional encrypted keys exist in RT keyrings; read-only use.
			der, err := x509.DecryptPEMBlock(b, passphrase) //nolint:staticcheck
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: %w (or a damaged key)", n, ErrWrongPassphrase)
			}
			b = &pem.Block{Type: b.Type, Bytes: der}
		}
		switch b.Type {
		case "CERTIFICATE", "X509 CERTIFICATE":
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: certificate: %w", n, err)
			}
			pc.certs = append(pc.certs, c)
		case "X509 CRL":
			l, err := x509.ParseRevocationList(b.Bytes)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: crl: %w", n, err)
			}
			pc.crls = append(pc.crls, l)
		case "PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY":
			k, err := parsePrivateKey(b)
			if err != nil {
				return nil, fmt.Errorf("PEM block %d: %w", n, err)
			}
			pc.keys = append(pc.keys, k)
		case "ENCRYPTED PRIVATE KEY":
			if passphrase == nil {
				return nil, errEncryptedPEM
			}
			k, err := pkcs12.DecryptPrivateKey(b.Bytes, passphrase)
			if err != nil {
				if errors.Is(err, pkcs12.ErrIncorrectPassword) {
					return nil, fmt.Errorf("PEM block %d: %w", n, ErrWrongPassphrase)
				}
				return nil, fmt.Errorf("PEM block %d: %w", n, err)
			}
			pc.keys = append(pc.keys, k)
		case "EC PARAMETERS":
			// Written by `openssl ecparam -genkey`; carries nothing we need.
		default:
			return nil, fmt.Errorf("PEM block %d: unsupported type %q", n, b.Type)
		}
	}
	if n == 0 {
		return nil, errors.New("no PEM block found (truncated?)")
	}
	if bytes.Contains(rest, []byte("-----BEGIN ")) {
		return nil, fmt.Errorf("PEM block %d: truncated or damaged", n+1)
	}
	return &pc, nil
}

func parsePrivateKey(b *pem.Block) (gocrypto.Signer, error) {
	var k any
	var err error
	switch b.Type {
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(b.Bytes)
	default:
		k, err = x509.ParsePKCS8PrivateKey(b.Bytes)
	}
	if err != nil {
		return nil, fmt.Errorf("private key: %w", err)
	}
	s, ok := k.(gocrypto.Signer)
	if !ok {
		return nil, fmt.Errorf("private key: unsupported type %T", k)
	}
	return s, nil
}

// keyMatchesCert reports whether the private key belongs to the certificate.
func keyMatchesCert(k gocrypto.Signer, c *x509.Certificate) bool {
	type equaler interface{ Equal(gocrypto.PublicKey) bool }
	pub, ok := k.Public().(equaler)
	return ok && pub.Equal(c.PublicKey)
}
