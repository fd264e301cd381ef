package smime

import (
	"bytes"
	"crypto/x509"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"golang.org/x/crypto/cryptobyte"
	casn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// opensslSign signs content with `openssl cms -sign`, DER output.
func opensslSign(t testing.TB, content []byte, opaque bool, args []string, signers ...*testCert) []byte {
	t.Helper()
	a := []string{"cms", "-sign", "-binary", "-outform", "DER"}
	if opaque {
		a = append(a, "-nodetach")
	}
	var keyopts []string
	for i := 0; i < len(args); i++ {
		if args[i] == "-keyopt" {
			keyopts = append(keyopts, args[i], args[i+1])
			i++
			continue
		}
		a = append(a, args[i])
	}
	for _, s := range signers {
		a = append(a, "-signer", s.certFile, "-inkey", s.keyFile)
		a = append(a, keyopts...)
	}
	return openssl(t, content, a...)
}

// verdict is the comparable part of a SignerResult.
type verdict struct {
	Status    Status
	Reason    string
	Addresses []string
	Serial    string
	Digest    string
}

func verdicts(rs []SignerResult) []verdict {
	out := []verdict{}
	for _, r := range rs {
		out = append(out, verdict{r.Status, r.Reason, r.Addresses, r.Serial, r.Digest})
	}
	return out
}

func TestVerifyOpenSSL(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	inter := []string{"-certfile", p.inter.certFile}
	serial := func(c *testCert) string { return formatSerial(c.cert.SerialNumber) }
	ok := func(c *testCert, digest string) verdict {
		return verdict{Valid, "", AddressesOf(c.cert), serial(c), digest}
	}
	tests := []struct {
		name    string
		opaque  bool
		args    []string
		signers []*testCert
		opts    VerifyOptions
		mutate  func([]byte) []byte // applied to the DER
		content []byte              // detached content given to Verify, default testContent
		want    []verdict
	}{
		{name: "opaque-sha256", opaque: true, args: inter, signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "opaque-stream-ber", opaque: true, args: append([]string{"-stream"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "detached-sha256", args: inter, signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "detached-sha384", args: append([]string{"-md", "sha384"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha384")}},
		{name: "detached-sha512", args: append([]string{"-md", "sha512"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha512")}},
		{name: "sha1-weak", args: append([]string{"-md", "sha1"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{{Weak, "weak-digest", []string{"alice@example.org"}, serial(p.alice), "sha1"}}},
		{name: "sha1-allowed", args: append([]string{"-md", "sha1"}, inter...), signers: []*testCert{p.alice},
			opts: VerifyOptions{AllowSHA1: true}, want: []verdict{ok(p.alice, "sha1")}},
		{name: "md5-weak-even-allowed", args: append([]string{"-md", "md5"}, inter...), signers: []*testCert{p.alice},
			opts: VerifyOptions{AllowSHA1: true},
			want: []verdict{{Weak, "weak-digest", []string{"alice@example.org"}, serial(p.alice), "md5"}}},
		{name: "rsa-pss", args: append([]string{"-keyopt", "rsa_padding_mode:pss"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "rsa-pss-opaque-sha512", opaque: true, args: append([]string{"-md", "sha512", "-keyopt", "rsa_padding_mode:pss", "-keyopt", "rsa_pss_saltlen:32"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha512")}},
		{name: "signer-by-keyid", args: append([]string{"-keyid"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "ecdsa", signers: []*testCert{p.ecUser}, want: []verdict{ok(p.ecUser, "sha256")}},
		{name: "ecdsa-sha384-opaque", opaque: true, args: []string{"-md", "sha384"}, signers: []*testCert{p.ecUser}, want: []verdict{ok(p.ecUser, "sha384")}},
		{name: "rsa3072", signers: []*testCert{p.rsa3072}, want: []verdict{ok(p.rsa3072, "sha256")}},
		{name: "subject-email-only", args: inter, signers: []*testCert{p.subjOnly},
			want: []verdict{{Valid, "", []string{"carol@example.org"}, serial(p.subjOnly), "sha256"}}},
		{name: "no-signed-attrs", opaque: true, args: append([]string{"-noattr"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "tampered-content", args: inter, signers: []*testCert{p.alice}, content: flipAt(testContent, 5),
			want: []verdict{{Bad, "digest-mismatch", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "tampered-opaque-content-no-attrs", opaque: true, args: append([]string{"-noattr"}, inter...), signers: []*testCert{p.alice},
			mutate: func(b []byte) []byte { return flipAfterLast(t, b, []byte("Hello from"), 0) },
			want:   []verdict{{Bad, "bad-signature", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "tampered-signature", args: inter, signers: []*testCert{p.alice},
			mutate: func(b []byte) []byte { return flipAfterLast(t, b, []byte{0x04, 0x82, 0x01, 0x00}, 17) },
			want:   []verdict{{Bad, "bad-signature", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "content-type-mismatch", opaque: true, args: inter, signers: []*testCert{p.alice},
			// eContentType id-data -> id-digestedData; the content-type
			// attribute (signed, unchanged) still says id-data.
			mutate: func(b []byte) []byte {
				oid := []byte{0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x01}
				i := bytes.Index(b, oid)
				out := append([]byte(nil), b...)
				out[i+len(oid)-1] = 0x05
				return out
			},
			want: []verdict{{Bad, "content-type-mismatch", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "missing-intermediate", signers: []*testCert{p.alice},
			want: []verdict{{Untrusted, "no-chain", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "self-signed", signers: []*testCert{p.selfSign},
			want: []verdict{{Untrusted, "no-chain", []string{"self@example.org"}, serial(p.selfSign), "sha256"}}},
		{name: "untrusted-issuer", signers: []*testCert{p.rogue}, args: []string{"-certfile", p.otherRoot.certFile},
			want: []verdict{{Untrusted, "no-chain", []string{"rogue@example.org"}, serial(p.rogue), "sha256"}}},
		{name: "no-roots", args: inter, signers: []*testCert{p.alice}, opts: VerifyOptions{Roots: nil},
			want: []verdict{{Untrusted, "no-chain", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "expired", signers: []*testCert{p.expired},
			want: []verdict{{Expired, "expired", []string{"old@example.org"}, serial(p.expired), "sha256"}}},
		{name: "checked-at-now-not-signing-time", args: inter, signers: []*testCert{p.alice},
			opts: VerifyOptions{Now: time.Now().Add(48 * time.Hour)},
			want: []verdict{{Expired, "expired", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "not-yet-valid", args: inter, signers: []*testCert{p.alice},
			opts: VerifyOptions{Now: time.Now().Add(-48 * time.Hour)},
			want: []verdict{{Expired, "not-yet-valid", []string{"alice@example.org"}, serial(p.alice), "sha256"}}},
		{name: "revoked", signers: []*testCert{p.revoked}, opts: VerifyOptions{CRLs: []*x509.RevocationList{p.crl}},
			want: []verdict{{Revoked, "revoked", []string{"rev@example.org"}, serial(p.revoked), "sha256"}}},
		{name: "revoked-without-crl", signers: []*testCert{p.revoked},
			want: []verdict{ok(p.revoked, "sha256")}},
		{name: "forged-crl-ignored", args: inter, signers: []*testCert{p.alice}, opts: VerifyOptions{CRLs: []*x509.RevocationList{p.bogusCRL}},
			want: []verdict{ok(p.alice, "sha256")}},
		{name: "eku-server-only", signers: []*testCert{p.serverEKU},
			want: []verdict{{Untrusted, "eku", []string{"srv@example.org"}, serial(p.serverEKU), "sha256"}}},
		{name: "keyusage-encipher-only", signers: []*testCert{p.encOnlyKU},
			want: []verdict{{Untrusted, "key-usage", []string{"enc@example.org"}, serial(p.encOnlyKU), "sha256"}}},
		{name: "no-cert-in-message", args: append([]string{"-nocerts"}, inter...), signers: []*testCert{p.alice},
			want: []verdict{{Untrusted, "no-cert", nil, serial(p.alice), "sha256"}}},
		{name: "two-signers-one-untrusted", args: inter, signers: []*testCert{p.alice, p.selfSign},
			want: []verdict{ok(p.alice, "sha256"), {Untrusted, "no-chain", []string{"self@example.org"}, serial(p.selfSign), "sha256"}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			der := opensslSign(t, testContent, tc.opaque, tc.args, tc.signers...)
			if tc.mutate != nil {
				der = tc.mutate(der)
			}
			opts := tc.opts
			if opts.Roots == nil && tc.name != "no-roots" {
				opts.Roots = p.roots
			}
			var detached []byte
			if !tc.opaque {
				detached = testContent
				if tc.content != nil {
					detached = tc.content
				}
			}
			content, signers, err := Verify(der, detached, opts)
			if err != nil {
				t.Fatalf("Verify: %v", err)
			}
			if tc.opaque && tc.mutate == nil && !bytes.Equal(content, testContent) {
				t.Errorf("content = %q, want %q", content, testContent)
			}
			bySerial := cmpopts.SortSlices(func(a, b verdict) bool { return a.Serial < b.Serial })
			if diff := cmp.Diff(tc.want, verdicts(signers), bySerial); diff != "" {
				t.Errorf("verdicts (-want +got):\n%s", diff)
			}
			for _, s := range signers {
				if s.Status != Valid {
					continue
				}
				if s.SigningTime.IsZero() && tc.name != "no-signed-attrs" {
					t.Errorf("signing time missing")
				}
			}
		})
	}
}

// TestVerifyMultipleSignersOneBad: two signers, the signature of one is
// damaged; each is judged on its own.
func TestVerifyMultipleSignersOneBad(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	der := opensslSign(t, testContent, false, []string{"-certfile", p.inter.certFile}, p.alice, p.ecUser)
	// The ECDSA signature is the short OCTET STRING; the RSA one is
	// 04 82 01 00. Damage the RSA signature.
	der = flipAfterLast(t, der, []byte{0x04, 0x82, 0x01, 0x00}, 40)
	_, signers, err := Verify(der, testContent, VerifyOptions{Roots: p.roots})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]Status{}
	for _, s := range signers {
		got[s.Serial] = s.Status
	}
	want := map[string]Status{
		formatSerial(p.alice.cert.SerialNumber):  Bad,
		formatSerial(p.ecUser.cert.SerialNumber): Valid,
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("statuses by serial (-want +got):\n%s", diff)
	}
}

// TestVerifyZeroSigners: a SignedData without signerInfos is unsigned.
func TestVerifyZeroSigners(t *testing.T) {
	p := testPKI(t)
	var b cryptobyte.Builder
	b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oidSignedData)
		b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1Int64(1)
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {})
				b.AddASN1(casn1.SEQUENCE, func(b *cryptobyte.Builder) {
					b.AddASN1ObjectIdentifier(oidData)
					b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
						b.AddASN1OctetString(testContent)
					})
				})
				b.AddASN1(casn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
					b.AddBytes(p.alice.cert.Raw)
				})
				b.AddASN1(casn1.SET, func(b *cryptobyte.Builder) {})
			})
		})
	})
	der := b.BytesOrPanic()
	content, signers, err := Verify(der, nil, VerifyOptions{Roots: p.roots})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(content, testContent) || len(signers) != 0 {
		t.Errorf("got content %q and %d signers, want the content and none", content, len(signers))
	}
}

// TestVerifyCertsOnly: openssl's certs-only SignedData (no content, no
// signers), as a degenerate detached signature.
func TestVerifyCertsOnly(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	der := openssl(t, nil, "crl2pkcs7", "-nocrl", "-certfile", p.alice.certFile, "-outform", "DER")
	if _, _, err := Verify(der, nil, VerifyOptions{Roots: p.roots}); !errors.Is(err, ErrNoContent) {
		t.Errorf("opaque verify of certs-only: err = %v, want ErrNoContent", err)
	}
	_, signers, err := Verify(der, testContent, VerifyOptions{Roots: p.roots})
	if err != nil || len(signers) != 0 {
		t.Errorf("detached verify of certs-only: %d signers, err %v; want 0, nil", len(signers), err)
	}
}

func TestVerifyErrors(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	opaque := opensslSign(t, testContent, true, nil, p.alice)
	detached := opensslSign(t, testContent, false, nil, p.alice)
	env := opensslEncrypt(t, testContent, []string{"-aes256"}, p.alice.certFile)
	tests := []struct {
		name     string
		der      []byte
		detached []byte
		want     error
	}{
		{"garbage", []byte("garbage"), nil, ErrMalformed},
		{"enveloped", env, nil, ErrMalformed},
		{"opaque-plus-detached", opaque, testContent, ErrNoContent},
		{"detached-without-content", detached, nil, ErrNoContent},
		{"truncated", opaque[:len(opaque)-3], nil, ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, _, err := Verify(tc.der, tc.detached, VerifyOptions{Roots: p.roots}); !errors.Is(err, tc.want) {
				t.Errorf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestStatusString(t *testing.T) {
	want := map[Status]string{Valid: "valid", Bad: "bad", Untrusted: "untrusted", Expired: "expired", Revoked: "revoked", Weak: "weak"}
	for s, w := range want {
		if s.String() != w {
			t.Errorf("%d.String() = %q, want %q", int(s), s.String(), w)
		}
	}
}

// TestVerifyPSSIsPSS makes sure openssl's -keyopt rsa_padding_mode:pss
// produced an RSASSA-PSS signerInfo, so the table test covers PSS.
func TestVerifyPSSIsPSS(t *testing.T) {
	needOpenSSL(t)
	p := testPKI(t)
	der := opensslSign(t, testContent, false, []string{"-keyopt", "rsa_padding_mode:pss"}, p.alice)
	sd, err := readSignedData(bytes.NewReader(der), &presence{})
	if err != nil || len(sd.signers) != 1 {
		t.Fatalf("parse failed: %v", err)
	}
	if !sd.signers[0].sigAlg.oid.Equal(oidRSASSAPSS) {
		t.Errorf("signature algorithm %v, want RSASSA-PSS", sd.signers[0].sigAlg.oid)
	}
	if sd.signers[0].id.ski != nil {
		t.Errorf("signer named by key identifier, want issuer and serial")
	}
	der = opensslSign(t, testContent, false, []string{"-keyid"}, p.alice)
	if sd, err = readSignedData(bytes.NewReader(der), &presence{}); err != nil || sd.signers[0].id.ski == nil {
		t.Errorf("-keyid: signer not named by key identifier")
	}
}
