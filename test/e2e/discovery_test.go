package e2e

import (
	"bytes"
	"encoding/pem"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore/discover"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// The discovery suite: a DNS server and a Web Key Directory on loopback,
// the milter's [discovery] resolver pointing at the DNS server, which
// sends openpgpkey.example.net to the WKD server. WKD is HTTPS on port
// 443 by definition, so the WKD server listens on port 443 of a random
// address in 127/8 (tests run as root): the binary under test has no
// switch for another port. Postfix itself resolves nothing (it relays to
// loopback).
//
// The correspondents, each with real keys made by gpg or openssl:
//   - walter@example.net: an OpenPGP key only in the Web Key Directory;
//   - dana@example.com: an S/MIME certificate in a validated SMIMEA record;
//   - olga@example.com: an OPENPGPKEY record without the AD bit;
//   - slow@example.com (required) and lazy@example.com (opportunistic):
//     DNS answers slower than [discovery] timeout;
//   - alice@example.net: a key in the keystore and another one in the WKD.
type discoveryPeers struct {
	*outPeers
	dns        *discovertest.DNS
	wkd        *discovertest.WKD
	ca         *discovertest.CA
	wkdAlice   string // subkey of alice's WKD-only key
	danaKey    string // files
	danaCrt    string
	walterFpr  string
	walterHash string
}

var discoveryMailboxes = []string{"walter@example.net", "dana@example.com", "olga@example.com", "slow@example.com", "lazy@example.com"}

// gpgPeer makes an OpenPGP key for addr in a new gpg home holding the
// gateway's public key; it returns the home, the encryption subkey ID, the
// fingerprint and the binary public key.
func gpgPeer(t testing.TB, p *outPeers, addr string) (home, subkey, fpr string, pub []byte) {
	t.Helper()
	home = gpgHome(t)
	g := []string{"--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""}
	if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-gen-key", addr, "ed25519", "sign", "never")...); err != nil {
		t.Fatal(err)
	}
	out, err := cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
	if err != nil {
		t.Fatal(err)
	}
	fpr = regexp.MustCompile(`(?m)^fpr:+([0-9A-F]+):`).FindStringSubmatch(string(out))[1]
	if _, err := cmdOut(t, nil, "gpg", append(g, "--quick-add-key", fpr, "cv25519", "encr", "never")...); err != nil {
		t.Fatal(err)
	}
	out, _ = cmdOut(t, nil, "gpg", append(g, "--with-colons", "--list-keys", addr)...)
	for _, line := range strings.Split(string(out), "\n") {
		if fs := strings.Split(line, ":"); fs[0] == "sub" && len(fs) > 11 && strings.Contains(fs[11], "e") {
			subkey = fs[4]
		}
	}
	if pub, err = cmdOut(t, nil, "gpg", append(g, "--export", addr)...); err != nil {
		t.Fatal(err)
	}
	gwPub, err := cmdOut(t, nil, "gpg", "--homedir", p.verifier, "--batch", "--armor", "--export")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cmdOut(t, gwPub, "gpg", append(g, "--import")...); err != nil {
		t.Fatal(err)
	}
	return home, subkey, fpr, pub
}

// listenWKD starts the WKD server on port 443 of a random loopback address.
func listenWKD(t testing.TB, ca *discovertest.CA, hosts ...string) (*discovertest.WKD, string) {
	t.Helper()
	for range 20 {
		ip := fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), 1+rand.IntN(250), 1+rand.IntN(250))
		l, err := net.Listen("tcp", ip+":443")
		if err != nil {
			continue
		}
		l.Close()
		return discovertest.StartWKD(t, ca, ip+":443", hosts...), ip
	}
	t.Fatal("no free port 443 on 127/8")
	return nil, ""
}

func newDiscoveryPeers(t *testing.T) *discoveryPeers {
	t.Helper()
	requirePeers(t, true, "gpg", "gpgconf", "openssl")
	p := &discoveryPeers{outPeers: newOutPeers(t), dns: discovertest.StartDNS(t), ca: discovertest.NewCA(t)}
	var ip string
	p.wkd, ip = listenWKD(t, p.ca, "openpgpkey.example.net", "example.net")
	p.dns.A("openpgpkey.example.net", ip)

	home, sub, fpr, pub := gpgPeer(t, p.outPeers, "walter@example.net")
	p.homes["walter@example.net"], p.subkeys["walter@example.net"], p.walterFpr = home, sub, fpr
	p.walterHash = discover.WKDHash("walter")
	p.wkd.Publish("walter@example.net", pub, discovertest.Advanced, p.walterHash)

	// alice: the keystore has her key; the WKD another one.
	_, p.wkdAlice, _, pub = gpgPeer(t, p.outPeers, "alice@example.net")
	p.wkd.Publish("alice@example.net", pub, discovertest.Advanced, discover.WKDHash("alice"))

	_, _, _, pub = gpgPeer(t, p.outPeers, "olga@example.com")
	p.dns.OPENPGPKEY("olga@example.com", pub, false)

	dir := tempDir(t, "cm-dd-")
	p.danaKey, p.danaCrt = filepath.Join(dir, "dana.key"), filepath.Join(dir, "dana.pem")
	if _, err := cmdOut(t, nil, "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", p.danaKey, "-out", p.danaCrt,
		"-days", "30", "-subj", "/CN=dana", "-addext", "subjectAltName=email:dana@example.com",
		"-addext", "extendedKeyUsage=emailProtection", "-addext", "keyUsage=digitalSignature,keyEncipherment"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p.danaCrt)
	blk, _ := pem.Decode(b)
	p.dns.SMIMEA("dana@example.com", 3, blk.Bytes, true)

	p.dns.Slow("slow@example.com", 60*time.Second)
	p.dns.Slow("lazy@example.com", 60*time.Second)
	return p
}

// smimeDecryptAs decrypts an S/MIME copy with a recipient's certificate
// and key, and verifies the gateway's signature inside.
func (p *discoveryPeers) smimeDecryptAs(t testing.TB, m *Mail, crt, key string) []byte {
	t.Helper()
	if ct := strings.Join(m.Get("Content-Type"), " "); !strings.Contains(ct, "application/pkcs7-mime") {
		t.Fatalf("Content-Type %q, want S/MIME", ct)
	}
	dir := tempDir(t, "cm-sd-")
	in, signed := filepath.Join(dir, "in.eml"), filepath.Join(dir, "signed.eml")
	writeFile(t, in, string(crlf(m.Raw)), 0o600)
	if _, err := cmdOut(t, nil, "openssl", "smime", "-decrypt", "-in", in, "-recip", crt, "-inkey", key, "-out", signed); err != nil {
		t.Fatal(err)
	}
	content, err := cmdOut(t, nil, "openssl", "smime", "-verify", "-in", signed, "-CAfile", p.gwCert)
	if err != nil {
		t.Fatalf("openssl smime -verify: %v", err)
	}
	return content
}

func discoveryMessage(to, subject string) []byte {
	return []byte("From: RT <rt@example.org>\r\nTo: " + to + "\r\nSubject: " + subject + "\r\n" +
		"Date: " + time.Now().Format(time.RFC1123Z) + "\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", ".") + "@example.org>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nDiscovered.\r\n")
}

// messageLine returns the milter's log line for the message with subject
// (matched through the reply or the last message line after mark).
func messageLine(t testing.TB, m *Milter, mark int, want string) string {
	t.Helper()
	var line string
	if !waitFor(10*time.Second, func() bool {
		line = lastLine(m.Log()[mark:], "msg=message ")
		return strings.Contains(line, want)
	}) {
		t.Fatalf("no message log line with %q; last: %s\n%s", want, line, m.Log()[mark:])
	}
	return line
}

// TestDiscovery: mail to recipients known only by key discovery, through
// the milter and a real Postfix.
func TestDiscovery(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	p := newDiscoveryPeers(t)
	pf, m := startStack(t, stackOptions{
		Postfix: postfixOptions{Mailboxes: discoveryMailboxes},
		Milter: milterOptions{Keystore: p.keystore, Settings: []string{
			`discovery.sources = ["dane", "wkd"]`,
			`discovery.resolver = "` + p.dns.Addr + `"`,
			`discovery.ca_file = "` + p.ca.File + `"`,
			`discovery.timeout = "2s"`,
		}, Extra: "\n[[outbound.rule]]\nmatch = \"slow@example.com\"\npolicy = \"required\"\n"},
	})
	send := func(t *testing.T, rcpt, subject string) {
		t.Helper()
		if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", []string{rcpt}, discoveryMessage(rcpt, subject)); err != nil {
			t.Fatal(err)
		}
	}
	last := func(t *testing.T, rcpt string, n int) *Mail {
		t.Helper()
		ms := pf.WaitMaildir(t, rcpt, n, 60*time.Second)
		return ms[len(ms)-1]
	}

	t.Run("wkd", func(t *testing.T) {
		mark := len(m.Log())
		send(t, "walter@example.net", "by wkd")
		mail := last(t, "walter@example.net", 1)
		if plain := p.pgpDecrypt(t, "walter@example.net", mail); !bytes.Contains(plain, []byte("Discovered.")) {
			t.Errorf("walter's plaintext:\n%s", plain)
		}
		if ids := p.pgpKeyIDs(t, mail); !slices.Equal(ids, []string{p.subkeys["walter@example.net"]}) {
			t.Errorf("encrypted to %v, want walter's subkey %s", ids, p.subkeys["walter@example.net"])
		}
		messageLine(t, m, mark, `discovered="walter@example.net=wkd"`)
	})

	t.Run("dane smimea", func(t *testing.T) {
		mark := len(m.Log())
		send(t, "dana@example.com", "by dane")
		mail := last(t, "dana@example.com", 1)
		if content := p.smimeDecryptAs(t, mail, p.danaCrt, p.danaKey); !bytes.Contains(content, []byte("Discovered.")) {
			t.Errorf("dana's content:\n%s", content)
		}
		messageLine(t, m, mark, `discovered="dana@example.com=dane"`)
	})

	t.Run("record without AD is ignored", func(t *testing.T) {
		mark := len(m.Log())
		send(t, "olga@example.com", "not validated")
		mail := last(t, "olga@example.com", 1)
		p.pgpVerifySigned(t, mail) // signed only: opportunistic without a key
		line := messageLine(t, m, mark, "olga@example.com")
		if !strings.Contains(line, "discovery_failed=") || !strings.Contains(line, "not DNSSEC-validated") || strings.Contains(line, "discovered=") {
			t.Errorf("log line: %s", line)
		}
	})

	t.Run("a manual key wins", func(t *testing.T) {
		before := len(p.wkd.Requests())
		send(t, "alice@example.net", "manual wins")
		mail := last(t, "alice@example.net", 1)
		if ids := p.pgpKeyIDs(t, mail); !slices.Equal(ids, []string{p.subkeys["alice@example.net"]}) {
			t.Errorf("encrypted to %v, want the keystore's key %s (the WKD's is %s)", ids, p.subkeys["alice@example.net"], p.wkdAlice)
		}
		p.pgpDecrypt(t, "alice@example.net", mail)
		for _, r := range p.wkd.Requests()[before:] {
			if strings.Contains(r, discover.WKDHash("alice")) {
				t.Errorf("alice's key was looked up although the keystore has one: %s", r)
			}
		}
	})

	t.Run("slow server: required waits", func(t *testing.T) {
		start := time.Now()
		code, reply := pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", []string{"slow@example.com"}, discoveryMessage("slow@example.com", "slow required"))
		if el := time.Since(start); el > 30*time.Second {
			t.Errorf("the reply took %v: the milter waited for the DNS server, not [discovery] timeout", el)
		}
		if code != 451 || !strings.Contains(reply, "4.7.0") || !strings.Contains(reply, "slow@example.com") {
			t.Fatalf("reply %d %q, want 451 4.7.0", code, reply)
		}
	})

	t.Run("slow server: opportunistic signs", func(t *testing.T) {
		start := time.Now()
		send(t, "lazy@example.com", "slow opportunistic")
		if el := time.Since(start); el > 30*time.Second {
			t.Errorf("the transaction took %v: the milter waited for the DNS server, not [discovery] timeout", el)
		}
		p.pgpVerifySigned(t, last(t, "lazy@example.com", 1))
	})

	t.Run("keys discover", func(t *testing.T) {
		out := m.Keys(t, nil, "discover", "walter@example.net")
		for _, want := range []string{"source:      wkd", "status:      found", p.walterFpr,
			"from:        https://openpgpkey.example.net/.well-known/openpgpkey/example.net/hu/" + p.walterHash + "?l=walter",
			"source:      dane", "status:      none"} {
			if !strings.Contains(out, want) {
				t.Errorf("keys discover lacks %q:\n%s", want, out)
			}
		}
		list := m.Keys(t, nil, "list")
		if !regexp.MustCompile(`openpgp\s+discovered/wkd\s+walter@example\.net\s+`+p.walterFpr).MatchString(list) ||
			!regexp.MustCompile(`smime\s+discovered/dane\s+dana@example\.com`).MatchString(list) {
			t.Errorf("keys list:\n%s", list)
		}
	})

	t.Run("the cache survives a restart", func(t *testing.T) {
		m.Stop(t)
		p.wkd.SetStatus(503) // the directory is down now
		before := len(p.wkd.Requests())
		m.Start(t)
		mark := len(m.Log())
		send(t, "walter@example.net", "after restart")
		mail := last(t, "walter@example.net", 2)
		if plain := p.pgpDecrypt(t, "walter@example.net", mail); !bytes.Contains(plain, []byte("Subject: after restart")) {
			t.Errorf("walter's plaintext:\n%s", plain)
		}
		messageLine(t, m, mark, `discovered="walter@example.net=wkd"`)
		if n := len(p.wkd.Requests()) - before; n != 0 {
			t.Errorf("%d WKD requests after the restart, want 0 (the cached answer)", n)
		}
	})
}
