package crypto

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/keystore"
)

// withDiscovered sets Input.Discovered.
func withDiscovered(d Discovered) func(*Input) { return func(in *Input) { in.Discovered = d } }

// attr returns a plan's log attribute, "" if absent.
func attr(p *Plan, key string) string {
	for _, a := range p.Attrs {
		if a.Key == key {
			return a.Value.String()
		}
	}
	return ""
}

// TestDiscoveredKeys: how the engine uses keys found by discovery. The
// fixture's keystore keys stand in for discovered ones (carol's OpenPGP
// key, erin's certificate) under addresses the keystore has no key for.
func TestDiscoveredKeys(t *testing.T) {
	f := outFixtureFor(t)
	_, snap := f.engine(t, nil)
	now := time.Now()
	carol, err := snap.EncryptionKey("carol@example.net", now)
	if err != nil {
		t.Fatal(err)
	}
	erin, err := snap.Certificate("erin@example.com", now)
	if err != nil {
		t.Fatal(err)
	}
	wkd := DiscoveredKey{Source: TrustWKD, OpenPGP: carol}
	dane := DiscoveredKey{Source: TrustDANE, Cert: erin}
	temp := func(src Trust) DiscoveredKey {
		return DiscoveredKey{Source: src, Temporary: true, Reason: "no answer within discovery.timeout"}
	}
	none := func(src Trust) DiscoveredKey { return DiscoveredKey{Source: src, Reason: "HTTP 404"} }
	msg := outTestMessage("zed@example.org", "")
	required := func(minTrust Trust) func(*Policy) {
		return func(c *Policy) {
			c.Discovery = []Trust{TrustWKD, TrustDANE}
			c.Outbound.Rules = []Rule{{Match: "@example.org", Policy: Required, MinTrust: minTrust}}
		}
	}
	opportunistic := func(c *Policy) { c.Discovery = []Trust{TrustWKD, TrustDANE} }
	tests := []struct {
		name       string
		mod        func(*Policy)
		rcpt       string
		disc       []DiscoveredKey
		action     Action
		reply      string
		kind       string // media type of the recipient's copy
		discovered string // the log attribute
	}{
		{name: "a WKD key encrypts", mod: opportunistic, rcpt: "zed@example.org", disc: []DiscoveredKey{wkd},
			action: Accept, kind: "multipart/encrypted", discovered: "zed@example.org=wkd"},
		{name: "a DANE certificate encrypts with S/MIME", mod: opportunistic, rcpt: "zed@example.org", disc: []DiscoveredKey{dane},
			action: Accept, kind: "application/pkcs7-mime", discovered: "zed@example.org=dane"},
		{name: "DANE outranks WKD", mod: opportunistic, rcpt: "zed@example.org", disc: []DiscoveredKey{wkd, dane},
			action: Accept, kind: "application/pkcs7-mime", discovered: "zed@example.org=dane"},
		{name: "a manual key wins", mod: opportunistic, rcpt: "dave@example.com", disc: []DiscoveredKey{wkd},
			action: Accept, kind: "application/pkcs7-mime"},
		{name: "min_trust dane refuses a WKD key", mod: required(TrustDANE), rcpt: "zed@example.org", disc: []DiscoveredKey{wkd},
			action: Reject, reply: "550 5.7.1 <zed@example.org>: no usable encryption key"},
		{name: "min_trust dane takes a DANE key", mod: required(TrustDANE), rcpt: "zed@example.org", disc: []DiscoveredKey{wkd, dane},
			action: Accept, kind: "application/pkcs7-mime", discovered: "zed@example.org=dane"},
		{name: "min_trust manual refuses every discovered key", mod: required(TrustManual), rcpt: "zed@example.org", disc: []DiscoveredKey{dane},
			action: Reject, reply: "550 5.7.1 <zed@example.org>: no usable encryption key"},
		{name: "required waits for a lookup that failed temporarily", mod: required(0), rcpt: "zed@example.org",
			disc: []DiscoveredKey{temp(TrustDANE), none(TrustWKD)}, action: Tempfail, reply: DiscoveryTempfailReply("zed@example.org").String()},
		{name: "required with a key from the other source does not wait", mod: required(0), rcpt: "zed@example.org",
			disc: []DiscoveredKey{temp(TrustDANE), wkd}, action: Accept, kind: "multipart/encrypted", discovered: "zed@example.org=wkd"},
		{name: "required: a temporary failure of a source below min_trust does not count", mod: required(TrustDANE), rcpt: "zed@example.org",
			disc: []DiscoveredKey{none(TrustDANE), temp(TrustWKD)}, action: Reject, reply: "550 5.7.1 <zed@example.org>: no usable encryption key"},
		{name: "required without any key found rejects", mod: required(0), rcpt: "zed@example.org",
			disc: []DiscoveredKey{none(TrustDANE), none(TrustWKD)}, action: Reject, reply: "550 5.7.1 <zed@example.org>: no usable encryption key"},
		{name: "opportunistic signs when a lookup failed temporarily", mod: opportunistic, rcpt: "zed@example.org",
			disc: []DiscoveredKey{temp(TrustWKD)}, action: Accept, kind: "multipart/signed"},
		{name: "a discovered key never claims manual trust", mod: required(TrustManual), rcpt: "zed@example.org",
			disc: []DiscoveredKey{{Source: TrustManual, OpenPGP: carol}}, action: Reject, reply: "550 5.7.1 <zed@example.org>: no usable encryption key"},
		{name: "sign-only ignores discovered keys", mod: func(c *Policy) {
			opportunistic(c)
			c.Outbound.Rules = []Rule{{Match: "*", Policy: SignOnly}}
		}, rcpt: "zed@example.org", disc: []DiscoveredKey{wkd}, action: Accept, kind: "multipart/signed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, snap := f.engine(t, tt.mod)
			plan, copies := processOut(t, e, snap, outGatewayAddr, []string{tt.rcpt}, msg, withDiscovered(Discovered{tt.rcpt: tt.disc}))
			if plan.Action != tt.action || plan.Reply.String() != tt.reply {
				t.Fatalf("plan %s %q, want %s %q", plan.Action, plan.Reply, tt.action, tt.reply)
			}
			if tt.action != Accept {
				return
			}
			raw := outCopyFor(t, copies, tt.rcpt)
			h, _ := outHeaderOf(t, raw)
			if mt, _ := outParams(t, h); mt != tt.kind {
				t.Errorf("copy is %s, want %s", mt, tt.kind)
			}
			if got := attr(plan, "discovered"); got != tt.discovered {
				t.Errorf("log attribute discovered=%q, want %q", got, tt.discovered)
			}
			switch tt.kind {
			case "multipart/encrypted":
				want := f.subkeys["carol@example.net"]
				if tt.rcpt == "alice@example.net" {
					want = f.subkeys["alice@example.net"]
				}
				if ids := outRecipientKeyIDs(t, raw); !slices.Equal(ids, []string{want}) {
					t.Errorf("encrypted to %v, want %s", ids, want)
				}
				outCheckInner(t, f.gpgDecrypt(t, "carol@example.net", raw), msg, "cipher")
			case "application/pkcs7-mime":
				owner := "erin@example.com"
				if tt.rcpt == "dave@example.com" {
					owner = "dave@example.com" // the manual certificate, not erin's
				}
				outCheckInner(t, f.smimeDecrypt(t, owner, raw), msg, "cipher")
			}
		})
	}
}

// TestDiscoveredPriorities: a recipient without any key under required
// is refused even when another one waits for a lookup; a pinned address
// never takes a discovered key; the log names failed lookups.
func TestDiscoveredPriorities(t *testing.T) {
	f := outFixtureFor(t)
	_, snap := f.engine(t, nil)
	carol, _ := snap.EncryptionKey("carol@example.net", time.Now())
	req := func(c *Policy) {
		c.Discovery = []Trust{TrustWKD}
		c.Outbound.Default = Required
	}
	msg := outTestMessage("a@example.org, b@example.org", "")
	disc := Discovered{
		"a@example.org": {{Source: TrustWKD, Temporary: true, Reason: "timeout"}},
		"b@example.org": {{Source: TrustWKD, Reason: "HTTP 404"}},
	}
	for _, order := range [][]string{{"a@example.org", "b@example.org"}, {"b@example.org", "a@example.org"}} {
		e, snap := f.engine(t, req)
		plan, _ := processOut(t, e, snap, outGatewayAddr, order, msg, withDiscovered(disc))
		if plan.Action != Reject || !strings.Contains(plan.Reply.String(), "<b@example.org>") {
			t.Errorf("%v: plan %s %q, want the refusal of b", order, plan.Action, plan.Reply)
		}
	}
	e, snap := f.engine(t, func(c *Policy) { c.Discovery = []Trust{TrustWKD} })
	plan, _ := processOut(t, e, snap, outGatewayAddr, []string{"b@example.org"}, msg, withDiscovered(disc))
	if got := attr(plan, "discovery_failed"); got != "b@example.org (wkd: HTTP 404)" {
		t.Errorf("discovery_failed=%q", got)
	}
	// Pinned: the pinned key is missing, so nothing may be used.
	e, _ = f.engine(t, func(c *Policy) { c.Discovery = []Trust{TrustWKD} })
	pinned, err := keystore.Load(keystore.Options{Dir: f.ksDir, Pins: map[string]string{"z@example.org": strings.Repeat("AB", 20)}})
	if err != nil {
		t.Fatal(err)
	}
	plan, copies := processOut(t, e, pinned, outGatewayAddr, []string{"z@example.org"}, msg,
		withDiscovered(Discovered{"z@example.org": {{Source: TrustWKD, OpenPGP: carol}}}))
	if h, _ := outHeaderOf(t, outCopyFor(t, copies, "z@example.org")); plan.Action != Accept || strings.Contains(h.Get("Content-Type"), "encrypted") {
		t.Errorf("a pinned address took a discovered key: %s %s", plan.Action, h.Get("Content-Type"))
	}
}

func TestDiscoveryTargets(t *testing.T) {
	f := outFixtureFor(t)
	e, snap := f.engine(t, func(c *Policy) {
		c.Discovery = []Trust{TrustWKD, TrustDANE}
		c.Outbound.Rules = []Rule{
			{Match: "@partner.example", Policy: Required, MinTrust: TrustDANE},
			{Match: "@trusted.example", Policy: Required, MinTrust: TrustManual},
			{Match: "@news.example", Policy: SignOnly},
			{Match: "@off.example", Policy: NoCrypto},
		}
	})
	rcpts := []string{"<alice@example.net>", "zed@example.org", "<zed@example.org>", "p@partner.example", "t@trusted.example",
		"n@news.example", "o@off.example", "dave@example.com"}
	got := e.DiscoveryTargets(snap, rcpts, time.Now())
	want := []DiscoveryTarget{
		{Addr: "zed@example.org", Sources: []Trust{TrustDANE, TrustWKD}},
		{Addr: "p@partner.example", Sources: []Trust{TrustDANE}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("targets (-want +got):\n%s", diff)
	}
	// Off: nothing.
	e, _ = f.engine(t, nil)
	if got := e.DiscoveryTargets(snap, rcpts, time.Now()); got != nil {
		t.Errorf("discovery off: %v", got)
	}
	// Only wkd configured: min_trust dane leaves nothing to ask.
	e, _ = f.engine(t, func(c *Policy) {
		c.Discovery = []Trust{TrustWKD}
		c.Outbound.Rules = []Rule{{Match: "*", Policy: Required, MinTrust: TrustDANE}}
	})
	if got := e.DiscoveryTargets(snap, []string{"zed@example.org"}, time.Now()); len(got) != 0 {
		t.Errorf("targets %v", got)
	}
}
