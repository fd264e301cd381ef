package keystore

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// smimeCert makes an RSA key and a self-signed S/MIME certificate for
// addr; with key, the PEM holds the key too (a gateway identity).
func smimeCert(t *testing.T, addr string, key bool) []byte {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), EmailAddresses: []string{addr},
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &k.PublicKey, k)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if key {
		kd, _ := x509.MarshalPKCS8PrivateKey(k)
		pem.Encode(&b, &pem.Block{Type: "PRIVATE KEY", Bytes: kd})
	}
	pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: der})
	return b.Bytes()
}

// faultStore is a keystore owned by the helper's user with one key in
// each place: alice's OpenPGP key, dave's certificate, the gateway's
// OpenPGP key and S/MIME identity (gw@example.org).
func faultStore(t *testing.T) Options {
	t.Helper()
	o := Options{Dir: unprivDir(t)}
	alice, _ := genPGP(t, "alice@example.org", time.Now().Add(-time.Hour), false)
	gw, _ := genPGP(t, "gw@example.org", time.Now().Add(-time.Hour), true)
	files := map[string][]byte{
		"openpgp/alice.asc":      []byte(alice),
		"certs/dave.pem":         smimeCert(t, "dave@example.org", false),
		"private/openpgp/gw.asc": []byte(gw),
		"private/smime/gw.pem":   smimeCert(t, "gw@example.org", true),
	}
	if _, err := ensureDirs(o); err != nil {
		t.Fatal(err)
	}
	for rel, b := range files {
		mode := os.FileMode(0o644)
		if strings.HasPrefix(rel, DirPrivate) {
			mode = 0o600
		}
		if err := os.WriteFile(filepath.Join(o.Dir, rel), b, mode); err != nil {
			t.Fatal(err)
		}
	}
	chownTree(t, o.Dir)
	return o
}

var faultProbes = []string{"alice@example.org", "dave@example.org", "gw@example.org", "nobody@example.org"}

// faultBaseline is what the lookups of faultProbes answer with every
// file readable.
func faultBaseline() map[string]string {
	m := map[string]string{}
	for _, a := range faultProbes {
		for _, k := range []string{"openpgp", "cert", "gw-openpgp", "gw-smime"} {
			m[a+" "+k] = "nokey"
		}
	}
	m["alice@example.org openpgp"] = "ok"
	m["dave@example.org cert"] = "ok"
	m["gw@example.org gw-openpgp"] = "ok"
	m["gw@example.org gw-smime"] = "ok"
	return m
}

// under reports whether rel is path or below it.
func under(rel, path string) bool { return rel == path || strings.HasPrefix(rel, path+"/") }

// TestUnreadableKeepsKeys: a file or directory that becomes unreadable to
// the daemon's user (a real chmod 000, seen by an unprivileged process)
// never shrinks the keyring on reload (watch-less Reload and SIGHUP's
// SetOptions); it is a fault that makes the daemon unhealthy. A fresh
// load that finds it unreadable answers lookups there with ErrUnavailable,
// never ErrNoKey, and refuses to create an identity over it.
func TestUnreadableKeepsKeys(t *testing.T) {
	for _, tc := range []struct {
		path string
		kind string // lookups that depend on it
	}{
		{"openpgp", "openpgp"},
		{"openpgp/alice.asc", "openpgp"},
		{"certs", "cert"},
		{"certs/dave.pem", "cert"},
		{"private", "gw-"},
		{"private/openpgp", "gw-openpgp"},
		{"private/openpgp/gw.asc", "gw-openpgp"},
		{"private/smime", "gw-smime"},
		{"private/smime/gw.pem", "gw-smime"},
	} {
		t.Run(strings.ReplaceAll(tc.path, "/", "_"), func(t *testing.T) {
			o := faultStore(t)
			h := startHelper(t, o.Dir, faultProbes...)
			r := h.do("holder")
			if r.Err != "" || len(r.Faults) != 0 || !r.HealthOK {
				t.Fatalf("before: %+v", r)
			}
			if d := cmp.Diff(faultBaseline(), r.Lookups); d != "" {
				t.Fatalf("lookups before (-want +got):\n%s", d)
			}
			p := filepath.Join(o.Dir, tc.path)
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, 0); err != nil {
				t.Fatal(err)
			}
			// Reload (the watcher's) and SetOptions (SIGHUP's) keep the keys.
			for _, cmd := range []string{"reload", "sighup"} {
				r = h.do(cmd)
				if r.Err != "" {
					t.Fatalf("%s: %s", cmd, r.Err)
				}
				if d := cmp.Diff(faultBaseline(), r.Lookups); d != "" {
					t.Errorf("%s with %s unreadable: lookups changed (-want +got):\n%s", cmd, tc.path, d)
				}
				faulted := false
				for _, f := range r.Faults {
					if under(f.Path, tc.path) && f.Kept && strings.Contains(f.Err, "permission denied") {
						faulted = true
					}
				}
				if !faulted || len(r.Unavailable) != 0 {
					t.Errorf("%s: faults %+v, unavailable %v; want a kept fault for %s and nothing unavailable", cmd, r.Faults, r.Unavailable, tc.path)
				}
				if r.HealthOK || !strings.Contains(strings.Join(r.Health, "\n"), tc.path) {
					t.Errorf("%s: health ok=%v %q; want unhealthy naming %s", cmd, r.HealthOK, r.Health, tc.path)
				}
			}
			// A fresh load (the daemon starting) knows nothing of those keys.
			r = h.do("load")
			want := faultBaseline()
			for k := range want {
				if strings.Contains(k, " "+tc.kind) {
					want[k] = "unavailable"
				}
			}
			if d := cmp.Diff(want, r.Lookups); d != "" {
				t.Errorf("fresh load with %s unreadable: lookups (-want +got):\n%s", tc.path, d)
			}
			for _, f := range r.Faults {
				if f.Kept {
					t.Errorf("fresh load: fault %+v kept from nothing", f)
				}
			}
			if strings.HasPrefix(tc.path, DirPrivate) {
				before := treeHash(t, o.Dir)
				if r := h.do("init new@example.org"); !strings.Contains(r.Err, "unavailable") && !strings.Contains(r.Err, "permission denied") {
					t.Errorf("Init with %s unreadable: %q, want an error saying unavailable or permission denied", tc.path, r.Err)
				}
				if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
					t.Errorf("Init with %s unreadable changed the keystore:\n%s", tc.path, d)
				}
				if fi.IsDir() {
					if r := h.do("initialized"); !strings.Contains(r.Err, "permission denied") {
						t.Errorf("IsInitialized with %s unreadable: %q, want the read error", tc.path, r.Err)
					}
				}
			}
			os.Chmod(p, fi.Mode().Perm())
			r = h.do("reload")
			if r.Err != "" || len(r.Faults) != 0 || !r.HealthOK {
				t.Errorf("after restoring %s: %+v", tc.path, r)
			}
			if d := cmp.Diff(faultBaseline(), r.Lookups); d != "" {
				t.Errorf("lookups after restoring (-want +got):\n%s", d)
			}
		})
	}
}

// TestWatchUnreadable: the watcher itself reloads on the chmod, keeps the
// keys, and recovers when the permissions are restored.
func TestWatchUnreadable(t *testing.T) {
	for _, path := range []string{"openpgp", "private/openpgp/gw.asc"} {
		t.Run(strings.ReplaceAll(path, "/", "_"), func(t *testing.T) {
			o := faultStore(t)
			h := startHelper(t, o.Dir, faultProbes...)
			h.do("holder")
			h.do("watch")
			p := filepath.Join(o.Dir, path)
			fi, _ := os.Stat(p)
			os.Chmod(p, 0)
			r := h.do("await-fault " + path)
			found := false
			for _, f := range r.Faults {
				found = found || f.Path == path && f.Kept
			}
			if !found || r.HealthOK {
				t.Fatalf("watcher did not report %s unreadable: %+v", path, r)
			}
			if d := cmp.Diff(faultBaseline(), r.Lookups); d != "" {
				t.Errorf("lookups after the watcher's reload (-want +got):\n%s", d)
			}
			os.Chmod(p, fi.Mode().Perm())
			if r := h.do("await-clean"); len(r.Faults) != 0 || !r.HealthOK {
				t.Errorf("watcher did not recover: %+v", r)
			}
		})
	}
}
