package e2e

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"
)

// Result headers the milter adds to every inbound message that it neither
// decrypted nor verified.
var noneHeaders = []string{
	"X-Cryptmilter-Encryption: none",
	"X-Cryptmilter-Signature: none",
}

// Forged result headers a sender may put in; inbound they must be gone.
var forgedHeaders = []string{
	"X-Cryptmilter-Signature: valid; protocol=openpgp; signer=alice@example.net",
	"x-cryptmilter-encryption: decrypted; protocol=openpgp",
}

// deliveryFields are the fields virtual(8) prepends at delivery.
var deliveryFields = map[string]bool{"return-path": true, "x-original-to": true, "delivered-to": true}

// postfixReceived matches the Received field this Postfix adds.
var postfixReceived = regexp.MustCompile(`(?s)^Received: .*by mx\.example\.test \(Postfix[,)].*\sid ([0-9A-F]+)`)

// transit returns the delivered header without what Postfix adds in
// transit (delivery fields, its own Received field) and the queue id from
// that Received field.
func transit(t *testing.T, m *Mail) ([]string, string) {
	t.Helper()
	var fields []string
	qid := ""
	for _, f := range m.Header {
		if deliveryFields[strings.ToLower(f.Name)] {
			continue
		}
		if qid == "" {
			if sm := postfixReceived.FindStringSubmatch(f.Raw); sm != nil {
				qid = sm[1]
				continue
			}
		}
		fields = append(fields, f.Raw)
	}
	if qid == "" {
		t.Fatalf("%s: no Received field from this Postfix:\n%s", m.Path, m.Raw)
	}
	return fields, qid
}

// wantDelivered checks that got is sent as it went in, apart from the
// fields Postfix adds, with added prepended and every field for which
// drop is true removed. It returns the Postfix queue id.
func wantDelivered(t *testing.T, got *Mail, sent []byte, added []string, drop func(Field) bool) string {
	t.Helper()
	in, err := parseMail(sent)
	if err != nil {
		t.Fatal(err)
	}
	want := append([]string{}, added...)
	for _, f := range in.Header {
		if drop == nil || !drop(f) {
			want = append(want, f.Raw)
		}
	}
	fields, qid := transit(t, got)
	if d := cmp.Diff(want, fields); d != "" {
		t.Errorf("%s: header fields (-want +got):\n%s", got.Path, d)
	}
	if d := cmp.Diff(string(in.Body), string(got.Body)); d != "" {
		t.Errorf("%s: body changed (-want +got):\n%s", got.Path, d)
	}
	return qid
}

func isResultHeader(f Field) bool {
	return strings.HasPrefix(strings.ToLower(f.Name), "x-cryptmilter-")
}

// milterDecision returns the milter's log line for the message with
// Postfix queue id qid.
func milterDecision(t *testing.T, m *Milter, qid string) string {
	t.Helper()
	var line string
	if !waitFor(5*time.Second, func() bool {
		line = lastLine(m.Log(), "msg=message queue_id="+qid+" ")
		return line != ""
	}) {
		t.Fatalf("no decision logged for queue id %s\n%s", qid, m.Log())
	}
	return line
}

// TestInboundSMTP: a plain message from outside (SMTP on the inbound port)
// reaches the maildirs unchanged apart from the two result headers at the
// top; forged result headers (any case) are removed.
func TestInboundSMTP(t *testing.T) {
	t.Parallel()
	pf, m := startStack(t, stackOptions{})
	rcpts := []string{"rt@example.org", "alice@example.org"}
	msg := plainMessage("alice@example.net", "rt@example.org, alice@example.org", "inbound plain", forgedHeaders...)
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", rcpts, msg); code != 0 {
		t.Fatalf("SMTP refused the message: %s", reply)
	}
	for _, rcpt := range rcpts {
		mails := pf.WaitMaildir(t, rcpt, 1, 20*time.Second)
		if len(mails) != 1 {
			t.Fatalf("%d messages for %s, want 1", len(mails), rcpt)
		}
		qid := wantDelivered(t, mails[0], msg, noneHeaders, isResultHeader)
		if got := mails[0].Get("X-Cryptmilter-Signature"); len(got) != 1 || got[0] != "none" {
			t.Errorf("X-Cryptmilter-Signature fields = %q, want exactly one \"none\"", got)
		}
		if line := milterDecision(t, m, qid); !strings.Contains(line, "direction=in ") {
			t.Errorf("milter log for %s: want direction=in:\n%s", qid, line)
		}
	}
}

// TestInboundLarge: a 3 MiB message, larger than memory_spool, goes through
// the milter's file spool and comes out byte for byte (body replaced in
// packets or not at all), and the spool is empty afterwards.
func TestInboundLarge(t *testing.T) {
	t.Parallel()
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Settings: []string{`limits.memory_spool = "64KiB"`}}})
	msg := largeMessage("alice@example.net", "rt@example.org", "large inbound", 3<<20)
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, msg); code != 0 {
		t.Fatalf("SMTP refused the message: %s", reply)
	}
	mails := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)
	qid := wantDelivered(t, mails[0], msg, noneHeaders, isResultHeader)
	milterDecision(t, m, qid)
	spool := filepath.Join(m.Dir, "spool")
	if _, err := os.Stat(spool); err != nil {
		t.Fatalf("the configured spool: %v", err)
	}
	var left []string
	filepath.WalkDir(spool, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			left = append(left, path)
		}
		return nil
	})
	if len(left) > 0 {
		t.Errorf("files left in the spool after the message: %q", left)
	}
}

// TestOutboundSendmail: mail submitted with sendmail -C DIR (Postfix's
// non-SMTP path: pickup, cleanup with non_smtpd_milters and
// {daemon_name}=ORIGINATING) goes through the milter as outbound, and
// with [outbound] policy = "none" it is delivered unchanged, without result
// headers.
func TestOutboundSendmail(t *testing.T) {
	t.Parallel()
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Settings: []string{`outbound.policy = "none"`}}})
	msg := plainMessage("rt@example.org", "bob@example.com", "outbound plain")
	pf.Sendmail(t, "rt@example.org", []string{"bob@example.com"}, msg)
	mails := pf.WaitMaildir(t, "bob@example.com", 1, 20*time.Second)
	qid := wantDelivered(t, mails[0], msg, nil, nil)
	for _, f := range mails[0].Header {
		if isResultHeader(f) {
			t.Errorf("outbound message got %q", f.Raw)
		}
	}
	if line := milterDecision(t, m, qid); !strings.Contains(line, "direction=out ") {
		t.Errorf("milter log for %s: want direction=out:\n%s", qid, line)
	}
}

// TestSendmailDirection pins down what Postfix tells the milter about
// non-SMTP mail. Cleanup emulates a connection from "localhost"
// [127.0.0.1] port 0 with HELO "localhost", and every macro, {daemon_name}
// included, comes from cleanup. With pickup on the plain cleanup service
// (Debian's master.cf) {daemon_name} is $myhostname, so with the default
// (empty) internal_hosts such mail is inbound: the README's setting,
// pickup -o cleanup_service_name=cleanup-ns with cleanup-ns -o
// milter_macro_daemon_name=ORIGINATING (the harness's default), makes it
// outbound by name. Listing loopback in internal_hosts (the old default)
// would make it outbound too, and with it everything a content filter
// re-injects (TestContentFilter). Sendmail mail that ends up inbound makes
// the milter log a warning with the hint.
func TestSendmailDirection(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		plain    bool
		internal string
		inbound  bool
	}{
		{"plain cleanup, default direction", true, "", true},
		{"plain cleanup, loopback internal", true, `["127.0.0.0/8", "::1"]`, false},
		{"cleanup-ns ORIGINATING, default direction", false, "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			settings := []string{`outbound.policy = "none"`}
			if tt.internal != "" {
				settings = append(settings, "direction.internal_hosts = "+tt.internal)
			}
			pf, m := startStack(t, stackOptions{
				Milter:  milterOptions{Settings: settings},
				Postfix: postfixOptions{PlainNonSMTP: tt.plain},
			})
			msg := plainMessage("rt@example.org", "bob@example.com", "sendmail direction")
			pf.Sendmail(t, "rt@example.org", []string{"bob@example.com"}, msg)
			mails := pf.WaitMaildir(t, "bob@example.com", 1, 20*time.Second)
			var added []string
			want := "direction=out "
			if tt.inbound {
				added, want = noneHeaders, "direction=in "
			}
			qid := wantDelivered(t, mails[0], msg, added, nil)
			if line := milterDecision(t, m, qid); !strings.Contains(line, want) {
				t.Errorf("milter log for %s: want %s:\n%s", qid, want, line)
			}
			// The milter recognises Postfix's emulated connection (port 0)
			// and warns when such mail is inbound.
			warned := strings.Contains(m.Log(), "mail from Postfix's sendmail command treated as inbound")
			if warned != tt.inbound {
				t.Errorf("warning about inbound sendmail mail logged: %v, want %v\n%s", warned, tt.inbound, m.Log())
			}
		})
	}
}

// TestOutboundSubmission: SMTP on a port with
// milter_macro_daemon_name=ORIGINATING (master.cf, as for OpenDKIM) is
// outbound too. Postfix evaluates the end-of-header and end-of-message
// macros in cleanup, whose {daemon_name} is cleanup's own
// ($myhostname unless overridden), so the milter must keep the value it
// got at connect/MAIL time.
func TestOutboundSubmission(t *testing.T) {
	t.Parallel()
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Settings: []string{`outbound.policy = "none"`}}})
	msg := plainMessage("rt@example.org", "carol@example.com", "submission plain")
	if code, reply := pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", []string{"carol@example.com"}, msg); code != 0 {
		t.Fatalf("SMTP refused the message: %s", reply)
	}
	mails := pf.WaitMaildir(t, "carol@example.com", 1, 20*time.Second)
	qid := wantDelivered(t, mails[0], msg, nil, nil)
	if line := milterDecision(t, m, qid); !strings.Contains(line, "direction=out ") {
		t.Errorf("milter log for %s: want direction=out:\n%s", qid, line)
	}
}

// TestMilterDown: with the milter stopped, an SMTP client gets a 4xx and
// nothing is delivered; a sendmail-submitted message waits in the
// maildrop and is delivered exactly once after the milter is back.
func TestMilterDown(t *testing.T) {
	t.Parallel()
	pf, m := startStack(t, stackOptions{})
	m.Stop(t)

	msg := plainMessage("alice@example.net", "rt@example.org", "while the milter is down")
	// smtpd connects to its milters when the client connects; with the
	// milter unreachable and milter_default_action = tempfail it logs a
	// milter-reject at CONNECT and EHLO but answers them normally (delayed
	// reject) and refuses MAIL with 451 4.7.1.
	err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, msg)
	var se *smtp.SMTPError
	var stage *SMTPStageError
	if !errors.As(err, &se) || !errors.As(err, &stage) {
		t.Fatalf("SMTP with the milter down: %v, want a refusal", err)
	}
	if se.Code != 451 || se.EnhancedCode != (smtp.EnhancedCode{4, 7, 1}) || stage.Stage != "MAIL" {
		t.Errorf("SMTP with the milter down: %v, want MAIL: 451 4.7.1", err)
	}

	out := plainMessage("rt@example.org", "bob@example.com", "sendmail while the milter is down")
	pf.Sendmail(t, "rt@example.org", []string{"bob@example.com"}, out)
	// pickup wakes up every second: give it several tries.
	tempfailed := regexp.MustCompile(`postfix/cleanup\[\d+\]: \w+: milter-reject: .*: 4\.7\.1 .*from=<rt@example\.org>`)
	if !waitFor(10*time.Second, func() bool { return len(tempfailed.FindAllString(pf.Log(), -1)) >= 2 }) {
		t.Fatalf("Postfix did not try the milter for the sendmail message\n%s", pf.Log())
	}
	time.Sleep(2 * time.Second)
	if got := pf.Maildir(t, "bob@example.com"); len(got) != 0 {
		t.Fatalf("sendmail message delivered while the milter was down:\n%s", got[0].Raw)
	}
	if got := pf.Maildir(t, "rt@example.org"); len(got) != 0 {
		t.Fatalf("SMTP message delivered while the milter was down:\n%s", got[0].Raw)
	}
	if n := pf.maildropCount(); n != 1 {
		t.Fatalf("%d messages in the maildrop while the milter is down, want 1\n%s", n, pf.queueListing())
	}

	m.Start(t)
	pf.Flush(t)
	pf.WaitMaildir(t, "bob@example.com", 1, 20*time.Second)
	pf.WaitQueueEmpty(t, 10*time.Second)
	time.Sleep(1500 * time.Millisecond) // more pickup cycles: no second copy
	mails := pf.Maildir(t, "bob@example.com")
	if len(mails) != 1 {
		t.Fatalf("%d copies delivered after the milter came back, want 1", len(mails))
	}
	qid := transitQID(t, mails[0])
	if line := milterDecision(t, m, qid); !strings.Contains(line, "direction=out ") {
		t.Errorf("milter log for %s: want direction=out:\n%s", qid, line)
	}

	// And SMTP works again.
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, msg); code != 0 {
		t.Fatalf("SMTP after the milter came back: %s", reply)
	}
	got := pf.WaitMaildir(t, "rt@example.org", 1, 20*time.Second)
	wantDelivered(t, got[0], msg, noneHeaders, isResultHeader)
}

func transitQID(t *testing.T, m *Mail) string {
	t.Helper()
	_, qid := transit(t, m)
	return qid
}
