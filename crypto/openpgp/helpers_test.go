package openpgp

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"
)

// gpgHome is a temporary GnuPG home shared by the tests of this binary;
// its agent is killed and the directory removed in TestMain.
type gpgHome struct {
	dir string
}

var (
	fixtureOnce sync.Once
	fixture     *fixtures
	fixtureErr  error
	homesMu     sync.Mutex
	homes       []string
)

func TestMain(m *testing.M) {
	code := m.Run()
	homesMu.Lock()
	for _, h := range homes {
		exec.Command("gpgconf", "--homedir", h, "--kill", "all").Run()
		os.RemoveAll(h)
	}
	homesMu.Unlock()
	os.Exit(code)
}

func newGPGHome() (*gpgHome, error) {
	// Short path: the agent socket path must stay under 108 bytes.
	dir, err := os.MkdirTemp("", "gpg")
	if err != nil {
		return nil, err
	}
	homesMu.Lock()
	homes = append(homes, dir)
	homesMu.Unlock()
	conf := "no-greeting\n"
	if err := os.WriteFile(filepath.Join(dir, "gpg.conf"), []byte(conf), 0o600); err != nil {
		return nil, err
	}
	return &gpgHome{dir: dir}, nil
}

// run runs gpg with args and stdin; it returns stdout, and stderr joined
// with the --status-fd lines (status lines start with "[GNUPG:]").
func (g *gpgHome) run(stdin []byte, args ...string) (stdout []byte, status string, err error) {
	full := append([]string{"--homedir", g.dir, "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--status-fd", "2", "--trust-model", "always"}, args...)
	cmd := exec.Command("gpg", full...)
	cmd.Stdin = bytes.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	if err != nil {
		err = fmt.Errorf("gpg %s: %w\n%s", strings.Join(args, " "), err, errb.String())
	}
	return out.Bytes(), errb.String(), err
}

func (g *gpgHome) mustRun(t testing.TB, stdin []byte, args ...string) []byte {
	t.Helper()
	out, _, err := g.run(stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// fingerprint returns the primary fingerprint of the key with uid.
func (g *gpgHome) fingerprint(uid string) (string, error) {
	out, _, err := g.run(nil, "--with-colons", "--list-keys", uid)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(out), "\n") {
		if strings.HasPrefix(line, "fpr:") {
			f := strings.Split(line, ":")
			return f[9], nil
		}
	}
	return "", fmt.Errorf("no fingerprint for %s", uid)
}

// fixtures are the keys shared by the tests, generated once.
type fixtures struct {
	gpg *gpgHome
	// Gateway keys (secret, in Go) and their fingerprints.
	gw25519, gwRSA       *pgpcrypto.Key
	gw25519FP, gwRSAFP   string
	gateway              *pgpcrypto.KeyRing // both gateway keys
	sender               *pgpcrypto.Key     // public key of the gpg sender
	senderFP             string
	other                string // uid of a key that is not the gateway's
	senders              KeyLookup
	gatewayUID, rsaUID   string
	senderUID, otherAddr string
}

func getFixtures(t testing.TB) *fixtures {
	t.Helper()
	if _, err := exec.LookPath("gpg"); err != nil {
		t.Skip("gpg not installed: skipping interop test")
	}
	fixtureOnce.Do(func() { fixture, fixtureErr = makeFixtures() })
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixture
}

func makeFixtures() (*fixtures, error) {
	g, err := newGPGHome()
	if err != nil {
		return nil, err
	}
	f := &fixtures{
		gpg:        g,
		gatewayUID: "gw@example.org",
		rsaUID:     "gwrsa@example.org",
		senderUID:  "sender@example.net",
		otherAddr:  "other@example.com",
	}
	steps := [][]string{
		{"--quick-gen-key", "Gateway <gw@example.org>", "future-default", "default", "never"},
		{"--quick-gen-key", "Sender <sender@Example.NET>", "future-default", "default", "never"},
		{"--quick-gen-key", "Other <other@example.com>", "future-default", "default", "never"},
		{"--quick-gen-key", "Gateway RSA <gwrsa@example.org>", "rsa3072", "sign,cert", "never"},
	}
	for _, s := range steps {
		if _, _, err := g.run(nil, s...); err != nil {
			return nil, err
		}
	}
	rsaFP, err := g.fingerprint(f.rsaUID)
	if err != nil {
		return nil, err
	}
	if _, _, err := g.run(nil, "--quick-add-key", rsaFP, "rsa3072", "encr", "never"); err != nil {
		return nil, err
	}
	load := func(uid string, secret bool) (*pgpcrypto.Key, error) {
		cmd := "--export"
		if secret {
			cmd = "--export-secret-keys"
		}
		bin, _, err := g.run(nil, cmd, uid)
		if err != nil {
			return nil, err
		}
		k, err := pgpcrypto.NewKey(bin)
		if err != nil {
			return nil, fmt.Errorf("load %s: %w", uid, err)
		}
		Prepare(k)
		return k, nil
	}
	if f.gw25519, err = load(f.gatewayUID, true); err != nil {
		return nil, err
	}
	if f.gwRSA, err = load(f.rsaUID, true); err != nil {
		return nil, err
	}
	if f.sender, err = load(f.senderUID, false); err != nil {
		return nil, err
	}
	f.gw25519FP = strings.ToUpper(f.gw25519.GetFingerprint())
	f.gwRSAFP = strings.ToUpper(f.gwRSA.GetFingerprint())
	f.senderFP = strings.ToUpper(f.sender.GetFingerprint())
	f.other = f.otherAddr
	if f.gateway, err = pgpcrypto.NewKeyRing(f.gw25519); err != nil {
		return nil, err
	}
	if err := f.gateway.AddKey(f.gwRSA); err != nil {
		return nil, err
	}
	senders, err := pgpcrypto.NewKeyRing(f.sender)
	if err != nil {
		return nil, err
	}
	f.senders = KeyRingLookup(senders)
	return f, nil
}

// spoolDir returns an empty 0700 spool directory and a function that
// fails the test if anything is left in it.
func spoolDir(t *testing.T) (string, func()) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "spool")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	return dir, func() {
		t.Helper()
		ents, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Errorf("spool dir not empty: %d entries, first %q", len(ents), ents[0].Name())
		}
	}
}

// readAll reads the whole plaintext.
func readAll(t testing.TB, p *Plaintext) []byte {
	t.Helper()
	rc, err := p.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var b bytes.Buffer
	if _, err := b.ReadFrom(rc); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// findCorpus walks up from the package directory to shared/corpus.
func findCorpus(t testing.TB, sub string) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		p := filepath.Join(dir, "shared", "corpus", sub)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Skipf("corpus folder shared/corpus/%s not found above the package: skipping", sub)
		}
		dir = parent
	}
}
