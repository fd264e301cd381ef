package keystore

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"
)

func TestCheckOpenPGP(t *testing.T) {
	f := getFixtures(t)
	now := time.Now()
	pub := readFile(t, f.pubArmored) // alice@example.org, bob@example.org, carol@example.net
	weak, err := openpgp.NewEntity("Weak", "", "weak@example.org", &packet.Config{Algorithm: packet.PubKeyAlgoRSA, RSABits: 1024})
	if err != nil {
		t.Fatal(err)
	}
	var weakPub bytes.Buffer
	weak.Serialize(&weakPub)
	tests := []struct {
		name, addr string
		data       []byte
		fold       bool
		wantFpr    string
		wantErr    string
	}{
		{name: "the key of the address among others", addr: "bob@example.org", data: pub, wantFpr: f.fprs["bob@example.org"]},
		{name: "domain case does not matter", addr: "bob@EXAMPLE.org", data: pub, wantFpr: f.fprs["bob@example.org"]},
		{name: "local part case matters", addr: "Bob@example.org", data: pub, wantErr: "no user ID for Bob@example.org"},
		{name: "local part folded", addr: "Bob@example.org", fold: true, data: pub, wantFpr: f.fprs["bob@example.org"]},
		{name: "wrong user ID", addr: "mallory@example.org", data: pub, wantErr: "no user ID for mallory@example.org"},
		{name: "expired", addr: "old@example.org", data: readFile(t, f.expired), wantErr: "expired"},
		{name: "RSA below 2048 bits", addr: "weak@example.org", data: weakPub.Bytes(), wantErr: "weak"},
		{name: "secret key material", addr: "gw@example.org", data: readFile(t, f.secPlain), wantErr: "secret key material"},
		{name: "not a key", addr: "bob@example.org", data: []byte("<html>not found</html>"), wantErr: "no usable key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := CheckOpenPGP(tt.data, tt.addr, tt.fold, now)
			if tt.wantErr != "" {
				if err == nil || !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want ErrNoKey containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.Fingerprint != tt.wantFpr || k.OpenPGP == nil || k.OpenPGP.GetFingerprint() != strings.ToLower(tt.wantFpr) {
				t.Fatalf("fingerprint %s, want %s", k.Fingerprint, tt.wantFpr)
			}
			// What is stored is the chosen key alone.
			again, err := CheckOpenPGP(k.Armored, tt.addr, tt.fold, now)
			if err != nil || again.Fingerprint != k.Fingerprint {
				t.Fatalf("stored form: %v", err)
			}
			ents, err := parseOpenPGP(k.Armored)
			if err != nil || len(ents) != 1 {
				t.Fatalf("stored form holds %d keys (%v), want 1", len(ents), err)
			}
		})
	}
}

func TestCheckCertificate(t *testing.T) {
	f := getFixtures(t)
	b, _ := pem.Decode(readFile(t, f.sanCert)) // dave@example.org, RSA 2048, emailProtection
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	k, err := CheckCertificate(c, "dave@Example.ORG", false, now)
	if err != nil {
		t.Fatal(err)
	}
	if k.Fingerprint != certHash(c) || k.Cert != c || !bytes.Contains(k.Armored, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("checked %+v", k)
	}
	if _, err := CheckCertificate(c, "eve@example.org", false, now); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "not for eve@example.org") {
		t.Errorf("other address: %v", err)
	}
	if _, err := CheckCertificate(c, "dave@example.org", false, c.NotAfter.Add(time.Hour)); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("after expiry: %v", err)
	}
}

// TestLoaderIgnoresDiscovered: the discovery cache is neither read as
// keys nor reported as orphaned.
func TestLoaderIgnoresDiscovered(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.sanCert)
	dir := filepath.Join(o.Dir, DirDiscovered)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "bob@example.org.wkd.json"), readFile(t, f.pubArmored), 0o644)
	s := mustLoad(t, o)
	if _, err := s.EncryptionKey("bob@example.org", time.Now()); err == nil {
		t.Error("a key in discovered/ was loaded")
	}
	for _, fd := range s.Check(time.Now(), 30*24*time.Hour, nil) {
		if strings.Contains(fd.File, DirDiscovered) {
			t.Errorf("keys check reports %s", fd)
		}
	}
	if s.Pinned("dave@example.org") {
		t.Error("Pinned without a pin")
	}
	o.Pins = map[string]string{"dave@example.org": certHash(mustCert(t, f.sanCert))}
	if !mustLoad(t, o).Pinned("dave@EXAMPLE.org") {
		t.Error("the domain of a pinned address is case-insensitive")
	}
}

func mustCert(t *testing.T, file string) *x509.Certificate {
	t.Helper()
	b, _ := pem.Decode(readFile(t, file))
	c, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
