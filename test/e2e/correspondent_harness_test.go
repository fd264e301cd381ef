package e2e

import (
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// smimeSender is an outside correspondent with an S/MIME certificate
// issued by a test CA (openssl), writing to the gateway.
type smimeSender struct {
	Addr       string
	CA         string // the CA certificate (PEM), to import with --ca
	key, cert  string
	gatewayPEM string
	dir        string
}

// newSMIMESender makes a CA and a signing certificate for addr, and
// imports the CA into the keystore at ks as a trust anchor, so that the
// gateway calls addr's signatures valid. Messages are encrypted to the
// gateway certificate (rt@example.org) of that keystore.
func newSMIMESender(t testing.TB, ks, addr string) *smimeSender {
	t.Helper()
	requirePeers(t, false, "openssl")
	dir := tempDir(t, "cm-sms-")
	s := &smimeSender{Addr: addr, dir: dir, CA: filepath.Join(dir, "ca.pem"),
		key: filepath.Join(dir, "sender.key"), cert: filepath.Join(dir, "sender.pem"), gatewayPEM: filepath.Join(dir, "gw.pem")}
	p := func(name string) string { return filepath.Join(dir, name) }
	// P-256 keys: quick to make, and S/MIME signatures (RFC 5753) the
	// gateway verifies.
	ec := []string{"-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"}
	s.openssl(t, append(append([]string{"req", "-x509"}, ec...), "-nodes", "-keyout", p("ca.key"), "-out", s.CA, "-days", "30", "-subj", "/CN=Test Mail CA",
		"-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign")...)
	s.openssl(t, append(append([]string{"req"}, ec...), "-nodes", "-keyout", s.key, "-out", p("sender.csr"), "-subj", "/CN="+addr)...)
	writeFile(t, p("ext.cnf"), "subjectAltName=email:"+addr+"\nextendedKeyUsage=emailProtection\nkeyUsage=digitalSignature\n", 0o644)
	s.openssl(t, "x509", "-req", "-in", p("sender.csr"), "-CA", s.CA, "-CAkey", p("ca.key"), "-CAcreateserial", "-out", s.cert, "-days", "30", "-extfile", p("ext.cnf"))
	ca, err := os.ReadFile(s.CA)
	if err != nil {
		t.Fatal(err)
	}
	opts := keystore.Options{Dir: ks}
	if _, err := keystore.Import(opts, ca, "ca.pem", true, nil, time.Now()); err != nil {
		t.Fatalf("import the test CA: %v", err)
	}
	writeFile(t, s.gatewayPEM, gatewayCertPEM(t, ks), 0o644)
	return s
}

func (s *smimeSender) openssl(t testing.TB, args ...string) {
	t.Helper()
	if _, err := cmdOut(t, nil, "openssl", args...); err != nil {
		t.Fatal(err)
	}
}

// Message is a message from the sender to the gateway (rt@example.org):
// text, signed by the sender, then encrypted to the gateway's certificate.
func (s *smimeSender) Message(t testing.TB, subject, text string) []byte {
	t.Helper()
	dir := tempDir(t, "cm-smm-")
	writeFile(t, filepath.Join(dir, "inner.eml"), "Content-Type: text/plain; charset=us-ascii\r\n\r\n"+text+"\r\n", 0o644)
	s.openssl(t, "smime", "-sign", "-in", filepath.Join(dir, "inner.eml"), "-signer", s.cert, "-inkey", s.key, "-out", filepath.Join(dir, "signed.eml"))
	signed, err := os.ReadFile(filepath.Join(dir, "signed.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return encryptToGateway(t, s.gatewayPEM, s.Addr, subject, signed)
}

// encryptToGateway encrypts entity (a MIME entity: header, blank line,
// body) with openssl to the gateway certificate in the PEM file gwCert
// (AES-256), as a message from from to rt@example.org with CRLF line ends.
func encryptToGateway(t testing.TB, gwCert, from, subject string, entity []byte) []byte {
	t.Helper()
	requirePeers(t, false, "openssl")
	dir := tempDir(t, "cm-enc-")
	in, out := filepath.Join(dir, "in.eml"), filepath.Join(dir, "enc.eml")
	writeFile(t, in, string(entity), 0o600)
	if _, err := cmdOut(t, nil, "openssl", "smime", "-encrypt", "-aes256", "-in", in, "-out", out,
		"-from", from, "-to", "rt@example.org", "-subject", subject, gwCert); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return crlf(b)
}

// gatewayCertPEM is the gateway's S/MIME certificate (rt@example.org) in
// the keystore at ks.
func gatewayCertPEM(t testing.TB, ks string) string {
	t.Helper()
	snap, err := keystore.Load(keystore.Options{Dir: ks})
	if err != nil {
		t.Fatal(err)
	}
	id, err := snap.GatewaySMIME("rt@example.org")
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw}))
}

// gatewayVerifier is a gpg home holding only the gateway's OpenPGP public
// key from the keystore at ks, as an outPeers that can check signed-only
// copies (pgpVerifySigned) but has no correspondents.
func gatewayVerifier(t testing.TB, ks string) *outPeers {
	t.Helper()
	requirePeers(t, false, "gpg", "gpgconf")
	snap, err := keystore.Load(keystore.Options{Dir: ks})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := snap.GatewayOpenPGPAt("rt@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := gw.GetArmoredPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	p := &outPeers{keystore: ks, verifier: gpgHome(t), gwKeyID: strings.ToUpper(gw.GetHexKeyID())}
	if _, err := cmdOut(t, []byte(pub), "gpg", "--homedir", p.verifier, "--batch", "--import"); err != nil {
		t.Fatal(err)
	}
	return p
}

// isSigned reports whether a delivered message is a copy the gateway
// signed (PGP/MIME multipart/signed).
func isSigned(m *Mail) bool {
	return strings.Contains(strings.Join(m.Get("Content-Type"), " "), "multipart/signed")
}

// gatewayCert writes the gateway's S/MIME certificate to a file and
// returns its name.
func (p *outPeers) gatewayCert(t testing.TB) string {
	t.Helper()
	if p.gwCert == "" {
		p.gwCert = filepath.Join(tempDir(t, "cm-gwc-"), "gw.pem")
		writeFile(t, p.gwCert, gatewayCertPEM(t, p.keystore), 0o644)
	}
	return p.gwCert
}
