package metrics

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/gopenpgp/v3/armor"
	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// engineEnv is a real engine with a keystore holding the gateway identity
// gw@example.org, carol's OpenPGP key and dave's S/MIME certificate.
type engineEnv struct {
	dir   string
	pol   crypto.Policy
	sp    *spool.Dir
	gw    *pgpcrypto.Key // the gateway's public key
	carol *pgpcrypto.Key // carol's secret key
}

func newEngineEnv(t *testing.T) *engineEnv {
	t.Helper()
	e := &engineEnv{dir: t.TempDir()}
	opts := keystore.Options{Dir: e.dir}
	if _, err := keystore.Init(opts, []string{"gw@example.org"}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	carol, err := pgpcrypto.PGP().KeyGeneration().AddUserId("Carol", "carol@example.net").New().GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	e.carol = carol
	pub, err := carol.GetArmoredPublicKey()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Import(opts, []byte(pub), "carol.asc", false, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := keystore.Import(opts, selfSignedCert(t, "dave@example.com"), "dave.pem", false, nil, time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	gw, err := e.snapshot(t).GatewayOpenPGPAt("gw@example.org", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if e.gw, err = gw.ToPublic(); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.Keystore = e.dir
	cfg.Hostname = "mx.example.org"
	cfg.Identity.Addresses = []string{"gw@example.org"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	e.pol = cfg.EnginePolicy()
	if e.sp, err = spool.Open(t.TempDir(), 1<<20); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *engineEnv) snapshot(t *testing.T) *keystore.Snapshot {
	t.Helper()
	s, err := keystore.Load(keystore.Options{Dir: e.dir})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// process runs the engine on raw; it returns the plan or the error.
func (e *engineEnv) process(t *testing.T, pol crypto.Policy, snap *keystore.Snapshot, dir crypto.Direction, from string, rcpts []string, raw []byte) (*crypto.Plan, error) {
	t.Helper()
	in := crypto.NewIntake(pol.Limits, e.sp)
	t.Cleanup(in.Close)
	if err := in.ReadMessage(bytes.NewReader(raw)); err != nil {
		t.Fatal(err)
	}
	msg, refused, err := in.Message()
	if err != nil || !refused.IsZero() {
		t.Fatalf("intake: %v %v", refused, err)
	}
	// Now is the time of processing: keys and signatures made just
	// before are valid (a slow machine takes seconds to make them).
	p, err := crypto.New(pol, e.sp).Process(context.Background(), &crypto.Input{Direction: dir,
		Envelope: crypto.Envelope{From: from, Rcpts: rcpts}, Message: msg, Keys: snap, Now: time.Now()})
	if p != nil {
		t.Cleanup(p.Close)
	}
	return p, err
}

// pgpMIME encrypts an inner entity to the recipients (signed by signer
// when not nil) as a PGP/MIME message from carol to the gateway; corrupt
// flips a byte of the ciphertext near its end (the integrity check).
func pgpMIME(t *testing.T, signer *pgpcrypto.Key, corrupt bool, to ...*pgpcrypto.Key) []byte {
	t.Helper()
	kr, err := pgpcrypto.NewKeyRing(nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range to {
		if err := kr.AddKey(k); err != nil {
			t.Fatal(err)
		}
	}
	b := pgpcrypto.PGP().Encryption().Recipients(kr)
	if signer != nil {
		b = b.SigningKey(signer)
	}
	enc, err := b.New()
	if err != nil {
		t.Fatal(err)
	}
	inner := "Content-Type: text/plain; charset=us-ascii\r\n\r\nTicket 42.\r\n"
	msg, err := enc.Encrypt([]byte(inner))
	if err != nil {
		t.Fatal(err)
	}
	data := msg.Bytes()
	if corrupt {
		data = bytes.Clone(data)
		data[len(data)-8] ^= 0x55
	}
	armored, err := armor.ArmorPGPMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	return []byte("From: Carol <carol@example.net>\r\nTo: gw@example.org\r\nSubject: encrypted\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		strings.ReplaceAll(armored, "\n", "\r\n") + "\r\n--b--\r\n")
}

func selfSignedCert(t *testing.T, addr string) []byte {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:   big.NewInt(7),
		Subject:        pkix.Name{CommonName: addr},
		NotBefore:      time.Now().Add(-time.Hour),
		NotAfter:       time.Now().Add(24 * time.Hour),
		KeyUsage:       x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage:    []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection},
		EmailAddresses: []string{addr},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func plain(from, to string) []byte {
	return []byte("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: hello\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=us-ascii\r\n\r\nHello.\r\n")
}

// TestPlanOperations runs the real engine on real messages and checks the
// operations read from each plan: the attribute names and values the
// engine writes are what planOps reads.
func TestPlanOperations(t *testing.T) {
	e := newEngineEnv(t)
	snap := e.snapshot(t)
	reject := e.pol
	reject.Actions.OnDecryptError = crypto.Reject
	const gw = "gw@example.org"
	in, out := crypto.Inbound, crypto.Outbound
	for _, tc := range []struct {
		name  string
		pol   crypto.Policy
		dir   crypto.Direction
		from  string
		rcpts []string
		msg   []byte
		want  []op
	}{
		{"decrypted and verified", e.pol, in, "carol@example.net", []string{gw}, pgpMIME(t, e.carol, false, e.gw),
			[]op{{"openpgp", OpDecrypt, ResultOK, ""}, {"openpgp", OpVerify, "valid", ""}}},
		{"decrypted, unsigned", e.pol, in, "carol@example.net", []string{gw}, pgpMIME(t, nil, false, e.gw),
			[]op{{"openpgp", OpDecrypt, ResultOK, ""}}},
		{"for another key", e.pol, in, "carol@example.net", []string{gw}, pgpMIME(t, nil, false, e.carol),
			[]op{{"openpgp", OpDecrypt, ResultFailed, ReasonNotForGateway}}},
		{"integrity failure, tagged", e.pol, in, "carol@example.net", []string{gw}, pgpMIME(t, nil, true, e.gw),
			[]op{{"openpgp", OpDecrypt, ResultFailed, ReasonDecryptFailed}}},
		{"integrity failure, rejected", reject, in, "carol@example.net", []string{gw}, pgpMIME(t, nil, true, e.gw),
			[]op{{"openpgp", OpDecrypt, ResultFailed, ReasonDecryptFailed}}},
		{"plain inbound", e.pol, in, "carol@example.net", []string{gw}, plain("carol@example.net", gw), nil},
		{"signed only (no key)", e.pol, out, gw, []string{"bob@example.net"}, plain(gw, "bob@example.net"),
			[]op{{"openpgp", OpSign, ResultOK, ""}}},
		{"openpgp encrypted", e.pol, out, gw, []string{"carol@example.net"}, plain(gw, "carol@example.net"),
			[]op{{"openpgp", OpEncrypt, ResultOK, ""}, {"openpgp", OpSign, ResultOK, ""}}},
		{"smime encrypted", e.pol, out, gw, []string{"dave@example.com"}, plain(gw, "dave@example.com"),
			[]op{{"smime", OpEncrypt, ResultOK, ""}, {"smime", OpSign, ResultOK, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := e.process(t, tc.pol, snap, tc.dir, tc.from, tc.rcpts, tc.msg)
			if err != nil {
				t.Fatal(err)
			}
			if got := planOps(tc.dir, p); !reflect.DeepEqual(got, tc.want) && !(len(got) == 0 && len(tc.want) == 0) {
				t.Errorf("operations %v, want %v (decision %s, attrs %v)", got, tc.want, p.Decision, p.Attrs)
			}
		})
	}
}

// TestPlanCounts: Plan and EngineError move the counters, and a gateway
// key that cannot be read counts as keyring_unavailable.
func TestPlanCounts(t *testing.T) {
	e := newEngineEnv(t)
	m := New("test")
	msg := pgpMIME(t, e.carol, false, e.gw)
	p, err := e.process(t, e.pol, e.snapshot(t), crypto.Inbound, "carol@example.net", []string{"gw@example.org"}, msg)
	if err != nil {
		t.Fatal(err)
	}
	m.Plan(crypto.Inbound, p)
	p, err = e.process(t, e.pol, e.snapshot(t), crypto.Inbound, "carol@example.net", []string{"gw@example.org"}, pgpMIME(t, nil, true, e.gw))
	if err != nil {
		t.Fatal(err)
	}
	m.Plan(crypto.Inbound, p)

	// The gateway's OpenPGP secret with unsafe permissions is refused:
	// the engine fails (tempfail) before trying to decrypt.
	secrets, _ := filepath.Glob(filepath.Join(e.dir, "private", "openpgp", "*.asc"))
	if len(secrets) == 0 {
		t.Fatal("no gateway OpenPGP secret in private/openpgp")
	}
	for _, f := range secrets {
		if err := os.Chmod(f, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	_, err = e.process(t, e.pol, e.snapshot(t), crypto.Inbound, "carol@example.net", []string{"gw@example.org"}, msg)
	if err == nil {
		t.Fatal("the engine decrypted with a refused gateway key")
	}
	m.EngineError(crypto.Inbound, err)
	m.EngineError(crypto.Outbound, err)                      // not a decryption
	m.EngineError(crypto.Inbound, fmt.Errorf("other error")) // nothing to count
	body := scrape(t, m)
	for _, want := range []string{
		`cryptmilter_crypto_operations_total{operation="decrypt",protocol="openpgp",result="ok"} 1`,
		`cryptmilter_crypto_operations_total{operation="verify",protocol="openpgp",result="valid"} 1`,
		`cryptmilter_crypto_operations_total{operation="decrypt",protocol="openpgp",result="failed"} 1`,
		`cryptmilter_crypto_operations_total{operation="decrypt",protocol="openpgp",result="tempfail"} 1`,
		`cryptmilter_decryption_failures_total{protocol="openpgp",reason="decrypt_failed"} 1`,
		`cryptmilter_decryption_failures_total{protocol="openpgp",reason="keyring_unavailable"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q\nerror was: %v", want, err)
		}
	}
	if n := strings.Count(body, "\ncryptmilter_crypto_operations_total{"); n != 4 {
		t.Errorf("%d operation series, want 4:\n%s", n, body)
	}
}
