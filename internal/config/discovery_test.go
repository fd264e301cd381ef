package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"github.com/cryptmilter/cryptmilter/crypto"
	"math/big"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDiscoveryDefaults(t *testing.T) {
	c, err := Parse([]byte(""))
	if err != nil {
		t.Fatal(err)
	}
	want := Discovery{Sources: []string{}, Resolver: "127.0.0.1:53", Timeout: Duration(3 * time.Second),
		CacheTTL: Duration(24 * time.Hour), NegativeTTL: Duration(time.Hour)}
	if diff := cmp.Diff(want, c.Discovery); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if c.Discovery.Enabled() {
		t.Error("discovery is on by default")
	}
}

func TestDiscoveryParse(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "ca.pem")
	cert := writeTestCA(t, ca)
	doc := `
[discovery]
sources = ["dane", "wkd"]
resolver = "[::1]:5353"
ca_file = "` + ca + `"
timeout = "1500ms"
cache_ttl = "2h"
negative_ttl = "10m"
[[outbound.rule]]
match = "@partner.example"
policy = "required"
min_trust = "dane"
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	want := Discovery{Sources: []string{"dane", "wkd"}, Resolver: "[::1]:5353", CAFile: ca,
		Timeout: Duration(1500 * time.Millisecond), CacheTTL: Duration(2 * time.Hour), NegativeTTL: Duration(10 * time.Minute)}
	if diff := cmp.Diff(want, c.Discovery); diff != "" {
		t.Errorf("discovery (-want +got):\n%s", diff)
	}
	if !c.Discovery.Uses(SourceDANE) || !c.Discovery.Uses(SourceWKD) {
		t.Error("Uses")
	}
	if c.Outbound.Rules[0].MinTrust != crypto.TrustDANE {
		t.Errorf("min_trust %q", c.Outbound.Rules[0].MinTrust)
	}
	certs, err := ReadCAFile(ca)
	if err != nil || len(certs) != 1 || !certs[0].Equal(cert) {
		t.Errorf("ReadCAFile: %v %v", certs, err)
	}
	// A file without certificates is refused with its name.
	empty := filepath.Join(t.TempDir(), "empty.pem")
	os.WriteFile(empty, []byte("not pem\n"), 0o644)
	if _, err := Parse([]byte("[discovery]\nca_file = \"" + empty + "\"\n")); err == nil {
		t.Error("a ca_file without certificates was accepted")
	}
	// WKD alone may use a remote resolver.
	if _, err := Parse([]byte("[discovery]\nsources = [\"wkd\"]\nresolver = \"192.0.2.53:53\"\n")); err != nil {
		t.Errorf("wkd with a remote resolver: %v", err)
	}
}

// writeTestCA writes a fresh self-signed CA certificate to path.
func writeTestCA(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c
}
