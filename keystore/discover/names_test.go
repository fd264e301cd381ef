package discover

import (
	"strings"
	"testing"

	"github.com/miekg/dns"
)

// TestWKDHash checks the draft's example (section 3.1): Joe.Doe@Example.ORG.
func TestWKDHash(t *testing.T) {
	if got := WKDHash("Joe.Doe"); got != "iy9q119eutrkn8s1mk4r39qejnbu3n5q" {
		t.Errorf("WKDHash(Joe.Doe) = %s", got)
	}
	local, domain, err := splitAddress("Joe.Doe@Example.ORG")
	if err != nil {
		t.Fatal(err)
	}
	adv, advPolicy, direct, directPolicy := WKDURLs(local, domain)
	for _, c := range [][2]string{
		{adv, "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"},
		{advPolicy, "https://openpgpkey.example.org/.well-known/openpgpkey/example.org/policy"},
		{direct, "https://example.org/.well-known/openpgpkey/hu/iy9q119eutrkn8s1mk4r39qejnbu3n5q?l=Joe.Doe"},
		{directPolicy, "https://example.org/.well-known/openpgpkey/policy"},
	} {
		if c[0] != c[1] {
			t.Errorf("got  %s\nwant %s", c[0], c[1])
		}
	}
	// The l= parameter is escaped; only ASCII letters are lower-cased for the hash.
	if _, _, d, _ := WKDURLs("a+b&c", "example.org"); d != "https://example.org/.well-known/openpgpkey/hu/"+WKDHash("a+b&c")+"?l=a%2Bb%26c" {
		t.Errorf("escaping: %s", d)
	}
	if WKDHash("ÄBC") == WKDHash("äbc") || WKDHash("ÄBC") != WKDHash("Äbc") {
		t.Error("non-ASCII letters must not be case-mapped")
	}
}

func TestZBase32(t *testing.T) {
	// Vectors from the z-base-32 specification (bit lengths that are
	// multiples of 8).
	for _, c := range []struct {
		in   []byte
		want string
	}{
		{[]byte{0xf0, 0xbf, 0xc7}, "6n9hq"},
		{[]byte{0xd4, 0x7a, 0x04}, "4t7ye"},
		{[]byte{}, ""},
	} {
		if got := zbase32(c.in); got != c.want {
			t.Errorf("zbase32(%x) = %q, want %q", c.in, got, c.want)
		}
	}
}

// TestDANEName checks RFC 7929's example (section 3) and that SMIMEA
// names are made the same way (RFC 8162 section 3; miekg/dns agrees).
func TestDANEName(t *testing.T) {
	if got := DANEName("hugh", labelOpenPGPKey, "example.com"); got != "c93f1e400f26708f98cb19d936620da35eec8f72e57f9eec01c1afd6._openpgpkey.example.com." {
		t.Errorf("OPENPGPKEY name %s", got)
	}
	want, _ := dns.SMIMEAName("hugh", "example.com")
	if got := DANEName("hugh", labelSMIMECert, "example.com"); got != want+"." {
		t.Errorf("SMIMEA name %s, want %s.", got, want)
	}
	// The local part is hashed as is: case matters.
	if DANEName("Hugh", labelOpenPGPKey, "example.com") == DANEName("hugh", labelOpenPGPKey, "example.com") {
		t.Error("local part case-folded")
	}
}

func TestSplitAddress(t *testing.T) {
	for _, c := range []struct{ in, local, domain, err string }{
		{"<Alice@Example.NET>", "Alice", "example.net", ""},
		{"bob@bücher.example", "bob", "xn--bcher-kva.example", ""},
		{"a@b@example.org", "a@b", "example.org", ""},
		{"nodomain@", "", "", "not an e-mail address"},
		{"x@exa mple.org", "", "", "not a host name"},
		{"x@evil.example/path", "", "", "not a host name"},
	} {
		l, d, err := splitAddress(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("splitAddress(%q): %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || l != c.local || d != c.domain {
			t.Errorf("splitAddress(%q) = %q %q %v", c.in, l, d, err)
		}
	}
}
