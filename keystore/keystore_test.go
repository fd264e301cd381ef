package keystore

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/crypto"
	"github.com/ProtonMail/gopenpgp/v3/profile"
	"github.com/google/go-cmp/cmp"

	cpgp "github.com/cryptmilter/cryptmilter/crypto/openpgp"
)

// genPGP makes an Ed25519/X25519 key with gopenpgp (cheap), armored.
func genPGP(t testing.TB, email string, created time.Time, secret bool) (armored, fpr string) {
	t.Helper()
	k, err := crypto.PGPWithProfile(profile.Default()).KeyGeneration().AddUserId("", email).GenerationTime(created.Unix()).New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	if secret {
		armored, err = k.Armor()
	} else {
		armored, err = k.GetArmoredPublicKey()
	}
	if err != nil {
		t.Fatal(err)
	}
	return armored, strings.ToUpper(k.GetFingerprint())
}

func addrsOf(entries []Entry) map[string]string {
	m := map[string]string{}
	for _, e := range entries {
		for _, a := range e.Addresses {
			m[a] = e.Protocol + "/" + e.Kind
		}
		if len(e.Addresses) == 0 {
			m["("+e.Fingerprint[:8]+")"] = e.Protocol + "/" + e.Kind
		}
	}
	return m
}

func TestImportGPGExports(t *testing.T) {
	f := getFixtures(t)
	for _, file := range []string{f.pubArmored, f.pubBinary} {
		t.Run(filepath.Base(file), func(t *testing.T) {
			o := newStore(t)
			res := mustImport(t, o, false, nil, file)
			if len(res) != 3 {
				t.Fatalf("got %d results, want 3: %+v", len(res), res)
			}
			s := mustLoad(t, o)
			if p := s.Problems(); len(p) != 0 {
				t.Fatalf("problems: %v", p)
			}
			want := map[string]string{"alice@example.org": "openpgp/public", "bob@example.org": "openpgp/public", "carol@example.net": "openpgp/public"}
			if d := cmp.Diff(want, addrsOf(s.Entries(time.Now()))); d != "" {
				t.Errorf("addresses (-want +got):\n%s", d)
			}
			for addr, fpr := range map[string]string{"alice@example.org": f.fprs["alice@example.org"], "bob@EXAMPLE.org": f.fprs["bob@example.org"], "carol@example.net": f.fprs["carol@example.net"]} {
				k, err := s.EncryptionKey(addr, time.Now())
				if err != nil {
					t.Errorf("EncryptionKey(%s): %v", addr, err)
					continue
				}
				if got := strings.ToUpper(k.GetFingerprint()); got != fpr {
					t.Errorf("EncryptionKey(%s) = %s, want %s", addr, got, fpr)
				}
			}
			// The local part is exact unless folding is asked for.
			if _, err := s.EncryptionKey("Alice@example.org", time.Now()); !errors.Is(err, ErrNoKey) {
				t.Errorf("EncryptionKey(Alice@…) = %v, want ErrNoKey", err)
			}
			o.FoldLocalPart = true
			if _, err := mustLoad(t, o).EncryptionKey("ALICE@example.org", time.Now()); err != nil {
				t.Errorf("folded EncryptionKey(ALICE@…): %v", err)
			}
		})
	}
}

func TestEncryptToImportedKeyGPGDecrypts(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.pubArmored)
	k, err := mustLoad(t, o).EncryptionKey("alice@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	kr, _ := crypto.NewKeyRing(k)
	enc, _ := crypto.PGP().Encryption().Recipients(kr).New()
	msg, err := enc.Encrypt([]byte("hello alice"))
	if err != nil {
		t.Fatal(err)
	}
	arm, _ := msg.ArmorBytes()
	cmd := exec.Command("gpg", "--homedir", f.gnupgHome, "--batch", "--pinentry-mode", "loopback", "--passphrase", "", "--decrypt")
	cmd.Stdin = bytes.NewReader(arm)
	out, err := cmd.Output()
	if err != nil || string(out) != "hello alice" {
		t.Fatalf("gpg --decrypt = %q, %v", out, err)
	}
}

// snapLookup finds signers in a snapshot, as the engine does.
type snapLookup struct{ s *Snapshot }

func (l snapLookup) ByKeyID(id uint64) []*crypto.Key { return l.s.OpenPGPByKeyID(id) }

// TestCorrespondentKeyRules: keys that cannot be encrypted to are imported
// when they can still vouch for signatures: sign-only keys (and keys whose
// encryption subkey expired) verify signatures now; expired and revoked
// keys let old signatures read expired or revoked rather than untrusted.
// None is ever chosen for encryption, and keys list and check say why.
func TestCorrespondentKeyRules(t *testing.T) {
	f := getFixtures(t)
	for _, tc := range []struct {
		file, addr string
		reason     string   // in the import result and the entry
		uses       []string // in the entry
		sig        string   // a signature by the key over sigData, if any
		verdict    cpgp.Status
	}{
		{f.signOnly, "signer@example.org", "sign-only key: no encryption subkey", []string{UseVerify}, "", 0},
		{f.subExpired, "sub@example.org", "encryption subkey expired", []string{UseVerify}, "", 0},
		{f.expired, "old@example.org", "expired", []string{}, f.oldSig, cpgp.StatusExpired},
		{f.revoked, "rev@example.org", "revoked", []string{}, f.revSig, cpgp.StatusRevoked},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			o := newStore(t)
			if tc.sig != "" {
				// Before the import the signer is unknown.
				ensureDirs(o)
				res := cpgp.VerifyDetached(strings.NewReader(sigData), readFile(t, tc.sig), snapLookup{mustLoad(t, o)}, time.Now())
				if res.Status != cpgp.StatusUntrusted {
					t.Fatalf("before import: %v, want untrusted", res.Status)
				}
			}
			res := mustImport(t, o, false, nil, tc.file)
			if len(res) != 1 || res[0].Action != "imported" || !strings.Contains(res[0].Reason, tc.reason) ||
				!strings.Contains(res[0].Reason, "never used for encryption") {
				t.Fatalf("import: %+v; want imported, reason %q, never used for encryption", res, tc.reason)
			}
			s := mustLoad(t, o)
			if _, err := s.EncryptionKey(tc.addr, time.Now()); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), tc.reason) {
				t.Errorf("EncryptionKey = %v, want ErrNoKey (%s)", err, tc.reason)
			}
			es := s.Entries(time.Now())
			if len(es) != 1 || es[0].Usable || !strings.Contains(es[0].Reason, tc.reason) || !cmp.Equal(es[0].Uses, tc.uses) {
				t.Errorf("entry: %+v; want unusable (%s), uses %v", es, tc.reason, tc.uses)
			}
			fs := s.Check(time.Now(), DefaultExpiryWarning, nil)
			if len(fs) != 1 || fs[0].Problem || !strings.Contains(fs[0].Message, tc.reason) {
				t.Errorf("check: %+v; want one note naming %q", fs, tc.reason)
			}
			if tc.sig != "" {
				res := cpgp.VerifyDetached(strings.NewReader(sigData), readFile(t, tc.sig), snapLookup{s}, time.Now())
				if res.Status != tc.verdict {
					t.Errorf("old signature: %v, want %v", res.Status, tc.verdict)
				}
			}
		})
	}
	// The expired key placed by hand is loaded the same way.
	o := newStore(t)
	ensureDirs(o)
	os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "hand.asc"), readFile(t, f.expired), 0o644)
	s := mustLoad(t, o)
	if _, err := s.EncryptionKey("old@example.org", time.Date(2020, 6, 1, 0, 0, 0, 0, time.UTC)); err != nil {
		t.Errorf("EncryptionKey in 2020 (when valid) = %v", err)
	}
}

// TestGatewayRollover: an expired or revoked gateway secret key is
// imported for decryption only: it decrypts mail sent to it while it was
// valid, never signs, and check says so.
func TestGatewayRollover(t *testing.T) {
	f := getFixtures(t)
	for _, tc := range []struct {
		file, msg, addr, reason string
	}{
		{f.gwOld, f.gwOldMsg, "gwold@example.org", "expired"},
		{f.gwRev, f.gwRevMsg, "gwrev@example.org", "revoked"},
	} {
		t.Run(tc.addr, func(t *testing.T) {
			o := newStore(t)
			res := mustImport(t, o, false, nil, tc.file)
			if len(res) != 1 || res[0].Action != "imported" || res[0].Kind != "secret" ||
				!strings.Contains(res[0].Reason, tc.reason+": for decryption only") {
				t.Fatalf("import: %+v", res)
			}
			s := mustLoad(t, o)
			if _, err := s.GatewayOpenPGPAt(tc.addr, time.Now()); !errors.Is(err, ErrNoKey) {
				t.Errorf("GatewayOpenPGPAt = %v, want ErrNoKey: never used to sign", err)
			}
			if _, err := s.EncryptionKey(tc.addr, time.Now()); !errors.Is(err, ErrNoKey) {
				t.Errorf("EncryptionKey(%s) = %v, want ErrNoKey: never a recipient", tc.addr, err)
			}
			pt, err := cpgp.Decrypt(bytes.NewReader(readFile(t, tc.msg)), s.GatewayDecryptionKeyRing(), snapLookup{s}, time.Now(),
				cpgp.Limits{SpoolDir: t.TempDir()})
			if err != nil {
				t.Fatalf("decrypting old mail with the %s key: %v", tc.reason, err)
			}
			r, _ := pt.Open()
			got, _ := io.ReadAll(r)
			r.Close()
			pt.Close()
			if string(got) != "old mail\n" {
				t.Errorf("decrypted %q", got)
			}
			es := s.Entries(time.Now())
			if len(es) != 1 || es[0].Usable || !cmp.Equal(es[0].Uses, []string{UseDecrypt}) || es[0].Reason != tc.reason {
				t.Errorf("entry: %+v; want decrypt only (%s)", es, tc.reason)
			}
			var problems, notes []string
			for _, fd := range s.Check(time.Now(), DefaultExpiryWarning, []string{tc.addr}) {
				if fd.Problem {
					problems = append(problems, fd.String())
				} else {
					notes = append(notes, fd.String())
				}
			}
			if len(problems) != 1 || !strings.Contains(problems[0], "(gateway "+tc.addr+"): no usable OpenPGP secret key") ||
				len(notes) != 1 || !strings.Contains(notes[0], "decrypt only: "+tc.reason) {
				t.Errorf("check: problems %q, notes %q", problems, notes)
			}
		})
	}
}

func TestNewestValidAndPins(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	old, oldFpr := genPGP(t, "x@example.org", time.Now().Add(-48*time.Hour), false)
	newer, newFpr := genPGP(t, "x@example.org", time.Now().Add(-time.Hour), false)
	future, _ := genPGP(t, "x@example.org", time.Now().Add(24*time.Hour), false)
	if _, err := ImportAll(o, []Input{{"old", []byte(old)}, {"new", []byte(newer)}}, false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A key created in the future is not valid yet: put it by hand.
	os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "future.asc"), []byte(future), 0o644)
	get := func(o Options) string {
		k, err := mustLoad(t, o).EncryptionKey("x@example.org", time.Now())
		if err != nil {
			return err.Error()
		}
		return strings.ToUpper(k.GetFingerprint())
	}
	if got := get(o); got != newFpr {
		t.Errorf("unpinned: got %s, want newest %s", got, newFpr)
	}
	o.Pins = map[string]string{"x@EXAMPLE.org": strings.ToLower(oldFpr)}
	if got := get(o); got != oldFpr {
		t.Errorf("pinned: got %s, want %s", got, oldFpr)
	}
	o.Pins = map[string]string{"x@example.org": "0000000000000000000000000000000000000000"}
	if got := get(o); !strings.Contains(got, "no usable key") {
		t.Errorf("pinned to a missing key: got %s, want ErrNoKey", got)
	}
}

func TestSecretKeys(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.secPlain)
	ensureDirs(o)

	// Protected key: no passphrase, wrong passphrase → error, nothing written.
	before := treeHash(t, o.Dir)
	for _, pass := range [][]byte{nil, []byte("wrong")} {
		_, err := Import(o, readFile(t, f.secProt), f.secProt, false, pass, time.Now())
		if err == nil || !strings.Contains(err.Error(), f.secProt) || !strings.Contains(err.Error(), "passphrase") {
			t.Errorf("import protected with %q: %v, want passphrase error naming the file", pass, err)
		}
	}
	if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
		t.Fatalf("keystore changed (-before +after):\n%s", d)
	}
	res, err := Import(o, readFile(t, f.secProt), f.secProt, false, []byte("correct horse"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := mustLoad(t, o)
	if p := s.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	for _, a := range []string{"gw@example.org", "prot@example.org"} {
		k, err := s.GatewayOpenPGPAt(a, time.Now())
		if err != nil {
			t.Fatalf("GatewayOpenPGP(%s): %v", a, err)
		}
		signer, _ := crypto.PGP().Sign().SigningKey(k).Detached().New()
		if _, err := signer.Sign([]byte("x"), crypto.Armor); err != nil {
			t.Errorf("signing with %s: %v", a, err)
		}
	}
	if got := s.GatewayAddresses(); !cmp.Equal(got, []string{"gw@example.org", "prot@example.org"}) {
		t.Errorf("GatewayAddresses = %v", got)
	}
	// The passphrase can come from a systemd credential instead.
	passRel := strings.TrimSuffix(res[0].File, ".asc") + passSuffix
	if fi, err := os.Stat(filepath.Join(o.Dir, passRel)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("passphrase file %s: %v %v", passRel, fi, err)
	}
	os.Remove(filepath.Join(o.Dir, passRel))
	if _, err := mustLoad(t, o).GatewayOpenPGPAt("prot@example.org", time.Now()); err == nil {
		t.Fatal("protected key usable without any passphrase")
	}
	creds := t.TempDir()
	os.WriteFile(filepath.Join(creds, CredentialPassphrase), []byte("correct horse"), 0o600)
	o.CredentialsDir = creds
	if _, err := mustLoad(t, o).GatewayOpenPGPAt("prot@example.org", time.Now()); err != nil {
		t.Errorf("with credential: %v", err)
	}
}

func TestPermissions(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	res := mustImport(t, o, false, nil, f.secPlain, f.bundle)
	faultOf := func(s *Snapshot, rel string) *PermissionError {
		for _, fl := range s.Faults() {
			var pe *PermissionError
			if fl.Path == rel && errors.As(fl.Err, &pe) {
				return pe
			}
		}
		return nil
	}
	for _, r := range res {
		p := filepath.Join(o.Dir, r.File)
		os.Chmod(p, 0o644)
		s := mustLoad(t, o)
		pe := faultOf(s, r.File)
		if pe == nil || pe.Path != p || pe.Mode != 0o644 || pe.Want != 0o600 || pe.WantOwner != -1 || pe.Dir {
			t.Errorf("%s at 0644: faults %v, want a PermissionError (mode 0644, want 0600) for %s", r.File, s.Faults(), p)
		}
		if len(s.GatewayAddresses()) != 1 {
			t.Errorf("with %s refused, gateway addresses = %v, want the other identity only", r.File, s.GatewayAddresses())
		}
		// The refused identity makes its area unavailable: no key is "no key configured".
		area := AreaGatewayOpenPGP
		if r.Protocol == "smime" {
			area = AreaGatewaySMIME
		}
		if err := s.Unavailable(area); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s refused: Unavailable(%v) = %v", r.File, area, err)
		}
		// 0640 is accepted only for the service group.
		os.Chmod(p, 0o640)
		if s := mustLoad(t, o); faultOf(s, r.File) == nil {
			t.Errorf("0640 without service group: faults %v, want one for %s", s.Faults(), r.File)
		}
		o2 := o
		o2.ServiceGroup = "root" // the tests run as root; files are group root
		if os.Geteuid() == 0 {
			if s := mustLoad(t, o2); len(s.Faults()) != 0 || len(s.Problems()) != 0 {
				t.Errorf("0640 with service group: %v %v", s.Faults(), s.Problems())
			}
		}
		os.Chmod(p, 0o600)
	}
	os.Chmod(filepath.Join(o.Dir, DirPrivate), 0o755)
	s := mustLoad(t, o)
	pe := faultOf(s, DirPrivate)
	if len(s.GatewayAddresses()) != 0 || pe == nil || !pe.Dir || pe.Want != 0o700 {
		t.Errorf("private/ at 0755: gateway %v, faults %v", s.GatewayAddresses(), s.Faults())
	}
	for _, a := range []Area{AreaGatewayOpenPGP, AreaGatewaySMIME} {
		if err := s.Unavailable(a); !errors.Is(err, ErrUnavailable) {
			t.Errorf("private/ at 0755: Unavailable(%v) = %v", a, err)
		}
	}
	if _, err := s.GatewayOpenPGPAt("gw@example.org", time.Now()); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNoKey) {
		t.Errorf("private/ at 0755: GatewayOpenPGPAt = %v, want ErrUnavailable (and not ErrNoKey)", err)
	}
}

func TestX509Imports(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.sanCert, f.subjCert, f.bundle)
	mustImport(t, o, false, readFile(t, f.p12Pass)[:4], f.p12)
	s := mustLoad(t, o)
	if p := s.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	want := map[string]string{
		"dave@example.org": "smime/certificate", "erin@example.org": "smime/certificate",
		"frank@example.org": "smime/identity", "grace@example.org": "smime/identity",
	}
	if d := cmp.Diff(want, addrsOf(s.Entries(time.Now()))); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	for _, a := range []string{"dave@example.org", "erin@example.org"} {
		if _, err := s.Certificate(a, time.Now()); err != nil {
			t.Errorf("Certificate(%s): %v", a, err)
		}
		if _, err := s.Certificate(a, time.Now().Add(2*365*24*time.Hour)); !errors.Is(err, ErrNoKey) {
			t.Errorf("Certificate(%s) in two years = %v, want ErrNoKey", a, err)
		}
	}
	// The subject's emailAddress is shown by name, not as an OID.
	for _, e := range s.Entries(time.Now()) {
		if e.Addresses[0] == "erin@example.org" && e.Subject != "emailAddress=erin@example.org,CN=Erin" {
			t.Errorf("erin's subject shown as %q", e.Subject)
		}
	}
	for _, a := range []string{"frank@example.org", "grace@example.org"} {
		id, err := s.GatewaySMIME(a)
		if err != nil || !keyMatchesCert(id.Key, id.Cert) {
			t.Errorf("GatewaySMIME(%s) = %v, %v", a, id, err)
		}
	}
}

func TestNSSCorpus(t *testing.T) {
	dir := corpusDir(t)
	o := newStore(t)
	mustImport(t, o, false, []byte("nss"), filepath.Join(dir, "smime", "Alice.p12"), filepath.Join(dir, "smime", "Bob.p12"))
	mustImport(t, o, true, nil, filepath.Join(dir, "smime", "TestCA.pem"))
	mustImport(t, o, false, nil, filepath.Join(dir, "openpgp", "keys", "alice@openpgp.example-0xf231550c4f47e38e-pub.asc"),
		filepath.Join(dir, "openpgp", "keys", "bob@openpgp.example-0xfbfcc82a015e7330-secret.asc"))
	s := mustLoad(t, o)
	if p := s.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	got := addrsOf(s.Entries(time.Now()))
	want := map[string]string{"Alice@example.com": "smime/identity", "Bob@example.com": "smime/identity",
		"(CE2F0804)": "smime/ca", "alice@openpgp.example": "openpgp/public", "bob@openpgp.example": "openpgp/secret"}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("addresses (-want +got):\n%s", d)
	}
	id, err := s.GatewaySMIME("Bob@EXAMPLE.COM")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := id.Cert.Verify(x509.VerifyOptions{Roots: s.TrustAnchors(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("Bob's certificate does not chain to the imported TestCA: %v", err)
	}
	if kr := s.GatewayDecryptionKeyRing(); kr.CountEntities() != 1 {
		t.Errorf("gateway decryption keys: %d, want 1 (bob)", kr.CountEntities())
	}
	if ks := s.OpenPGPByKeyID(0xf231550c4f47e38e); len(ks) != 1 {
		t.Errorf("OpenPGPByKeyID(alice) = %d keys", len(ks))
	}
	if err := s.pgpByFpr["EB85BB5FA33A75E15E944E63F231550C4F47E38E"].signingUsable(time.Now()); err != nil {
		t.Errorf("alice's key not usable for verification: %v", err)
	}
}

func TestBadInputs(t *testing.T) {
	f := getFixtures(t)
	arm := readFile(t, f.pubArmored)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	oneKey, _ := genPGP(t, "dup@example.org", time.Now().Add(-time.Hour), false)
	for _, tc := range []struct {
		name, file string
		pass       []byte
		ca         bool
		want       string // in the error; "" = no error
		reason     string // in a result's reason
	}{
		{name: "garbage", file: write("garbage.bin", []byte("this is not a key\x00\x01")), want: "not an OpenPGP key, PEM"},
		{name: "truncated armor", file: write("trunc.asc", arm[:len(arm)/2]), want: "truncated"},
		{name: "bad armor checksum", file: write("crc.asc", bytes.Replace(arm, []byte("\n="), []byte("\n=AAAA"), 1)), want: "armor block 1"},
		{name: "truncated binary", file: write("trunc.gpg", readFile(t, f.pubBinary)[:300]), want: "truncated"},
		{name: "truncated PEM", file: write("trunc.pem", readFile(t, f.sanCert)[:200]), want: "PEM"},
		{name: "cert without e-mail", file: f.noMailCert, want: "no e-mail address"},
		{name: "signature not key", file: write("sig.asc", []byte("-----BEGIN PGP SIGNATURE-----\n\nabcd\n-----END PGP SIGNATURE-----\n")), want: "PGP SIGNATURE, not a key"},
		{name: "wrong PKCS#12 passphrase", file: f.p12, pass: []byte("nope"), want: "wrong passphrase"},
		{name: "PKCS#12 without passphrase", file: f.p12, want: "protected by a passphrase, and none was given"},
		{name: "duplicate in one file", file: write("dup2.asc", []byte(oneKey+oneKey)), reason: "duplicate: same key earlier in"},
		{name: "empty", file: write("empty", nil), want: "empty"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := newStore(t)
			mustImport(t, o, false, nil, f.sanCert)
			before := treeHash(t, o.Dir)
			res, err := Import(o, readFile(t, tc.file), tc.file, tc.ca, tc.pass, time.Now())
			if tc.want != "" {
				if err == nil || !strings.Contains(err.Error(), tc.file) || !strings.Contains(err.Error(), tc.want) {
					t.Fatalf("error %v; want one naming %s and %q", err, tc.file, tc.want)
				}
				if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
					t.Fatalf("keystore changed (-before +after):\n%s", d)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, r := range res {
				if strings.Contains(r.Reason, tc.reason) {
					found = true
				}
			}
			if !found {
				t.Errorf("results %+v; want a reason %q", res, tc.reason)
			}
		})
	}
	// A missing passphrase can be told apart, for the CLI's hint.
	if _, err := Import(newStore(t), readFile(t, f.p12), "p12", false, nil, time.Now()); !errors.Is(err, ErrNeedPassphrase) {
		t.Errorf("PKCS#12 without passphrase: %v, want ErrNeedPassphrase", err)
	}
	if _, err := Import(newStore(t), readFile(t, f.p12), "p12", false, []byte("nope"), time.Now()); !errors.Is(err, ErrWrongPassphrase) {
		t.Errorf("PKCS#12 with a wrong passphrase: %v, want ErrWrongPassphrase", err)
	}
	if res, err := Import(newStore(t), readFile(t, f.secProt), "prot", false, nil, time.Now()); err == nil || len(res) != 1 || res[0].Err != ErrNeedPassphrase {
		t.Errorf("protected secret key without passphrase: %+v %v, want a result with ErrNeedPassphrase", res, err)
	}
	// Importing what is already there changes nothing and says where it is.
	o := newStore(t)
	mustImport(t, o, false, nil, f.pubArmored)
	before := treeHash(t, o.Dir)
	res := mustImport(t, o, false, nil, f.pubBinary)
	for _, r := range res {
		if r.Action != "unchanged" || !strings.HasPrefix(r.Reason, "already in openpgp/") {
			t.Errorf("re-import: %+v", r)
		}
	}
	if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
		t.Fatalf("keystore changed (-before +after):\n%s", d)
	}
	// One bad file among good ones: nothing at all is written.
	_, err := ImportAll(o, []Input{{"good", []byte(oneKey)}, {"bad.asc", arm[:100]}}, false, nil, time.Now())
	if err == nil || !strings.Contains(err.Error(), "bad.asc") {
		t.Fatalf("mixed import: %v", err)
	}
	if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
		t.Fatalf("keystore changed (-before +after):\n%s", d)
	}
}

func TestBrokenFileSkipped(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.pubArmored, f.sanCert)
	os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "broken.asc"), []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nxx"), 0o644)
	os.WriteFile(filepath.Join(o.Dir, DirCerts, "broken.pem"), []byte("junk"), 0o644)
	os.WriteFile(filepath.Join(o.Dir, "stray.txt"), []byte("x"), 0o644)
	s := mustLoad(t, o)
	var files []string
	for _, p := range s.Problems() {
		files = append(files, p.File)
	}
	if d := cmp.Diff([]string{"certs/broken.pem", "openpgp/broken.asc"}, files); d != "" {
		t.Errorf("problem files (-want +got):\n%s", d)
	}
	if len(s.Entries(time.Now())) != 4 {
		t.Errorf("entries: %d, want 4", len(s.Entries(time.Now())))
	}
	if !strings.Contains(fmt.Sprint(s.Check(time.Now(), DefaultExpiryWarning, nil)), "stray.txt: orphaned") {
		t.Errorf("check does not report the orphan: %v", s.Check(time.Now(), DefaultExpiryWarning, nil))
	}
}

// TestDiscoveredIgnored: key discovery's cache (KEYSTORE/discovered/) is
// neither loaded as the admin's keys nor reported as orphaned.
func TestDiscoveredIgnored(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	k, _ := genPGP(t, "found@example.net", time.Now().Add(-time.Hour), false)
	os.MkdirAll(filepath.Join(o.Dir, DirDiscovered, "openpgp"), 0o700)
	os.WriteFile(filepath.Join(o.Dir, DirDiscovered, "openpgp", "found.asc"), []byte(k), 0o644)
	os.WriteFile(filepath.Join(o.Dir, DirDiscovered, "index.json"), []byte("{}"), 0o644)
	s := mustLoad(t, o)
	if _, err := s.EncryptionKey("found@example.net", time.Now()); !errors.Is(err, ErrNoKey) {
		t.Errorf("a discovered key is used as the admin's: %v", err)
	}
	if c := s.Check(time.Now(), DefaultExpiryWarning, nil); len(c) != 0 || len(s.Entries(time.Now())) != 0 {
		t.Errorf("check %v, entries %v; want nothing", c, s.Entries(time.Now()))
	}
}

func TestRemoveExport(t *testing.T) {
	f := getFixtures(t)
	o := newStore(t)
	mustImport(t, o, false, nil, f.pubArmored, f.sanCert, f.secPlain)
	s := mustLoad(t, o)
	b, err := s.Export("alice@example.org", false)
	if err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN PGP PUBLIC KEY BLOCK-----")) {
		t.Fatalf("export alice: %v %q", err, b)
	}
	home, _ := os.MkdirTemp("", "gpg")
	defer os.RemoveAll(home)
	defer exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
	cmd := exec.Command("gpg", "--homedir", home, "--batch", "--import")
	cmd.Stdin = bytes.NewReader(b)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "imported: 1") {
		t.Errorf("gpg --import of the export: %v\n%s", err, out)
	}
	if b, err := s.ExportProtocol("alice@example.org", false, ProtocolSMIME); !errors.Is(err, ErrNotFound) {
		t.Errorf("export smime of an OpenPGP-only address: %q, %v; want ErrNotFound", b, err)
	}
	if b, err := s.ExportProtocol("dave@example.org", false, ProtocolSMIME); err != nil || !bytes.HasPrefix(b, []byte("-----BEGIN CERTIFICATE-----")) {
		t.Errorf("export smime dave: %v %q", err, b)
	}
	if b, err := s.ExportProtocol("dave@example.org", false, ProtocolOpenPGP); !errors.Is(err, ErrNotFound) {
		t.Errorf("export openpgp of an S/MIME-only address: %q, %v; want ErrNotFound", b, err)
	}
	if b, err := s.Export("gw@example.org", true); err != nil || !bytes.Contains(b, []byte("PRIVATE KEY BLOCK")) {
		t.Errorf("export --secret gw: %v", err)
	}
	if _, err := s.Export("dave@example.org", true); !errors.Is(err, ErrNotFound) {
		t.Errorf("export --secret of a correspondent = %v, want ErrNotFound", err)
	}
	var se *SecretError
	if _, err := Remove(o, f.fprs["gw@example.org"], false); !errors.As(err, &se) || se.Fingerprint != f.fprs["gw@example.org"] {
		t.Errorf("remove gateway key without secret = %v, want a *SecretError", err)
	}
	for _, fpr := range []string{f.fprs["alice@example.org"], f.fprs["gw@example.org"]} {
		if _, err := Remove(o, fpr, true); err != nil {
			t.Fatal(err)
		}
	}
	s = mustLoad(t, o)
	if hasPGP(s, "alice@example.org") || len(s.GatewayAddresses()) != 0 || !hasPGP(s, "bob@example.org") {
		t.Errorf("after remove: alice %v gw %v bob %v", hasPGP(s, "alice@example.org"), s.GatewayAddresses(), hasPGP(s, "bob@example.org"))
	}
	if _, err := Remove(o, f.fprs["alice@example.org"], false); !errors.Is(err, ErrNotFound) {
		t.Errorf("second remove = %v, want ErrNotFound", err)
	}
}

func TestConcurrentImports(t *testing.T) {
	o := newStore(t)
	const per = 8
	var keys [2][]string
	for g := range keys {
		for i := range per {
			a, _ := genPGP(t, fmt.Sprintf("u%d-%d@example.org", g, i), time.Now().Add(-time.Hour), false)
			keys[g] = append(keys[g], a)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, 2*per)
	for g := range keys {
		wg.Go(func() {
			for _, k := range keys[g] {
				if _, err := Import(o, []byte(k), "k", false, nil, time.Now()); err != nil {
					errs <- err
				}
			}
		})
	}
	// Loads running meanwhile never see a broken file.
	stop := make(chan struct{})
	var loads atomic.Int32
	var lwg sync.WaitGroup
	lwg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if s, err := Load(o); err == nil {
				if p := s.Problems(); len(p) != 0 {
					errs <- fmt.Errorf("load during import: %v", p)
				}
				loads.Add(1)
			}
		}
	})
	wg.Wait()
	close(stop)
	lwg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	s := mustLoad(t, o)
	if n := len(s.Entries(time.Now())); n != 2*per {
		t.Errorf("%d keys after concurrent imports, want %d", n, 2*per)
	}
	if tmp, _ := filepath.Glob(filepath.Join(o.Dir, DirOpenPGP, ".tmp-*")); len(tmp) != 0 {
		t.Errorf("temporary files left: %v", tmp)
	}
	t.Logf("%d loads ran during the imports", loads.Load())
}

func TestHolderReloadDuringLookups(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	alice, _ := genPGP(t, "alice@example.org", time.Now().Add(-time.Hour), false)
	os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "alice.asc"), []byte(alice), 0o644)
	h, err := NewHolder(o)
	if err != nil {
		t.Fatal(err)
	}
	var extra []string
	for i := range 10 {
		a, _ := genPGP(t, fmt.Sprintf("n%d@example.org", i), time.Now().Add(-time.Hour), false)
		extra = append(extra, a)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var lookups atomic.Int64
	var failures atomic.Int64
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				s := h.Current()
				if _, err := s.EncryptionKey("alice@example.org", time.Now()); err != nil {
					failures.Add(1)
				}
				s.OpenPGPByKeyID(0)
				lookups.Add(1)
			}
		})
	}
	for i, a := range extra {
		os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, fmt.Sprintf("n%d.asc", i)), []byte(a), 0o644)
		if i == 5 {
			os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "broken.asc"), []byte(a[:len(a)/2]), 0o644)
		}
		if err := h.Reload(); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if failures.Load() != 0 {
		t.Errorf("%d of %d lookups failed during reloads", failures.Load(), lookups.Load())
	}
	s := h.Current()
	if !hasPGP(s, "n9@example.org") || len(s.Problems()) != 1 || s.Problems()[0].File != "openpgp/broken.asc" {
		t.Errorf("after reloads: n9 %v, problems %v", hasPGP(s, "n9@example.org"), s.Problems())
	}
	// The directory going away keeps the old snapshot.
	os.Rename(o.Dir, o.Dir+".gone")
	defer os.Rename(o.Dir+".gone", o.Dir)
	if err := h.Reload(); err == nil || h.Current() != s {
		t.Errorf("reload of a missing dir: %v; snapshot replaced: %v", err, h.Current() != s)
	}
}

func TestWatch(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	h, err := NewHolder(o)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Watch(ctx) }()
	defer func() { cancel(); <-done }()
	time.Sleep(100 * time.Millisecond)
	k, _ := genPGP(t, "w@example.org", time.Now().Add(-time.Hour), false)
	if _, err := Import(o, []byte(k), "w", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !hasPGP(h.Current(), "w@example.org") {
		if time.Now().After(deadline) {
			t.Fatal("watch did not reload within 5 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestInitInterop(t *testing.T) {
	getFixtures(t) // gpg and openssl present
	o := newStore(t)
	created, err := Init(o, []string{"rt@example.org"}, true, time.Now())
	if err != nil || len(created) != 3 {
		t.Fatalf("Init = %v, %v", created, err)
	}
	if ok, err := IsInitialized(o); !ok || err != nil {
		t.Fatalf("IsInitialized = %v, %v after Init", ok, err)
	}
	again, err := Init(o, []string{"rt@example.org"}, true, time.Now())
	if err != nil || len(again) != 0 {
		t.Errorf("second Init = %v, %v; want nothing created", again, err)
	}
	s := mustLoad(t, o)
	if p := s.Problems(); len(p) != 0 {
		t.Fatalf("problems: %v", p)
	}
	pub, err := s.Export("rt@example.org", false)
	if err != nil {
		t.Fatal(err)
	}
	// gpg imports the public key and encrypts to it; the gateway decrypts.
	home, _ := os.MkdirTemp("", "gpg")
	defer os.RemoveAll(home)
	defer exec.Command("gpgconf", "--homedir", home, "--kill", "all").Run()
	gpg := func(stdin []byte, args ...string) []byte {
		cmd := exec.Command("gpg", append([]string{"--homedir", home, "--batch", "--trust-model", "always"}, args...)...)
		cmd.Stdin = bytes.NewReader(stdin)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("gpg %v: %v", args, err)
		}
		return out
	}
	gpg(pub, "--import")
	ct := gpg([]byte("to the gateway"), "--encrypt", "--armor", "-r", "rt@example.org")
	dec, _ := crypto.PGP().Decryption().DecryptionKeys(s.GatewayDecryptionKeyRing()).New()
	res, err := dec.Decrypt(ct, crypto.Armor)
	if err != nil || string(res.Bytes()) != "to the gateway" {
		t.Fatalf("gateway decrypt of gpg's message: %q, %v", res.Bytes(), err)
	}
	sec, err := s.Export("rt@example.org", true)
	if err != nil {
		t.Fatal(err)
	}
	gpg(sec, "--import")
	// openssl parses the certificate and the CSR.
	id, err := s.GatewaySMIME("rt@example.org")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("openssl", "x509", "-in", filepath.Join(o.Dir, id.File), "-noout", "-ext", "subjectAltName,extendedKeyUsage").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "rt@example.org") || !strings.Contains(string(out), "E-mail Protection") {
		t.Errorf("openssl x509: %v\n%s", err, out)
	}
	out, err = exec.Command("openssl", "req", "-in", filepath.Join(o.Dir, DirPrivate, PrivSMIME, "rt@example.org.csr"), "-noout", "-verify").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "verify OK") {
		t.Errorf("openssl req -verify: %v\n%s", err, out)
	}
	if _, err := s.Certificate("rt@example.org", time.Now()); !errors.Is(err, ErrNoKey) {
		t.Errorf("the gateway's own certificate is not a correspondent's: %v", err)
	}
}

func TestHolderSetOptions(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	a, _ := genPGP(t, "Mixed.Case@example.org", time.Now().Add(-time.Hour), false)
	os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, "a.asc"), []byte(a), 0o644)
	h, err := NewHolder(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.Current().EncryptionKey("mixed.case@example.org", time.Now()); !errors.Is(err, ErrNoKey) {
		t.Fatalf("exact local part: %v, want ErrNoKey", err)
	}
	o.FoldLocalPart = true
	if err := h.SetOptions(o); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Current().EncryptionKey("mixed.case@example.org", time.Now()); err != nil {
		t.Errorf("after SetOptions(fold): %v", err)
	}
}

func TestCRLRevokesCertificate(t *testing.T) {
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "Test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour * 24), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign}
	caDER, _ := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(42), Subject: pkix.Name{CommonName: "R"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour), EmailAddresses: []string{"r@example.org"},
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature}, ca, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	crl, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{Number: big.NewInt(1), ThisUpdate: time.Now().Add(-time.Minute),
		NextUpdate: time.Now().Add(time.Hour), RevokedCertificateEntries: []x509.RevocationListEntry{{SerialNumber: big.NewInt(42), RevocationTime: time.Now().Add(-time.Minute)}}}, ca, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	o := newStore(t)
	if _, err := ImportAll(o, []Input{{"leaf.pem", pemOf("CERTIFICATE", leafDER)}}, false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := mustLoad(t, o).Certificate("r@example.org", time.Now()); err != nil {
		t.Fatalf("before the CRL: %v", err)
	}
	// A CRL whose issuer is not a trust anchor is refused.
	if _, err := Import(o, pemOf("X509 CRL", crl), "crl.pem", false, nil, time.Now()); err == nil || !strings.Contains(err.Error(), "not signed by a trust anchor") {
		t.Errorf("CRL without its CA: %v", err)
	}
	if _, err := Import(o, pemOf("CERTIFICATE", caDER), "ca.pem", true, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	if _, err := Import(o, pemOf("X509 CRL", crl), "crl.pem", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := mustLoad(t, o)
	if _, err := s.Certificate("r@example.org", time.Now()); !errors.Is(err, ErrNoKey) || !strings.Contains(err.Error(), "revoked") {
		t.Errorf("after the CRL: %v, want ErrNoKey (revoked)", err)
	}
	if len(s.CRLs()) != 1 {
		t.Errorf("CRLs: %d", len(s.CRLs()))
	}
	// Imported after its CRL, a revoked certificate is kept (README: its
	// signatures read revoked rather than untrusted) and never encrypted to.
	o2 := newStore(t)
	for _, in := range []struct {
		name string
		data []byte
		ca   bool
	}{{"ca.pem", pemOf("CERTIFICATE", caDER), true}, {"crl.pem", pemOf("X509 CRL", crl), false}} {
		if _, err := Import(o2, in.data, in.name, in.ca, nil, time.Now()); err != nil {
			t.Fatal(err)
		}
	}
	res, err := Import(o2, pemOf("CERTIFICATE", leafDER), "leaf.pem", false, nil, time.Now())
	if err != nil || len(res) != 1 || res[0].Action != "imported" || !strings.Contains(res[0].Reason, "revoked") {
		t.Fatalf("revoked certificate after its CRL: %+v, %v", res, err)
	}
	if _, err := mustLoad(t, o2).Certificate("r@example.org", time.Now()); !errors.Is(err, ErrNoKey) {
		t.Errorf("a revoked certificate is an encryption key: %v", err)
	}
}

func TestEncryptedPEMBundles(t *testing.T) {
	f := getFixtures(t)
	for _, file := range f.encBundles {
		t.Run(filepath.Base(file), func(t *testing.T) {
			if !bytes.Contains(readFile(t, file), []byte("ENCRYPTED")) {
				t.Fatalf("%s: key not encrypted", file)
			}
			o := newStore(t)
			ensureDirs(o)
			before := treeHash(t, o.Dir)
			for _, pass := range [][]byte{nil, []byte("wrong")} {
				_, err := Import(o, readFile(t, file), file, false, pass, time.Now())
				if err == nil || !strings.Contains(err.Error(), file) || !strings.Contains(err.Error(), "passphrase") {
					t.Errorf("passphrase %q: %v", pass, err)
				}
			}
			if d := cmp.Diff(before, treeHash(t, o.Dir)); d != "" {
				t.Fatalf("keystore changed (-before +after):\n%s", d)
			}
			res, err := Import(o, readFile(t, file), file, false, []byte("rtpass"), time.Now())
			if err != nil || len(res) != 1 || res[0].Kind != "identity" {
				t.Fatalf("import: %+v %v", res, err)
			}
			s := mustLoad(t, o)
			if len(s.GatewayAddresses()) != 1 {
				t.Errorf("gateway addresses %v, problems %v", s.GatewayAddresses(), s.Problems())
			}
			// The same file placed by hand is unlocked with its .passphrase.
			o2 := newStore(t)
			ensureDirs(o2)
			os.WriteFile(filepath.Join(o2.Dir, DirPrivate, PrivSMIME, "x.pem"), readFile(t, file), 0o600)
			if p := mustLoad(t, o2).Problems(); len(p) != 1 || !strings.Contains(p[0].Err.Error(), "x.passphrase") {
				t.Errorf("without passphrase: %v", p)
			}
			os.WriteFile(filepath.Join(o2.Dir, DirPrivate, PrivSMIME, "x.passphrase"), []byte("rtpass\n"), 0o600)
			if s := mustLoad(t, o2); len(s.GatewayAddresses()) != 1 {
				t.Errorf("with x.passphrase: %v", s.Problems())
			}
		})
	}
}

func TestCheckExpiringSoon(t *testing.T) {
	k, err := crypto.PGPWithProfile(profile.Default()).KeyGeneration().AddUserId("", "soon@example.org").
		GenerationTime(time.Now().Add(-time.Hour).Unix()).Lifetime(10 * 24 * 3600).New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	pub, _ := k.GetArmoredPublicKey()
	o := newStore(t)
	if _, err := Import(o, []byte(pub), "soon.asc", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	s := mustLoad(t, o)
	got := s.Check(time.Now(), DefaultExpiryWarning, nil)
	if len(got) != 1 || !got[0].Problem || !strings.Contains(got[0].Message, "soon@example.org: expires") || !strings.Contains(got[0].Message, "(in 9 days)") {
		t.Errorf("check: %v", got)
	}
	if got := s.Check(time.Now(), 5*24*time.Hour, nil); len(got) != 0 {
		t.Errorf("check warning 5 days ahead: %v, want nothing", got)
	}
	if _, err := s.EncryptionKey("soon@example.org", time.Now().Add(11*24*time.Hour)); !errors.Is(err, ErrNoKey) {
		t.Errorf("EncryptionKey after expiry = %v", err)
	}
	if _, err := s.EncryptionKey("soon@example.org", time.Now()); err != nil {
		t.Errorf("EncryptionKey before expiry = %v", err)
	}
}

// TestConcurrentFirstUse: many goroutines use a freshly loaded (lazily
// parsed) key at once, for lookups, encryption and verification; -race
// proves that go-crypto's lazy signature cache is filled only once.
func TestConcurrentFirstUse(t *testing.T) {
	o := newStore(t)
	ensureDirs(o)
	pubs := map[string]string{}
	for i := range 3 {
		a, fpr := genPGP(t, fmt.Sprintf("c%d@example.org", i), time.Now().Add(-time.Hour), false)
		pubs[fpr] = a
		os.WriteFile(filepath.Join(o.Dir, DirOpenPGP, fpr+".asc"), []byte(a), 0o644)
	}
	s := mustLoad(t, o)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			addr := fmt.Sprintf("c%d@example.org", g%3)
			k, err := s.EncryptionKey(addr, time.Now())
			if err != nil {
				t.Error(err)
				return
			}
			kr, _ := crypto.NewKeyRing(k)
			enc, _ := crypto.PGP().Encryption().Recipients(kr).New()
			if _, err := enc.Encrypt([]byte("x")); err != nil {
				t.Error(err)
			}
			for fpr := range pubs {
				if err := s.pgpByFpr[fpr].signingUsable(time.Now()); err != nil {
					t.Error(err)
				}
				for _, id := range s.pgpByFpr[fpr].keyIDs {
					if len(s.OpenPGPByKeyID(id)) != 1 {
						t.Errorf("OpenPGPByKeyID(%x) does not find key %s", id, fpr)
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestSubjectString: subjects read as OpenSSL prints them (RFC 4514
// order, names for emailAddress and the usual attributes), values escaped.
func TestSubjectString(t *testing.T) {
	for _, tc := range []struct {
		name pkix.Name
		want string
	}{
		{pkix.Name{CommonName: "Erin", ExtraNames: []pkix.AttributeTypeAndValue{{Type: oidEmailAddress, Value: "erin@example.org"}}},
			"emailAddress=erin@example.org,CN=Erin"},
		{pkix.Name{CommonName: "Doe, John+Jr", Organization: []string{"#Acme "}, Country: []string{"DE"}},
			"CN=Doe\\, John\\+Jr,O=\\#Acme\\ ,C=DE"},
	} {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: tc.name,
			NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour)}, &x509.Certificate{SerialNumber: big.NewInt(1), Subject: tc.name}, &key.PublicKey, key)
		if err != nil {
			t.Fatal(err)
		}
		c, _ := x509.ParseCertificate(der)
		if got := subjectString(c); got != tc.want {
			t.Errorf("subjectString = %q, want %q (Go: %q)", got, tc.want, c.Subject.String())
		}
	}
}
