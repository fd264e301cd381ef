package e2e

import (
	"bytes"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runAs returns the process attributes that run a command as the system
// user name, after giving it dir (recursively).
func runAs(t testing.TB, name, dir string) *syscall.SysProcAttr {
	t.Helper()
	u, err := user.Lookup(name)
	if err != nil {
		t.Fatalf("user %s: %v", name, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	err = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
	if err != nil {
		t.Fatal(err)
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}}
}

// TestKeystoreFaultsFailClosed: a keystore that becomes partly unreadable
// (chmod 000 while the daemon, running as an ordinary user, watches it)
// does not shrink the keyring into plaintext delivery. The issue measured
// 59 of 121 outbound copies sent in plaintext with openpgp/ unreadable,
// and mail passed undecrypted and unsigned with the gateway's secret
// directory unreadable. Now: copies whose keys could be in the unreadable
// part keep the keys read before; a fresh start over an unreadable
// keystore tempfails instead of delivering; restoring the mode recovers.
func TestKeystoreFaultsFailClosed(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	if _, err := user.Lookup("nobody"); err != nil {
		skipOrFail(t, "no user nobody: "+err.Error())
	}
	peers := newOutPeers(t)
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Keystore: peers.keystore, User: "nobody"}})
	send := func(subject string) (int, string) {
		return pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", []string{"alice@example.net"}, outMessage(subject))
	}
	encrypted := func(mails []*Mail, subject string) bool {
		for _, ml := range mails {
			if bytes.Contains(ml.Raw, []byte(subject)) {
				t.Errorf("%q delivered with its Subject in clear", subject)
				return false
			}
		}
		last := mails[len(mails)-1]
		return strings.HasPrefix(strings.Join(last.Get("Content-Type"), ""), "multipart/encrypted")
	}
	chmod := func(rel string, mode os.FileMode) {
		t.Helper()
		if err := os.Chmod(filepath.Join(m.Keystore, rel), mode); err != nil {
			t.Fatal(err)
		}
	}

	if code, reply := send("before any fault"); code != 0 {
		t.Fatalf("control: %d %s", code, reply)
	}
	if !encrypted(pf.WaitMaildir(t, "alice@example.net", 1, 30*time.Second), "before any fault") {
		t.Fatal("control copy not encrypted")
	}

	// openpgp/ unreadable while running: the watcher's reload keeps
	// alice's key and says so; her copies stay encrypted.
	chmod("openpgp", 0)
	m.WaitLog(t, "openpgp", 10*time.Second)
	for i := range 5 {
		if code, reply := send("openpgp unreadable " + strconv.Itoa(i)); code != 0 {
			t.Fatalf("with openpgp/ unreadable: %d %s", code, reply)
		}
	}
	mails := pf.WaitMaildir(t, "alice@example.net", 6, 60*time.Second)
	for _, ml := range mails {
		if !strings.HasPrefix(strings.Join(ml.Get("Content-Type"), ""), "multipart/encrypted") {
			t.Errorf("a copy left unencrypted with openpgp/ unreadable:\n%.400s", ml.Raw)
		}
	}

	// A restart with openpgp/ still unreadable has nothing to keep: the
	// lookup is "unavailable", never "no key", and mail waits.
	m.Stop(t)
	m.Start(t)
	code, reply := send("unreadable at start")
	if code/100 != 4 {
		t.Fatalf("fresh start over an unreadable openpgp/: %d %q, want a temporary failure", code, reply)
	}
	chmod("openpgp", 0o755)
	m.Reload(t)
	if code, reply := send("readable again"); code != 0 {
		t.Fatalf("after the fix: %d %s", code, reply)
	}

	// The gateway's secret directory unreadable while running: the keys
	// read before stay in service (decrypting and signing go on).
	enc := pgpToGateway(t, m.Keystore, "inbound while unreadable")
	chmod("private/openpgp", 0)
	m.WaitLog(t, "private/openpgp", 10*time.Second)
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, enc); code != 0 {
		t.Fatalf("inbound with private/openpgp unreadable (kept keys): %d %s", code, reply)
	}
	got := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)[0]
	if v := got.Get("X-Cryptmilter-Encryption"); len(v) != 1 || !strings.HasPrefix(v[0], "decrypted;") {
		t.Errorf("with the kept keys: X-Cryptmilter-Encryption %q", v)
	}

	// Unreadable at start: there is nothing to keep, and serve refuses to
	// start (it would otherwise deliver undecrypted and send unsigned, or
	// create a new identity over the old one); Postfix's
	// milter_default_action tempfails both directions meanwhile.
	m.Stop(t)
	if err := m.TryStart(); err == nil {
		t.Fatal("serve started over an unreadable private/openpgp")
	}
	if !strings.Contains(m.Log(), "private/openpgp") {
		t.Errorf("the error does not name the directory:\n%s", m.Log())
	}
	if code, _ := send("while the milter refuses to start"); code/100 != 4 {
		t.Errorf("outbound while the milter is down: %d, want a temporary failure", code)
	}
	if code, _ := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, enc); code/100 != 4 {
		t.Errorf("inbound while the milter is down: %d, want a temporary failure", code)
	}
	chmod("private/openpgp", 0o700)
	m.Start(t)
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, enc); code != 0 {
		t.Fatalf("inbound after the fix: %d %s", code, reply)
	}
	mails = pf.WaitMaildir(t, "rt@example.org", 2, 30*time.Second)
	if n := len(mails); n != 2 {
		t.Errorf("%d inbound messages delivered, want 2 (one before the restart, one after)", n)
	}
}

// pgpToGateway returns a PGP/MIME message from alice encrypted (not
// signed) to the gateway identity rt@example.org of keystore ks.
func pgpToGateway(t *testing.T, ks, subject string) []byte {
	t.Helper()
	gw, err := gatewaySnapshot(t, ks).Export("rt@example.org", false)
	if err != nil {
		t.Fatal(err)
	}
	if i := bytes.Index(gw, []byte("-----BEGIN CERTIFICATE-----")); i >= 0 {
		gw = gw[:i]
	}
	home := gpgHome(t)
	if _, err := cmdOut(t, gw, "gpg", "--homedir", home, "--batch", "--import"); err != nil {
		t.Fatal(err)
	}
	inner := "Content-Type: text/plain; charset=utf-8\r\n\r\nSecret inbound text.\r\n"
	armored, err := cmdOut(t, []byte(inner), "gpg", "--homedir", home, "--batch", "--trust-model", "always", "--armor",
		"--recipient", "rt@example.org", "--encrypt")
	if err != nil {
		t.Fatal(err)
	}
	return []byte("From: Alice <alice@example.net>\r\nTo: rt@example.org\r\nSubject: " + subject + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"b\"\r\n\r\n" +
		"--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n" +
		"--b\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n" +
		strings.ReplaceAll(string(armored), "\n", "\r\n") + "\r\n--b--\r\n")
}
