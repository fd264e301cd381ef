package milter

import (
	"fmt"
	"testing"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

// TestJournalResendWithoutIdentity (found by review): two separate
// submissions of the same bytes (a device's alert without Date or
// Message-ID, sent again a day later, each with its own Received field)
// are two messages: both hand their copies over. They were taken for one
// message retried, and bob and carol never got the second alert (its
// copies skipped, their recipients removed from the original).
func TestJournalResendWithoutIdentity(t *testing.T) {
	l := startReinjectListener(t, map[string]int{})
	ts := startServer(t, func(c *config.Config) { c.Outbound.Reinject = "inet:" + l.addr }, splitEngine)
	alert := msgSpec{
		from:  "ups@example.org",
		rcpts: []string{"alice@example.net", "bob@example.net", "carol@example.net"},
		body:  "UPS on battery.\r\n",
	}
	for day := 1; day <= 2; day++ {
		m := alert
		m.header = [][2]string{
			{"Received", fmt.Sprintf("from ups by mx (Postfix) with ESMTP id DAY%d", day)},
			{"From", "ups@example.org"}, {"Subject", "UPS alert"},
		}
		s := session(t, ts)
		o := send(t, s, m)
		if o.act.Type != dj.ActionAccept {
			t.Fatalf("day %d: %v", day, o.act)
		}
		var del []string
		for _, md := range o.mods {
			if md.Type == dj.ActionDelRcpt {
				del = append(del, md.Rcpt)
			}
		}
		t.Logf("day %d: removed from the original %v; copies accepted so far %v", day, del, l.deliveries())
	}
	if got := l.deliveries(); got["bob@example.net"] != 2 || got["carol@example.net"] != 2 {
		t.Errorf("LOST MAIL: two submissions, copies delivered %v (bob and carol removed from the original both times)", got)
	}
}
