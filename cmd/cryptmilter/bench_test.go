package main

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/google/go-cmp/cmp"
)

// benchCorrespondent writes alice@example.net's keys into dir: an OpenPGP
// secret key (alice-sec.asc) with its public key (alice-pub.asc), and an
// S/MIME key and certificate (alice.pem) issued by a CA (ca.pem).
func benchCorrespondent(t *testing.T, dir string) {
	t.Helper()
	k, err := pgpcrypto.PGP().KeyGeneration().AddUserId("Alice", "alice@example.net").
		GenerationTime(time.Now().Add(-time.Hour).Unix()).New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	sec, err := k.Armor()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := k.GetArmoredPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, data []byte) {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("alice-sec.asc", []byte(sec))
	write("alice-pub.asc", []byte(pub))

	now := time.Now()
	caKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Bench CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "Alice"}, EmailAddresses: []string{"alice@example.net"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	write("ca.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}))
	write("alice-cert.pem", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
	write("alice.pem", append(pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)}),
		pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...))
}

// TestBenchInboundCiphertext drives a real daemon with `cryptmilter bench
// -c` in both protocols: every message is real ciphertext that the daemon
// decrypts; with the correspondent's key (--signer-key, its public half in
// the keystore) every signature is valid, with a throwaway correspondent
// every one is untrusted, and a recipient that is not the gateway fails
// the run. The JSON keeps its shape.
func TestBenchInboundCiphertext(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	port := freePort(t)
	cfg := filepath.Join(dir, "c.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("keystore = %q\nlisten = [\"inet:127.0.0.1:%d\"]\n[identity]\naddresses = [\"rt@example.org\"]\n[direction]\ninternal_hosts = []\n",
		filepath.Join(dir, "keys"), port)), 0o644)
	benchCorrespondent(t, dir)
	for _, args := range [][]string{
		{"init", "rt@example.org"},
		{"import", filepath.Join(dir, "alice-pub.asc"), filepath.Join(dir, "alice-cert.pem")},
		{"import", "--ca", filepath.Join(dir, "ca.pem")},
	} {
		var out, errb bytes.Buffer
		if code := run(append([]string{"keys", "-c", cfg}, args...), nil, &out, &errb); code != 0 {
			t.Fatalf("keys %v: exit %d: %s", args, code, errb.String())
		}
	}
	startDaemon(t, dir)
	bench := func(extra ...string) (int, string, string) {
		var out, errb bytes.Buffer
		args := append([]string{"bench", "-c", cfg, "--connect", fmt.Sprintf("inet:127.0.0.1:%d", port), "--direction", "in",
			"--from", "alice@example.net", "--size", "10000", "--messages", "12", "--concurrency", "4"}, extra...)
		code := run(args, nil, &out, &errb)
		return code, out.String(), errb.String()
	}
	for _, tc := range []struct {
		protocol, signer, verdict string
	}{
		{"openpgp", "alice-sec.asc", "signature valid 12"},
		{"smime", "alice.pem", "signature valid 12"},
		{"openpgp", "", "signature untrusted 12"},
		{"smime", "", "signature untrusted 12"},
	} {
		extra := []string{"--rcpt", "rt@example.org", "--protocol", tc.protocol}
		if tc.signer != "" {
			extra = append(extra, "--signer-key", filepath.Join(dir, tc.signer))
		}
		code, out, errb := bench(extra...)
		if code != 0 || !strings.Contains(out, "verdicts: encryption decrypted 12, "+tc.verdict) || !strings.Contains(out, "accept 12; errors 0") {
			t.Errorf("%s, signer %q: exit %d\n%s%s", tc.protocol, tc.signer, code, out, errb)
		}
		if throwaway := strings.Contains(errb, "throwaway correspondent"); throwaway != (tc.signer == "") {
			t.Errorf("%s, signer %q: throwaway hint %v: %s", tc.protocol, tc.signer, throwaway, errb)
		}
	}
	code, out, errb := bench("--rcpt", "rt@example.org", "--json")
	var res benchResult
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Messages != 12 || res.Actions["accept"] != 12 || res.PerSecond <= 0 {
		t.Errorf("--json: exit %d, %v, %+v\n%s%s", code, err, res, out, errb)
	}
	var shape map[string]any
	json.Unmarshal([]byte(out), &shape)
	var keys []string
	for k := range shape {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"actions", "bytes_per_second", "concurrency", "direction", "errors", "latency_max_ms", "latency_p50_ms",
		"latency_p90_ms", "latency_p99_ms", "messages", "messages_per_second", "modifications", "seconds", "size"}
	if diff := cmp.Diff(want, keys); diff != "" {
		t.Errorf("--json fields (-want +got):\n%s", diff)
	}
	// The gateway's own key, but a recipient it does not decrypt for: the
	// milter tags the message, and bench says it was not decrypted.
	os.WriteFile(filepath.Join(dir, "other.toml"), []byte(fmt.Sprintf("keystore = %q\n", filepath.Join(dir, "other"))), 0o644)
	if code := run([]string{"keys", "-c", filepath.Join(dir, "other.toml"), "init", "rt@example.org"}, nil, &bytes.Buffer{}, &bytes.Buffer{}); code != 0 {
		t.Fatal("keys init other")
	}
	var o, e bytes.Buffer
	code = run([]string{"bench", "-c", filepath.Join(dir, "other.toml"), "--connect", fmt.Sprintf("inet:127.0.0.1:%d", port), "--direction", "in",
		"--from", "alice@example.net", "--rcpt", "rt@example.org", "--messages", "3"}, nil, &o, &e)
	if code != 1 || !strings.Contains(e.String(), "was not decrypted") {
		t.Errorf("ciphertext for another gateway: exit %d\n%s%s", code, o.String(), e.String())
	}
	// Flags that only make sense together.
	for _, bad := range [][]string{
		{"--direction", "out", "-c", cfg},
		{"--direction", "in", "--signer-key", "x"},
		{"--direction", "in", "-c", cfg, "--protocol", "pgp"},
	} {
		var o, e bytes.Buffer
		args := append([]string{"bench", "--connect", "inet:127.0.0.1:1", "--from", "a@example.net", "--rcpt", "b@example.org"}, bad...)
		if code := run(args, nil, &o, &e); code != 1 || !strings.Contains(e.String(), "bench: ") {
			t.Errorf("%v: exit %d, %s", bad, code, e.String())
		}
	}
}
