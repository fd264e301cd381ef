package e2e

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// deferTable is a Postfix tcp_table(5) server for check_recipient_access:
// it answers "451 4.7.1" for one address the first times it is asked,
// then "not found" (the recipient is accepted).
type deferTable struct {
	addr string
	rcpt string
	mu   sync.Mutex
	left int // deferrals still to give
	asks int // lookups of rcpt
}

func startDeferTable(t testing.TB, rcpt string, times int) *deferTable {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	d := &deferTable{addr: ln.Addr().String(), rcpt: rcpt, left: times}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go d.serve(c)
		}
	}()
	return d
}

func (d *deferTable) serve(c net.Conn) {
	defer c.Close()
	r := bufio.NewReader(c)
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		key, ok := strings.CutPrefix(strings.TrimSpace(line), "get ")
		reply := "500 not-found\n"
		d.mu.Lock()
		if ok && strings.EqualFold(key, d.rcpt) {
			d.asks++
			if d.left > 0 {
				d.left--
				reply = "200 451%204.7.1%20deferred%20by%20the%20test\n"
			}
		}
		d.mu.Unlock()
		if _, err := c.Write([]byte(reply)); err != nil {
			return
		}
	}
}

func (d *deferTable) deferralsLeft() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.left
}

// TestReinjectRetriesNoDuplicates reproduces the fault of issue 11: the
// re-injection smtpd defers one recipient's copy (carol's, the last) a
// number of times, so the original is tempfailed and retried each time;
// the copies the listener accepted on the first attempt must reach their
// mailboxes once, not once per attempt. Over SMTP the client sends the
// message again after each 451; with sendmail, Postfix's pickup retries
// the message from the maildrop.
func TestReinjectRetriesNoDuplicates(t *testing.T) {
	requirePeers(t, true, "postfix", "sendmail", "gpg", "openssl")
	peers := newOutPeers(t)
	for _, tc := range []struct {
		name      string
		deferrals int
		submit    func(t *testing.T, pf *Postfix, msg []byte, table *deferTable) int
	}{
		{"smtp", 3, func(t *testing.T, pf *Postfix, msg []byte, table *deferTable) int {
			attempts := 0
			for {
				attempts++
				code, reply := pf.SendSMTPCode(t, pf.SubmitAddr, "rt@example.org", outRcpts, msg)
				if code == 0 {
					return attempts
				}
				if code != 451 || attempts > 10 {
					t.Fatalf("attempt %d: %d %q, want 451 while carol's copy is deferred", attempts, code, reply)
				}
			}
		}},
		{"sendmail", 5, func(t *testing.T, pf *Postfix, msg []byte, table *deferTable) int {
			pf.Sendmail(t, "rt@example.org", outRcpts, msg)
			if !waitFor(90*time.Second, func() bool { return table.deferralsLeft() == 0 }) {
				t.Fatalf("pickup did not retry the message %d times", 5)
			}
			return 0
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			table := startDeferTable(t, "carol@example.net", tc.deferrals)
			pf, m := startStack(t, stackOptions{
				Milter: milterOptions{Keystore: peers.keystore},
				Postfix: postfixOptions{ReinjectOptions: []string{
					"smtpd_recipient_restrictions=check_recipient_access,tcp:" + table.addr}},
			})
			before := counts(t, pf)
			subject := "retried " + tc.name
			attempts := tc.submit(t, pf, outMessage(subject), table)
			for _, a := range outRcpts {
				pf.WaitMaildir(t, a, before[a]+1, 90*time.Second)
			}
			pf.WaitQueueEmpty(t, 60*time.Second)
			time.Sleep(2 * time.Second) // a late duplicate would arrive about now
			dups := 0
			var per []string
			for _, a := range outRcpts {
				n := len(pf.Maildir(t, a)) - before[a]
				dups += n - 1
				per = append(per, fmt.Sprintf("%s=%d", a, n))
			}
			table.mu.Lock()
			asks := table.asks
			table.mu.Unlock()
			t.Logf("%s: carol's copy deferred %d times (%d lookups, %d SMTP attempts); delivered %s; duplicates %d",
				tc.name, tc.deferrals, asks, attempts, strings.Join(per, " "), dups)
			if dups != 0 {
				t.Errorf("%d duplicate copies (%s), want none", dups, strings.Join(per, " "))
			}
			if !strings.Contains(m.Log(), "copies_handed_over_before=") {
				t.Errorf("the milter log does not show copies skipped on a retry")
			}
			peers.checkDelivered(t, pf, subject, before)
		})
	}
}
