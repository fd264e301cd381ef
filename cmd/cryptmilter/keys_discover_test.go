package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// discoverFixture is a keystore with the gateway identity, a config whose
// resolver is a test DNS server publishing DANE records: dana@example.com
// (OPENPGPKEY and SMIMEA, validated), olga@example.com (OPENPGPKEY
// without the AD bit).
type discoverFixture struct {
	dir, cfg  string
	dns       *discovertest.DNS
	certFpr   string
	pgpPublic []byte
}

func newDiscoverFixture(t *testing.T, extra string) *discoverFixture {
	t.Helper()
	f := &discoverFixture{dir: t.TempDir(), dns: discovertest.StartDNS(t)}
	ks := filepath.Join(f.dir, "keys")
	if _, err := keystore.Init(keystore.Options{Dir: ks}, []string{"rt@example.org"}, false, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	ent, err := openpgp.NewEntity("Dana", "", "dana@example.com", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519,
		Time: func() time.Time { return time.Now().Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	var pub bytes.Buffer
	ent.Serialize(&pub)
	f.pgpPublic = pub.Bytes()
	f.dns.OPENPGPKEY("dana@example.com", pub.Bytes(), true)
	f.dns.OPENPGPKEY("olga@example.com", pub.Bytes(), false)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(7), Subject: pkix.Name{CommonName: "Dana"}, EmailAddresses: []string{"dana@example.com"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), KeyUsage: x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f.dns.SMIMEA("dana@example.com", 3, der, true)
	c, _ := x509.ParseCertificate(der)
	ck, err := keystore.CheckCertificate(c, "dana@example.com", false, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.certFpr = ck.Fingerprint
	f.cfg = filepath.Join(f.dir, "c.toml")
	conf := "keystore = \"" + ks + "\"\nhostname = \"mx.example.org\"\n[identity]\naddresses = [\"rt@example.org\"]\n" +
		"[discovery]\nsources = [\"dane\"]\nresolver = \"" + f.dns.Addr + "\"\ntimeout = \"2s\"\n" + extra
	if err := os.WriteFile(f.cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func runMain(t *testing.T, stdin []byte, args ...string) (string, string, int) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func TestKeysDiscover(t *testing.T) {
	f := newDiscoverFixture(t, "")
	out, errs, code := runMain(t, nil, "keys", "-c", f.cfg, "discover", "dana@example.com")
	if code != 0 {
		t.Fatalf("keys discover: %d\n%s%s", code, out, errs)
	}
	for _, want := range []string{"source:      dane", "status:      found", "openpgp:", "smime:", f.certFpr, "_openpgpkey.example.com OPENPGPKEY", "cached:      until"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	// Stored: keys list shows both, with their source.
	out, errs, code = runMain(t, nil, "keys", "-c", f.cfg, "list")
	if code != 0 || strings.Count(out, "discovered/dane") != 2 || !strings.Contains(out, "discovered/dana@example.com.dane.json") {
		t.Fatalf("keys list: %d\n%s%s", code, out, errs)
	}
	out, _, _ = runMain(t, nil, "keys", "-c", f.cfg, "list", "--json")
	var ents []keystore.Entry
	if err := json.Unmarshal([]byte(out), &ents); err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if e.Kind == "discovered" && e.Source == "dane" && e.Usable && e.Addresses[0] == "dana@example.com" {
			n++
		}
	}
	if n != 2 {
		t.Errorf("keys list --json: %d discovered entries, want 2:\n%s", n, out)
	}
	// The keystore itself did not take them.
	if _, errs, code := runMain(t, nil, "keys", "-c", f.cfg, "show", "dana@example.com"); code == 0 {
		t.Errorf("keys show finds the discovered key as an admin's key\n%s", errs)
	}
	// JSON output of discover: the answer, without key material.
	out, _, code = runMain(t, nil, "keys", "-c", f.cfg, "discover", "--json", "dana@example.com")
	if code != 0 || !strings.Contains(out, `"status": "found"`) || strings.Contains(out, "BEGIN") {
		t.Errorf("keys discover --json: %d\n%s", code, out)
	}
	// Not validated: nothing found, exit 1, the reason said.
	out, errs, code = runMain(t, nil, "keys", "-c", f.cfg, "discover", "olga@example.com")
	if code != 1 || !strings.Contains(out, "status:      insecure") || !strings.Contains(out, "AD bit") || !strings.Contains(errs, "no usable key found for olga@example.com") {
		t.Errorf("keys discover olga: %d\n%s%s", code, out, errs)
	}
	// keys remove ADDR removes the cached answers.
	out, errs, code = runMain(t, nil, "keys", "-c", f.cfg, "remove", "dana@example.com")
	if code != 0 || !strings.Contains(out, "discovered/dana@example.com.dane.json (discovery cache)") {
		t.Fatalf("keys remove: %d\n%s%s", code, out, errs)
	}
	if out, _, _ := runMain(t, nil, "keys", "-c", f.cfg, "list"); strings.Contains(out, "discovered/") {
		t.Errorf("still listed after remove:\n%s", out)
	}
	// By fingerprint too.
	runMain(t, nil, "keys", "-c", f.cfg, "discover", "dana@example.com")
	if out, errs, code := runMain(t, nil, "keys", "-c", f.cfg, "remove", f.certFpr); code != 0 || !strings.Contains(out, "discovery cache") {
		t.Fatalf("keys remove FPR: %d\n%s%s", code, out, errs)
	}
	if _, errs, code := runMain(t, nil, "keys", "-c", f.cfg, "remove", "nobody@example.com"); code != 1 || !strings.Contains(errs, "not a fingerprint") {
		t.Errorf("keys remove of an unknown address: %d %s", code, errs)
	}
}

// TestProcessDiscovery: `cryptmilter process` runs discovery as the
// milter does: the DANE key of a recipient without a keystore key
// encrypts, and the log attribute says so.
func TestProcessDiscovery(t *testing.T) {
	f := newDiscoverFixture(t, "")
	msg := []byte("From: rt@example.org\r\nTo: dana@example.com\r\nSubject: hi\r\n\r\nHello.\r\n")
	out, errs, code := runMain(t, msg, "process", "-c", f.cfg, "--direction", "out", "--from", "rt@example.org", "--rcpt", "dana@example.com")
	if code != 0 || !strings.Contains(out, "multipart/encrypted") || !strings.Contains(out, "BEGIN PGP MESSAGE") {
		t.Fatalf("process: %d\n%s\n%s", code, out, errs)
	}
	// A required recipient whose lookup fails temporarily: 75, 451 4.7.0.
	f2 := newDiscoverFixture(t, "[[outbound.rule]]\nmatch = \"@example.com\"\npolicy = \"required\"\n")
	f2.dns.ServFail("sven@example.com")
	_, errs, code = runMain(t, msg, "process", "-c", f2.cfg, "--direction", "out", "--from", "rt@example.org", "--rcpt", "sven@example.com")
	if code != exitTempfail || !strings.Contains(errs, "451 4.7.0 <sven@example.com>") {
		t.Fatalf("process to sven: %d\n%s", code, errs)
	}
}
