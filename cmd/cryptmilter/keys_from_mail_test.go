package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
	"github.com/ProtonMail/go-crypto/openpgp/packet"
	openpgp "github.com/ProtonMail/go-crypto/openpgp/v2"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// TestKeysFromMailIgnored: keys that arrive in mail never reach the
// keyring (issue 15, "keys from mail (Autocrypt, attachments) stay
// ignored"). bob's public key comes in an Autocrypt header and as an
// application/pgp-keys attachment of an inbound message, also inside a
// message for the gateway that is decrypted; afterwards the keystore's
// files are byte for byte as before and mail to bob is signed, not
// encrypted (opportunistic, no key).
func TestKeysFromMailIgnored(t *testing.T) {
	dir := t.TempDir()
	ks := filepath.Join(dir, "keys")
	if _, err := keystore.Init(keystore.Options{Dir: ks}, []string{"rt@example.org"}, false, time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "c.toml")
	conf := "keystore = \"" + ks + "\"\nhostname = \"mx.example.org\"\n[identity]\naddresses = [\"rt@example.org\"]\n"
	if err := os.WriteFile(cfg, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	bob, err := openpgp.NewEntity("Bob", "", "bob@example.net", &packet.Config{Algorithm: packet.PubKeyAlgoEdDSA, Curve: packet.Curve25519,
		Time: func() time.Time { return time.Now().Add(-time.Minute) }})
	if err != nil {
		t.Fatal(err)
	}
	var bin, arm bytes.Buffer
	if err := bob.Serialize(&bin); err != nil {
		t.Fatal(err)
	}
	w, _ := armor.Encode(&arm, "PGP PUBLIC KEY BLOCK", nil)
	w.Write(bin.Bytes())
	w.Close()
	keydata := base64.StdEncoding.EncodeToString(bin.Bytes())
	var folded strings.Builder
	for len(keydata) > 0 {
		n := min(len(keydata), 72)
		folded.WriteString("\r\n " + keydata[:n])
		keydata = keydata[n:]
	}
	msg := "From: Bob <bob@example.net>\r\nTo: rt@example.org\r\nSubject: my key\r\n" +
		"Autocrypt: addr=bob@example.net; prefer-encrypt=mutual; keydata=" + folded.String() + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nHere is my key.\r\n" +
		"--b1\r\nContent-Type: application/pgp-keys; name=bob.asc\r\nContent-Disposition: attachment; filename=bob.asc\r\n\r\n" +
		strings.ReplaceAll(arm.String(), "\n", "\r\n") + "\r\n--b1--\r\n"

	before := treeHash(t, ks)
	// Inbound as it came, then encrypted to the gateway (decrypted, so
	// its plaintext with the key attached is what the engine reads).
	if out, errs, code := runMain(t, []byte(msg), "process", "-c", cfg, "--direction", "in", "--from", "bob@example.net", "--rcpt", "rt@example.org"); code != 0 {
		t.Fatalf("process in: %d\n%s\n%s", code, out, errs)
	}
	pub, perr, pcode := runMain(t, nil, "keys", "-c", cfg, "export", "--protocol", "openpgp", "rt@example.org")
	if pcode != 0 {
		t.Fatalf("keys export: %d\n%s", pcode, perr)
	}
	gk, err := openpgp.ReadArmoredKeyRing(strings.NewReader(pub))
	if err != nil || len(gk) == 0 {
		t.Fatalf("the gateway's exported key: %v", err)
	}
	var ct bytes.Buffer
	aw, _ := armor.Encode(&ct, "PGP MESSAGE", nil)
	pw, err := openpgp.Encrypt(aw, []*openpgp.Entity{gk[0]}, nil, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprint(pw, "Content-Type: multipart/mixed; boundary=b1\r\n\r\n"+msg[strings.Index(msg, "--b1\r\n"):])
	pw.Close()
	aw.Close()
	enc := "From: Bob <bob@example.net>\r\nTo: rt@example.org\r\nSubject: ...\r\n" +
		"Autocrypt: addr=bob@example.net; keydata=" + folded.String() + "\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=e1\r\n\r\n" +
		"--e1\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n" +
		"--e1\r\nContent-Type: application/octet-stream\r\n\r\n" + strings.ReplaceAll(ct.String(), "\n", "\r\n") + "\r\n--e1--\r\n"
	out, errs, code := runMain(t, []byte(enc), "process", "-c", cfg, "--direction", "in", "--from", "bob@example.net", "--rcpt", "rt@example.org")
	if code != 0 || !strings.Contains(out, "X-Cryptmilter-Encryption: decrypted") {
		t.Fatalf("process in (encrypted): %d\n%s\n%s", code, out, errs)
	}
	if after := treeHash(t, ks); after != before {
		t.Errorf("the keystore changed after mail carrying a key:\nbefore %s\nafter  %s", before, after)
	}
	// Mail to bob: no key, so signed only.
	out, errs, code = runMain(t, []byte("From: rt@example.org\r\nTo: bob@example.net\r\nSubject: hi\r\n\r\nHello.\r\n"),
		"process", "-c", cfg, "--direction", "out", "--from", "rt@example.org", "--rcpt", "bob@example.net")
	if code != 0 || strings.Contains(out, "multipart/encrypted") || strings.Contains(out, "BEGIN PGP MESSAGE") || !strings.Contains(out, "multipart/signed") {
		t.Fatalf("process out to bob: want signed, not encrypted: %d\n%s\n%s", code, out, errs)
	}
}

// treeHash is a digest of every file under dir: its path, mode and
// contents.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		fmt.Fprintf(h, "%s %v\n", rel, info.Mode())
		if d.Type().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			h.Write(b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", h.Sum(nil))
}
