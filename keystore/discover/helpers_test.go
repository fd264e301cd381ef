package discover

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"log/slog"
	"math/big"
	"net"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// wkdHosts are the host names the test WKD server has a certificate for;
// the test DNS server points them at 127.0.0.1.
var wkdHosts = []string{"openpgpkey.example.net", "example.net", "example.org", "openpgpkey.example.com", "example.com"}

// env is a Discoverer wired to a loopback DNS server and WKD server.
type env struct {
	dns  *discovertest.DNS
	wkd  *discovertest.WKD
	ca   *discovertest.CA
	dir  string // cache directory
	opts Options
	d    *Discoverer
	log  *syncBuffer
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// counter is an Observer.
type counter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *counter) DiscoveryLookup(source, result string) { c.add("lookup " + source + " " + result) }
func (c *counter) DiscoveryCache(source, result string)  { c.add("cache " + source + " " + result) }
func (c *counter) add(k string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[k]++
}
func (c *counter) get(k string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[k]
}

func newEnv(t testing.TB, mod func(*Options)) *env {
	t.Helper()
	e := &env{dns: discovertest.StartDNS(t), ca: discovertest.NewCA(t), dir: filepath.Join(t.TempDir(), "discovered"), log: &syncBuffer{}}
	e.wkd = discovertest.StartWKD(t, e.ca, "127.0.0.1:0", wkdHosts...)
	for _, h := range wkdHosts {
		e.dns.A(h, "127.0.0.1")
	}
	e.opts = Options{
		Discovery: config.Discovery{Sources: []string{"wkd", "dane"}, Resolver: e.dns.Addr, CAFile: e.ca.File,
			Timeout: config.Duration(2 * time.Second), CacheTTL: config.Duration(24 * time.Hour), NegativeTTL: config.Duration(time.Hour)},
		Dir:    e.dir,
		Logger: slog.New(slog.NewTextHandler(e.log, &slog.HandlerOptions{Level: slog.LevelDebug})),
	}
	if mod != nil {
		mod(&e.opts)
	}
	e.restart()
	return e
}

// restart replaces the Discoverer by a new one on the same cache, as a
// daemon restart does.
func (e *env) restart() {
	if e.d != nil {
		e.d.Close()
	}
	e.d = New(e.opts)
	e.d.httpsPort = e.wkd.Port()
}

func (e *env) lookup(t testing.TB, addr, src string, now time.Time) Answer {
	t.Helper()
	a := e.d.LookupMessage(context.Background(), []Request{{Address: addr, Sources: []string{src}}}, now)[addr]
	e.d.Flush() // the answer is in the cache
	if len(a) != 1 {
		t.Fatalf("LookupMessage gave %d answers, want 1", len(a))
	}
	return a[0]
}

// pgpKey makes an Ed25519/X25519 key for the user ID addr and returns it
// binary (public part) with its fingerprint.
func pgpKey(t testing.TB, addr string, cfg *packet.Config) ([]byte, string) {
	t.Helper()
	if cfg == nil {
		cfg = &packet.Config{}
	}
	cfg.Algorithm = packet.PubKeyAlgoEdDSA
	cfg.Curve = packet.Curve25519
	ent, err := openpgp.NewEntity("Test", "", addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := ent.Serialize(&b); err != nil {
		t.Fatal(err)
	}
	return b.Bytes(), fmtFpr(ent.PrimaryKey.Fingerprint)
}

func fmtFpr(b []byte) string {
	const hexd = "0123456789ABCDEF"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, hexd[c>>4], hexd[c&15])
	}
	return string(out)
}

var (
	certOnce sync.Once
	certKey  *rsa.PrivateKey
)

// smimeCert makes an RSA-2048 certificate for addr, self-signed, or
// issued by parent (with parentKey) when given.
func smimeCert(t testing.TB, addr string, usage x509.KeyUsage, parent *x509.Certificate, parentKey any) *x509.Certificate {
	t.Helper()
	certOnce.Do(func() {
		var err error
		certKey, err = rsa.GenerateKey(rand.Reader, 2048)
		if err != nil {
			panic(err)
		}
	})
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: addr},
		EmailAddresses: []string{addr}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour),
		KeyUsage: usage, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	if parent == nil {
		parent, parentKey = tmpl, certKey
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &certKey.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// freeAddr returns a loopback address on which nothing listens.
func freeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := l.Addr().String()
	l.Close()
	return a
}

// issueCA makes a CA certificate (ECDSA) for chains of test certificates.
func issueCA(t testing.TB, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(30 * 24 * time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	return c, key
}
