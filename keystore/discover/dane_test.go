package discover

import (
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

func TestDANE(t *testing.T) {
	e := newEnv(t, nil)
	pgp, fpr := pgpKey(t, "dana@example.com", nil)
	cert := smimeCert(t, "dana@example.com", x509.KeyUsageKeyEncipherment|x509.KeyUsageDigitalSignature, nil, nil)
	e.dns.OPENPGPKEY("dana@example.com", pgp, true)
	e.dns.SMIMEA("dana@example.com", usageDANEEE, cert.Raw, true)
	a := e.lookup(t, "dana@example.com", "dane", time.Now())
	if a.Status != Found || a.OpenPGP == nil || a.OpenPGP.Fingerprint != fpr || a.SMIME == nil || !a.SMIME.Cert.Equal(cert) || a.SMIME.Usage != usageDANEEE {
		t.Fatalf("answer %+v", a)
	}
	if !strings.Contains(a.From, "_openpgpkey.example.com OPENPGPKEY") || !strings.Contains(a.From, "_smimecert.example.com SMIMEA") {
		t.Errorf("from %q", a.From)
	}
	// Both come back from the cache, checked again.
	b := e.lookup(t, "dana@example.com", "dane", time.Now())
	if !b.Cached || b.OpenPGP.Fingerprint != fpr || !b.SMIME.Cert.Equal(cert) {
		t.Errorf("cached %+v", b)
	}
}

func TestDANEAnswers(t *testing.T) {
	e := newEnv(t, nil)
	good, _ := pgpKey(t, "olga@example.com", nil)
	other, _ := pgpKey(t, "mallory@example.com", nil)
	cert := smimeCert(t, "sam@example.com", x509.KeyUsageKeyEncipherment, nil, nil)
	noEnc := smimeCert(t, "sue@example.com", x509.KeyUsageDigitalSignature, nil, nil)

	e.dns.OPENPGPKEY("olga@example.com", good, false) // not validated
	e.dns.OPENPGPKEY("otto@example.com", other, true) // wrong user ID
	e.dns.SMIMEA("sam@example.com", usageDANETA, cert.Raw, true)
	e.dns.SMIMEARecord("sid@example.com", usageDANEEE, 1, 1, strings.Repeat("ab", 32), true) // SPKI hash
	e.dns.SMIMEA("sue@example.com", usageDANEEE, noEnc.Raw, true)
	pia := smimeCert(t, "pia@example.com", x509.KeyUsageKeyEncipherment, nil, nil)
	e.dns.SMIMEA("pia@example.com", usagePKIXEE, pia.Raw, true) // no anchors configured
	e.dns.ServFail("sven@example.com")
	tests := []struct {
		addr   string
		status Status
		reason string
	}{
		{"olga@example.com", Insecure, "OPENPGPKEY: not DNSSEC-validated"},
		{"otto@example.com", Unusable, "has no user ID for otto@example.com"},
		{"sam@example.com", Unusable, "usage 2 names a trust anchor"},
		{"sid@example.com", Unusable, "selector 1, matching type 1: no whole certificate"},
		{"sue@example.com", Unusable, "key usage does not allow key encipherment"},
		{"pia@example.com", Unusable, "no trust anchors"},
		{"sven@example.com", Temporary, "SERVFAIL"},
		{"nobody@example.com", NotFound, ""},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := e.lookup(t, tt.addr, "dane", time.Now())
			if a.Status != tt.status || !strings.Contains(a.Reason, tt.reason) || a.OpenPGP != nil || a.SMIME != nil {
				t.Fatalf("answer %+v, want %s with %q", a, tt.status, tt.reason)
			}
		})
	}
}

// TestDANEPKIX: a PKIX-EE certificate counts when it chains to a
// keystore trust anchor.
func TestDANEPKIX(t *testing.T) {
	caCert, caKey := issueCA(t, "Test CA")
	otherCA, _ := issueCA(t, "Other CA")
	leaf := smimeCert(t, "pia@example.com", x509.KeyUsageKeyEncipherment, caCert, caKey)
	e := newEnv(t, func(o *Options) {
		o.Anchors = func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(caCert); return p }
	})
	e.dns.SMIMEA("pia@example.com", usagePKIXEE, leaf.Raw, true)
	if a := e.lookup(t, "pia@example.com", "dane", time.Now()); a.Status != Found || !a.SMIME.Cert.Equal(leaf) {
		t.Fatalf("answer %+v", a)
	}
	// Against other anchors it is refused.
	e.opts.Anchors = func() *x509.CertPool { p := x509.NewCertPool(); p.AddCert(otherCA); return p }
	e.restart()
	if a := e.d.Discover(t.Context(), "pia@example.com", []string{"dane"}, time.Now())[0]; a.Status != Unusable || !strings.Contains(a.Reason, "does not chain") {
		t.Fatalf("answer %+v", a)
	}
}

// TestDANENotLoopback: an AD bit from a resolver elsewhere means nothing.
func TestDANENotLoopback(t *testing.T) {
	e := newEnv(t, nil)
	e.opts.Resolver = "192.0.2.53:53"
	e.restart()
	a := e.lookup(t, "dana@example.com", "dane", time.Now())
	if a.Status != Insecure || !strings.Contains(a.Reason, "not on loopback") {
		t.Fatalf("answer %+v", a)
	}
}

// TestDANETruncated: an answer too large for UDP comes again over TCP.
func TestDANETruncated(t *testing.T) {
	e := newEnv(t, nil)
	var rrs []dns.RR
	var want string
	name := DANEName("tom", labelOpenPGPKey, "example.com")
	for i := range 5 {
		addr := "other@example.com"
		if i == 4 {
			addr = "tom@example.com"
		}
		k, fpr := pgpKey(t, addr, nil)
		if i == 4 {
			want = fpr
		}
		rrs = append(rrs, &dns.OPENPGPKEY{Hdr: dns.RR_Header{Name: name, Rrtype: dns.TypeOPENPGPKEY, Class: dns.ClassINET, Ttl: 60},
			PublicKey: b64(k)})
	}
	e.dns.Set(name, dns.TypeOPENPGPKEY, dnsEntry(rrs, true))
	a := e.lookup(t, "tom@example.com", "dane", time.Now())
	if a.Status != Found || a.OpenPGP.Fingerprint != want {
		t.Fatalf("answer %+v", a)
	}
	n := 0
	for _, q := range e.dns.Queries() {
		if strings.HasPrefix(q, name) {
			n++
		}
	}
	if n != 2 {
		t.Errorf("%d queries for the OPENPGPKEY name, want 2 (UDP, then TCP)", n)
	}
}

// TestDANESlow: a resolver slower than the timeout is a temporary failure.
func TestDANESlow(t *testing.T) {
	e := newEnv(t, nil)
	e.dns.Slow("dan@example.com", 2*time.Second)
	e.opts.Timeout = config.Duration(200 * time.Millisecond)
	e.restart()
	start := time.Now()
	a := e.lookup(t, "dan@example.com", "dane", time.Now())
	if time.Since(start) > 3*time.Second || a.Status != Temporary {
		t.Fatalf("answer %+v after %v", a, time.Since(start))
	}
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

func dnsEntry(rrs []dns.RR, ad bool) discovertest.Entry { return discovertest.Entry{RRs: rrs, AD: ad} }
