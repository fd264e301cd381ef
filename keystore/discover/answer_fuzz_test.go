package discover

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// fuzzAddr is the address the fuzzed DNS answers are for.
const fuzzAddr = "alice@example.net"

// FuzzDANEAnswer reads arbitrary DNS responses (wire format, as the
// resolver sends them) the way dane does: the answer section, CNAMEs
// followed, then OPENPGPKEY and SMIMEA records checked for the address.
// A key comes out only with its material and for the address asked; a
// PKIX-EE certificate never without a trust anchor; and it is quick.
func FuzzDANEAnswer(f *testing.F) {
	key, _ := pgpKey(f, fuzzAddr, nil)
	cert := smimeCert(f, fuzzAddr, x509.KeyUsageKeyEncipherment|x509.KeyUsageDigitalSignature, nil, nil)
	local, domain, err := splitAddress(fuzzAddr)
	if err != nil {
		f.Fatal(err)
	}
	pgpName := DANEName(local, labelOpenPGPKey, domain)
	smimeName := DANEName(local, labelSMIMECert, domain)
	hdr := func(name string, t uint16) dns.RR_Header {
		return dns.RR_Header{Name: name, Rrtype: t, Class: dns.ClassINET, Ttl: 300}
	}
	for _, rrs := range [][]dns.RR{
		{&dns.OPENPGPKEY{Hdr: hdr(pgpName, dns.TypeOPENPGPKEY), PublicKey: base64.StdEncoding.EncodeToString(key)}},
		{&dns.CNAME{Hdr: hdr(pgpName, dns.TypeCNAME), Target: "k.example.net."},
			&dns.OPENPGPKEY{Hdr: hdr("k.example.net.", dns.TypeOPENPGPKEY), PublicKey: base64.StdEncoding.EncodeToString(key)}},
		{&dns.SMIMEA{Hdr: hdr(smimeName, dns.TypeSMIMEA), Usage: usageDANEEE, Certificate: hex.EncodeToString(cert.Raw)}},
		{&dns.SMIMEA{Hdr: hdr(smimeName, dns.TypeSMIMEA), Usage: usagePKIXEE, Certificate: hex.EncodeToString(cert.Raw)},
			&dns.SMIMEA{Hdr: hdr(smimeName, dns.TypeSMIMEA), Usage: usageDANETA, Selector: 1, MatchingType: 1, Certificate: "00"}},
		{&dns.CNAME{Hdr: hdr(smimeName, dns.TypeCNAME), Target: smimeName}},
	} {
		m := new(dns.Msg)
		m.SetQuestion(rrs[0].Header().Name, rrs[len(rrs)-1].Header().Rrtype)
		m.Response, m.AuthenticatedData = true, true
		m.Answer = rrs
		if wire, err := m.Pack(); err == nil {
			f.Add(wire)
		}
	}
	d := New(Options{})
	now := time.Now()
	f.Fuzz(func(t *testing.T, wire []byte) {
		var m dns.Msg
		if err := m.Unpack(wire); err != nil {
			return
		}
		start := time.Now()
		if k, why := d.openpgpkey(follow(m.Answer, pgpName, dns.TypeOPENPGPKEY), fuzzAddr, now); k != nil {
			if k.OpenPGP == nil || k.Fingerprint == "" || why != "" {
				t.Fatalf("OPENPGPKEY key without material: %+v, %q", k, why)
			}
			if !hasUserID(k.OpenPGP.GetEntity().Identities, fuzzAddr) {
				t.Fatalf("OPENPGPKEY key %s is not for %s", k.Fingerprint, fuzzAddr)
			}
		}
		if k, why := d.smimea(follow(m.Answer, smimeName, dns.TypeSMIMEA), fuzzAddr, now); k != nil {
			if k.Cert == nil || why != "" {
				t.Fatalf("SMIMEA certificate without material: %+v, %q", k, why)
			}
			if k.Usage != usageDANEEE {
				t.Fatalf("SMIMEA usage %d accepted without trust anchors", k.Usage)
			}
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Errorf("the answer took %v", el)
		}
	})
}

func hasUserID[T any](ids map[string]T, addr string) bool {
	for name := range ids {
		if strings.Contains(strings.ToLower(name), strings.ToLower(addr)) {
			return true
		}
	}
	return false
}

// FuzzAddress: any recipient address either is refused or gives lookup
// names that stay on its domain: the WKD URLs' host is the domain (or
// openpgpkey. and the domain) with nothing an address could smuggle into
// the path, query or host, and the DANE names are valid DNS names under
// the domain.
func FuzzAddress(f *testing.F) {
	for _, s := range []string{
		"alice@example.net", "<Alice@Example.NET.>", "\"a b\"@example.net", "a@b@example.net",
		"a@xn--bcher-kva.example", "a@bücher.example", "a@[127.0.0.1]", "a@example.net/evil", "a@evil.example#@example.net",
		"a@example.net:8080", "a%2F@example.net", "a?l=x@example.net", "@example.net", "a@",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, addr string) {
		local, domain, err := splitAddress(addr)
		if err != nil {
			return
		}
		if domain == "" || domain != strings.ToLower(domain) || strings.HasSuffix(domain, ".") {
			t.Fatalf("%q: domain %q", addr, domain)
		}
		adv, advPolicy, direct, directPolicy := WKDURLs(local, domain)
		for _, c := range []struct{ u, host string }{{adv, "openpgpkey." + domain}, {advPolicy, "openpgpkey." + domain}, {direct, domain}, {directPolicy, domain}} {
			u, err := url.Parse(c.u)
			if err != nil {
				t.Fatalf("%q: WKD URL %q does not parse: %v", addr, c.u, err)
			}
			if u.Scheme != "https" || u.Host != c.host || u.User != nil || u.Fragment != "" || u.Port() != "" {
				t.Fatalf("%q: WKD URL %q goes to %q (user %v, port %q), want host %q", addr, c.u, u.Host, u.User, u.Port(), c.host)
			}
			if !strings.HasPrefix(u.Path, "/.well-known/openpgpkey/") {
				t.Fatalf("%q: WKD URL %q has path %q", addr, c.u, u.Path)
			}
			if q := u.Query(); strings.HasSuffix(u.Path, "/policy") && len(q) != 0 || !strings.HasSuffix(u.Path, "/policy") && (len(q) != 1 || q.Get("l") != local) {
				t.Fatalf("%q: WKD URL %q has query %v", addr, c.u, q)
			}
		}
		for _, label := range []string{labelOpenPGPKey, labelSMIMECert} {
			name := DANEName(local, label, domain)
			if _, ok := dns.IsDomainName(name); !ok || !dns.IsFqdn(name) {
				t.Fatalf("%q: DANE name %q is not a domain name", addr, name)
			}
			if !strings.HasSuffix(strings.ToLower(name), "."+label+"."+domain+".") || dns.CountLabel(name) != dns.CountLabel(domain+".")+2 {
				t.Fatalf("%q: DANE name %q is not under %s", addr, name, domain)
			}
		}
	})
}
