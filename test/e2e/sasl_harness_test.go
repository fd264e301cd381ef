package e2e

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// Dovecot is a private Dovecot running only its auth service, on a
// loopback TCP port, for Postfix's smtpd_sasl_type = dovecot: the SASL
// backend most Debian mail servers use. Users come from a passwd-file.
type Dovecot struct {
	Dir  string
	Addr string // host:port of the auth listener
	log  syncBuffer
}

const dovecotConf = `# Private Dovecot for cryptmilter's end-to-end tests: auth only.
base_dir = {{.Dir}}/run
state_dir = {{.Dir}}/state
instance_name = cm-dovecot-{{.Port}}
log_path = {{.Dir}}/dovecot.log
protocols =
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_failure_delay = 0
default_internal_user = dovecot
default_login_user = dovenull
passdb {
  driver = passwd-file
  args = scheme=PLAIN {{.Dir}}/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=/nonexistent
}
# No auth penalty: after a failed login Dovecot would delay every later
# one from 127.0.0.1 by seconds.
service anvil {
  unix_listener anvil-auth-penalty {
    mode = 0
  }
}
service auth {
  inet_listener {
    address = 127.0.0.1
    port = {{.Port}}
  }
}
`

// startDovecotAuth starts Dovecot's auth service with users (name →
// password) and stops it at the end of the test.
func startDovecotAuth(t testing.TB, users map[string]string) *Dovecot {
	t.Helper()
	requirePeers(t, true, "dovecot")
	for _, u := range []string{"dovecot", "dovenull"} {
		if _, err := user.Lookup(u); err != nil {
			skipOrFail(t, "the SASL tests need the "+u+" user (install Debian's dovecot-core package)")
		}
	}
	dir := tempDir(t, "cm-dv-")
	port := freePort(t)
	d := &Dovecot{Dir: dir, Addr: "127.0.0.1:" + strconv.Itoa(port)}
	var passwd strings.Builder
	for name, pw := range users {
		fmt.Fprintf(&passwd, "%s:{PLAIN}%s\n", name, pw)
	}
	writeFile(t, filepath.Join(dir, "users"), passwd.String(), 0o644)
	conf := filepath.Join(dir, "dovecot.conf")
	writeTemplate(t, conf, dovecotConf, map[string]any{"Dir": dir, "Port": port})
	cmd := exec.Command("dovecot", "-F", "-c", conf)
	cmd.Stdout, cmd.Stderr = &d.log, &d.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting dovecot: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		// SIGTERM: the master stops its auth processes and exits.
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
			t.Logf("dovecot log:\n%s%s", d.log.String(), b)
		}
	})
	if !waitFor(10*time.Second, func() bool { return dialable(d.Addr) }) {
		b, _ := os.ReadFile(filepath.Join(dir, "dovecot.log"))
		t.Fatalf("dovecot auth does not listen on %s\n%s%s", d.Addr, d.log.String(), b)
	}
	return d
}

// SMTPDOptions are the smtpd -o settings that offer AUTH through this
// Dovecot.
func (d *Dovecot) SMTPDOptions() []string {
	return []string{
		"smtpd_sasl_auth_enable=yes",
		"smtpd_sasl_type=dovecot",
		"smtpd_sasl_path=inet:" + d.Addr,
	}
}

// serverTLS writes a self-signed certificate for mx.example.test, readable
// by Postfix's smtpd, and returns the smtpd -o settings that make TLS
// mandatory (as on a submission port).
func serverTLS(t testing.TB) []string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "mx.example.test"},
		DNSNames:     []string{"mx.example.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := tempDir(t, "cm-tls-")
	cert, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	writeFile(t, cert, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})), 0o644)
	// smtpd reads its key as root before dropping privileges.
	writeFile(t, keyFile, string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pkcs8})), 0o600)
	return []string{
		"smtpd_tls_security_level=encrypt",
		"smtpd_tls_cert_file=" + cert,
		"smtpd_tls_key_file=" + keyFile,
	}
}

// smtpClient says how SendSMTPWith talks to the server.
type smtpClient struct {
	// StartTLS issues STARTTLS before anything else (the test's
	// self-signed certificate is not verified; a failed STARTTLS is a
	// dial error).
	StartTLS bool
	// Auth, when set, authenticates after STARTTLS.
	Auth sasl.Client
}

// SendSMTPWith sends msg over SMTP like SendSMTP, with STARTTLS and AUTH
// as c says. A refusal (including of AUTH, as stage "AUTH") comes back as
// *SMTPStageError wrapping *smtp.SMTPError.
func (pf *Postfix) SendSMTPWith(addr string, c smtpClient, from string, rcpts []string, msg []byte) error {
	var cl *smtp.Client
	var err error
	if c.StartTLS {
		// go-smtp says EHLO localhost before STARTTLS.
		cl, err = smtp.DialStartTLS(addr, &tls.Config{InsecureSkipVerify: true, ServerName: "mx.example.test"})
	} else {
		cl, err = smtp.Dial(addr)
	}
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer cl.Close()
	stage := func(name string, err error) error {
		if err == nil {
			return nil
		}
		return &SMTPStageError{Stage: name, Err: err}
	}
	if !c.StartTLS {
		if err := cl.Hello("client.example.net"); err != nil {
			return stage("EHLO", err)
		}
	}
	if c.Auth != nil {
		if err := cl.Auth(c.Auth); err != nil {
			return stage("AUTH", err)
		}
	}
	if err := cl.Mail(from, nil); err != nil {
		return stage("MAIL", err)
	}
	for _, r := range rcpts {
		if err := cl.Rcpt(r, nil); err != nil {
			return stage("RCPT <"+r+">", err)
		}
	}
	w, err := cl.Data()
	if err != nil {
		return stage("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return stage("DATA", err)
	}
	if err := w.Close(); err != nil {
		return stage("end of DATA", err)
	}
	return cl.Quit()
}
