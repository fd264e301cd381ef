// Command gen makes the fixtures of cryptmilter's golden suite once: the
// keystore (testdata/golden/keystore), the correspondents' own secret
// keys (testdata/golden/peers, which the test decrypts outbound copies
// with) and every message that holds cryptography (ciphertext and
// signatures made by the real gpg and openssl acting as the senders). The
// test never runs it: what it makes is committed, so that inbound
// expectations are exact.
//
// Run it from anywhere in the module, then rewrite the expectations:
//
//	go run ./cmd/cryptmilter/testdata/golden/gen
//	go test ./cmd/cryptmilter -run Golden -update
//
// (testdata/golden/regenerate.sh does both.) It needs gpg, gpgconf and
// openssl on PATH. Everything is made at fixed, past times (gpg
// --faked-system-time, openssl ca -startdate), before the clock the test
// fixes (goldenClock in golden_test.go, 2025-10-01 12:00 UTC), so that
// verdicts do not depend on when the test runs: keys are created on
// 2025-01-01, an expired key and certificate expire on 2025-06-01,
// revocations date from 2025-03-01, signatures from 2025-09-01 (2025-02-01
// for the signers that are expired or revoked at the clock), and every
// other certificate is valid until the end of 2049. The gateway's keys
// are made with gpg and openssl (not `keys init`, which makes them now)
// and imported with `cryptmilter keys import`, as an admin would.
package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
)

// Times (gpg --faked-system-time, openssl dates).
const (
	keyTime      = "20250101T000000!"
	signTime     = "20250901T000000!"
	oldSignTime  = "20250201T000000!"
	revokeTime   = "20250301T000000!"
	certStart    = "20250101000000Z"
	certEnd      = "20491231235959Z"
	expiredEnd   = "20250601000000Z"
	revokedAt    = "250301000000Z" // index.txt form
	crlLast      = "20250301000000Z"
	expiredPGPOn = "2025-06-01"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "gen: error: %v\n", err)
		os.Exit(1)
	}
}

// gen holds the state of one run.
type gen struct {
	root   string // module root
	golden string // cmd/cryptmilter/testdata/golden
	tmp    string
	home   string // GNUPGHOME of every sender
	bin    string // the cryptmilter binary
	cfg    string // configuration naming the keystore
	fpr    map[string]string
	// S/MIME: key and certificate files by name.
	key, crt map[string]string
}

func run() error {
	for _, p := range []string{"gpg", "gpgconf", "openssl", "go"} {
		if _, err := exec.LookPath(p); err != nil {
			return fmt.Errorf("%s is needed: %v", p, err)
		}
	}
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}").Output()
	if err != nil {
		return fmt.Errorf("go list -m: %v", err)
	}
	g := &gen{root: strings.TrimSpace(string(out)), fpr: map[string]string{}, key: map[string]string{}, crt: map[string]string{}}
	g.golden = filepath.Join(g.root, "cmd", "cryptmilter", "testdata", "golden")
	if g.tmp, err = os.MkdirTemp("", "golden-gen-"); err != nil {
		return err
	}
	g.home = filepath.Join(g.tmp, "gnupg")
	defer func() {
		exec.Command("gpgconf", "--homedir", g.home, "--kill", "all").Run()
		os.RemoveAll(g.tmp)
	}()
	if err := os.Mkdir(g.home, 0o700); err != nil {
		return err
	}
	g.bin = filepath.Join(g.tmp, "cryptmilter")
	build := exec.Command("go", "build", "-o", g.bin, "./cmd/cryptmilter")
	build.Dir, build.Stderr = g.root, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %v", err)
	}
	ks := filepath.Join(g.golden, "keystore")
	peers := filepath.Join(g.golden, "peers")
	for _, d := range []string{ks, peers} {
		if err := os.RemoveAll(d); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(peers, 0o755); err != nil {
		return err
	}
	g.cfg = filepath.Join(g.tmp, "cryptmilter.toml")
	cfg := fmt.Sprintf("keystore = %q\nhostname = \"mx.example.org\"\n[identity]\naddresses = [\"rt@example.org\"]\n", ks)
	if err := os.WriteFile(g.cfg, []byte(cfg), 0o600); err != nil {
		return err
	}
	steps := []func() error{g.openpgpKeys, g.smimeKeys, g.messages}
	for _, s := range steps {
		if err := s(); err != nil {
			return err
		}
	}
	os.Remove(filepath.Join(ks, ".lock"))
	fmt.Println("gen: keystore, peers and messages written under", g.golden)
	fmt.Println("gen: now run: go test ./cmd/cryptmilter -run Golden -update")
	return nil
}

func runCmd(stdin []byte, name string, args ...string) ([]byte, error) {
	cmd := exec.Command(name, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// gpgAt runs gpg at the faked time t.
func (g *gen) gpgAt(t string, stdin []byte, args ...string) ([]byte, error) {
	base := []string{"--homedir", g.home, "--batch", "--yes", "--quiet", "--pinentry-mode", "loopback", "--passphrase", "",
		"--trust-model", "always", "--auto-key-locate", "local", "--no-auto-key-retrieve", "--faked-system-time", t}
	return runCmd(stdin, "gpg", append(base, args...)...)
}

// keys runs `cryptmilter keys` on the golden keystore.
func (g *gen) keys(args ...string) error {
	out, err := runCmd(nil, g.bin, append([]string{"keys", "-c", g.cfg}, args...)...)
	os.Stdout.Write(out)
	return err
}

var fprRE = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]{40}):`)

// pgpSpec is one OpenPGP key made with gpg.
type pgpSpec struct {
	name, uid, expire string
	encrypt           bool // add an encryption subkey
}

var pgpSpecs = []pgpSpec{
	{"rt", "Example RT <rt@example.org>", "never", true},
	{"alice", "Alice <alice@example.net>", "never", true},
	{"bob", "Bob <bob@example.net>", "never", true},
	{"both", "Both <both@example.net>", "never", true},
	{"signonly", "Sign Only <signonly@example.net>", "never", false},
	{"expired", "Expired <expired@example.net>", expiredPGPOn, true},
	{"revoked", "Revoked <revoked@example.net>", "never", true},
	{"mallory", "Mallory <mallory@example.net>", "never", true},
}

// openpgpKeys makes the OpenPGP keys, imports the gateway's secret key and
// the correspondents' public keys (mallory's stays unknown), and writes
// the correspondents' secret keys to peers/.
func (g *gen) openpgpKeys() error {
	for _, s := range pgpSpecs {
		if _, err := g.gpgAt(keyTime, nil, "--quick-gen-key", s.uid, "ed25519", "sign", s.expire); err != nil {
			return err
		}
		out, err := g.gpgAt(keyTime, nil, "--with-colons", "--list-keys", s.uid)
		if err != nil {
			return err
		}
		m := fprRE.FindStringSubmatch(string(out))
		if m == nil {
			return fmt.Errorf("no fingerprint for %s", s.uid)
		}
		g.fpr[s.name] = m[1]
		if s.encrypt {
			if _, err := g.gpgAt(keyTime, nil, "--quick-add-key", m[1], "cv25519", "encr", s.expire); err != nil {
				return err
			}
		}
	}
	// The gateway's secret key, as an admin imports it.
	sec, err := g.gpgAt(keyTime, nil, "--armor", "--export-secret-keys", g.fpr["rt"])
	if err != nil {
		return err
	}
	if err := g.importFile("rt-secret.asc", sec); err != nil {
		return err
	}
	for _, n := range []string{"alice", "bob", "both", "mallory"} {
		sec, err := g.gpgAt(keyTime, nil, "--armor", "--export-secret-keys", g.fpr[n])
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(g.golden, "peers", n+".asc"), sec, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// importPGPPublic imports the public keys of the correspondents the
// gateway knows. It runs after the messages of the revoked signer are
// made (gpg signs nothing with a revoked key), then revokes that key.
func (g *gen) importPGPPublic() error {
	// --gen-revoke needs a terminal; the key editor's revkey (no subkey
	// selected: the whole key) takes its answers from --command-fd.
	if _, err := g.gpgAt(revokeTime, []byte("revkey\ny\n1\nkey retired by the golden fixtures\n\ny\nsave\n"),
		"--command-fd", "0", "--status-fd", "2", "--edit-key", g.fpr["revoked"]); err != nil {
		return err
	}
	for _, n := range []string{"alice", "bob", "both", "signonly", "expired", "revoked"} {
		pub, err := g.gpgAt(signTime, nil, "--armor", "--export", g.fpr[n])
		if err != nil {
			return err
		}
		if err := g.importFile(n+".asc", pub); err != nil {
			return err
		}
	}
	return nil
}

func (g *gen) importFile(name string, data []byte, flags ...string) error {
	p := filepath.Join(g.tmp, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		return err
	}
	return g.keys(append(append([]string{"import"}, flags...), p)...)
}

// The openssl CA configuration: certificates with fixed dates.
const caConf = `[ca]
default_ca = golden
[golden]
dir = DIR
database = DIR/index.txt
new_certs_dir = DIR/newcerts
serial = DIR/serial
crlnumber = DIR/crlnumber
default_md = sha256
default_crl_days = 9000
policy = anything
unique_subject = no
preserve = yes
email_in_dn = yes
copy_extensions = none
[anything]
organizationName = optional
commonName = supplied
emailAddress = optional
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[ca_ext]
basicConstraints = critical,CA:true
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
`

type smimeSpec struct {
	name, addr, ca, end string
}

var smimeSpecs = []smimeSpec{
	{"rt", "rt@example.org", "ca", certEnd},
	{"carol", "carol@example.com", "ca", certEnd},
	{"dave", "dave@example.com", "ca", certEnd},
	{"both", "both@example.net", "ca", certEnd},
	{"frank", "frank@example.com", "ca", expiredEnd},
	{"grace", "grace@example.com", "ca", certEnd},
	{"eve", "eve@example.com", "rogue", certEnd},
}

// smimeKeys makes a trusted test CA and a rogue one with openssl, the
// gateway's S/MIME identity and the correspondents' certificates (eve's
// from the rogue CA, frank's expired, grace's revoked by a CRL), imports
// what the gateway knows and writes the correspondents' keys to peers/.
func (g *gen) smimeKeys() error {
	for _, ca := range []string{"ca", "rogue"} {
		if err := g.makeCA(ca); err != nil {
			return err
		}
	}
	for _, s := range smimeSpecs {
		if err := g.makeCert(s); err != nil {
			return err
		}
	}
	if err := g.revokeGrace(); err != nil {
		return err
	}
	caPEM, err := os.ReadFile(g.crt["ca"])
	if err != nil {
		return err
	}
	if err := g.importFile("golden-ca.pem", caPEM, "--ca"); err != nil {
		return err
	}
	crl, err := os.ReadFile(filepath.Join(g.tmp, "ca", "crl.pem"))
	if err != nil {
		return err
	}
	if err := g.importFile("golden-ca.crl.pem", crl); err != nil {
		return err
	}
	bundle, err := g.pemBundle("rt", true)
	if err != nil {
		return err
	}
	if err := g.importFile("rt-smime.pem", bundle); err != nil {
		return err
	}
	// grace's certificate is not imported (keys import refuses a revoked
	// one): it chains to the trusted CA, whose CRL revokes it.
	for _, n := range []string{"carol", "dave", "both", "frank"} {
		c, err := os.ReadFile(g.crt[n])
		if err != nil {
			return err
		}
		if err := g.importFile(n+".pem", c); err != nil {
			return err
		}
	}
	for _, n := range []string{"carol", "dave", "both"} {
		b, err := g.pemBundle(n, false)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(g.golden, "peers", n+".pem"), b, 0o644); err != nil {
			return err
		}
	}
	ca, err := os.ReadFile(g.crt["ca"])
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(g.golden, "peers", "golden-ca.pem"), ca, 0o644)
}

// pemBundle is a key followed by its certificate (and the CA's).
func (g *gen) pemBundle(name string, chain bool) ([]byte, error) {
	k, err := os.ReadFile(g.key[name])
	if err != nil {
		return nil, err
	}
	c, err := os.ReadFile(g.crt[name])
	if err != nil {
		return nil, err
	}
	out := append(k, c...)
	if chain {
		ca, err := os.ReadFile(g.crt["ca"])
		if err != nil {
			return nil, err
		}
		out = append(out, ca...)
	}
	return out, nil
}

func (g *gen) ossl(stdin []byte, args ...string) ([]byte, error) {
	return runCmd(stdin, "openssl", args...)
}

func (g *gen) makeCA(name string) error {
	dir := filepath.Join(g.tmp, name)
	if err := os.MkdirAll(filepath.Join(dir, "newcerts"), 0o700); err != nil {
		return err
	}
	serial := "1000"
	if name == "rogue" {
		serial = "7000"
	}
	for f, v := range map[string]string{"index.txt": "", "serial": serial + "\n", "crlnumber": "01\n",
		"ca.cnf": strings.ReplaceAll(caConf, "DIR", dir)} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o600); err != nil {
			return err
		}
	}
	cn := map[string]string{"ca": "Golden Test CA", "rogue": "Rogue Test CA"}[name]
	key, csr, crt := filepath.Join(dir, "ca.key"), filepath.Join(dir, "ca.csr"), filepath.Join(dir, "ca.pem")
	if _, err := g.ossl(nil, "genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", key); err != nil {
		return err
	}
	if _, err := g.ossl(nil, "req", "-new", "-config", filepath.Join(dir, "ca.cnf"), "-key", key,
		"-subj", "/O=Cryptmilter Golden Tests/CN="+cn, "-out", csr); err != nil {
		return err
	}
	if _, err := g.ossl(nil, "ca", "-batch", "-config", filepath.Join(dir, "ca.cnf"), "-selfsign", "-keyfile", key,
		"-in", csr, "-startdate", certStart, "-enddate", certEnd, "-extensions", "ca_ext", "-notext", "-out", crt); err != nil {
		return err
	}
	g.key[name], g.crt[name] = key, crt
	return nil
}

func (g *gen) makeCert(s smimeSpec) error {
	dir := filepath.Join(g.tmp, s.ca)
	key, csr, crt := filepath.Join(g.tmp, s.name+".key"), filepath.Join(g.tmp, s.name+".csr"), filepath.Join(g.tmp, s.name+".crt")
	if _, err := g.ossl(nil, "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", key); err != nil {
		return err
	}
	name := strings.ToUpper(s.name[:1]) + s.name[1:]
	if s.name == "rt" {
		name = "Example RT"
	}
	if _, err := g.ossl(nil, "req", "-new", "-config", filepath.Join(dir, "ca.cnf"), "-key", key,
		"-subj", "/CN="+name+"/emailAddress="+s.addr, "-out", csr); err != nil {
		return err
	}
	ext := filepath.Join(g.tmp, s.name+".ext")
	if err := os.WriteFile(ext, []byte("[smime]\nkeyUsage = critical,digitalSignature,keyEncipherment\n"+
		"extendedKeyUsage = emailProtection\nsubjectAltName = email:"+s.addr+"\n"+
		"authorityKeyIdentifier = keyid\nsubjectKeyIdentifier = hash\n"), 0o600); err != nil {
		return err
	}
	if _, err := g.ossl(nil, "ca", "-batch", "-config", filepath.Join(dir, "ca.cnf"), "-cert", g.crt[s.ca], "-keyfile", g.key[s.ca],
		"-in", csr, "-startdate", certStart, "-enddate", s.end, "-extfile", ext, "-extensions", "smime", "-notext", "-out", crt); err != nil {
		return err
	}
	g.key[s.name], g.crt[s.name] = key, crt
	return nil
}

// revokeGrace revokes grace's certificate as of 2025-03-01 and writes the
// CA's CRL.
func (g *gen) revokeGrace() error {
	dir := filepath.Join(g.tmp, "ca")
	conf := filepath.Join(dir, "ca.cnf")
	if _, err := g.ossl(nil, "ca", "-config", conf, "-cert", g.crt["ca"], "-keyfile", g.key["ca"], "-revoke", g.crt["grace"], "-crl_reason", "keyCompromise"); err != nil {
		return err
	}
	// openssl records the revocation now: date it back.
	idx := filepath.Join(dir, "index.txt")
	data, err := os.ReadFile(idx)
	if err != nil {
		return err
	}
	lines := strings.Split(string(data), "\n")
	for i, l := range lines {
		f := strings.Split(l, "\t")
		if len(f) > 2 && f[0] == "R" {
			f[2] = revokedAt + ",keyCompromise"
			lines[i] = strings.Join(f, "\t")
		}
	}
	if err := os.WriteFile(idx, []byte(strings.Join(lines, "\n")), 0o600); err != nil {
		return err
	}
	_, err = g.ossl(nil, "ca", "-config", conf, "-cert", g.crt["ca"], "-keyfile", g.key["ca"], "-gencrl",
		"-crl_lastupdate", crlLast, "-crl_nextupdate", certEnd, "-out", filepath.Join(dir, "crl.pem"))
	return err
}
