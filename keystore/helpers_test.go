package keystore

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Fixtures made once per test binary by the real gpg and openssl.
type fixtures struct {
	dir string // files below
	// OpenPGP, made by gpg
	pubArmored string // alice, bob, carol in one armored export
	pubBinary  string // the same, binary
	expired    string // old@example.org: expired in 2021
	subExpired string // sub@example.org: primary valid, only encryption subkey expired
	secPlain   string // gw@example.org, unprotected, --export-secret-keys
	signOnly   string // signer@example.org: Ed25519, signing only, no encryption subkey
	revoked    string // rev@example.org: revoked
	revSig     string // a detached signature by rev@example.org over sigData, made before the revocation
	oldSig     string // a detached signature by old@example.org over sigData, made in 2020 (valid then)
	gwOld      string // gwold@example.org: gateway secret key that expired in 2021
	gwOldMsg   string // a message encrypted to gwold@example.org in 2020
	gwRev      string // gwrev@example.org: gateway secret key, revoked
	gwRevMsg   string // a message encrypted to gwrev@example.org before the revocation
	secProt    string // prot@example.org, passphrase in passFile
	passFile   string
	fprs       map[string]string // address → fingerprint
	gnupgHome  string
	// X.509, made by openssl
	sanCert    string   // dave@example.org: SAN email, emailProtection
	subjCert   string   // erin@example.org: only subject emailAddress
	noMailCert string   // CN only
	bundle     string   // frank@example.org key+cert PEM (RT keyring file)
	p12        string   // grace@example.org, passphrase in p12Pass
	encBundles []string // frank (PKCS#8 PBES2) and grace (traditional): encrypted key + cert, passphrase "rtpass"
	p12Pass    string
	wrongPass  string
	err        error
}

var (
	fixOnce sync.Once
	fix     fixtures
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	code := m.Run()
	if unpriv.dir != "" {
		os.RemoveAll(unpriv.dir)
	}
	if fix.gnupgHome != "" {
		exec.Command("gpgconf", "--homedir", fix.gnupgHome, "--kill", "all").Run()
	}
	if fix.dir != "" {
		os.RemoveAll(fix.dir)
	}
	os.Exit(code)
}

func run(dir string, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

func getFixtures(t *testing.T) *fixtures {
	t.Helper()
	for _, b := range []string{"gpg", "gpgconf", "openssl"} {
		if _, err := exec.LookPath(b); err != nil {
			t.Skipf("%s not installed: %v", b, err)
		}
	}
	fixOnce.Do(func() { fix.err = makeFixtures(&fix) })
	if fix.err != nil {
		t.Fatalf("making fixtures: %v", fix.err)
	}
	return &fix
}

func makeFixtures(f *fixtures) error {
	dir, err := os.MkdirTemp("", "ksfix")
	if err != nil {
		return err
	}
	f.dir = dir
	home, err := os.MkdirTemp("", "gpg")
	if err != nil {
		return err
	}
	f.gnupgHome = home
	// A cheap S2K count for protected keys keeps -race runs quick.
	os.WriteFile(filepath.Join(home, "gpg-agent.conf"), []byte("s2k-count 65536\n"), 0o600)
	f.fprs = map[string]string{}
	gpg := func(args ...string) (string, error) {
		return run(dir, "gpg", append([]string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--no-tty"}, args...)...)
	}
	f.passFile = filepath.Join(dir, "pass.txt")
	os.WriteFile(f.passFile, []byte("correct horse\n"), 0o600)
	gen := []struct {
		uid   string
		extra []string
		args  []string
	}{
		{"Alice <alice@example.org>", []string{"--passphrase", ""}, []string{"future-default", "default", "never"}},
		{"Bob <bob@Example.ORG>", []string{"--passphrase", ""}, []string{"future-default", "default", "never"}},
		{"Carol <carol@example.net>", []string{"--passphrase", ""}, []string{"rsa2048", "sign", "never"}},
		{"Old <old@example.org>", []string{"--passphrase", "", "--faked-system-time", "20200101T000000!"}, []string{"future-default", "default", "1y"}},
		{"Sub <sub@example.org>", []string{"--passphrase", "", "--faked-system-time", "20200101T000000!"}, []string{"ed25519", "sign", "never"}},
		{"Gateway <gw@example.org>", []string{"--passphrase", ""}, []string{"future-default", "default", "never"}},
		{"Prot <prot@example.org>", []string{"--passphrase-file", f.passFile}, []string{"future-default", "default", "never"}},
		{"Signer <signer@example.org>", []string{"--passphrase", ""}, []string{"ed25519", "sign", "never"}},
		{"Rev <rev@example.org>", []string{"--passphrase", ""}, []string{"future-default", "default", "never"}},
		{"GwOld <gwold@example.org>", []string{"--passphrase", "", "--faked-system-time", "20200101T000000!"}, []string{"future-default", "default", "1y"}},
		{"GwRev <gwrev@example.org>", []string{"--passphrase", ""}, []string{"future-default", "default", "never"}},
	}
	for _, g := range gen {
		args := append(append([]string{}, g.extra...), "--quick-gen-key", g.uid)
		if _, err := gpg(append(args, g.args...)...); err != nil {
			return err
		}
		addr := strings.ToLower(g.uid[strings.Index(g.uid, "<")+1 : len(g.uid)-1])
		out, err := gpg("--with-colons", "--list-keys", addr)
		if err != nil {
			return err
		}
		for _, l := range strings.Split(out, "\n") {
			if strings.HasPrefix(l, "fpr:") {
				f.fprs[addr] = strings.Split(l, ":")[9]
				break
			}
		}
	}
	if _, err := gpg("--passphrase", "", "--faked-system-time", "20200101T000000!", "--quick-add-key", f.fprs["sub@example.org"], "cv25519", "encr", "1y"); err != nil {
		return err
	}
	if _, err := gpg("--passphrase", "", "--quick-add-key", f.fprs["carol@example.net"], "rsa2048", "encr", "never"); err != nil {
		return err
	}
	write := func(name string, out string, err error) (string, error) {
		if err != nil {
			return "", err
		}
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, []byte(out), 0o644)
	}
	exp := func(name string, args ...string) (string, error) {
		p := filepath.Join(dir, name)
		_, err := gpg(append([]string{"--output", p}, args...)...)
		return p, err
	}
	if f.pubArmored, err = exp("pub.asc", "--armor", "--export", "alice@example.org", "bob@example.org", "carol@example.net"); err != nil {
		return err
	}
	if f.pubBinary, err = exp("pub.gpg", "--export", "alice@example.org", "bob@example.org", "carol@example.net"); err != nil {
		return err
	}
	if f.expired, err = exp("old.asc", "--armor", "--export", "<old@example.org>"); err != nil {
		return err
	}
	if f.subExpired, err = exp("sub.asc", "--armor", "--export", "sub@example.org"); err != nil {
		return err
	}
	if f.secPlain, err = exp("gw-sec.asc", "--passphrase", "", "--armor", "--export-secret-keys", "gw@example.org"); err != nil {
		return err
	}
	if f.secProt, err = exp("prot-sec.gpg", "--passphrase-file", f.passFile, "--export-secret-keys", "prot@example.org"); err != nil {
		return err
	}
	if f.signOnly, err = exp("signer.asc", "--armor", "--export", "signer@example.org"); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "sigdata.txt"), []byte(sigData), 0o644)
	if f.revSig, err = exp("rev.sig", "--passphrase", "", "--detach-sign", "-u", "<rev@example.org>", "sigdata.txt"); err != nil {
		return err
	}
	if f.oldSig, err = exp("old.sig", "--passphrase", "", "--faked-system-time", "20200601T000000!", "--detach-sign", "-u", "<old@example.org>", "sigdata.txt"); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "mail.txt"), []byte("old mail\n"), 0o644)
	if f.gwOldMsg, err = exp("gwold.msg", "--faked-system-time", "20200601T000000!", "--trust-model", "always", "--armor", "--encrypt", "-r", "gwold@example.org", "mail.txt"); err != nil {
		return err
	}
	if f.gwRevMsg, err = exp("gwrev.msg", "--trust-model", "always", "--armor", "--encrypt", "-r", "gwrev@example.org", "mail.txt"); err != nil {
		return err
	}
	// Revoke with the certificate gpg stored at generation (its BEGIN
	// line is prefixed with ":" against accidental import).
	for _, a := range []string{"rev@example.org", "gwrev@example.org"} {
		rev, err := os.ReadFile(filepath.Join(home, "openpgp-revocs.d", f.fprs[a]+".rev"))
		if err != nil {
			return err
		}
		p := filepath.Join(dir, a+".rev")
		os.WriteFile(p, bytes.Replace(rev, []byte(":-----BEGIN"), []byte("-----BEGIN"), 1), 0o644)
		if _, err := gpg("--import", p); err != nil {
			return err
		}
	}
	if f.revoked, err = exp("rev.asc", "--armor", "--export", "<rev@example.org>"); err != nil {
		return err
	}
	if f.gwOld, err = exp("gwold-sec.asc", "--passphrase", "", "--armor", "--export-secret-keys", "gwold@example.org"); err != nil {
		return err
	}
	if f.gwRev, err = exp("gwrev-sec.asc", "--passphrase", "", "--armor", "--export-secret-keys", "gwrev@example.org"); err != nil {
		return err
	}
	ossl := func(args ...string) (string, error) { return run(dir, "openssl", args...) }
	if _, err := ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "dave.key", "-out", "dave.pem", "-days", "365",
		"-subj", "/CN=Dave", "-addext", "subjectAltName=email:dave@example.org",
		"-addext", "extendedKeyUsage=emailProtection", "-addext", "keyUsage=digitalSignature,keyEncipherment"); err != nil {
		return err
	}
	f.sanCert = filepath.Join(dir, "dave.pem")
	if _, err := ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "erin.key", "-out", "erin.pem", "-days", "365",
		"-subj", "/CN=Erin/emailAddress=erin@example.org"); err != nil {
		return err
	}
	f.subjCert = filepath.Join(dir, "erin.pem")
	if _, err := ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "nomail.key", "-out", "nomail.pem", "-days", "365",
		"-subj", "/CN=No Mail"); err != nil {
		return err
	}
	f.noMailCert = filepath.Join(dir, "nomail.pem")
	if _, err := ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "frank.key", "-out", "frank.crt", "-days", "365",
		"-subj", "/CN=Frank", "-addext", "subjectAltName=email:frank@example.org"); err != nil {
		return err
	}
	k, _ := os.ReadFile(filepath.Join(dir, "frank.key"))
	c, _ := os.ReadFile(filepath.Join(dir, "frank.crt"))
	if f.bundle, err = write("frank@example.org.pem", string(k)+string(c), nil); err != nil {
		return err
	}
	if _, err := ossl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "grace.key", "-out", "grace.crt", "-days", "365",
		"-subj", "/CN=Grace", "-addext", "subjectAltName=email:grace@example.org"); err != nil {
		return err
	}
	f.p12Pass = filepath.Join(dir, "p12pass.txt")
	os.WriteFile(f.p12Pass, []byte("pw12\n"), 0o600)
	f.wrongPass = filepath.Join(dir, "wrong.txt")
	os.WriteFile(f.wrongPass, []byte("nope\n"), 0o600)
	if _, err := ossl("pkcs12", "-export", "-inkey", "grace.key", "-in", "grace.crt", "-out", "grace.p12", "-passout", "pass:pw12"); err != nil {
		return err
	}
	f.p12 = filepath.Join(dir, "grace.p12")
	if _, err := ossl("pkcs8", "-topk8", "-in", "frank.key", "-v2", "aes-256-cbc", "-passout", "pass:rtpass", "-out", "frank-enc.key"); err != nil {
		return err
	}
	if _, err := ossl("rsa", "-in", "grace.key", "-aes256", "-traditional", "-passout", "pass:rtpass", "-out", "grace-trad.key"); err != nil {
		return err
	}
	for _, p := range [][2]string{{"frank-enc.key", "frank.crt"}, {"grace-trad.key", "grace.crt"}} {
		k, _ := os.ReadFile(filepath.Join(dir, p[0]))
		c, _ := os.ReadFile(filepath.Join(dir, p[1]))
		b, err := write(strings.TrimSuffix(p[0], ".key")+".pem", string(k)+string(c), nil)
		if err != nil {
			return err
		}
		f.encBundles = append(f.encBundles, b)
	}
	return nil
}

// sigData is what the fixture signatures sign (canonical CRLF, as in mail).
const sigData = "signed long ago\r\n"

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// corpusDir finds shared/corpus/thunderbird by walking up from here.
func corpusDir(t *testing.T) string {
	t.Helper()
	wd, _ := os.Getwd()
	for d := wd; d != "/"; d = filepath.Dir(d) {
		p := filepath.Join(d, "shared", "corpus", "thunderbird")
		if fi, err := os.Stat(p); err == nil && fi.IsDir() {
			return p
		}
	}
	t.Skip("shared/corpus/thunderbird not found above " + wd)
	return ""
}

// treeHash lists every file under dir with its mode and content hash, to
// prove that a failed write changed nothing.
func treeHash(t *testing.T, dir string) []string {
	t.Helper()
	var out []string
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		if rel == lockName {
			return nil // the writers' lock file is not keyring content
		}
		fi, _ := d.Info()
		line := fmt.Sprintf("%s %v", rel, fi.Mode())
		if !d.IsDir() {
			b, _ := os.ReadFile(p)
			h := sha256.Sum256(b)
			line += " " + hex.EncodeToString(h[:8])
		}
		out = append(out, line)
		return nil
	})
	sort.Strings(out)
	return out
}

func newStore(t *testing.T) Options {
	t.Helper()
	return Options{Dir: t.TempDir()}
}

func mustImport(t *testing.T, o Options, asCA bool, pass []byte, files ...string) []ImportResult {
	t.Helper()
	var in []Input
	for _, f := range files {
		in = append(in, Input{Name: f, Data: readFile(t, f)})
	}
	res, err := ImportAll(o, in, asCA, pass, time.Now())
	if err != nil {
		t.Fatalf("import %v: %v", files, err)
	}
	return res
}

func mustLoad(t *testing.T, o Options) *Snapshot {
	t.Helper()
	s, err := Load(o)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hasPGP reports whether any OpenPGP key (usable or not) is indexed for addr.
func hasPGP(s *Snapshot, addr string) bool { return len(s.pgpByAddr[s.opts.norm(addr)]) > 0 }
