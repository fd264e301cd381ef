package e2e

import (
	"errors"
	"regexp"
	"slices"
	"strconv"
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

// wantDirection checks that the milter logged exactly one decision, in
// direction dir ("in" or "out"), for the delivered message: for one of the
// queue ids in its Received fields from this Postfix (a message that went
// through a content filter has two).
func wantDirection(t *testing.T, m *Milter, got *Mail, dir string) {
	t.Helper()
	var ids []string
	for _, f := range got.Get("Received") {
		if sm := receivedID.FindStringSubmatch(f); sm != nil {
			ids = append(ids, sm[1])
		}
	}
	var lines []string
	waitFor(5*time.Second, func() bool {
		lines = nil
		for _, l := range strings.Split(m.Log(), "\n") {
			for _, id := range ids {
				if strings.Contains(l, "msg=message queue_id="+id+" ") {
					lines = append(lines, l)
				}
			}
		}
		return len(lines) > 0
	})
	if len(lines) != 1 {
		t.Fatalf("%d milter decisions for queue ids %q, want 1:\n%s", len(lines), ids, strings.Join(lines, "\n"))
	}
	if !strings.Contains(lines[0], "direction="+dir+" ") {
		t.Errorf("milter log for %q: want direction=%s:\n%s", ids, dir, lines[0])
	}
}

// receivedID is the queue id in a Received field value from this Postfix.
var receivedID = regexp.MustCompile(`(?s)by mx\.example\.test \(Postfix[,)].*\sid ([0-9A-F]+)`)

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
		wantDirection(t, m, got, "out")
	}
	wantInbound := func(t *testing.T, got *Mail) {
		t.Helper()
		if isSigned(got) {
			t.Errorf("inbound message was signed by the gateway:\n%s", got.Raw)
		}
		if v := got.Get("X-Cryptmilter-Signature"); len(v) != 1 || v[0] != "none" {
			t.Errorf("X-Cryptmilter-Signature %q, want the inbound \"none\"", v)
		}
		wantDirection(t, m, got, "in")
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

// TestContentFilter: behind an after-queue content filter on loopback
// (amavis-style: Postfix → content_filter → the filter → XFORWARD into a
// return smtpd), inbound mail stays inbound: an external encrypted message
// is decrypted and a plain one is not signed by the gateway, and mail from
// the submission port is still signed, with the milter in either place:
//   - before the filter (README's choice): cryptmilter in smtpd_milters of
//     the ports where mail enters, the return smtpd without milters, as in
//     Postfix's FILTER_README. The milter sees the real client, its SASL
//     login and the port's daemon name.
//   - after the filter, only on the return smtpds: every message there
//     comes from 127.0.0.1 (Postfix does not pass XFORWARD into milter
//     macros), so direction rests on the return port's daemon name: mail
//     from the submission port must come back through its own return port
//     with milter_macro_daemon_name=ORIGINATING (amavis: a policy bank
//     with its own forward_method).
//
// The last case is the old default, loopback in internal_hosts: with the
// milter after the filter it takes external mail for outbound and signs it
// with the gateway's key; the product's default must not.
func TestContentFilter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		after      bool   // the milter after the filter, on the return smtpds
		internal   string // direction.internal_hosts, "" for the default
		inboundOut bool   // external mail ends up outbound (the hazard)
	}{
		{"milter before the filter", false, "", false},
		{"milter after the filter", true, "", false},
		{"milter after the filter, loopback internal", true, `["127.0.0.0/8", "::1"]`, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			in, out := newContentFilter(t, "in"), newContentFilter(t, "out")
			var opts postfixOptions
			if tt.after {
				// Mail enters without milters and goes to the filter
				// its port belongs to; each return smtpd runs the milter.
				noFilterMilters := "receive_override_options=no_unknown_recipient_checks,no_header_body_checks"
				opts.InboundOptions = []string{"smtpd_milters=", "content_filter=" + in.Transport()}
				opts.SubmitOptions = []string{"smtpd_milters=", "content_filter=" + out.Transport()}
				opts.Services = contentFilterServices([]*ContentFilter{in, out}, map[*ContentFilter][]string{
					in:  {noFilterMilters},
					out: {noFilterMilters, "milter_macro_daemon_name=" + originatingDaemon},
				})
			} else {
				// One filter for everything, as amavis is usually set
				// up; the milter has run before Postfix queues the mail.
				opts.Main = []string{"content_filter = " + in.Transport()}
				opts.Services = contentFilterServices([]*ContentFilter{in}, nil)
			}
			in.start(t)
			out.start(t)
			var settings []string
			if tt.internal != "" {
				settings = append(settings, "direction.internal_hosts = "+tt.internal)
			}
			pf, m := startStack(t, stackOptions{Postfix: opts, Milter: milterOptions{Settings: settings}})
			verifier := gatewayVerifier(t, m.Keystore)

			// Inbound: an encrypted message and a plain one, on port 25.
			enc := encryptToGateway(t, verifier.gatewayCert(t), "alice@example.net", "encrypted through the filter",
				[]byte("Content-Type: text/plain; charset=us-ascii\r\n\r\nThe quarterly numbers.\r\n"))
			if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, enc); err != nil {
				t.Fatal(err)
			}
			plain := plainMessage("alice@example.net", "rt@example.org", "plain through the filter")
			if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, plain); err != nil {
				t.Fatal(err)
			}
			got := pf.WaitMaildir(t, "rt@example.org", 2, 30*time.Second)
			for _, g := range got {
				if f := g.Get("X-Content-Filter"); len(f) != 1 || f[0] != "in" {
					t.Errorf("X-Content-Filter %q, want the in filter's mark:\n%s", f, g.Raw)
				}
			}
			encGot, plainGot := got[0], got[1]
			if strings.Contains(string(plainGot.Raw), "encrypted through the filter") {
				encGot, plainGot = plainGot, encGot
			}
			dir := "in"
			if tt.inboundOut {
				dir = "out"
				if !isSigned(plainGot) {
					t.Errorf("with loopback internal, external mail behind the filter was expected to be (wrongly) signed:\n%s", plainGot.Raw)
				}
				if enc := encGot.Get("X-Cryptmilter-Encryption"); len(enc) != 0 {
					t.Errorf("outbound processing added %q", enc)
				}
			} else {
				if v := only(t, encGot, "X-Cryptmilter-Encryption"); !strings.HasPrefix(v, "decrypted; protocol=smime") {
					t.Errorf("X-Cryptmilter-Encryption: %s, want decrypted:\n%s", v, encGot.Raw)
				}
				if !strings.Contains(string(encGot.Body), "The quarterly numbers.") {
					t.Errorf("encrypted message not delivered as plaintext:\n%s", encGot.Raw)
				}
				if isSigned(plainGot) {
					t.Errorf("external mail signed by the gateway:\n%s", plainGot.Raw)
				}
				if v := only(t, plainGot, "X-Cryptmilter-Signature"); v != "none" {
					t.Errorf("X-Cryptmilter-Signature: %s, want none", v)
				}
			}
			for _, g := range got {
				wantDirection(t, m, g, dir)
			}

			// Outbound: from the submission port, signed.
			msg := plainMessage("rt@example.org", "bob@example.com", "submitted through the filter")
			if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", []string{"bob@example.com"}, msg); err != nil {
				t.Fatal(err)
			}
			sent := pf.WaitMaildir(t, "bob@example.com", 1, 30*time.Second)[0]
			if !isSigned(sent) {
				t.Fatalf("submitted mail not signed:\n%s", sent.Raw)
			}
			verifier.pgpVerifySigned(t, sent)
			wantDirection(t, m, sent, "out")
			mark := "in"
			if tt.after {
				mark = "out"
			}
			if f := sent.Get("X-Content-Filter"); len(f) != 1 || f[0] != mark {
				t.Errorf("submitted mail: X-Content-Filter %q, want %q", f, mark)
			}

			// Each message went through the milter exactly once.
			if n := strings.Count(m.Log(), "msg=message "); n != 3 {
				t.Errorf("%d milter decisions for 3 messages:\n%s", n, m.Log())
			}
		})
	}
}

// TestOpenDKIM: cryptmilter beside Debian's OpenDKIM. DKIM covers the
// message as sent, so OpenDKIM must verify inbound mail before cryptmilter
// decrypts it and sign outbound mail after cryptmilter has encrypted it:
// Postfix hands each milter the message as the milters before it left it
// (headers and body), so the order of the milter list is the order of
// the work. Hence per path:
//
//	smtpd_milters     = opendkim, cryptmilter   (port 25: inbound)
//	non_smtpd_milters = cryptmilter, opendkim   (sendmail: outbound)
//	submission        -o smtpd_milters=cryptmilter,opendkim
//	re-injection      -o smtpd_milters=opendkim (extra copies, signed only)
//
// In that order every outbound copy (the one rewritten in place and the
// ones re-injected) carries one DKIM signature that verifies (with opendkim
// -t and with go-msgauth, keys from a file), and inbound OpenDKIM's dkim=pass for the sender's
// domain and cryptmilter's smime=pass stand side by side under the same
// authserv-id, while forged results under it are gone (OpenDKIM removes
// forged dkim results, cryptmilter forged smime ones). In the opposite
// order (the order README used to advise) OpenDKIM signs the plaintext of
// the copy that is then encrypted, and verifies the decrypted body:
// dkim=fail.
func TestOpenDKIM(t *testing.T) {
	t.Parallel()
	requirePeers(t, true, "postfix", "opendkim", "opendkim-genkey", "gpg", "openssl")
	gwKey := sharedDKIMKey(t, "example.org", "gw")
	senderKey := sharedDKIMKey(t, "example.net", "mail")
	peers := newOutPeers(t)
	sender := newSMIMESender(t, peers.keystore, "alice@example.net")

	for _, inOrder := range []bool{true, false} {
		name := "milters in order"
		if !inOrder {
			name = "milters in the wrong order"
		}
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dk := startOpenDKIM(t, openDKIMOptions{Sign: gwKey, Trust: []*dkimKey{senderKey}})
			port := freePort(t)
			cm := "inet:127.0.0.1:" + strconv.Itoa(port)
			inbound, outbound := dk.MilterAddr()+","+cm, cm+","+dk.MilterAddr()
			if !inOrder {
				inbound, outbound = outbound, inbound
			}
			pf, m := startStack(t, stackOptions{
				Milter: milterOptions{Port: port, Keystore: peers.keystore},
				Postfix: postfixOptions{
					Main:          []string{"smtpd_milters = " + inbound, "non_smtpd_milters = " + outbound},
					SubmitOptions: []string{"smtpd_milters=" + outbound},
					ReinjectOptions: []string{"smtpd_milters=" + dk.MilterAddr(),
						"milter_macro_daemon_name=" + originatingDaemon},
				},
			})

			// Outbound: three recipients, three copies; one rewrites the
			// original, two go through the re-injection listener.
			rcpts := []string{"alice@example.net", "carol@example.net", "bob@example.net"}
			msg := []byte("From: RT <rt@example.org>\r\nTo: alice@example.net, carol@example.net, bob@example.net\r\n" +
				"Subject: signed after encryption\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
				"Message-ID: <dkim-" + strconv.Itoa(port) + "@example.org>\r\nMIME-Version: 1.0\r\n" +
				"Content-Type: text/plain; charset=us-ascii\r\n\r\nYour ticket #7 is resolved.\r\n")
			if err := pf.SendSMTP(pf.SubmitAddr, "rt@example.org", rcpts, msg); err != nil {
				t.Fatal(err)
			}
			failed := 0
			for _, rcpt := range rcpts {
				got := pf.WaitMaildir(t, rcpt, 1, 30*time.Second)[0]
				// In the wrong order OpenDKIM has signed the original before
				// cryptmilter made the copies: each carries that signature.
				if n := len(got.Get("DKIM-Signature")); inOrder && n != 1 {
					t.Errorf("%s: %d DKIM signatures, want 1:\n%s", rcpt, n, got.Raw)
				}
				verdict := dk.Verify(t, got)
				t.Logf("%s: %d DKIM signatures: %s", rcpt, len(got.Get("DKIM-Signature")), verdict)
				if errs := verifyDKIM(t, got, gwKey); inOrder && (len(errs) != 1 || errs[0] != nil) {
					t.Errorf("%s: go-msgauth disagrees with OpenDKIM: %v", rcpt, errs)
				}
				switch {
				case strings.HasPrefix(verdict, "verification (s=gw, d=example.org,") && strings.HasSuffix(verdict, "succeeded"):
				case !inOrder && strings.Contains(verdict, "failed"):
					failed++
				default:
					t.Errorf("%s: DKIM %s:\n%s", rcpt, verdict, got.Raw)
				}
				if rcpt == "bob@example.net" {
					peers.pgpVerifySigned(t, got)
				} else if plain := peers.pgpDecrypt(t, rcpt, got); !strings.Contains(string(plain), "ticket #7 is resolved") {
					t.Errorf("%s: decrypted copy lacks the text:\n%s", rcpt, plain)
				}
			}
			if !inOrder && failed != 1 {
				t.Errorf("in the wrong order %d copies failed DKIM, want 1 (the one rewritten in place; re-injected copies are signed by the re-injection listener)", failed)
			}

			if inOrder {
				// The sendmail command (RT's path): signed after encryption too.
				pf.Sendmail(t, "rt@example.org", []string{"alice@example.net"}, msg)
				got := pf.WaitMaildir(t, "alice@example.net", 2, 30*time.Second)[1]
				if verdict := dk.Verify(t, got); !strings.HasSuffix(verdict, "succeeded") {
					t.Errorf("sendmail copy: DKIM %s:\n%s", verdict, got.Raw)
				}
				if errs := verifyDKIM(t, got, gwKey); len(errs) != 1 || errs[0] != nil {
					t.Errorf("sendmail copy: go-msgauth: %v", errs)
				}
				peers.pgpDecrypt(t, "alice@example.net", got)
			}

			// Inbound: S/MIME signed and encrypted by alice, DKIM-signed
			// by her domain, with forged results added on the way.
			in := senderKey.Sign(t, sender.Message(t, "encrypted and DKIM-signed", "The printer is on fire."))
			forged := "Authentication-Results: mx.example.test; dkim=pass header.d=example.org (forged)\r\n" +
				"Authentication-Results: mx.example.test;\r\n smime=pass body.smime-identifier=ceo@example.org (forged)\r\n" +
				"Authentication-Results: other.example; spf=pass smtp.mailfrom=example.net\r\n"
			if err := pf.SendSMTP(pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, append([]byte(forged), in...)); err != nil {
				t.Fatal(err)
			}
			got := pf.WaitMaildir(t, "rt@example.org", 1, 30*time.Second)[0]
			if v := only(t, got, "X-Cryptmilter-Encryption"); !strings.HasPrefix(v, "decrypted; protocol=smime") {
				t.Errorf("X-Cryptmilter-Encryption: %s", v)
			}
			if v := only(t, got, "X-Cryptmilter-Signature"); !strings.HasPrefix(v, "valid; protocol=smime; signer=alice@example.net") {
				t.Errorf("X-Cryptmilter-Signature: %s", v)
			}
			var ar []string
			for _, v := range got.Get("Authentication-Results") {
				ar = append(ar, strings.Join(strings.Fields(v), " "))
			}
			dkimResult := "dkim=pass"
			if !inOrder {
				dkimResult = "dkim=fail"
			}
			// Prefix and a part further on, of each field there must be.
			want := [][2]string{
				{"mx.example.test; smime=pass body.smime-identifier=alice@example.net", ""},
				{"mx.example.test; " + dkimResult, "header.d=example.net"},
				{"other.example; spf=pass smtp.mailfrom=example.net", ""},
			}
			if len(ar) != len(want) {
				t.Fatalf("Authentication-Results %q, want %d fields like %q", ar, len(want), want)
			}
			for _, w := range want {
				if !slices.ContainsFunc(ar, func(a string) bool { return strings.HasPrefix(a, w[0]) && strings.Contains(a, w[1]) }) {
					t.Errorf("no Authentication-Results like %q in %q", w, ar)
				}
			}
			wantDirection(t, m, got, "in")
		})
	}
}
