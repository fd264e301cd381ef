package e2e

import (
	"bufio"
	"io"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ContentFilter is testdata/contentfilter.py, an amavis-style after-queue
// filter on loopback: Postfix hands it mail over SMTP
// (content_filter = scan:[127.0.0.1]:Port), it adds "X-Content-Filter: Name"
// and re-injects the message, with XFORWARD, into the smtpd at
// 127.0.0.1:ReturnPort.
type ContentFilter struct {
	Name       string
	Port       int
	ReturnPort int
	log        syncBuffer
}

// Transport is the content_filter value that sends mail to the filter
// (through the "scan" transport of contentFilterServices).
func (f *ContentFilter) Transport() string { return "scan:[127.0.0.1]:" + strconv.Itoa(f.Port) }

// Log is what the filter logged: one "passed" line per message.
func (f *ContentFilter) Log() string { return f.log.String() }

// Passed counts the messages the filter re-injected.
func (f *ContentFilter) Passed() int { return strings.Count(f.Log(), ": passed ") }

// newContentFilter picks the filter's ports; startContentFilter starts it.
// The ports are known before Postfix starts, so that its master.cf can
// name them.
func newContentFilter(t testing.TB, name string) *ContentFilter {
	t.Helper()
	requirePeers(t, false, "python3")
	return &ContentFilter{Name: name, Port: freePort(t), ReturnPort: freePort(t)}
}

// start runs the filter until the end of the test.
func (f *ContentFilter) start(t testing.TB) {
	t.Helper()
	cmd := exec.Command("python3", "testdata/contentfilter.py", strconv.Itoa(f.Port), strconv.Itoa(f.ReturnPort), f.Name)
	cmd.Stderr = &f.log
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting the content filter: %v", err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("content filter %s log:\n%s", f.Name, f.Log())
		}
	})
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(stdout).ReadString('\n')
		ready <- line
		io.Copy(io.Discard, stdout)
	}()
	select {
	case line := <-ready:
		if !strings.HasPrefix(line, "ready ") {
			t.Fatalf("content filter %s did not start: %q\n%s", f.Name, line, f.Log())
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("content filter %s not ready after 10s\n%s", f.Name, f.Log())
	}
}

// contentFilterServices are the master.cf entries of an amavis-style
// setup, as in Postfix's FILTER_README: the "scan" transport to the
// filters, with XFORWARD, and for each filter its return smtpd on
// ReturnPort that accepts XFORWARD from loopback, does not filter again
// and, as FILTER_README has it, runs no milters (no_milters).
// returnOptions are more -o lines for a filter's return smtpd; the last -o
// of a name wins, so a setup with the milter after the filter passes
// receive_override_options without no_milters and its smtpd_milters.
func contentFilterServices(filters []*ContentFilter, returnOptions map[*ContentFilter][]string) []string {
	services := []string{`scan      unix  -       -       n       -       4       smtp
  -o smtp_send_xforward_command=yes
  -o disable_mime_output_conversion=yes
  -o smtp_tls_security_level=none`}
	for _, f := range filters {
		s := "127.0.0.1:" + strconv.Itoa(f.ReturnPort) + " inet n - n - - smtpd\n" +
			"  -o syslog_name=postfix/return-" + f.Name + "\n" +
			"  -o content_filter=\n" +
			"  -o smtpd_authorized_xforward_hosts=127.0.0.0/8\n" +
			"  -o smtpd_client_restrictions=permit_mynetworks,reject\n" +
			"  -o receive_override_options=no_unknown_recipient_checks,no_header_body_checks,no_milters"
		for _, o := range returnOptions[f] {
			s += "\n  -o " + o
		}
		services = append(services, s)
	}
	return services
}
