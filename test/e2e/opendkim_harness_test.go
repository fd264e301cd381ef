package e2e

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"
)

// dkimKey is a DKIM key made by opendkim-genkey: the private key file and
// the public key record, as it would be published at
// Selector._domainkey.Domain.
type dkimKey struct {
	Domain, Selector string
	PrivateFile      string
	Record           string // "v=DKIM1; h=sha256; k=rsa; p=…"
}

// Name is the DNS name of the key record.
func (k *dkimKey) Name() string { return k.Selector + "._domainkey." + k.Domain }

// Sign returns msg with a DKIM-Signature by this key (go-msgauth, the
// outside sender's MTA in the tests).
func (k *dkimKey) Sign(t testing.TB, msg []byte) []byte {
	t.Helper()
	b, err := os.ReadFile(k.PrivateFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		t.Fatalf("%s: no PEM block", k.PrivateFile)
	}
	var key any
	if key, err = x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		if key, err = x509.ParsePKCS1PrivateKey(block.Bytes); err != nil {
			t.Fatalf("%s: %v", k.PrivateFile, err)
		}
	}
	var out bytes.Buffer
	opts := &dkim.SignOptions{Domain: k.Domain, Selector: k.Selector, Signer: key.(crypto.Signer),
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed}
	if err := dkim.Sign(&out, bytes.NewReader(msg), opts); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

var dkimKeys struct {
	mu   sync.Mutex
	keys map[string]*dkimKey
}

// sharedDKIMKey returns a key for domain and selector, made once per test
// binary with opendkim-genkey (1024 bits: quick, and what the DKIM RFCs
// still accept). Do not write to its files.
func sharedDKIMKey(t testing.TB, domain, selector string) *dkimKey {
	t.Helper()
	requirePeers(t, false, "opendkim-genkey")
	dkimKeys.mu.Lock()
	defer dkimKeys.mu.Unlock()
	if k := dkimKeys.keys[selector+"._domainkey."+domain]; k != nil {
		return k
	}
	dir, err := os.MkdirTemp("", "cm-dkk-")
	if err != nil {
		t.Fatal(err)
	}
	sharedCleanup = append(sharedCleanup, dir)
	if out, err := exec.Command("opendkim-genkey", "-b", "1024", "-D", dir, "-d", domain, "-s", selector).CombinedOutput(); err != nil {
		t.Fatalf("opendkim-genkey: %v\n%s", err, out)
	}
	txt, err := os.ReadFile(filepath.Join(dir, selector+".txt"))
	if err != nil {
		t.Fatal(err)
	}
	// sel._domainkey IN TXT ( "v=DKIM1; h=sha256; k=rsa; " "p=…" ) ; comment
	var record strings.Builder
	for _, m := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(string(txt), -1) {
		record.WriteString(m[1])
	}
	k := &dkimKey{Domain: domain, Selector: selector, PrivateFile: filepath.Join(dir, selector+".private"), Record: record.String()}
	if !strings.Contains(k.Record, "p=") {
		t.Fatalf("no public key in %s:\n%s", filepath.Join(dir, selector+".txt"), txt)
	}
	if dkimKeys.keys == nil {
		dkimKeys.keys = map[string]*dkimKey{}
	}
	dkimKeys.keys[k.Name()] = k
	return k
}

// openDKIMOptions configures a private OpenDKIM.
type openDKIMOptions struct {
	// Sign is the key OpenDKIM signs with (single-key mode: Domain,
	// Selector, KeyFile).
	Sign *dkimKey
	// Trust are the public keys verification finds, instead of DNS
	// (TestPublicKeys); Sign's key is always among them.
	Trust []*dkimKey
}

// OpenDKIM is Debian's opendkim running as a milter on a loopback port:
// it signs mail whose {daemon_name} is ORIGINATING (MTA) and verifies the
// rest. InternalHosts is empty, so that mail from loopback is not signed
// for being on loopback (OpenDKIM's default lists 127.0.0.1, the same trap
// as cryptmilter's old internal_hosts). The authserv-id is the harness's
// cryptmilter hostname, mx.example.test.
type OpenDKIM struct {
	Dir    string
	Addr   string // host:port; Postfix: "inet:" + Addr
	keys   string // the TestPublicKeys file
	output syncBuffer
}

// MilterAddr is the socket in Postfix syntax.
func (d *OpenDKIM) MilterAddr() string { return "inet:" + d.Addr }

const openDKIMConf = `# Private OpenDKIM for cryptmilter's end-to-end tests.
Mode                    sv
Socket                  inet:{{.Port}}@127.0.0.1
PidFile                 {{.Dir}}/opendkim.pid
Syslog                  no
Domain                  {{.Sign.Domain}}
Selector                {{.Sign.Selector}}
KeyFile                 {{.Sign.PrivateFile}}
# Sign only what Postfix marks as originating, never for being on loopback.
MTA                     ORIGINATING
InternalHosts           {{.Dir}}/internal-hosts
AuthservID              mx.example.test
Canonicalization        relaxed/relaxed
# The sender's headers that matter to an encrypted message, besides the
# RFC 6376 list OpenDKIM signs by default.
SignHeaders             From,Sender,Reply-To,Subject,Date,Message-ID,To,Cc,MIME-Version,Content-Type,Content-Transfer-Encoding,In-Reply-To,References
TestPublicKeys          {{.Dir}}/keys
# The key files live under /tmp (sticky, world-writable).
RequireSafeKeys         no
`

// startOpenDKIM starts OpenDKIM and stops it at the end of the test.
func startOpenDKIM(t testing.TB, opts openDKIMOptions) *OpenDKIM {
	t.Helper()
	requirePeers(t, false, "opendkim")
	dir := tempDir(t, "cm-dk-")
	port := freePort(t)
	d := &OpenDKIM{Dir: dir, Addr: "127.0.0.1:" + strconv.Itoa(port), keys: filepath.Join(dir, "keys")}
	var keys strings.Builder
	for _, k := range append([]*dkimKey{opts.Sign}, opts.Trust...) {
		keys.WriteString(k.Name() + " " + k.Record + "\n")
	}
	writeFile(t, d.keys, keys.String(), 0o644)
	writeFile(t, filepath.Join(dir, "internal-hosts"), "", 0o644)
	conf := filepath.Join(dir, "opendkim.conf")
	writeTemplate(t, conf, openDKIMConf, map[string]any{"Dir": dir, "Port": port, "Sign": opts.Sign})
	cmd := exec.Command("opendkim", "-f", "-x", conf)
	cmd.Stdout, cmd.Stderr = &d.output, &d.output
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting opendkim: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("opendkim output:\n%s", d.output.String())
		}
	})
	if !waitFor(10*time.Second, func() bool {
		select {
		case <-done:
			return true
		default:
		}
		return dialable(d.Addr)
	}) || !dialable(d.Addr) {
		t.Fatalf("opendkim does not listen on %s\n%s", d.Addr, d.output.String())
	}
	return d
}

// Verify checks the DKIM signatures of a delivered message with OpenDKIM's
// own test mode (opendkim -t, keys from TestPublicKeys: no DNS) and
// returns its verdict line, e.g. "verification (s=sel, d=example.org,
// 1024-bit key) succeeded".
func (d *OpenDKIM) Verify(t testing.TB, m *Mail) string {
	t.Helper()
	dir := tempDir(t, "cm-dkv-")
	conf := filepath.Join(dir, "verify.conf")
	writeFile(t, conf, "Mode v\nSyslog no\nTestPublicKeys "+d.keys+"\n", 0o644)
	file := filepath.Join(dir, "message.eml")
	writeFile(t, file, string(crlf(m.Raw)), 0o644)
	out, err := exec.Command("opendkim", "-x", conf, "-t", file).CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim -t %s: %v\n%s", file, err, out)
	}
	s := strings.TrimSpace(string(out))
	return strings.TrimSpace(strings.TrimPrefix(s, "opendkim: "+file+":"))
}

// verifyDKIM checks the DKIM signatures of a delivered message with a
// second implementation, go-msgauth, finding keys among keys (no DNS). It
// returns one error per signature, nil for a signature that verifies.
func verifyDKIM(t testing.TB, m *Mail, keys ...*dkimKey) []error {
	t.Helper()
	lookup := func(name string) ([]string, error) {
		for _, k := range keys {
			if strings.EqualFold(name, k.Name()) {
				return []string{k.Record}, nil
			}
		}
		return nil, fmt.Errorf("no key %s in the test", name)
	}
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(crlf(m.Raw)), &dkim.VerifyOptions{LookupTXT: lookup})
	if err != nil {
		t.Fatalf("go-msgauth: %v", err)
	}
	var errs []error
	for _, v := range vs {
		errs = append(errs, v.Err)
	}
	return errs
}
