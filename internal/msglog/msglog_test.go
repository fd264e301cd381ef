package msglog

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// line logs m through a text handler at level (without the time).
func line(m *Message, level slog.Level) string {
	var b bytes.Buffer
	h := slog.NewTextHandler(&b, &slog.HandlerOptions{Level: level, ReplaceAttr: func(_ []string, a slog.Attr) slog.Attr {
		if a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		return a
	}})
	Log(context.Background(), slog.New(h), m)
	return strings.TrimSuffix(b.String(), "\n")
}

func TestLine(t *testing.T) {
	inbound := &crypto.Plan{Action: crypto.Accept, Decision: "decrypted", Attrs: []slog.Attr{
		slog.String("encryption", "decrypted"), slog.String("enc_protocol", "openpgp"),
		slog.String("signature", "valid"), slog.String("sig_protocol", "openpgp"), slog.String("signer", "alice@example.net")}}
	outbound := &crypto.Plan{Action: crypto.Accept, Decision: "encrypted", Attrs: []slog.Attr{
		slog.Int("encrypt/openpgp", 2), slog.Int("sign/openpgp", 5), slog.Int("copies", 3), slog.String("signer_openpgp", "rt@example.org")}}
	seven := []string{"<a@example.net>", "b@example.net", "c@example.net", "d@example.net", "e@example.net", "f@example.net", "g@example.net"}
	for _, tc := range []struct {
		name  string
		m     *Message
		level slog.Level
		want  string
	}{
		{"inbound decrypted", &Message{QueueID: "4XyZ", Direction: crypto.Inbound, DirectionBy: "default inbound",
			From: "alice@example.net", Rcpts: []string{"rt@example.org"}, Size: 2048, Elapsed: 61 * time.Millisecond,
			Plan: inbound, Level: slog.LevelInfo},
			slog.LevelInfo,
			`level=INFO msg=message queue_id=4XyZ direction=in direction_by="default inbound" decision=decrypted action=accept from=alice@example.net rcpts=1 recipients=rt@example.org size=2048 ms=61 encryption=decrypted enc_protocol=openpgp signature=valid sig_protocol=openpgp signer=alice@example.net`},
		{"outbound, copies re-injected, recipients bounded", &Message{QueueID: "5AbC", Direction: crypto.Outbound, DirectionBy: "daemon_name=ORIGINATING",
			From: "rt@example.org", Rcpts: seven, Size: 900, Elapsed: 120 * time.Millisecond,
			Plan: outbound, Reinjected: []string{"6DeF", ""}, Level: slog.LevelInfo},
			slog.LevelInfo,
			`level=INFO msg=message queue_id=5AbC direction=out direction_by="daemon_name=ORIGINATING" decision=encrypted action=accept from=rt@example.org rcpts=7 recipients="a@example.net,b@example.net,c@example.net,d@example.net,e@example.net,+2 more" size=900 ms=120 encrypt/openpgp=2 sign/openpgp=5 signer_openpgp=rt@example.org reinjected=2 reinjected_ids=6DeF,?`},
		{"debug names everyone and the macros", &Message{QueueID: "5AbC", Direction: crypto.Outbound, DirectionBy: "sasl",
			From: "rt@example.org", Rcpts: seven, Plan: &crypto.Plan{Action: crypto.Accept, Decision: "signed"},
			Macros: map[string]string{"{daemon_name}": "submission", "i": "5AbC"}, Level: slog.LevelInfo},
			slog.LevelDebug,
			`level=INFO msg=message queue_id=5AbC direction=out direction_by=sasl decision=signed action=accept from=rt@example.org rcpts=7 recipients=a@example.net,b@example.net,c@example.net,d@example.net,e@example.net,f@example.net,g@example.net size=0 ms=0 macros.i=5AbC macros.{daemon_name}=submission`},
		{"refused over a limit", &Message{QueueID: "7GhI", Direction: crypto.Inbound, DirectionBy: "default inbound",
			From: "x@example.net", Rcpts: []string{"rt@example.org"}, Size: 60 << 20,
			Plan: &crypto.Plan{Action: crypto.Reject, Decision: "refused", Reply: crypto.Reply{Code: 552, Enhanced: "5.3.4", Text: "message too big"}},
			Why:  "limits", Level: slog.LevelWarn},
			slog.LevelInfo,
			`level=WARN msg=message queue_id=7GhI direction=in direction_by="default inbound" decision=refused action=reject from=x@example.net rcpts=1 recipients=rt@example.org size=62914560 ms=0 reply="552 5.3.4 message too big" reason=limits`},
		{"re-injection failed: no plan details, the failure and the reply", &Message{Direction: crypto.Outbound, DirectionBy: "internal_hosts=192.0.2.7",
			From: "rt@example.org", Rcpts: []string{"a@example.net", "b@example.net"}, Plan: outbound, Reinjected: []string{"8JkL"},
			Reply: crypto.TempfailReply, Why: "re-injection failed", Err: errors.New("milter: copy 2 of 2 to inet:127.0.0.1:10026: connection refused"), Level: slog.LevelError},
			slog.LevelInfo,
			`level=ERROR msg=message direction=out direction_by="internal_hosts=192.0.2.7" decision=encrypted action=tempfail from=rt@example.org rcpts=2 recipients=a@example.net,b@example.net size=0 ms=0 reinjected=1 reinjected_ids=8JkL reason="re-injection failed" error="milter: copy 2 of 2 to inet:127.0.0.1:10026: connection refused" reply="` + crypto.TempfailReply.String() + `"`},
		{"no plan at all", &Message{Direction: crypto.Inbound, From: "x@example.net", Reply: crypto.TempfailReply,
			Why: "spool error", Err: errors.New("disk full"), Level: slog.LevelError},
			slog.LevelInfo,
			`level=ERROR msg=message direction=in decision=failed action=tempfail from=x@example.net rcpts=0 size=0 ms=0 reason="spool error" error="disk full" reply="` + crypto.TempfailReply.String() + `"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, line(tc.m, tc.level)); diff != "" {
				t.Errorf("(-want +got)\n%s", diff)
			}
		})
	}
}

func TestOutcome(t *testing.T) {
	for _, tc := range []struct {
		m                Message
		decision, action string
	}{
		{Message{Plan: &crypto.Plan{Action: crypto.Quarantine, Decision: "undecryptable"}}, "undecryptable", "quarantine"},
		{Message{Plan: &crypto.Plan{Action: crypto.Accept, Decision: "encrypted"}, Reply: crypto.TempfailReply}, "encrypted", "tempfail"},
		{Message{Reply: crypto.InternalRejectReply}, "failed", "reject"},
		{Message{}, "failed", ""},
	} {
		if d, a := tc.m.Outcome(); d != tc.decision || a != tc.action {
			t.Errorf("Outcome() = %q, %q; want %q, %q", d, a, tc.decision, tc.action)
		}
	}
}

func TestQueueID(t *testing.T) {
	for text, want := range map[string]string{
		"2.0.0 Ok: queued as 4XyZ1a2b3c":                     "4XyZ1a2b3c", // Postfix
		"2.0.0 Ok: queued as 4dMjLc3Vq7z9KqW":                "4dMjLc3Vq7z9KqW",
		"Ok: queued as ABC123":                               "ABC123",
		"2.0.0 5B1NdQxq012345 Message accepted for delivery": "5B1NdQxq012345",   // Sendmail
		"OK id=1tXyZa-000ABC-12":                             "1tXyZa-000ABC-12", // Exim
		"2.0.0 OK":                                           "",
		"":                                                   "",
	} {
		if got := QueueID(text); got != want {
			t.Errorf("QueueID(%q) = %q, want %q", text, got, want)
		}
	}
}

// TestRecipientsQuoted (found by review): a recipient whose quoted local
// part holds a comma (or a quote, white space, control or bidi
// characters) is written quoted, so that the list splits only between
// recipients.
func TestRecipientsQuoted(t *testing.T) {
	got := recipients([]string{`<"alice@example.org,bob"@evil.example>`, "<carol@example.net>", "d\u202eave@example.net", "e\u2066ve@example.net", "f\u200bx@example.net", "jörg@example.net"}, true)
	want := `"\"alice@example.org,bob\"@evil.example",carol@example.net,"d\u202eave@example.net","e\u2066ve@example.net","f\u200bx@example.net",jörg@example.net`
	if got != want {
		t.Errorf("recipients = %s\nwant %s", got, want)
	}
}
