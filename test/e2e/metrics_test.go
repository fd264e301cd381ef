package e2e

import (
	"bufio"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// scrape reads /metrics into series ("name{labels}") and their values.
func scrape(t testing.TB, base string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

func healthz(t testing.TB, base string) (int, string) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// certFor writes a self-signed RSA certificate for addr (e-mail
// protection) and returns the PEM file.
func certFor(t testing.TB, dir, addr string) string {
	t.Helper()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: addr},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}, EmailAddresses: []string{addr}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	f := filepath.Join(dir, addr+".pem")
	writeFile(t, f, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	return f
}

// TestMetricsAndHealthz runs Postfix and cryptmilter with [metrics] listen
// on loopback, sends an S/MIME message to the gateway (decrypted, signature
// valid), one encrypted to another certificate (a decryption failure,
// delivered tagged) and an outbound message to an S/MIME recipient and one
// without a key (two copies, one re-injected), and checks that /metrics
// moved and /healthz answers; a refused gateway secret then makes /healthz
// fail with the reason.
//
// The subtest "milter hooks" checks what only the milter can count
// (processing-slot wait, re-injection, messages in flight, and the queue
// ids of re-injected copies in the message's log line).
func TestMetricsAndHealthz(t *testing.T) {
	requirePeers(t, false, "openssl")
	ks := filepath.Join(tempDir(t, "cm-mks-"), "keystore")
	copyTree(t, sharedKeystore(t), ks)
	alice := newSMIMESender(t, ks, "alice@example.net")
	dir := tempDir(t, "cm-mc-")
	dave := certFor(t, dir, "dave@example.com")
	daveCert, _ := os.ReadFile(dave)
	if _, err := keystore.Import(keystore.Options{Dir: ks}, daveCert, "dave.pem", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	mport := freePort(t)
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Keystore: ks,
		Settings: []string{fmt.Sprintf(`metrics.listen = "127.0.0.1:%d"`, mport)}}})
	base := fmt.Sprintf("http://127.0.0.1:%d", mport)

	if code, body := healthz(t, base); code != http.StatusOK || body != "ok\n" {
		t.Fatalf("/healthz before any mail = %d %q", code, body)
	}
	before := scrape(t, base)

	// Messages in flight: a transaction held open after RCPT.
	c, err := smtp.Dial(pf.InboundAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("eve@example.net", nil); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("rt@example.org", nil); err != nil {
		t.Fatal(err)
	}
	held := scrape(t, base)["cryptmilter_messages_in_flight"]
	c.Reset()
	c.Quit()

	if err := pf.SendSMTP(pf.InboundAddr, alice.Addr, []string{"rt@example.org"}, alice.Message(t, "metrics in", "Ticket 7 is done.")); err != nil {
		t.Fatal(err)
	}
	other := encryptToGateway(t, dave, "alice@example.net", "not for the gateway",
		[]byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nFor dave only.\r\n"))
	if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, other); err != nil {
		t.Fatal(err)
	}
	in := pf.WaitMaildir(t, "rt@example.org", 2, 60*time.Second)
	var encs []string
	for _, mail := range in {
		encs = append(encs, only(t, mail, "X-Cryptmilter-Encryption"))
	}
	joined := strings.Join(encs, " | ")
	if !strings.Contains(joined, "decrypted; protocol=smime") || !strings.Contains(joined, "failed; protocol=smime; reason=not-for-gateway") {
		t.Errorf("inbound results %q, want one decrypted and one failed (not for the gateway)", joined)
	}
	out := plainMessage("rt@example.org", "dave@example.com, bob@example.net", "metrics out")
	if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", []string{"dave@example.com", "bob@example.net"}, out); err != nil {
		t.Fatal(err)
	}
	pf.WaitMaildir(t, "dave@example.com", 1, 60*time.Second)
	pf.WaitMaildir(t, "bob@example.net", 1, 60*time.Second)
	after := scrape(t, base)
	delta := func(series string) float64 { return after[series] - before[series] }

	for series, want := range map[string]float64{
		`cryptmilter_crypto_operations_total{operation="decrypt",protocol="smime",result="ok"}`:     1,
		`cryptmilter_crypto_operations_total{operation="verify",protocol="smime",result="valid"}`:   1,
		`cryptmilter_crypto_operations_total{operation="decrypt",protocol="smime",result="failed"}`: 1,
		`cryptmilter_decryption_failures_total{protocol="smime",reason="not_for_gateway"}`:          1,
		`cryptmilter_crypto_operations_total{operation="encrypt",protocol="smime",result="ok"}`:     1,
		`cryptmilter_crypto_operations_total{operation="sign",protocol="smime",result="ok"}`:        1,
		`cryptmilter_crypto_operations_total{operation="sign",protocol="openpgp",result="ok"}`:      1,
		`cryptmilter_messages_total{action="accept",decision="decrypted",direction="in"}`:           1,
		`cryptmilter_messages_total{action="accept",decision="encrypted",direction="out"}`:          1,
	} {
		if got := delta(series); got != want {
			t.Errorf("%s moved by %v, want %v", series, got, want)
		}
	}
	for series, want := range map[string]float64{
		`cryptmilter_keyring_keys{kind="secret"}`:      1,
		`cryptmilter_keyring_keys{kind="identity"}`:    1,
		`cryptmilter_keyring_keys{kind="certificate"}`: 1,
		`cryptmilter_keyring_keys{kind="ca"}`:          1,
		"cryptmilter_keyring_last_reload_success":      1,
		"cryptmilter_healthy":                          1,
		"cryptmilter_messages_in_flight":               0,
	} {
		if got, ok := after[series]; !ok || got != want {
			t.Errorf("%s = %v (exported: %v), want %v", series, got, ok, want)
		}
	}
	if ts := after["cryptmilter_keyring_last_reload_timestamp_seconds"]; ts < float64(time.Now().Add(-10*time.Minute).Unix()) {
		t.Errorf("cryptmilter_keyring_last_reload_timestamp_seconds = %v", ts)
	}
	build := false
	for s := range after {
		build = build || strings.HasPrefix(s, `cryptmilter_build_info{version="`)
	}
	if !build {
		t.Error("no cryptmilter_build_info")
	}

	t.Run("milter hooks", func(t *testing.T) {
		if held != 1 {
			t.Errorf("cryptmilter_messages_in_flight = %v during an open transaction, want 1", held)
		}
		if got := delta("cryptmilter_slot_wait_seconds_count"); got != 3 {
			t.Errorf("cryptmilter_slot_wait_seconds_count moved by %v, want 3 (one per message processed)", got)
		}
		if got := delta("cryptmilter_reinject_attempts_total"); got != 1 {
			t.Errorf("cryptmilter_reinject_attempts_total moved by %v, want 1", got)
		}
		if _, ok := after["cryptmilter_reinject_failures_total"]; !ok || delta("cryptmilter_reinject_failures_total") != 0 {
			t.Errorf("cryptmilter_reinject_failures_total = %v (exported: %v), want 0", after["cryptmilter_reinject_failures_total"], ok)
		}
		// The message's line names the re-injected copy's queue id, and
		// Postfix's log knows that queue id.
		line := lastLine(m.Log(), "decision=encrypted")
		id := regexp.MustCompile(`reinjected_ids=([0-9A-Za-z]+)`).FindStringSubmatch(line)
		if !strings.Contains(line, "reinjected=1") || id == nil {
			t.Fatalf("the message line lacks the re-injected copy's queue id: %s", line)
		}
		if !strings.Contains(pf.Log(), id[1]+":") {
			t.Errorf("Postfix's log has no queue id %s", id[1])
		}
		if !strings.Contains(line, `direction_by="daemon_name=`) || !strings.Contains(line, "recipients=dave@example.com,bob@example.net") {
			t.Errorf("the message line does not say why it is outbound or for whom: %s", line)
		}
	})

	// A gateway secret refused for its permissions: after the reload
	// /healthz fails with the file's name, and cryptmilter_healthy is 0.
	secrets, _ := filepath.Glob(filepath.Join(m.Keystore, "private", "openpgp", "*.asc"))
	if len(secrets) == 0 {
		t.Fatal("no gateway OpenPGP secret in the milter's keystore")
	}
	if err := os.Chmod(secrets[0], 0o644); err != nil {
		t.Fatal(err)
	}
	m.Reload(t)
	code, body := healthz(t, base)
	if code != http.StatusServiceUnavailable || !strings.Contains(body, filepath.Base(secrets[0])) || !strings.Contains(body, "permissions") {
		t.Errorf("/healthz with a refused secret = %d %q, want 503 naming it", code, body)
	}
	if v := scrape(t, base)["cryptmilter_healthy"]; v != 0 {
		t.Errorf("cryptmilter_healthy = %v with a refused secret, want 0", v)
	}
	m.WaitLog(t, "unhealthy: /healthz answers 503", 5*time.Second)
	m.Signal(t, syscall.SIGTERM)
	m.Wait(t, 20*time.Second)
}
