package milter

import (
	"context"
	"strings"
	"testing"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// TestNonSMTPInboundWarning: a message over Postfix's emulated connection
// for the sendmail command (localhost, 127.0.0.1, port 0, as
// TestSendmailDirection in test/e2e sees Postfix 3.7 send it) that is not
// marked outbound gets a warning in the log; marked by {daemon_name}, or
// from a real loopback SMTP client, it does not.
func TestNonSMTPInboundWarning(t *testing.T) {
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	const warning = "mail from Postfix's sendmail command treated as inbound"
	for _, tt := range []struct {
		name   string
		port   uint16
		daemon string
		warn   bool
	}{
		{"sendmail, plain cleanup", 0, "mx.example.org", true},
		{"sendmail, cleanup-ns ORIGINATING", 0, "ORIGINATING", false},
		{"loopback SMTP client", 40000, "mx.example.org", false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, nil, eng)
			s := dial(t, ts.addr)
			s.macros.Set("{daemon_name}", tt.daemon)
			if a, err := s.Conn("localhost", dj.FamilyInet, tt.port, "127.0.0.1"); err != nil || a.Type != dj.ActionContinue {
				t.Fatalf("conn: %v %v", a, err)
			}
			if a, err := s.Helo("localhost"); err != nil || a.Type != dj.ActionContinue {
				t.Fatalf("helo: %v %v", a, err)
			}
			send(t, s, msgSpec{from: "rt@example.org", rcpts: []string{"bob@example.net"}, header: [][2]string{{"Subject", "x"}}, body: "x\r\n"})
			if got := strings.Contains(ts.logs.String(), warning); got != tt.warn {
				t.Errorf("warning logged: %v, want %v\n%s", got, tt.warn, ts.logs)
			}
		})
	}
}
