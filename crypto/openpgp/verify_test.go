package openpgp

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestVerifyCleartextGPG(t *testing.T) {
	f := getFixtures(t)
	text := []byte("Hello,\n- dashed line\nFrom here \nGrüße\t \n\nend\n")
	// What the signature covers: dash-unescaped, CRLF, trailing
	// whitespace removed, no final line break.
	want := []byte("Hello,\r\n- dashed line\r\nFrom here\r\nGrüße\r\n\r\nend")
	block := f.gpg.mustRun(t, text, "--clearsign", "--local-user", f.senderUID)

	info, err := Inspect(block)
	if err != nil || info.Kind != KindCleartextSigned || info.Surrounded || len(info.Signers) != 1 {
		t.Errorf("Inspect = %+v, %v", info, err)
	}
	got, res, err := VerifyCleartext(block, f.senders, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("text (-want +got):\n%s", diff)
	}
	if res.Status != StatusValid || res.KeyFingerprint != f.senderFP {
		t.Errorf("result = %+v, want valid by %s", res, f.senderFP)
	}
	// CRLF transport of the same block still verifies.
	crlf := bytes.ReplaceAll(block, []byte("\n"), []byte("\r\n"))
	if _, res, err := VerifyCleartext(crlf, f.senders, time.Now()); err != nil || res.Status != StatusValid {
		t.Errorf("CRLF block: %+v, %v", res, err)
	}
	// Surrounding text is reported by Inspect.
	if info, _ := Inspect(append([]byte("prefix\n"), block...)); !info.Surrounded {
		t.Error("Inspect did not report text before the block")
	}
	// A changed word is bad.
	tampered := bytes.Replace(block, []byte("Hello"), []byte("Jello"), 1)
	if _, res, err := VerifyCleartext(tampered, f.senders, time.Now()); err != nil || res.Status != StatusBad || res.Reason != "bad-signature" {
		t.Errorf("tampered: %+v, %v; want bad", res, err)
	}
	// Unknown signer.
	if _, res, err := VerifyCleartext(block, KeyRingLookup(nil), time.Now()); err != nil || res.Status != StatusUntrusted {
		t.Errorf("unknown signer: %+v, %v; want untrusted", res, err)
	}
	if _, _, err := VerifyCleartext([]byte("no block here"), f.senders, time.Now()); err != ErrMalformed {
		t.Errorf("no block: %v, want ErrMalformed", err)
	}
}

func TestVerifyInlineGPG(t *testing.T) {
	f := getFixtures(t)
	for _, args := range [][]string{
		{"--sign"},
		{"--sign", "--armor"},
		{"--sign", "--compress-algo", "none"},
		{"--sign", "--textmode", "--armor"},
	} {
		msg := f.gpg.mustRun(t, eightBit, append(args, "--local-user", f.senderUID)...)
		info, err := Inspect(msg)
		if err != nil || info.Kind != KindSigned {
			t.Errorf("%v: Inspect = %+v, %v", args, info, err)
		}
		dir, checkEmpty := spoolDir(t)
		pt, err := VerifyInline(bytes.NewReader(msg), f.senders, time.Now(), Limits{SpoolDir: dir})
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
		got := readAll(t, pt)
		want := eightBit
		if slices.Contains(args, "--textmode") {
			// gpg stores text-mode literal data with CRLF line ends.
			want = []byte("Grüße aus Köln \r\nFrom the gateway\r\n\xe9t\xe9 \x00\xff\r\n-- \r\nend")
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%v: literal = %q, want %q", args, got, want)
		}
		if pt.Signature.Status != StatusValid || pt.Signature.KeyFingerprint != f.senderFP {
			t.Errorf("%v: signature = %+v", args, pt.Signature)
		}
		pt.Close()
		checkEmpty()
	}
	// An encrypted message is not for VerifyInline.
	enc := f.gpg.mustRun(t, eightBit, "--encrypt", "--recipient", f.gatewayUID)
	if _, err := VerifyInline(bytes.NewReader(enc), f.senders, time.Now(), Limits{}); err != ErrMalformed {
		t.Errorf("VerifyInline(encrypted) = %v, want ErrMalformed", err)
	}
	// Tampered literal data: bad signature, data still readable.
	msg := f.gpg.mustRun(t, eightBit, "--sign", "--compress-algo", "none", "--local-user", f.senderUID)
	i := bytes.Index(msg, []byte("Köln"))
	if i < 0 {
		t.Fatal("literal not found")
	}
	msg[i] = 'X'
	pt, err := VerifyInline(bytes.NewReader(msg), f.senders, time.Now(), Limits{})
	if err != nil {
		t.Fatal(err)
	}
	if pt.Signature.Status != StatusBad {
		t.Errorf("tampered inline: %+v, want bad", pt.Signature)
	}
	pt.Close()
}

func TestVerifyDetachedGPG(t *testing.T) {
	f := getFixtures(t)
	crlf := []byte("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nGrüße \r\nFrom me\r\n")
	lf := bytes.ReplaceAll(crlf, []byte("\r\n"), []byte("\n"))
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.WriteFile(data, crlf, 0o600); err != nil {
		t.Fatal(err)
	}
	armored := f.gpg.mustRun(t, nil, "--detach-sign", "--armor", "--local-user", f.senderUID, "--output", "-", data)
	binary := f.gpg.mustRun(t, nil, "--detach-sign", "--local-user", f.senderUID, "--output", "-", data)
	if info, err := Inspect(armored); err != nil || info.Kind != KindSignature {
		t.Errorf("Inspect(armored sig) = %+v, %v", info, err)
	}
	if info, err := Inspect(binary); err != nil || info.Kind != KindSignature {
		t.Errorf("Inspect(binary sig) = %+v, %v", info, err)
	}
	tests := []struct {
		name   string
		data   []byte
		sig    []byte
		lookup KeyLookup
		want   Status
	}{
		{"armored CRLF", crlf, armored, f.senders, StatusValid},
		{"binary CRLF", crlf, binary, f.senders, StatusValid},
		{"armored LF (re-canonicalized)", lf, armored, f.senders, StatusValid},
		{"tampered", bytes.Replace(crlf, []byte("me"), []byte("us"), 1), armored, f.senders, StatusBad},
		{"unknown key", crlf, armored, KeyRingLookup(nil), StatusUntrusted},
		{"garbage signature", crlf, []byte("-----BEGIN PGP SIGNATURE-----\n\nAAAA\n-----END PGP SIGNATURE-----\n"), f.senders, StatusBad},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := VerifyDetached(bytes.NewReader(tc.data), tc.sig, tc.lookup, time.Now())
			if res.Status != tc.want {
				t.Errorf("VerifyDetached = %+v, want %v", res, tc.want)
			}
			if tc.want == StatusValid && (res.KeyFingerprint != f.senderFP || res.Reason != "" || len(res.SignerAddresses) != 1) {
				t.Errorf("VerifyDetached = %+v", res)
			}
		})
	}
}

func TestSanitizeAddress(t *testing.T) {
	tests := []struct {
		in, want string
		ok       bool
	}{
		{"alice@openpgp.example", "alice@openpgp.example", true},
		{"Bob@Example.ORG", "Bob@example.org", true},
		{"Alice <alice@example.org>", "", false},
		{"a\r\nBcc: x@y@example.org", "", false},
		{"a@b\x00c", "", false},
		{"no-at-sign", "", false},
		{"x@", "", false},
		{"", "", false},
		{"\"quoted local\"@example.org", "", false},
	}
	for _, tc := range tests {
		got, ok := SanitizeAddress(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("SanitizeAddress(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestSanitizeFilename(t *testing.T) {
	tests := map[string]string{
		"report.pdf":            "report.pdf",
		"../../etc/passwd":      "passwd",
		`C:\x\evil.exe`:         "evil.exe",
		"a\r\nb\x00c\u202e.txt": "abc.txt",
		"_CONSOLE":              "",
		"..":                    "",
	}
	for in, want := range tests {
		if got := sanitizeFilename(in); got != want {
			t.Errorf("sanitizeFilename(%q) = %q, want %q", in, got, want)
		}
	}
}
