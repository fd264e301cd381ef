package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/google/go-cmp/cmp"
)

// keysRun runs `cryptmilter keys ARGS` on the keystore dir.
func keysRun(t *testing.T, dir string, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return keysRunEnv(t, keysEnv{opts: keystore.Options{Dir: dir}}, stdin, args...)
}

func keysRunEnv(t *testing.T, env keysEnv, stdin []byte, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = runKeys(env, args, bytes.NewReader(stdin), &out, &errb)
	return out.String(), errb.String(), code
}

func needTools(t *testing.T, tools ...string) {
	t.Helper()
	for _, b := range tools {
		if _, err := exec.LookPath(b); err != nil {
			if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
				t.Fatalf("%s not installed (CRYPTMILTER_REQUIRE_PEERS=1): %v", b, err)
			}
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

func parseEntries(t *testing.T, out string) []keystore.Entry {
	t.Helper()
	var entries []keystore.Entry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatalf("keys list --json: %v\n%s", err, out)
	}
	return entries
}

func listAddrs(t *testing.T, dir string) map[string]string {
	t.Helper()
	out, stderr, code := keysRun(t, dir, nil, "list", "--json")
	if code != 0 {
		t.Fatalf("keys list --json: exit %d: %s", code, stderr)
	}
	m := map[string]string{}
	for _, e := range parseEntries(t, out) {
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

// asServiceUser returns a command running `cryptmilter ARGS` as nobody
// (the daemon's user stand-in), from a copy of this test binary that
// nobody may run (the build directory is root's); root only.
func asServiceUser(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	u, err := user.Lookup("nobody")
	if err != nil {
		t.Fatalf("no user nobody to run as: %v", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cm-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	b, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	copied := filepath.Join(dir, "cryptmilter.test")
	if err := os.WriteFile(copied, b, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(copied, args...)
	cmd.Env = append(os.Environ(), "CRYPTMILTER_AS_MAIN=1", "HOME=/")
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
	return cmd
}

// serviceKeystore makes a keystore directory owned by nobody, as
// StateDirectory= makes one owned by the service user, and a configuration
// naming it; root only.
func serviceKeystore(t *testing.T) (dir, cfg string) {
	t.Helper()
	parent, err := os.MkdirTemp("", "cm-ks-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(parent) })
	os.Chmod(parent, 0o755)
	dir = filepath.Join(parent, "keystore")
	os.Mkdir(dir, 0o700)
	u, _ := user.Lookup("nobody")
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	cfg = filepath.Join(parent, "cryptmilter.toml")
	os.WriteFile(cfg, []byte(fmt.Sprintf("keystore = %q\nhostname = \"mx.example.org\"\n[identity]\naddresses = [\"rt@example.org\"]\n", dir)), 0o644)
	return dir, cfg
}

// TestKeysRTMigration moves an RT installation's keys as README says: the
// GnuPG home (public keys, and the RT queue's passphrase-protected secret
// key) and the S/MIME keyring directory of user@domain.pem files. As root,
// into a keystore owned by the service user: the service user then reads
// everything, and root's own list and check accept it.
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
	asRoot := os.Geteuid() == 0
	cfg := ""
	if asRoot {
		ks, cfg = serviceKeystore(t)
	}
	if out, stderr, code := keysRun(t, ks, gpg(nil, "--export"), "import", "-"); code != 0 {
		t.Fatalf("import public: exit %d\n%s%s", code, out, stderr)
	}
	secret := gpg(nil, "--passphrase-file", pass, "--export-secret-keys", "rt@example.org")
	if out, stderr, code := keysRun(t, ks, secret, "import", "-"); code == 0 || !strings.Contains(stderr, "cryptmilter: hint: give the passphrase in a file: --passphrase-file FILE") {
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
	// The public key of the gateway goes out to correspondents: both, or
	// one protocol (one kind of file) each.
	pub, stderr, code := keysRun(t, ks, nil, "export", "rt@example.org")
	if code != 0 || !strings.Contains(pub, "BEGIN PGP PUBLIC KEY BLOCK") || !strings.Contains(pub, "BEGIN CERTIFICATE") || strings.Contains(pub, "PRIVATE") {
		t.Errorf("keys export rt@example.org: exit %d %s\n%s", code, stderr, pub)
	}
	pgpOnly, _, code := keysRun(t, ks, nil, "export", "--protocol", "openpgp", "rt@example.org")
	if code != 0 || !strings.HasPrefix(pgpOnly, "-----BEGIN PGP PUBLIC KEY BLOCK") || strings.Contains(pgpOnly, "CERTIFICATE") {
		t.Errorf("export --protocol openpgp: exit %d\n%s", code, pgpOnly)
	}
	if out := gpg([]byte(pgpOnly), "--import-options", "show-only", "--with-colons", "--import"); !strings.Contains(string(out), "rt@example.org") {
		t.Errorf("gpg does not read the OpenPGP export:\n%s", out)
	}
	certOnly, _, code := keysRun(t, ks, nil, "export", "--protocol", "smime", "rt@example.org")
	if code != 0 || !strings.HasPrefix(certOnly, "-----BEGIN CERTIFICATE") || strings.Contains(certOnly, "PGP") {
		t.Errorf("export --protocol smime: exit %d\n%s", code, certOnly)
	}
	cmd := exec.Command("openssl", "x509", "-noout", "-ext", "subjectAltName")
	cmd.Stdin = strings.NewReader(certOnly)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "rt@example.org") {
		t.Errorf("openssl does not read the S/MIME export: %v\n%s", err, out)
	}

	if !asRoot {
		return
	}
	// The daemon's user reads what root wrote, through the same command.
	for _, args := range [][]string{{"list", "--json"}, {"check"}} {
		cmd := asServiceUser(t, append([]string{"keys", "-c", cfg}, args...)...)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Errorf("keys %v as the service user: %v\n%s%s", args, err, stdout.String(), stderr.String())
		}
		if args[0] == "list" && len(parseEntries(t, stdout.String())) != 5 {
			t.Errorf("keys list as the service user: %s", stdout.String())
		}
	}
}

// TestKeysUsageAndErrors: usage on stdout for -h (per subcommand), errors
// with hints on stderr.
func TestKeysUsageAndErrors(t *testing.T) {
	dir := t.TempDir()
	if _, stderr, code := keysRun(t, dir, nil); code != 1 || !strings.Contains(stderr, "Examples:") {
		t.Errorf("keys: exit %d, stderr %q", code, stderr)
	}
	if out, _, code := keysRun(t, dir, nil, "-h"); code != 0 || !strings.Contains(out, "cryptmilter keys [-c FILE] import") {
		t.Errorf("keys -h: exit %d, stdout %q", code, out)
	}
	for name := range keysHelp {
		for _, args := range [][]string{{name, "-h"}, {name, "--help"}, {"help", name}} {
			out, stderr, code := keysRun(t, dir, nil, args...)
			if code != 0 || !strings.HasPrefix(out, "Usage: cryptmilter keys [-c FILE] "+name) || !strings.Contains(out, "Examples:") || stderr != "" {
				t.Errorf("keys %v: exit %d, stdout %q, stderr %q; want the %s usage", args, code, out, stderr, name)
			}
		}
	}
	garbage := filepath.Join(dir, "garbage.asc")
	os.WriteFile(garbage, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBF"), 0o644)
	ks := filepath.Join(dir, "ks")
	_, stderr, code := keysRun(t, ks, nil, "import", garbage)
	if code != 1 || !strings.Contains(stderr, "cryptmilter: error: "+garbage+": armor block 1") || !strings.Contains(stderr, "cryptmilter: hint: nothing was written") {
		t.Errorf("import garbage: exit %d, stderr %q", code, stderr)
	}
	for _, args := range [][]string{{"frob"}, {"show", "nobody@example.org"}, {"remove", "ABCDEF"}, {"list", "extra"}, {"import"},
		{"import", "--bogus", "x"}, {"export", "--protocol", "pgp", "a@example.org"}, {"check", "--warn", "soon"}} {
		if _, stderr, code := keysRun(t, ks, nil, args...); code != 1 || !strings.HasPrefix(stderr, "cryptmilter: error: ") {
			t.Errorf("keys %v: exit %d, stderr %q", args, code, stderr)
		}
	}
	// A missing keystore: the hint names -c and where the path came from.
	_, stderr, code = keysRunEnv(t, keysEnv{opts: keystore.Options{Dir: filepath.Join(dir, "missing")}, config: "/x/c.toml"}, nil, "list")
	if code != 1 || !strings.Contains(stderr, "cryptmilter: hint: the keystore "+filepath.Join(dir, "missing")+" comes from /x/c.toml; give the right configuration with -c FILE") {
		t.Errorf("list on a missing keystore: exit %d, stderr %q", code, stderr)
	}
	// A CA certificate given as a correspondent's: the hint names --ca.
	needTools(t, "openssl")
	cmd := exec.Command("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
		"-days", "30", "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("openssl: %v\n%s", err, out)
	}
	if _, stderr, code := keysRun(t, ks, nil, "import", filepath.Join(dir, "ca.pem")); code != 1 || !strings.Contains(stderr, "cryptmilter: hint: to trust a CA certificate for S/MIME signatures, import it with --ca") {
		t.Errorf("import of a CA without --ca: exit %d, stderr %q", code, stderr)
	}
}

// TestKeysConfigChoice: without -c, keys uses the system configuration
// when it exists and says so; -c wins; without either it says that the
// embedded default is used.
func TestKeysConfigChoice(t *testing.T) {
	dir := t.TempDir()
	ks := filepath.Join(dir, "from-system-config")
	sys := filepath.Join(dir, "cryptmilter.toml")
	os.WriteFile(sys, []byte(fmt.Sprintf("keystore = %q\n", ks)), 0o644)
	other := filepath.Join(dir, "other.toml")
	otherKS := filepath.Join(dir, "from-c")
	os.WriteFile(other, []byte(fmt.Sprintf("keystore = %q\n", otherKS)), 0o644)
	run := func(sysConfig string, args ...string) (string, string, int) {
		var out, errb bytes.Buffer
		code := runKeysConfig(args, sysConfig, nil, &out, &errb)
		return out.String(), errb.String(), code
	}
	_, stderr, code := run(sys, "init", "rt@example.org")
	if code != 0 || !strings.Contains(stderr, "cryptmilter: using "+sys+" (keystore "+ks+")") {
		t.Errorf("keys init with a system config: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(ks, "private", "openpgp")); err != nil {
		t.Errorf("the system config's keystore was not used: %v", err)
	}
	_, stderr, code = run(sys, "-c", other, "init", "rt@example.org")
	if code != 0 || strings.Contains(stderr, "using") {
		t.Errorf("keys -c: exit %d, stderr %q", code, stderr)
	}
	if _, err := os.Stat(filepath.Join(otherKS, "private", "openpgp")); err != nil {
		t.Errorf("-c's keystore was not used: %v", err)
	}
	wd, _ := os.Getwd()
	os.Chdir(dir)
	defer os.Chdir(wd)
	_, stderr, code = run(filepath.Join(dir, "absent.toml"), "list")
	if code != 1 || !strings.Contains(stderr, "cryptmilter: no -c and no "+filepath.Join(dir, "absent.toml")+": using the embedded default configuration (keystore ./cryptmilter-data)") ||
		!strings.Contains(stderr, "comes from the embedded default configuration; give the right configuration with -c FILE") {
		t.Errorf("keys list without any config: exit %d, stderr %q", code, stderr)
	}
}

// genKey makes an OpenPGP key with gopenpgp: created at created, valid for
// lifetime (0 = no expiry).
func genKey(t *testing.T, addr string, created time.Time, lifetime time.Duration, secret bool) []byte {
	t.Helper()
	k, err := crypto.PGPWithProfile(profile.Default()).KeyGeneration().AddUserId("", addr).
		GenerationTime(created.Unix()).Lifetime(int32(lifetime / time.Second)).New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	var a string
	if secret {
		a, err = k.Armor()
	} else {
		a, err = k.GetArmoredPublicKey()
	}
	if err != nil {
		t.Fatal(err)
	}
	return []byte(a)
}

// TestKeysCheckExit: check fails (exit 1, one line per problem) when a
// gateway identity has no usable secret key or a key expires within
// --warn; notes alone do not fail it.
func TestKeysCheckExit(t *testing.T) {
	ks := filepath.Join(t.TempDir(), "ks")
	env := keysEnv{opts: keystore.Options{Dir: ks}, identities: []string{"rt@example.org"}}
	now := time.Now()
	if _, stderr, code := keysRunEnv(t, env, genKey(t, "rt@example.org", now.Add(-time.Hour), 0, true), "import", "-"); code != 0 {
		t.Fatal(stderr)
	}
	if out, _, code := keysRunEnv(t, env, nil, "check"); code != 0 || !strings.HasPrefix(out, "ok: 1 keys") {
		t.Errorf("check with a usable gateway key: exit %d\n%s", code, out)
	}
	// A correspondent key expiring in 10 days.
	if _, stderr, code := keysRunEnv(t, env, genKey(t, "soon@example.net", now.Add(-time.Hour), 10*24*time.Hour, false), "import", "-"); code != 0 {
		t.Fatal(stderr)
	}
	out, _, code := keysRunEnv(t, env, nil, "check")
	if code != 1 || strings.Count(out, "\n") != 1 || !strings.Contains(out, "soon@example.net: expires") {
		t.Errorf("check (30d) with a key expiring in 10 days: exit %d\n%s", code, out)
	}
	if out, _, code := keysRunEnv(t, env, nil, "check", "--warn", "5d"); code != 0 {
		t.Errorf("check --warn 5d: exit %d\n%s", code, out)
	}
	if out, _, code := keysRunEnv(t, env, nil, "check", "--warn", "2w"); code != 1 {
		t.Errorf("check --warn 2w: exit %d\n%s", code, out)
	}
	// An identity of the configuration without any key.
	env.identities = append(env.identities, "support@example.org")
	out, _, code = keysRunEnv(t, env, nil, "check", "--warn", "1d")
	if code != 1 || strings.TrimSpace(out) != "(gateway support@example.org): identity without any secret key or S/MIME identity" {
		t.Errorf("check with an identity without keys: exit %d\n%s", code, out)
	}
	env.identities = env.identities[:1]
	// The gateway key replaced by an expired one (created two years ago,
	// valid for one): it stays for decryption (a note), and the identity
	// has no key to sign with (a problem).
	ks2 := filepath.Join(t.TempDir(), "ks")
	env2 := keysEnv{opts: keystore.Options{Dir: ks2}, identities: []string{"rt@example.org"}}
	if _, stderr, code := keysRunEnv(t, env2, genKey(t, "rt@example.org", now.Add(-2*365*24*time.Hour), 365*24*time.Hour, true), "import", "-"); code != 0 {
		t.Fatal(stderr)
	}
	out, _, code = keysRunEnv(t, env2, nil, "check")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines)
	if code != 1 || len(lines) != 2 || lines[0] != "(gateway rt@example.org): no usable OpenPGP secret key: it cannot sign" ||
		!strings.Contains(lines[1], ": note: openpgp secret ") || !strings.HasSuffix(lines[1], "decrypt only: expired") {
		t.Errorf("check with only an expired gateway key: exit %d\n%s", code, out)
	}
	list, _, _ := keysRunEnv(t, env2, nil, "list")
	if !strings.Contains(list, "decrypt only: expired") {
		t.Errorf("list does not say the expired key is for decryption only:\n%s", list)
	}
}

// TestKeysListJSON pins the shape of `keys list --json` (README documents
// it): every field present, with its JSON type, for every kind of entry.
func TestKeysListJSON(t *testing.T) {
	needTools(t, "openssl")
	ks := filepath.Join(t.TempDir(), "ks")
	if _, stderr, code := keysRun(t, ks, nil, "init", "rt@example.org"); code != 0 {
		t.Fatal(stderr)
	}
	dir := t.TempDir()
	for _, args := range [][]string{
		{"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "k.pem", "-out", "erin.pem", "-days", "30", "-subj", "/CN=Erin/emailAddress=erin@example.org"},
		{"req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "30", "-subj", "/CN=Test CA", "-addext", "basicConstraints=critical,CA:TRUE"},
	} {
		cmd := exec.Command("openssl", args...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("openssl: %v\n%s", err, out)
		}
	}
	for _, args := range [][]string{{"import", filepath.Join(dir, "erin.pem")}, {"import", "--ca", filepath.Join(dir, "ca.pem")}} {
		if _, stderr, code := keysRun(t, ks, nil, args...); code != 0 {
			t.Fatal(stderr)
		}
	}
	if _, stderr, code := keysRun(t, ks, genKey(t, "alice@example.net", time.Now().Add(-time.Hour), 0, false), "import", "-"); code != 0 {
		t.Fatal(stderr)
	}
	out, stderr, code := keysRun(t, ks, nil, "list", "--json")
	if code != 0 {
		t.Fatal(stderr)
	}
	var raw []map[string]any
	if err := json.Unmarshal([]byte(out), &raw); err != nil {
		t.Fatal(err)
	}
	typeOf := func(v any) string {
		switch v := v.(type) {
		case nil:
			return "null"
		case string:
			if _, err := time.Parse(time.RFC3339, v); err == nil && len(v) > 10 {
				return "time"
			}
			return "string"
		case bool:
			return "bool"
		case []any:
			for _, x := range v {
				if _, ok := x.(string); !ok {
					return "array of non-strings"
				}
			}
			return "array of strings"
		}
		return fmt.Sprintf("%T", v)
	}
	shape := map[string]map[string]string{}
	for _, e := range raw {
		got := map[string]string{}
		for k, v := range e {
			got[k] = typeOf(v)
		}
		shape[fmt.Sprint(e["protocol"], " ", e["kind"])] = got
	}
	entry := func(expires, subject string) map[string]string {
		return map[string]string{"protocol": "string", "kind": "string", "addresses": "array of strings", "fingerprint": "string",
			"algorithm": "string", "created": "time", "expires": expires, "usable": "bool", "uses": "array of strings",
			"reason": "string", "subject": subject, "file": "string", "source": "string"}
	}
	want := map[string]map[string]string{
		"openpgp secret":    entry("null", "string"),
		"openpgp public":    entry("null", "string"),
		"smime identity":    entry("time", "string"),
		"smime certificate": entry("time", "string"),
		"smime ca":          entry("time", "string"),
	}
	if d := cmp.Diff(want, shape); d != "" {
		t.Errorf("keys list --json shape (-want +got):\n%s", d)
	}
	// Values a consumer relies on.
	for _, e := range parseEntries(t, out) {
		switch e.Kind {
		case "secret":
			if !e.Usable || !cmp.Equal(e.Uses, []string{"sign", "decrypt"}) || e.Reason != "" {
				t.Errorf("gateway key entry: %+v", e)
			}
		case "certificate":
			if e.Subject != "emailAddress=erin@example.org,CN=Erin" {
				t.Errorf("subject shown as %q", e.Subject)
			}
		case "ca":
			if !cmp.Equal(e.Uses, []string{"anchor"}) || !cmp.Equal(e.Addresses, []string{}) {
				t.Errorf("CA entry: %+v", e)
			}
		}
	}
	show, _, _ := keysRun(t, ks, nil, "show", "erin@example.org")
	if !strings.Contains(show, "subject:     emailAddress=erin@example.org,CN=Erin\n") || strings.Contains(show, "1.2.840.113549") {
		t.Errorf("keys show erin@example.org:\n%s", show)
	}
}

// TestKeysInitCheck: init, then check's findings for unsafe permissions
// and orphans, with the hint that fixes each.
func TestKeysInitCheck(t *testing.T) {
	needTools(t, "openssl")
	ks := filepath.Join(t.TempDir(), "ks")
	out, stderr, code := keysRun(t, ks, nil, "init", "--csr", "rt@example.org")
	if code != 0 || strings.Count(out, "created ") != 3 || !strings.Contains(out, "BEGIN CERTIFICATE REQUEST") {
		t.Fatalf("keys init --csr: exit %d\n%s%s", code, out, stderr)
	}
	if fi, err := os.Stat(ks); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("keys init made the keystore %v (%v), want 0700", fi.Mode(), err)
	}
	if out, _, code := keysRun(t, ks, nil, "check"); code != 0 || !strings.HasPrefix(out, "ok: 2 keys") {
		t.Errorf("check after init: exit %d\n%s", code, out)
	}
	// A secret file made world-readable is refused and check says how to fix it.
	files, _ := filepath.Glob(filepath.Join(ks, "private", "openpgp", "*.asc"))
	os.Chmod(files[0], 0o644)
	out, stderr, code = keysRun(t, ks, nil, "check")
	rel, _ := filepath.Rel(ks, files[0])
	if code != 1 || strings.TrimSpace(out) != rel+": permissions too open for a secret key file (mode 0644, want 0600)" ||
		!strings.Contains(stderr, "cryptmilter: hint: chmod 600 "+files[0]) {
		t.Errorf("check with a 0644 secret: exit %d\n%s%s", code, out, stderr)
	}
	os.Chmod(files[0], 0o600)
	// Orphans are reported; key discovery's cache is not an orphan.
	os.WriteFile(filepath.Join(ks, "notes.txt"), nil, 0o644)
	os.MkdirAll(filepath.Join(ks, "discovered", "wkd"), 0o700)
	os.WriteFile(filepath.Join(ks, "discovered", "wkd", "x.asc"), []byte("not the admin's"), 0o600)
	out, _, code = keysRun(t, ks, nil, "check")
	if code != 1 || !strings.Contains(out, "notes.txt: orphaned") || strings.Contains(out, "discovered") {
		t.Errorf("check with an orphan: exit %d\n%s", code, out)
	}
	out, _, _ = keysRun(t, ks, nil, "list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	sort.Strings(lines[1:])
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "PROTOCOL") {
		t.Errorf("list: %q", lines)
	}
	// Removing the gateway's key needs --secret, and the hint says so.
	fpr := strings.TrimSuffix(filepath.Base(files[0]), ".asc")[len("rt@example.org-"):]
	if _, stderr, code := keysRun(t, ks, nil, "remove", fpr); code != 1 || !strings.Contains(stderr, "cryptmilter: hint: to remove the gateway's own key") ||
		!strings.Contains(stderr, "keys remove --secret "+fpr) {
		t.Errorf("remove of the gateway key: exit %d\n%s", code, stderr)
	}
}

// TestKeysOwnerHint: as root, a secret owned by someone else than the
// keystore's owner is refused, and the hint chowns it to the keystore's
// owner (the service user), never to root.
func TestKeysOwnerHint(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("a file owned by another user can only be made as root")
	}
	ks, _ := serviceKeystore(t)
	if _, stderr, code := keysRun(t, ks, nil, "init", "rt@example.org"); code != 0 {
		t.Fatal(stderr)
	}
	files, _ := filepath.Glob(filepath.Join(ks, "private", "openpgp", "*.asc"))
	os.Chown(files[0], 0, 0)
	if out, stderr, code := keysRun(t, ks, nil, "check"); code != 0 {
		t.Errorf("check with a root-owned secret (root may own secrets): exit %d\n%s%s", code, out, stderr)
	}
	os.Chown(files[0], 12345, 12345)
	out, stderr, code := keysRun(t, ks, nil, "check")
	if code != 1 || !strings.Contains(out, "owned by uid 12345") || !strings.Contains(stderr, "cryptmilter: hint: chown nobody "+files[0]) {
		t.Errorf("check with a foreign-owned secret: exit %d\n%s%s", code, out, stderr)
	}
}
