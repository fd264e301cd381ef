package crypto

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// inCorpusKeystore builds a keystore in a temp directory from files of the
// corpus (secret keys make gateway identities) and returns its snapshot.
func inCorpusKeystore(t *testing.T, dir string, files []string, ca []string, pass []byte) *keystore.Snapshot {
	t.Helper()
	opts := keystore.Options{Dir: t.TempDir()}
	now := time.Now()
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keystore.Import(opts, data, f, false, pass, now); err != nil {
			t.Fatalf("import %s: %v", f, err)
		}
	}
	for _, f := range ca {
		data, err := os.ReadFile(filepath.Join(dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := keystore.Import(opts, data, f, true, nil, now); err != nil {
			t.Fatalf("import CA %s: %v", f, err)
		}
	}
	snap, err := keystore.Load(opts)
	if err != nil {
		t.Fatal(err)
	}
	if p := snap.Problems(); len(p) > 0 {
		t.Fatalf("keystore problems: %v", p)
	}
	return snap
}

// TestCorpusOpenPGP proves that every Thunderbird OpenPGP message of the
// corpus gets the verdict its README table states: exact result headers,
// decrypted text (non-ASCII intact, read back by go-message), protected
// headers restored, and the partial message left byte for byte.
func TestCorpusOpenPGP(t *testing.T) {
	dir := inCorpus(t, "openpgp")
	keys := filepath.Join(dir, "keys")
	const (
		aliceFpr = "EB85BB5FA33A75E15E944E63F231550C4F47E38E"
		bobFpr   = "D1A66E1A23B182C9980F788CFBFCC82A015E7330"
	)
	gw := map[string]*keystore.Snapshot{
		"alice": inCorpusKeystore(t, keys, []string{
			"alice@openpgp.example-0xf231550c4f47e38e-secret.asc",
			"bob@openpgp.example-0xfbfcc82a015e7330-pub.asc"}, nil, nil),
		"bob": inCorpusKeystore(t, keys, []string{
			"bob@openpgp.example-0xfbfcc82a015e7330-secret.asc",
			"alice@openpgp.example-0xf231550c4f47e38e-pub.asc"}, nil, nil),
	}
	tests := []struct {
		file, gateway string
		enc, sig      string
		text          string // expected in the delivered text/plain, when decrypted
		unchanged     bool   // body byte for byte as received
		subject       string // Subject after the engine ("" = as received)
	}{
		{file: "encrypted-and-signed-alice-to-bob-nonascii.eml", gateway: "bob",
			enc:  "decrypted; protocol=openpgp; key=" + bobFpr,
			sig:  "valid; protocol=openpgp; signer=alice@openpgp.example; key=" + aliceFpr,
			text: "Detta är krypterat!", subject: "=?UTF-8?B?UmU6IGtvZCBibMOl?="},
		{file: "signed-by-0xfbfcc82a015e7330-encrypted-to-0xf231550c4f47e38e.eml", gateway: "alice",
			enc:  "decrypted; protocol=openpgp; key=" + aliceFpr,
			sig:  "valid; protocol=openpgp; signer=bob@openpgp.example; key=" + bobFpr,
			text: "Sundays are nothing without callaloo."},
		{file: "unsigned-encrypted-to-0xf231550c4f47e38e-from-0xfbfcc82a015e7330.eml", gateway: "alice",
			enc:  "decrypted; protocol=openpgp; key=" + aliceFpr,
			sig:  "none",
			text: "Sundays are nothing without callaloo."},
		{file: "encrypted-to-alice-as-hidden-recipient.eml", gateway: "alice",
			enc:  "decrypted; protocol=openpgp; key=" + aliceFpr,
			sig:  "none",
			text: "hidden recipient encryption"},
		{file: "signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted.eml", gateway: "alice",
			enc: "none", sig: "valid; protocol=openpgp; signer=bob@openpgp.example; key=" + bobFpr, unchanged: true},
		{file: "signed-by-0xfbfcc82a015e7330-to-0xf231550c4f47e38e-unencrypted.eml", gateway: "bob",
			enc: "none", sig: "valid; protocol=openpgp; signer=bob@openpgp.example; key=" + bobFpr, unchanged: true},
		{file: "bob-to-alice-signed-damaged-signature.eml", gateway: "alice",
			enc: "none", sig: "bad; protocol=openpgp; signer=bob@openpgp.example; key=" + bobFpr + "; reason=bad-signature", unchanged: true},
		// Thunderbird's cleartext signature under format=flowed: shown
		// without format=flowed (trailing spaces are not signed, and
		// would reflow the signed lines).
		{file: "alice-signed.eml", gateway: "bob",
			enc: "none", sig: "valid; protocol=openpgp; signer=alice@openpgp.example; key=" + aliceFpr, text: "can we meet tomorrow?"},
		{file: "inline-signed-utf8.eml", gateway: "alice",
			enc: "none", sig: "untrusted; protocol=openpgp; key=0E27928F241B4D20; reason=unknown-key", unchanged: true},
		{file: "partial-encrypt-for-alice-plaintext.eml", gateway: "alice",
			enc: "partial; protocol=openpgp; reason=embedded-armor", sig: "none", unchanged: true},
	}
	for _, tt := range tests {
		t.Run(tt.gateway+"/"+strings.TrimSuffix(tt.file, ".eml"), func(t *testing.T) {
			msg, err := os.ReadFile(filepath.Join(dir, "eml", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			r := inProcess(t, inEngine(t, nil), gw[tt.gateway], msg, time.Time{})
			if r.plan.Action != Accept {
				t.Fatalf("action %s %q, want accept", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tt.enc, tt.sig)
			inHeaderSafe(t, r.header)
			if tt.unchanged {
				inUnchanged(t, r)
			}
			if tt.text != "" {
				if r.plan.Body == nil {
					t.Fatal("body not replaced")
				}
				if bytes.Contains(r.body, []byte("-----BEGIN PGP MESSAGE-----")) {
					t.Error("delivered body still holds the ciphertext")
				}
				if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, tt.text) {
					t.Errorf("delivered text %q does not contain %q", got, tt.text)
				}
			}
			if tt.subject != "" {
				if got := r.header.Values("Subject"); len(got) != 1 || got[0] != tt.subject {
					t.Errorf("Subject = %q, want the protected %q", got, tt.subject)
				}
			}
			if r.header.Has("Authentication-Results") {
				t.Errorf("OpenPGP verdict with an Authentication-Results header: %q", r.header.Get("Authentication-Results"))
			}
		})
	}
}

// TestCorpusSMIME proves the same for the NSS-made S/MIME messages of the
// corpus with Bob as the gateway and TestCA as trust anchor, including the
// RFC 7281 Authentication-Results header and the address taken from the
// subject's emailAddress (the certificates have no SAN).
func TestCorpusSMIME(t *testing.T) {
	dir := inCorpus(t, "smime")
	snap := inCorpusKeystore(t, dir, []string{"Bob.p12"}, []string{"TestCA.pem"}, []byte("nss"))
	const (
		issuer = `"CN=NSS Test CA (RSA),O=BOGUS NSS,L=Mountain View,ST=California,C=US"`
		ident  = " body.smime-identifier=Alice@example.com body.smime-issuer=" + issuer + " body.smime-serial=1E"
		enc    = "decrypted; protocol=smime; key=28"
		// CBC without a signature inside: the ciphertext could have been
		// altered in transit (the README explains integrity=none).
		cbc = enc + "; integrity=none"
		// Encrypt-then-sign: the signature covers the ciphertext, so
		// the content is unsigned and the signature is reported as the
		// outer one (the corpus README: "report honestly that the
		// signature covers the ciphertext").
		outer = "none; reason=covers-ciphertext; outer=valid; outer-protocol=smime; outer-signer=Alice@example.com; outer-key=1E"
		valid = "valid; protocol=smime; signer=Alice@example.com; key=1E"
		text  = "This is a test message from Alice to Bob."
	)
	tests := []struct {
		file      string
		enc, sig  string
		ar        string // Authentication-Results ("" = none)
		text      string
		unchanged bool
	}{
		{file: "alice.env.eml", enc: cbc, sig: "none", text: text},
		{file: "alice.dsig.SHA256.multipart.eml", enc: "none", sig: valid,
			ar: inHost + "; smime=pass" + ident, unchanged: true, text: text},
		{file: "alice.dsig.SHA256.multipart.bad.eml", enc: "none",
			sig: "bad; protocol=smime; signer=Alice@example.com; key=1E; reason=digest-mismatch",
			ar:  inHost + "; smime=fail reason=digest-mismatch" + ident, unchanged: true},
		{file: "alice.sig.SHA256.opaque.eml", enc: "none", sig: valid,
			ar: inHost + "; smime=pass" + ident, text: text},
		{file: "alice.dsig.SHA256.multipart.env.eml", enc: enc, sig: valid,
			ar: inHost + "; smime=pass" + ident, text: text},
		{file: "alice.env.dsig.SHA256.multipart.eml", enc: cbc, sig: outer, text: text},
		{file: "alice.env.sig.SHA256.opaque.eml", enc: cbc, sig: outer, text: text},
	}
	for _, tt := range tests {
		t.Run(strings.TrimSuffix(tt.file, ".eml"), func(t *testing.T) {
			msg, err := os.ReadFile(filepath.Join(dir, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			// A forged verdict under our authserv-id must go; another
			// host's must stay.
			forged := []byte("Authentication-Results: " + inHost + "; smime=pass body.smime-identifier=Alice@example.com\r\n" +
				"Authentication-Results: other.example; spf=pass smtp.mailfrom=example.com\r\n")
			r := inProcess(t, inEngine(t, nil), snap, append(forged, msg...), time.Time{})
			if r.plan.Action != Accept {
				t.Fatalf("action %s %q, want accept", r.plan.Action, r.plan.Reply)
			}
			inWant(t, r, tt.enc, tt.sig)
			inHeaderSafe(t, r.header)
			var ours, others []string
			for _, v := range r.header.Values("Authentication-Results") {
				if id, _ := verdict.AuthservID(v); id == inHost {
					ours = append(ours, v)
				} else {
					others = append(others, v)
				}
			}
			if tt.ar == "" && len(ours) != 0 || tt.ar != "" && (len(ours) != 1 || ours[0] != tt.ar) {
				t.Errorf("our Authentication-Results = %q, want %q", ours, tt.ar)
			}
			if len(others) != 1 || !strings.HasPrefix(others[0], "other.example;") {
				t.Errorf("other hosts' Authentication-Results = %q, want kept", others)
			}
			if tt.unchanged {
				inUnchanged(t, r)
			} else if r.plan.Body == nil {
				t.Error("body not replaced")
			}
			if tt.text != "" {
				if got := inText(t, r.raw(), "text/plain"); !strings.Contains(got, tt.text) {
					t.Errorf("delivered text %q does not contain %q", got, tt.text)
				}
				for _, l := range inLeaves(t, r.raw()) {
					if strings.Contains(l.mediaType, "pkcs7-mime") {
						t.Errorf("delivered message still holds %s", l.mediaType)
					}
				}
			}
		})
	}
}
