package crypto

import (
	"slices"
	"testing"
)

// TestOutboundNoHeaderConfidentiality: with header_confidentiality =
// false an encrypted copy keeps its Subject (with the ticket tag) and
// Keywords readable outside, while the encrypted, signed entity still
// carries the protected header (hp="cipher") and an HP-Outer record of
// the outer fields as they are. Both ways a copy is made are checked:
// the message rewritten in place (alice, OpenPGP) and an extra copy
// (dave, S/MIME).
func TestOutboundNoHeaderConfidentiality(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) { c.Outbound.HeaderConfidentiality = false })
	msg := outTestMessage("alice@example.net", "dave@example.com")
	plan, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net", "dave@example.com"}, msg)
	if plan.Action != Accept || plan.Decision != "encrypted" {
		t.Fatalf("plan %s/%s %q", plan.Action, plan.Decision, plan.Reply)
	}
	oh, _ := outHeaderOf(t, msg)
	for _, addr := range []string{"alice@example.net", "dave@example.com"} {
		raw := outCopyFor(t, copies, addr)
		outCheckOuter(t, raw, msg, false)
		h, _ := outHeaderOf(t, raw)
		if h.Get("Keywords") != "secret" {
			t.Errorf("%s: outer Keywords = %q, want it kept", addr, h.Get("Keywords"))
		}
		var inner []byte
		if addr == "alice@example.net" {
			inner = f.gpgDecrypt(t, addr, raw)
		} else {
			inner = f.smimeDecrypt(t, addr, raw)
		}
		ih, _ := outHeaderOf(t, inner)
		if _, p := outParams(t, ih); p["hp"] != "cipher" {
			t.Errorf("%s: inner Content-Type %q, want hp=\"cipher\"", addr, ih.Get("Content-Type"))
		}
		for _, name := range []string{"Subject", "From", "To", "Date", "Message-ID", "Keywords"} {
			if got, want := ih.Get(name), oh.Get(name); got != want {
				t.Errorf("%s: inner %s = %q, want %q", addr, name, got, want)
			}
		}
		hpo := ih.Values("HP-Outer")
		for _, want := range []string{"Subject: [example.org #42] Secret plans", "Keywords: secret", "From: RT <rt@example.org>"} {
			if !slices.Contains(hpo, want) {
				t.Errorf("%s: HP-Outer = %q, want it to record %q", addr, hpo, want)
			}
		}
		if slices.Contains(hpo, "Subject: [...]") {
			t.Errorf("%s: HP-Outer records an obscured Subject the outer header does not have", addr)
		}
	}
}

// TestOutboundHeaderConfidentialityDefault: the default hides the Subject
// as before (hcp_baseline), and header_confidentiality alone does
// nothing without protect_headers.
func TestOutboundHeaderConfidentialityDefault(t *testing.T) {
	if !testPolicy(nil).Outbound.HeaderConfidentiality {
		t.Fatal("header_confidentiality must default to true")
	}
	f := outFixtureFor(t)
	msg := outTestMessage("alice@example.net", "dave@example.com")
	e, snap := f.engine(t, nil)
	_, copies := processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, msg)
	outCheckOuter(t, outCopyFor(t, copies, "alice@example.net"), msg, true)
	e, snap = f.engine(t, func(c *Policy) { c.Outbound.ProtectHeaders, c.Outbound.HeaderConfidentiality = false, true })
	_, copies = processOut(t, e, snap, outGatewayAddr, []string{"alice@example.net"}, msg)
	raw := outCopyFor(t, copies, "alice@example.net")
	outCheckOuter(t, raw, msg, false)
	outCheckInner(t, f.gpgDecrypt(t, "alice@example.net", raw), msg, "")
}
