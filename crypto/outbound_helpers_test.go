package crypto

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"io"
	stdmime "mime"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomessage "github.com/emersion/go-message"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// The outbound fixture: a keystore with the gateway identity for
// rt@example.org, correspondents with OpenPGP keys made by gpg (each in a
// GNUPGHOME of its own, as a real recipient), correspondents with S/MIME
// certificates made by openssl, and one without any key.
const outGatewayAddr = "rt@example.org"

var (
	outPGPPeers   = []string{"alice@example.net", "bob@example.net", "carol@example.net", "both@example.net"}
	outSMIMEPeers = []string{"dave@example.com", "erin@example.com", "both@example.net"}
)

type outFixture struct {
	dir      string // holds everything; removed by the cleanup
	ksDir    string
	homes    map[string]string // gpg home per OpenPGP peer
	subkeys  map[string]string // encryption subkey ID (16 hex) per OpenPGP peer
	smimeKey map[string]string // key file per S/MIME peer
	smimeCrt map[string]string // certificate file per S/MIME peer
	gwCert   string            // gateway certificate file
	gwPGPID  string            // gateway signing key ID (16 hex)
	err      error
}

var (
	outFixOnce sync.Once
	outFix     outFixture
	outFixMu   sync.Mutex // gpg homes are used one at a time
)

func outRequireTools(t testing.TB) {
	t.Helper()
	for _, p := range []string{"gpg", "gpgconf", "openssl"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("outbound interop tests need %s: %v", p, err)
		}
	}
}

// fixture builds the shared keys once per test binary.
func outFixtureFor(t testing.TB) *outFixture {
	t.Helper()
	outRequireTools(t)
	outFixOnce.Do(func() { outFix.err = outFix.build() })
	if outFix.err != nil {
		t.Fatalf("fixture: %v", outFix.err)
	}
	return &outFix
}

func outRun(stdin []byte, name string, args ...string) ([]byte, error) {
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

func (f *outFixture) build() error {
	dir, err := os.MkdirTemp("", "cmo")
	if err != nil {
		return err
	}
	f.dir = dir
	f.ksDir = filepath.Join(dir, "ks")
	f.homes, f.subkeys = map[string]string{}, map[string]string{}
	f.smimeKey, f.smimeCrt = map[string]string{}, map[string]string{}
	opts := keystore.Options{Dir: f.ksDir}
	now := time.Now()
	if _, err := keystore.Init(opts, []string{outGatewayAddr}, false, now.Add(-time.Hour)); err != nil {
		return err
	}
	snap, err := keystore.Load(opts)
	if err != nil {
		return err
	}
	gwKey, err := snap.GatewayOpenPGPAt(outGatewayAddr, now)
	if err != nil {
		return err
	}
	gwPub, err := gwKey.GetArmoredPublicKey()
	if err != nil {
		return err
	}
	f.gwPGPID = strings.ToUpper(gwKey.GetHexKeyID())
	id, err := snap.GatewaySMIMEAt(outGatewayAddr, now)
	if err != nil {
		return err
	}
	f.gwCert = filepath.Join(dir, "gw.pem")
	if err := os.WriteFile(f.gwCert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: id.Cert.Raw}), 0o600); err != nil {
		return err
	}
	for i, addr := range outPGPPeers {
		home := filepath.Join(dir, fmt.Sprintf("g%d", i))
		if err := os.Mkdir(home, 0o700); err != nil {
			return err
		}
		f.homes[addr] = home
		g := []string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}
		if _, err := outRun(nil, "gpg", append(g, "--quick-gen-key", addr, "ed25519", "sign", "never")...); err != nil {
			return err
		}
		out, err := outRun(nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
		if err != nil {
			return err
		}
		fpr := regexp.MustCompile(`(?m)^fpr:+([0-9A-F]+):`).FindStringSubmatch(string(out))[1]
		if _, err := outRun(nil, "gpg", append(g, "--quick-add-key", fpr, "cv25519", "encr", "never")...); err != nil {
			return err
		}
		out, err = outRun(nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
		if err != nil {
			return err
		}
		for _, line := range strings.Split(string(out), "\n") {
			fs := strings.Split(line, ":")
			if fs[0] == "sub" && len(fs) > 11 && strings.Contains(fs[11], "e") {
				f.subkeys[addr] = fs[4]
			}
		}
		pub, err := outRun(nil, "gpg", append(g, "--armor", "--export", addr)...)
		if err != nil {
			return err
		}
		if _, err := keystore.Import(opts, pub, addr+".asc", false, nil, time.Now().Add(time.Second)); err != nil {
			return err
		}
		if _, err := outRun([]byte(gwPub), "gpg", append(g, "--import")...); err != nil {
			return err
		}
	}
	for i, addr := range outSMIMEPeers {
		key := filepath.Join(dir, fmt.Sprintf("s%d.key", i))
		crt := filepath.Join(dir, fmt.Sprintf("s%d.pem", i))
		if _, err := outRun(nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
			"-days", "30", "-subj", "/CN="+addr, "-addext", "subjectAltName=email:"+addr,
			"-addext", "extendedKeyUsage=emailProtection", "-addext", "keyUsage=digitalSignature,keyEncipherment"); err != nil {
			return err
		}
		f.smimeKey[addr], f.smimeCrt[addr] = key, crt
		data, err := os.ReadFile(crt)
		if err != nil {
			return err
		}
		if _, err := keystore.Import(opts, data, addr+".pem", false, nil, time.Now().Add(time.Second)); err != nil {
			return err
		}
	}
	return nil
}

func (f *outFixture) cleanup() {
	if f.dir == "" {
		return
	}
	for _, h := range f.homes {
		exec.Command("gpgconf", "--homedir", h, "--kill", "all").Run()
	}
	os.RemoveAll(f.dir)
}

// engine returns an engine with the fixture's keystore and cfg changed by
// mod.
func (f *outFixture) engine(t testing.TB, mod func(*Policy)) (*Engine, *keystore.Snapshot) {
	t.Helper()
	pol := testPolicy(mod)
	sp, err := spool.Open(t.TempDir(), 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	snap, err := keystore.Load(keystore.Options{Dir: f.ksDir})
	if err != nil {
		t.Fatal(err)
	}
	return New(pol, sp), snap
}

// outCopy is one message as it leaves the MTA.
type outCopy struct {
	rcpts []string
	raw   []byte
}

// processOut runs the engine on msg and returns the plan and every copy,
// the first being the original as the milter rewrites it.
func processOut(t testing.TB, e *Engine, snap *keystore.Snapshot, from string, rcpts []string, msg []byte, mods ...func(*Input)) (*Plan, []outCopy) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := mime.ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	body := e.spool.New()
	io.Copy(mime.NewCRLFWriter(body), br)
	t.Cleanup(func() { body.Close() })
	in := &Input{
		Direction: Outbound,
		Envelope:  Envelope{From: from, Rcpts: rcpts},
		Message:   Message{Header: h, Body: body},
		QueueID:   "TESTQ",
		Now:       time.Now(),
		Keys:      snap,
	}
	for _, m := range mods {
		m(in)
	}
	plan, err := e.Process(context.Background(), in)
	if err != nil {
		t.Fatalf("Process: %v", err)
	}
	t.Cleanup(plan.Close)
	if plan.Action != Accept {
		return plan, nil
	}
	var removed []string
	for _, c := range plan.Copies {
		removed = append(removed, c.Recipients...)
	}
	var left []string
	for _, r := range rcpts {
		if !slices.Contains(removed, r) {
			left = append(left, r)
		}
	}
	var copies []outCopy
	if len(left) > 0 {
		var b bytes.Buffer
		plan.ApplyHeader(h).WriteTo(&b)
		nb := body
		if plan.Body != nil {
			nb = plan.Body
		}
		io.Copy(&b, nb.Reader())
		copies = append(copies, outCopy{left, b.Bytes()})
	}
	for _, c := range plan.Copies {
		var b bytes.Buffer
		c.Header.WriteTo(&b)
		io.Copy(&b, c.Body.Reader())
		copies = append(copies, outCopy{c.Recipients, b.Bytes()})
	}
	return plan, copies
}

// copyFor returns the copy that goes to addr; exactly one must.
func outCopyFor(t testing.TB, copies []outCopy, addr string) []byte {
	t.Helper()
	var found []byte
	n := 0
	for _, c := range copies {
		if slices.Contains(c.rcpts, addr) {
			found = c.raw
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%s is in %d copies, want 1", addr, n)
	}
	return found
}

func outHeaderOf(t testing.TB, raw []byte) (mime.Header, []byte) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(raw))
	h, err := mime.ReadHeader(br, 0)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	return h, rest
}

// rawParts splits a multipart body into its parts' raw bytes (header and
// body, without the CRLF that precedes a delimiter).
func outRawParts(t testing.TB, body []byte, boundary string) [][]byte {
	t.Helper()
	delim := []byte("--" + boundary)
	i := bytes.Index(body, delim)
	if i < 0 {
		t.Fatalf("no boundary %q", boundary)
	}
	rest := body[i+len(delim):]
	var parts [][]byte
	for {
		if bytes.HasPrefix(rest, []byte("--")) {
			return parts
		}
		rest = bytes.TrimPrefix(rest, []byte("\r\n"))
		j := bytes.Index(rest, append([]byte("\r\n"), delim...))
		if j < 0 {
			t.Fatalf("unterminated part")
		}
		parts = append(parts, rest[:j])
		rest = rest[j+2+len(delim):]
	}
}

func outParams(t testing.TB, h mime.Header) (string, map[string]string) {
	t.Helper()
	mt, p, err := stdmime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		t.Fatalf("Content-Type %q: %v", h.Get("Content-Type"), err)
	}
	return mt, p
}

// gpgDecrypt decrypts a PGP/MIME copy with addr's own gpg home and
// returns the plaintext entity after checking a good signature by the
// gateway key.
func (f *outFixture) gpgDecrypt(t testing.TB, addr string, raw []byte) []byte {
	t.Helper()
	h, body := outHeaderOf(t, raw)
	mt, p := outParams(t, h)
	if mt != "multipart/encrypted" || p["protocol"] != "application/pgp-encrypted" {
		t.Fatalf("copy for %s: Content-Type %q, want PGP/MIME", addr, h.Get("Content-Type"))
	}
	parts := outRawParts(t, body, p["boundary"])
	if len(parts) != 2 {
		t.Fatalf("PGP/MIME with %d parts", len(parts))
	}
	ph, ver := outHeaderOf(t, parts[0])
	if ph.Get("Content-Type") != "application/pgp-encrypted" || !bytes.Contains(ver, []byte("Version: 1")) {
		t.Fatalf("first part %q %q", ph.Get("Content-Type"), ver)
	}
	_, armored := outHeaderOf(t, parts[1])
	outFixMu.Lock()
	defer outFixMu.Unlock()
	outFile := filepath.Join(t.TempDir(), "plain")
	status, err := outRun(armored, "gpg", "--homedir", f.homes[addr], "--batch", "--status-fd", "1", "--output", outFile, "--decrypt")
	if err != nil {
		t.Fatalf("gpg decrypt for %s: %v", addr, err)
	}
	if !bytes.Contains(status, []byte("[GNUPG:] DECRYPTION_OKAY")) || !bytes.Contains(status, []byte("[GNUPG:] GOODSIG "+f.gwPGPID)) {
		t.Fatalf("gpg status for %s lacks DECRYPTION_OKAY or GOODSIG %s:\n%s", addr, f.gwPGPID, status)
	}
	plain, err := os.ReadFile(outFile)
	if err != nil {
		t.Fatal(err)
	}
	return plain
}

// gpgVerifySigned checks a PGP/MIME signed copy with addr's gpg home and
// returns the signed entity.
func (f *outFixture) gpgVerifySigned(t testing.TB, addr string, raw []byte) []byte {
	t.Helper()
	h, body := outHeaderOf(t, raw)
	mt, p := outParams(t, h)
	if mt != "multipart/signed" || p["protocol"] != "application/pgp-signature" || p["micalg"] != "pgp-sha256" {
		t.Fatalf("Content-Type %q, want PGP/MIME signed with pgp-sha256", h.Get("Content-Type"))
	}
	parts := outRawParts(t, body, p["boundary"])
	if len(parts) != 2 {
		t.Fatalf("multipart/signed with %d parts", len(parts))
	}
	_, sig := outHeaderOf(t, parts[1])
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "data"), parts[0], 0o600)
	os.WriteFile(filepath.Join(dir, "sig.asc"), sig, 0o600)
	outFixMu.Lock()
	defer outFixMu.Unlock()
	status, err := outRun(nil, "gpg", "--homedir", f.homes[addr], "--batch", "--status-fd", "1", "--verify", filepath.Join(dir, "sig.asc"), filepath.Join(dir, "data"))
	if err != nil || !bytes.Contains(status, []byte("[GNUPG:] GOODSIG "+f.gwPGPID)) {
		t.Fatalf("gpg --verify: %v\n%s", err, status)
	}
	return parts[0]
}

// smimeDecrypt decrypts an S/MIME copy with addr's key (openssl cms) and
// verifies the gateway's signature inside against the gateway
// certificate; it returns the signed entity.
func (f *outFixture) smimeDecrypt(t testing.TB, addr string, raw []byte) []byte {
	t.Helper()
	h, _ := outHeaderOf(t, raw)
	mt, p := outParams(t, h)
	if mt != "application/pkcs7-mime" || p["smime-type"] != "enveloped-data" || p["name"] != "smime.p7m" {
		t.Fatalf("copy for %s: Content-Type %q", addr, h.Get("Content-Type"))
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "in.eml")
	os.WriteFile(in, raw, 0o600)
	signed, err := outRun(nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", f.smimeCrt[addr], "-inkey", f.smimeKey[addr])
	if err != nil {
		t.Fatalf("openssl smime -decrypt for %s: %v", addr, err)
	}
	info, err := outRun(nil, "openssl", "cms", "-cmsout", "-print", "-inform", "SMIME", "-in", in)
	if err != nil || !bytes.Contains(info, []byte("aes-256-cbc")) {
		t.Errorf("enveloped data is not AES-256-CBC: %v\n%.2000s", err, info)
	}
	return f.smimeVerify(t, signed)
}

// smimeVerify verifies an S/MIME multipart/signed entity with openssl cms
// against the gateway certificate and returns the signed entity.
func (f *outFixture) smimeVerify(t testing.TB, signed []byte) []byte {
	t.Helper()
	h, body := outHeaderOf(t, signed)
	mt, p := outParams(t, h)
	if mt != "multipart/signed" || p["protocol"] != "application/pkcs7-signature" || p["micalg"] != "sha-256" {
		t.Fatalf("signed entity Content-Type %q", h.Get("Content-Type"))
	}
	dir := t.TempDir()
	in := filepath.Join(dir, "signed.eml")
	os.WriteFile(in, signed, 0o600)
	if _, err := outRun(nil, "openssl", "cms", "-verify", "-in", in, "-inform", "SMIME", "-CAfile", f.gwCert, "-out", filepath.Join(dir, "content")); err != nil {
		t.Fatalf("openssl cms -verify: %v", err)
	}
	return outRawParts(t, body, p["boundary"])[0]
}

// leaves returns the media type and decoded content of every leaf of an
// entity, depth first, and "message: Subject" for message/rfc822 parts.
func outLeaves(t testing.TB, raw []byte) []string {
	t.Helper()
	ent, err := gomessage.Read(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	var out []string
	var walk func(e *gomessage.Entity)
	walk = func(e *gomessage.Entity) {
		mt, _, _ := e.Header.ContentType()
		if mr := e.MultipartReader(); mr != nil {
			out = append(out, mt)
			for {
				p, err := mr.NextPart()
				if err == io.EOF {
					return
				}
				if err != nil {
					t.Fatalf("next part: %v", err)
				}
				walk(p)
			}
		}
		b, err := io.ReadAll(e.Body)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		out = append(out, mt+": "+string(b))
	}
	walk(ent)
	return out
}

// transportSafe returns why b is not 7-bit transport-proof, or "".
func outTransportSafe(b []byte) string {
	for i, l := range bytes.Split(b, []byte("\r\n")) {
		if bytes.ContainsAny(l, "\r\n") {
			return fmt.Sprintf("line %d: bare CR or LF", i+1)
		}
		for _, c := range l {
			if c >= 0x80 || c == 0 {
				return fmt.Sprintf("line %d: byte %#x", i+1, c)
			}
		}
		if len(l) > 0 && (l[len(l)-1] == ' ' || l[len(l)-1] == '\t') {
			return fmt.Sprintf("line %d: trailing whitespace", i+1)
		}
		if bytes.HasPrefix(l, []byte("From ")) {
			return fmt.Sprintf("line %d: starts with From", i+1)
		}
	}
	return ""
}
