package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/google/go-cmp/cmp"
)

// keysRun runs `cryptmilter keys ARGS` on the keystore dir.
func keysRun(t *testing.T, dir string, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runKeys(dir, keystore.Options{}, args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, b := range tools {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed: %v", b, err)
		}
	}
}

// gpgHome makes a short-lived GnuPG home (short path: agent socket).
func gpgHome(t *testing.T) func(stdin []byte, args ...string) []byte {
	t.Helper()
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		t.Fatal(err)
	}
	// A cheap S2K count for protected keys keeps -race runs quick.
	os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("s2k-count 65536\n"), 0o600)
	t.Cleanup(func() {
		exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
		os.RemoveAll(home)
	})
	return func(stdin []byte, args ...string) []byte {
		t.Helper()
		cmd := exec.Command("gpg", append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--no-tty"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v\n%s", args, err, stderr.String())
		}
		return out
	}
}

func listAddrs(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, stderr, code := keysRun(t, dir, nil, "list", "--json")
	if code != 0 {
		t.Fatalf("keys list --json: exit %d: %s", code, stderr)
	}
	var entries []keystore.Entry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, out)
	}
	m := map[string]string{}
	for _, e := range entries {
		for _, a := range e.Addresses {
			status := "usable"
			if !e.Usable {
				status = e.Reason
			}
			m[a] = e.Protocol + " " + e.Kind + " " + status
		}
	}
	return m
}

// TestKeysRTMigration moves an RT installation's keys: the GnuPG home
// (public keys, and the RT queue's passphrase-protected secret key) and
// the S/MIME keyring directory of user@domain.pem files.
func TestKeysRTMigration(t *testing.T) {
	needTools(t, "gpg", "gpgconf", "openssl")
	gpg := gpgHome(t)
	tmp := t.TempDir()
	pass := filepath.Join(tmp, "rt-passphrase")
	os.WriteFile(pass, []byte("rt secret\n"), 0o600)
	gpg(nil, "--passphrase", "", "--quick-gen-key", "Alice <alice@example.net>", "future-default", "default", "never")
	gpg(nil, "--passphrase", "", "--quick-gen-key", "Bob <bob@example.com>", "future-default", "default", "never")
	gpg(nil, "--passphrase-file", pass, "--quick-gen-key", "RT Queue <rt@example.org>", "future-default", "default", "never")

	smimeDir := filepath.Join(tmp, "smime", "keys")
	os.MkdirAll(smimeDir, 0o700)
	for _, a := range []string{"rt@example.org", "support@example.org"} {
		cmd := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "c.pem",
			"-days", "365", "-subj", "/CN="+a, "-addext", "subjectAltName=email:"+a)
		cmd.Dir = tmp
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
		k, _ := os.ReadFile(filepath.Join(tmp, "k.pem"))
		c, _ := os.ReadFile(filepath.Join(tmp, "c.pem"))
		os.WriteFile(filepath.Join(smimeDir, a+".pem"), append(k, c...), 0o600)
	}

	ks := filepath.Join(tmp, "keystore")
	if out, stderr, code := keysRun(t, ks, gpg(nil, "--export"), "import", "-"); code != 0 {
		t.Fatalf("import public: exit %d\n%s%s", code, out, stderr)
	}
	secret := gpg(nil, "--passphrase-file", pass, "--export-secret-keys", "rt@example.org")
	if out, stderr, code := keysRun(t, ks, secret, "import", "-"); code == 0 || !strings.Contains(stderr, "--passphrase-file") {
		t.Errorf("import protected secret without passphrase: exit %d\n%s%s", code, out, stderr)
	}
	if out, stderr, code := keysRun(t, ks, secret, "import", "--passphrase-file", pass, "-"); code != 0 {
		t.Fatalf("import secret: exit %d\n%s%s", code, out, stderr)
	}
	files, _ := filepath.Glob(filepath.Join(smimeDir, "*.pem"))
	if out, stderr, code := keysRun(t, ks, nil, append([]string{"import"}, files...)...); code != 0 {
		t.Fatalf("import S/MIME dir: exit %d\n%s%s", code, out, stderr)
	}
	want := map[string]string{
		"alice@example.net":   "openpgp public usable",
		"bob@example.com":     "openpgp public usable",
		"rt@example.org":      "smime identity usable", // and openpgp secret, below
		"support@example.org": "smime identity usable",
	}
	got := listAddrs(t, ks)
	got["rt@example.org"] = "smime identity usable"
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("keys list (-want +got):\n%s", d)
	}
	out, _, _ := keysRun(t, ks, nil, "show", "rt@example.org")
	if !strings.Contains(out, "kind:        secret") || !strings.Contains(out, "kind:        identity") {
		t.Errorf("keys show rt@example.org: want an OpenPGP secret key and an S/MIME identity:\n%s", out)
	}
	if out, stderr, code := keysRun(t, ks, nil, "check"); code != 0 {
		t.Errorf("keys check: exit %d\n%s%s", code, out, stderr)
	}
	// The public key of the gateway goes out to correspondents.
	pub, stderr, code := keysRun(t, ks, nil, "export", "rt@example.org")
	if code != 0 || !strings.Contains(pub, "BEGIN PGP PUBLIC KEY BLOCK") || !strings.Contains(pub, "BEGIN CERTIFICATE") || strings.Contains(pub, "PRIVATE") {
		t.Errorf("keys export rt@example.org: exit %d %s\n%s", code, stderr, pub)
	}
}

func TestKeysUsageAndErrors(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := keysRun(t, dir, nil); code != 1 || !strings.Contains(stderr, "Examples:") {
		t.Errorf("keys: exit %d, stderr %q", code, stderr)
	}
	if out, _, code := keysRun(t, dir, nil, "-h"); code != 0 || !strings.Contains(out, "cryptmilter keys [-c FILE] import") {
		t.Errorf("keys -h: exit %d, stdout %q", code, out)
	}
	garbage := filepath.Join(dir, "garbage.asc")
	os.WriteFile(garbage, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF"), 0o644)
	ks := filepath.Join(dir, "ks")
	_, stderr, code := keysRun(t, ks, nil, "import", garbage)
	if code != 1 || !strings.Contains(stderr, "cryptmilter: error: "+garbage+": armor block 1") || !strings.Contains(stderr, "cryptmilter: hint: nothing was written") {
		t.Errorf("import garbage: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{{"frob"}, {"show", "nobody@example.org"}, {"remove", "ABCDEF"}, {"list", "extra"}, {"import"}, {"import", "--bogus", "x"}} {
		if _, stderr, code := keysRun(t, ks, nil, args...); code != 1 || !strings.HasPrefix(stderr, "cryptmilter: error: ") {
			t.Errorf("keys %v: exit %d, stderr %q", args, code, stderr)
		}
	}
	if _, stderr, code := keysRun(t, filepath.Join(dir, "missing"), nil, "list"); code != 1 || !strings.Contains(stderr, "cryptmilter: hint: create it") {
		t.Errorf("list on a missing keystore: exit %d, stderr %q", code, stderr)
	}
}

func TestKeysInitCheck(t *testing.T) {
	needTools(t, "openssl")
	ks := filepath.Join(t.TempDir(), "ks")
	out, stderr, code := keysRun(t, ks, nil, "init", "--csr", "rt@example.org")
	if code != 0 || strings.Count(out, "created ") != 3 || !strings.Contains(out, "BEGIN CERTIFICATE REQUEST") {
		t.Fatalf("keys init --csr: exit %d\n%s%s", code, out, stderr)
	}
	if out, _, code := keysRun(t, ks, nil, "check"); code != 0 || !strings.HasPrefix(out, "ok: 2 keys") {
		t.Errorf("check after init: exit %d\n%s", code, out)
	}
	// A secret file made world-readable is refused and check says how to fix it.
	files, _ := filepath.Glob(filepath.Join(ks, "private", "openpgp", "*.asc"))
	os.Chmod(files[0], 0o644)
	out, stderr, code = keysRun(t, ks, nil, "check")
	if code != 1 || !strings.Contains(out, "chmod 600 "+files[0]) {
		t.Errorf("check with a 0644 secret: exit %d\n%s%s", code, out, stderr)
	}
	os.Chmod(files[0], 0o600)
	// Orphans are reported.
	os.WriteFile(filepath.Join(ks, "notes.txt"), nil, 0o644)
	out, _, code = keysRun(t, ks, nil, "check")
	if code != 1 || !strings.Contains(out, "notes.txt: orphaned") {
		t.Errorf("check with an orphan: exit %d\n%s", code, out)
	}
	out, _, _ = keysRun(t, ks, nil, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines[1:])
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "PROTOCOL") {
		t.Errorf("list: %q", lines)
	}
}
