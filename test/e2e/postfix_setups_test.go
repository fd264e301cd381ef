package e2e

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
)

// The Postfix setups of README's "Postfix" and "Direction" sections, each
// end to end: submission with SASL (Dovecot), an after-queue content
// filter with the milter before or after it, and cryptmilter beside
// OpenDKIM. Inbound on port 25 and the sendmail command are in
// postfix_test.go.

// wantDirection checks that the milter logged exactly one decision for the
// message with queue id qid, in direction dir ("in" or "out").
func wantDirection(t *testing.T, m *Milter, qid, dir string) {
	t.Helper()
	line := milterDecision(t, m, qid)
	if !strings.Contains(line, "direction="+dir+" ") {
		t.Errorf("milter log for %s: want direction=%s:\n%s", qid, dir, line)
	}
}

// stageCode returns the stage and SMTP code of a refusal, failing the test
// for any other error or none.
func stageCode(t *testing.T, err error) (string, int) {
	t.Helper()
	var se *smtp.SMTPError
	var stage *SMTPStageError
	if !errors.As(err, &se) || !errors.As(err, &stage) {
		t.Fatalf("got %v, want an SMTP refusal", err)
	}
	return stage.Stage, se.Code
}

// TestSubmissionSASL: a submission port as README shows it (TLS required,
// SASL through Dovecot's auth service, only authenticated clients,
// milter_macro_daemon_name=ORIGINATING) makes authenticated mail outbound
// and refuses everything else before the milter sees a message. On port 25
// with AUTH offered but not required, {auth_authen} alone makes a message
// outbound ([direction] authenticated = "outbound", the default), a client
// that does not authenticate stays inbound, and authenticated = "inbound"
// turns that off.
func TestSubmissionSASL(t *testing.T) {
	t.Parallel()
	dv := startDovecotAuth(t, map[string]string{"alice@example.org": "s3cret"})
	submission := append(serverTLS(t), dv.SMTPDOptions()...)
	submission = append(submission,
		"smtpd_client_restrictions=permit_sasl_authenticated,reject",
		"smtpd_relay_restrictions=permit_sasl_authenticated,reject")
	pf, m := startStack(t, stackOptions{Postfix: postfixOptions{
		SubmitOptions:  submission,
		InboundOptions: dv.SMTPDOptions(),
	}})
	verifier := gatewayVerifier(t, m.Keystore)
	alice := sasl.NewPlainClient("", "alice@example.org", "s3cret")

	// send sends one message from rt@example.org to bob@example.com (no
	// key: outbound mail to him is signed only) and returns what bob got.
	send := func(t *testing.T, addr string, c smtpClient, subject string) *Mail {
		t.Helper()
		before := len(pf.Maildir(t, "bob@example.com"))
		msg := plainMessage("rt@example.org", "bob@example.com", subject)
		if err := pf.SendSMTPWith(addr, c, "rt@example.org", []string{"bob@example.com"}, msg); err != nil {
			t.Fatalf("SMTP to %s: %v", addr, err)
		}
		mails := pf.WaitMaildir(t, "bob@example.com", before+1, 20*time.Second)
		return mails[len(mails)-1]
	}
	wantOutbound := func(t *testing.T, got *Mail) {
		t.Helper()
		if !isSigned(got) {
			t.Fatalf("outbound copy is not signed:\n%s", got.Raw)
		}
		verifier.pgpVerifySigned(t, got)
		if len(got.Get("X-Cryptmilter-Signature")) != 0 {
			t.Errorf("outbound copy has inbound result headers:\n%s", got.Raw)
		}
		wantDirection(t, m, transitQID(t, got), "out")
	}
	wantInbound := func(t *testing.T, got *Mail) {
		t.Helper()
		if isSigned(got) {
			t.Errorf("inbound message was signed by the gateway:\n%s", got.Raw)
		}
		if v := got.Get("X-Cryptmilter-Signature"); len(v) != 1 || v[0] != "none" {
			t.Errorf("X-Cryptmilter-Signature %q, want the inbound \"none\"", v)
		}
		wantDirection(t, m, transitQID(t, got), "in")
	}

	t.Run("submission authenticated", func(t *testing.T) {
		wantOutbound(t, send(t, pf.SubmitAddr, smtpClient{StartTLS: true, Auth: alice}, "submission with SASL"))
	})
	t.Run("submission refusals", func(t *testing.T) {
		decisions := strings.Count(m.Log(), "msg=message ")
		msg := plainMessage("rt@example.org", "bob@example.com", "refused")
		for _, tt := range []struct {
			name  string
			c     smtpClient
			stage string
			code  int
		}{
			// smtpd_tls_security_level=encrypt: 530 5.7.0 Must issue a STARTTLS command first.
			{"without TLS", smtpClient{}, "MAIL", 530},
			// permit_sasl_authenticated,reject (delayed to RCPT): 554 5.7.1 Client host rejected.
			{"without AUTH", smtpClient{StartTLS: true}, "RCPT <bob@example.com>", 554},
			// Dovecot says no: 535 5.7.8 Authentication failed.
			{"wrong password", smtpClient{StartTLS: true, Auth: sasl.NewPlainClient("", "alice@example.org", "wrong")}, "AUTH", 535},
		} {
			err := pf.SendSMTPWith(pf.SubmitAddr, tt.c, "rt@example.org", []string{"bob@example.com"}, msg)
			if stage, code := stageCode(t, err); stage != tt.stage || code != tt.code {
				t.Errorf("%s: %v, want %s: %d", tt.name, err, tt.stage, tt.code)
			}
		}
		if n := strings.Count(m.Log(), "msg=message "); n != decisions {
			t.Errorf("the milter decided on %d refused messages", n-decisions)
		}
	})
	t.Run("port 25 authenticated", func(t *testing.T) {
		wantOutbound(t, send(t, pf.InboundAddr, smtpClient{Auth: alice}, "port 25 with SASL"))
	})
	t.Run("port 25 not authenticated", func(t *testing.T) {
		wantInbound(t, send(t, pf.InboundAddr, smtpClient{}, "port 25 without SASL"))
	})
	t.Run("port 25 authenticated, authenticated = inbound", func(t *testing.T) {
		m.opts.Settings = append(m.opts.Settings, `direction.authenticated = "inbound"`)
		m.writeConfig(t, m.opts)
		if got := m.Reload(t); !strings.Contains(got, "msg=reloaded") {
			t.Fatalf("config not reloaded:\n%s", got)
		}
		wantInbound(t, send(t, pf.InboundAddr, smtpClient{Auth: alice}, "port 25 with SASL, counted inbound"))
	})
}
