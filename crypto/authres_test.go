package crypto

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestForgedAuthResults(t *testing.T) {
	for _, tt := range []struct {
		value  string
		forged bool
	}{
		{inHost + "; smime=pass body.smime-identifier=boss@example.org", true},
		{"MX.Example.ORG (forged);\r\n smime=pass", true},
		{inHost + ";\r\n\tSMIME = pass", true},
		{inHost + "; smime/1=pass", true},
		{inHost + "; smime", true},
		{inHost + "; dkim=pass header.d=example.net; smime=pass", true},
		{inHost + "; dkim=pass reason=\"a;b\"; smime=fail", true},
		{inHost + " (a;b); smime=pass", true},
		{"\"" + inHost + "\"; smime=pass", true},
		{inHost + " 1; smime=pass", true},
		// Another verifier's results under our authserv-id (OpenDKIM's,
		// OpenDMARC's): theirs to remove.
		{inHost + ";\r\n\tdkim=pass (1024-bit key) header.d=example.net header.s=mail", false},
		{inHost + "; dmarc=pass header.from=example.net", false},
		// A mention of smime anywhere after our id: removed (only ever
		// more is removed; no verifier writes that into its own result).
		{inHost + "; dkim=pass (smime=pass in a comment) header.d=example.net", true},
		{inHost + "; none", false},
		// Other hosts' results.
		{"other.example; smime=pass", false},
		{"mx.example.org.evil; smime=pass", false},
	} {
		if got := forgedAuthResults(tt.value, inHost); got != tt.forged {
			t.Errorf("forgedAuthResults(%q) = %v, want %v", tt.value, got, tt.forged)
		}
	}
}

// TestInboundKeepsOtherVerifiersResults: a dkim result under our
// authserv-id, as OpenDKIM inserts it when it runs before cryptmilter,
// survives; a forged smime result under it does not.
func TestInboundKeepsOtherVerifiersResults(t *testing.T) {
	e := inEngine(t, nil)
	f := inPGPFixture(t)
	msg := "Authentication-Results: " + inHost + ";\r\n\tdkim=pass (1024-bit key) header.d=example.net\r\n" +
		"Authentication-Results: " + inHost + "; smime=pass body.smime-identifier=boss@example.org\r\n" +
		inHeader("Alice <alice@example.net>", "Plain") + "Content-Type: text/plain\r\n\r\nhello\r\n"
	r := inProcess(t, e, f.keys, []byte(msg), time.Time{})
	var got []string
	for _, v := range r.header.Values("Authentication-Results") {
		got = append(got, strings.Join(strings.Fields(v), " "))
	}
	want := []string{inHost + "; dkim=pass (1024-bit key) header.d=example.net"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Authentication-Results (-want +got):\n%s", diff)
	}
}
