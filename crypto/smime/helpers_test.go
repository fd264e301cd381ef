package smime

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// testCert is a certificate with its key, also written as PEM files for
// openssl.
type testCert struct {
	cert     *x509.Certificate
	key      crypto.Signer
	certFile string // PEM certificate
	keyFile  string // PEM PKCS#8 key
}

func (c *testCert) identity() Identity { return Identity{Cert: c.cert, Key: c.key} }

// pki is the test PKI, made once per test binary.
type pki struct {
	dir string

	root, inter *testCert // trusted root (ECDSA) and intermediate (ECDSA)
	otherRoot   *testCert // untrusted CA

	alice     *testCert // RSA-2048, SAN + EKU emailProtection, issued by inter, has SKI
	rsa3072   *testCert // RSA-3072, issued by root
	subjOnly  *testCert // RSA-2048, address only in subject emailAddress, no extensions but basic
	ecUser    *testCert // ECDSA P-256 signer / KARI recipient
	expired   *testCert // RSA, NotAfter in the past
	revoked   *testCert // RSA, listed in crl
	serverEKU *testCert // RSA, EKU serverAuth only
	encOnlyKU *testCert // RSA, keyUsage keyEncipherment only
	selfSign  *testCert // RSA, self-signed, not trusted
	rogue     *testCert // RSA, issued by otherRoot

	crl      *x509.RevocationList // by root: revokes "revoked"
	bogusCRL *x509.RevocationList // claims root as issuer, signed by otherRoot: revokes alice
	roots    *x509.CertPool
}

var (
	pkiOnce sync.Once
	pkiVal  *pki
	pkiErr  error
)

// testPKI returns the shared PKI; files live in a directory removed by
// TestMain.
func testPKI(t testing.TB) *pki {
	t.Helper()
	pkiOnce.Do(func() { pkiVal, pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatalf("make test pki: %v", pkiErr)
	}
	return pkiVal
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pkiVal != nil {
		os.RemoveAll(pkiVal.dir)
	}
	os.Exit(code)
}

var serialCounter = big.NewInt(1000)

type certSpec struct {
	name      string
	key       crypto.Signer
	subject   pkix.Name
	emails    []string
	isCA      bool
	eku       []x509.ExtKeyUsage
	ku        x509.KeyUsage
	notBefore time.Time
	notAfter  time.Time
	noSKI     bool
}

func (p *pki) issue(s certSpec, parent *testCert) (*testCert, error) {
	serialCounter = new(big.Int).Add(serialCounter, big.NewInt(1))
	tmpl := &x509.Certificate{
		SerialNumber:          new(big.Int).Set(serialCounter),
		Subject:               s.subject,
		EmailAddresses:        s.emails,
		NotBefore:             s.notBefore,
		NotAfter:              s.notAfter,
		BasicConstraintsValid: true,
		IsCA:                  s.isCA,
		ExtKeyUsage:           s.eku,
		KeyUsage:              s.ku,
	}
	if tmpl.NotBefore.IsZero() {
		tmpl.NotBefore = time.Now().Add(-time.Hour)
		if s.isCA {
			tmpl.NotBefore = time.Now().Add(-30 * 24 * time.Hour)
		}
	}
	if tmpl.NotAfter.IsZero() {
		tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	}
	if s.isCA {
		tmpl.KeyUsage |= x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	}
	if !s.noSKI && !s.isCA {
		spki, err := x509.MarshalPKIXPublicKey(s.key.Public())
		if err != nil {
			return nil, err
		}
		tmpl.RawSubjectPublicKeyInfo = spki
		tmpl.SubjectKeyId = computedSKI(tmpl)
		tmpl.RawSubjectPublicKeyInfo = nil
	}
	signerCert, signerKey := tmpl, s.key
	if parent != nil {
		signerCert, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signerCert, s.key.Public(), signerKey)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	tc := &testCert{cert: cert, key: s.key}
	tc.certFile = filepath.Join(p.dir, s.name+".crt")
	tc.keyFile = filepath.Join(p.dir, s.name+".key")
	kder, err := x509.MarshalPKCS8PrivateKey(s.key)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(tc.certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(tc.keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return nil, err
	}
	return tc, nil
}

func makePKI() (*pki, error) {
	dir, err := os.MkdirTemp("", "smime")
	if err != nil {
		return nil, err
	}
	p := &pki{dir: dir}
	ec := func() crypto.Signer {
		k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		return k
	}
	rsaKey := func(bits int) crypto.Signer {
		k, _ := rsa.GenerateKey(rand.Reader, bits)
		return k
	}
	// One RSA-2048 key serves several certificates; what is tested is
	// the certificate, not the key.
	k2048 := rsaKey(2048)
	k2048b := rsaKey(2048)
	sign := x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	email := []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}
	steps := []struct {
		dst    **testCert
		spec   certSpec
		parent **testCert
	}{
		{&p.root, certSpec{name: "root", key: ec(), subject: pkix.Name{CommonName: "Test Root"}, isCA: true}, nil},
		{&p.inter, certSpec{name: "inter", key: ec(), subject: pkix.Name{CommonName: "Test Intermediate"}, isCA: true}, &p.root},
		{&p.otherRoot, certSpec{name: "other", key: ec(), subject: pkix.Name{CommonName: "Other Root"}, isCA: true}, nil},
		{&p.alice, certSpec{name: "alice", key: k2048, subject: pkix.Name{CommonName: "Alice"}, emails: []string{"alice@example.org"}, eku: email, ku: sign}, &p.inter},
		{&p.rsa3072, certSpec{name: "rsa3072", key: rsaKey(3072), subject: pkix.Name{CommonName: "Big"}, emails: []string{"big@example.org"}, eku: email, ku: sign}, &p.root},
		{&p.subjOnly, certSpec{name: "subjonly", key: k2048b, noSKI: true, subject: pkix.Name{CommonName: "Carol", ExtraNames: []pkix.AttributeTypeAndValue{{Type: asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 1}, Value: "carol@example.org"}}}}, &p.inter},
		{&p.ecUser, certSpec{name: "ecuser", key: ec(), subject: pkix.Name{CommonName: "Eve"}, emails: []string{"eve@example.org"}, eku: email, ku: x509.KeyUsageDigitalSignature | x509.KeyUsageKeyAgreement}, &p.root},
		{&p.expired, certSpec{name: "expired", key: k2048b, subject: pkix.Name{CommonName: "Old"}, emails: []string{"old@example.org"}, eku: email, notBefore: time.Now().Add(-48 * time.Hour), notAfter: time.Now().Add(-24 * time.Hour)}, &p.root},
		{&p.revoked, certSpec{name: "revoked", key: k2048b, subject: pkix.Name{CommonName: "Rev"}, emails: []string{"rev@example.org"}, eku: email}, &p.root},
		{&p.serverEKU, certSpec{name: "server", key: k2048b, subject: pkix.Name{CommonName: "Srv"}, emails: []string{"srv@example.org"}, eku: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, &p.root},
		{&p.encOnlyKU, certSpec{name: "enconly", key: k2048b, subject: pkix.Name{CommonName: "Enc"}, emails: []string{"enc@example.org"}, ku: x509.KeyUsageKeyEncipherment}, &p.root},
		{&p.selfSign, certSpec{name: "self", key: k2048b, subject: pkix.Name{CommonName: "Self"}, emails: []string{"self@example.org"}}, nil},
		{&p.rogue, certSpec{name: "rogue", key: k2048b, subject: pkix.Name{CommonName: "Rogue"}, emails: []string{"rogue@example.org"}}, &p.otherRoot},
	}
	for _, s := range steps {
		var parent *testCert
		if s.parent != nil {
			parent = *s.parent
		}
		c, err := p.issue(s.spec, parent)
		if err != nil {
			return nil, err
		}
		*s.dst = c
	}
	p.roots = x509.NewCertPool()
	p.roots.AddCert(p.root.cert)

	crlDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: p.revoked.cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)},
		},
	}, p.root.cert, p.root.key)
	if err != nil {
		return nil, err
	}
	if p.crl, err = x509.ParseRevocationList(crlDER); err != nil {
		return nil, err
	}
	// A forged CRL: names the root as issuer but is signed by another key.
	forgedIssuer := *p.root.cert
	bogusDER, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
		Number:     big.NewInt(1),
		ThisUpdate: time.Now().Add(-time.Hour),
		NextUpdate: time.Now().Add(24 * time.Hour),
		RevokedCertificateEntries: []x509.RevocationListEntry{
			{SerialNumber: p.alice.cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)},
			{SerialNumber: p.inter.cert.SerialNumber, RevocationTime: time.Now().Add(-time.Minute)},
		},
	}, &forgedIssuer, p.otherRoot.key)
	if err != nil {
		return nil, err
	}
	if p.bogusCRL, err = x509.ParseRevocationList(bogusDER); err != nil {
		return nil, err
	}
	return p, nil
}

// needOpenSSL skips the test when the openssl binary is absent.
func needOpenSSL(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Skip("openssl not installed: skipping interop test")
	}
}

// openssl runs openssl with stdin and returns its stdout.
func openssl(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.String())
	}
	return stdout.Bytes()
}

// opensslErr runs openssl and returns its error and stderr.
func opensslErr(stdin []byte, args ...string) ([]byte, error) {
	cmd := exec.Command("openssl", args...)
	cmd.Stdin = bytes.NewReader(stdin)
	return cmd.CombinedOutput()
}

// writeTemp writes data to a new file in t.TempDir.
func writeTemp(t testing.TB, name string, data []byte) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// flipLast flips one bit in the byte at offset off counted from the
// first byte after the last occurrence of marker.
func flipAfterLast(t testing.TB, data, marker []byte, off int) []byte {
	t.Helper()
	i := bytes.LastIndex(data, marker)
	if i < 0 {
		t.Fatalf("marker %x not found", marker)
	}
	out := append([]byte(nil), data...)
	out[i+len(marker)+off] ^= 0x01
	return out
}
