package e2e

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/emersion/go-smtp"
)

// Domains the private Postfix delivers into maildirs
// (MAILDIR_BASE/DOMAIN/LOCALPART/); other domains bounce.
var virtualDomains = []string{"example.org", "example.net", "example.com"}

// defaultMailboxes are the addresses with a maildir: these local parts in
// every virtual domain. (virtual(8) refuses regexp substitutions, so each
// address is listed.)
func defaultMailboxes() []string {
	var as []string
	for _, d := range virtualDomains {
		for _, l := range []string{"rt", "alice", "bob", "carol", "dave", "eve", "postmaster", "cryptmilter"} {
			as = append(as, l+"@"+d)
		}
	}
	return as
}

// OriginatingDaemon is the {daemon_name} the harness gives outbound paths
// (the submission port and non-SMTP mail); the milter's config lists it in
// originating_daemons.
const originatingDaemon = "ORIGINATING"

// postfixOptions configures a private Postfix.
type postfixOptions struct {
	// MilterAddr is the milter socket in Postfix syntax
	// ("inet:127.0.0.1:PORT"), used for smtpd_milters and
	// non_smtpd_milters. Empty: no milter.
	MilterAddr string
	// Main holds extra main.cf lines ("name = value"), written last so
	// they override the harness's settings.
	Main []string
	// Mailboxes are more addresses to deliver into maildirs (in
	// virtualDomains), besides defaultMailboxes.
	Mailboxes []string
	// NonSMTPDaemonName is the {daemon_name} of mail submitted with
	// sendmail; default originatingDaemon (outbound).
	NonSMTPDaemonName string
	// PlainNonSMTP leaves pickup on the shared cleanup service, as
	// Debian's master.cf does: sendmail mail then has {daemon_name} =
	// $myhostname (mx.example.test) and {client_addr} 127.0.0.1.
	PlainNonSMTP bool
	// InboundOptions, SubmitOptions and ReinjectOptions are more
	// "name=value" overrides (master.cf -o) for those smtpd services,
	// written after the harness's own (the last -o of a name wins).
	InboundOptions, SubmitOptions, ReinjectOptions []string
	// Services are more master.cf entries, written after the harness's.
	Services []string
}

// Postfix is a private Postfix instance: its own config directory, queue,
// maildirs and log file, listening on loopback ports.
type Postfix struct {
	t   testing.TB
	Dir string // config directory (main.cf, master.cf); also holds the rest
	// InboundAddr is smtpd with smtpd_milters and the default daemon name:
	// mail from the outside world (inbound for the milter).
	InboundAddr string
	// SubmitAddr is smtpd with milter_macro_daemon_name=ORIGINATING:
	// outbound for the milter.
	SubmitAddr string
	// ReinjectAddr is smtpd without milters, for the milter's re-injected
	// copies ([outbound] reinject = "inet:" + ReinjectAddr).
	ReinjectAddr string
	QueueDir     string
	MailDir      string // virtual_mailbox_base
	LogFile      string // maillog_file
}

const mainCF = `# Private Postfix instance for cryptmilter's end-to-end tests.
compatibility_level = 3.6
queue_directory = {{.Dir}}/queue
data_directory = {{.Dir}}/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = $myhostname
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains =
local_transport = error:5.1.1 local delivery is disabled in this test instance
default_transport = error:5.1.2 remote delivery is disabled in this test instance
relay_transport = error:5.1.2 relaying is disabled in this test instance
virtual_mailbox_domains = {{.Domains}}
virtual_mailbox_base = {{.Dir}}/mail
virtual_mailbox_maps = texthash:{{.Dir}}/vmailbox
virtual_uid_maps = static:{{.UID}}
virtual_gid_maps = static:{{.GID}}
virtual_minimum_uid = 1
alias_maps =
alias_database =
local_header_rewrite_clients =
biff = no
smtpd_banner = $myhostname ESMTP
maillog_file = {{.Dir}}/maillog
maillog_file_prefixes = {{.Dir}}
master_service_disable =
delay_warning_time = 0
queue_run_delay = 1s
minimal_backoff_time = 1s
maximal_backoff_time = 2s
{{- if .Milter}}
smtpd_milters = {{.Milter}}
non_smtpd_milters = {{.Milter}}
milter_default_action = tempfail
milter_protocol = 6
milter_connect_timeout = 5s
{{- end}}
{{range .Main}}{{.}}
{{end}}`

// master.cf: every service unchrooted; three smtpd ports; pickup wakes up
// every second so that sendmail submissions (and their retries after a
// milter tempfail) are quick; non-SMTP mail goes through its own cleanup
// service, whose milter_macro_daemon_name marks it outbound.
const masterCF = `# service type private unpriv chroot wakeup maxproc command
{{.Inbound}} inet n - n - - smtpd
{{- range .InboundOptions}}
  -o {{.}}
{{- end}}
{{.Submit}} inet n - n - - smtpd
  -o milter_macro_daemon_name={{.Originating}}
{{- range .SubmitOptions}}
  -o {{.}}
{{- end}}
{{.Reinject}} inet n - n - - smtpd
  -o smtpd_milters=
  -o non_smtpd_milters=
  -o milter_macro_daemon_name=REINJECT
{{- range .ReinjectOptions}}
  -o {{.}}
{{- end}}
pickup    unix  n       -       n       1       1       pickup
{{- if not .Plain}}
  -o cleanup_service_name=cleanup-ns
{{- end}}
cleanup   unix  n       -       n       -       0       cleanup
cleanup-ns unix n       -       n       -       0       cleanup
  -o milter_macro_daemon_name={{.NonSMTP}}
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
{{range .Services}}{{.}}
{{end}}`

// startPostfix starts a private Postfix and stops it at the end of the
// test, dumping its log when the test failed.
func startPostfix(t testing.TB, opts postfixOptions) *Postfix {
	t.Helper()
	requirePeers(t, true, "postfix", "postconf", "postqueue", "sendmail")
	pw, err := user.Lookup("postfix")
	if err != nil {
		skipOrFail(t, "end-to-end test needs the postfix user (install Debian's postfix package)")
	}
	dir := tempDir(t, "cm-pf-")
	pf := &Postfix{
		t:            t,
		Dir:          dir,
		InboundAddr:  "127.0.0.1:" + strconv.Itoa(freePort(t)),
		SubmitAddr:   "127.0.0.1:" + strconv.Itoa(freePort(t)),
		ReinjectAddr: "127.0.0.1:" + strconv.Itoa(freePort(t)),
		QueueDir:     filepath.Join(dir, "queue"),
		MailDir:      filepath.Join(dir, "mail"),
		LogFile:      filepath.Join(dir, "maillog"),
	}
	if opts.NonSMTPDaemonName == "" {
		opts.NonSMTPDaemonName = originatingDaemon
	}
	uid, _ := strconv.Atoi(pw.Uid)
	gid, _ := strconv.Atoi(pw.Gid)
	pd, err := user.LookupGroup("postdrop")
	if err != nil {
		skipOrFail(t, "end-to-end test needs the postdrop group (install Debian's postfix package)")
	}
	postdrop, _ := strconv.Atoi(pd.Gid)
	// The queue as `postfix check` (post-install create-missing) makes
	// it; with quick-start, `postfix start` skips its checks, which walk
	// the config directory and the shared Postfix files (seconds).
	dirs := []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{
		{pf.QueueDir, 0, 0, 0o755},
		{filepath.Join(pf.QueueDir, "pid"), 0, 0, 0o755},
		{filepath.Join(pf.QueueDir, "maildrop"), uid, postdrop, 0o730},
		{filepath.Join(pf.QueueDir, "public"), uid, postdrop, 0o710},
		{filepath.Join(dir, "data"), uid, gid, 0o700},
		{pf.MailDir, uid, gid, 0o755},
	}
	for _, q := range []string{"active", "bounce", "corrupt", "defer", "deferred", "flush", "hold", "incoming", "private", "saved", "trace"} {
		dirs = append(dirs, struct {
			path     string
			uid, gid int
			mode     os.FileMode
		}{filepath.Join(pf.QueueDir, q), uid, 0, 0o700})
	}
	for _, d := range dirs {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(d.path, d.uid, d.gid); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	writeFile(t, filepath.Join(pf.QueueDir, "quick-start"), "", 0o644)
	var vmailbox strings.Builder
	for _, a := range append(defaultMailboxes(), opts.Mailboxes...) {
		local, domain, _ := strings.Cut(a, "@")
		fmt.Fprintf(&vmailbox, "%s %s/%s/\n", a, domain, local)
	}
	writeFile(t, filepath.Join(dir, "vmailbox"), vmailbox.String(), 0o644)
	writeTemplate(t, filepath.Join(dir, "main.cf"), mainCF, map[string]any{
		"Dir": dir, "UID": uid, "GID": gid, "Milter": opts.MilterAddr, "Main": opts.Main,
		"Domains": strings.Join(virtualDomains, " "),
	})
	writeTemplate(t, filepath.Join(dir, "master.cf"), masterCF, map[string]any{
		"Inbound": pf.InboundAddr, "Submit": pf.SubmitAddr, "Reinject": pf.ReinjectAddr,
		"Originating": originatingDaemon, "NonSMTP": opts.NonSMTPDaemonName,
		"Plain": opts.PlainNonSMTP, "InboundOptions": opts.InboundOptions,
		"SubmitOptions": opts.SubmitOptions, "ReinjectOptions": opts.ReinjectOptions,
		"Services": opts.Services,
	})

	// Postfix waits (in 300 ms steps) while main.cf looks freshly
	// written: date the files back to start at once.
	past := time.Now().Add(-time.Hour)
	for _, f := range []string{"main.cf", "master.cf", "vmailbox"} {
		if err := os.Chtimes(filepath.Join(dir, f), past, past); err != nil {
			t.Fatal(err)
		}
	}
	start := time.Now()
	// Output to a file, not a pipe: the daemons may inherit it, and Run
	// would then wait for them to close it.
	outFile := filepath.Join(dir, "postfix-start.out")
	out, err := os.Create(outFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("postfix", "-c", dir, "start")
	cmd.Stdout, cmd.Stderr = out, out
	err = cmd.Run()
	out.Close()
	if err != nil {
		b, _ := os.ReadFile(outFile)
		t.Fatalf("postfix -c %s start: %v\n%s\n%s", dir, err, b, pf.Log())
	}
	t.Cleanup(pf.stop)
	for _, a := range []string{pf.InboundAddr, pf.SubmitAddr, pf.ReinjectAddr} {
		if !waitFor(10*time.Second, func() bool { return dialable(a) }) {
			t.Fatalf("postfix does not listen on %s\n%s", a, pf.Log())
		}
	}
	t.Logf("postfix %s started in %v (inbound %s, submit %s, reinject %s)", dir, time.Since(start).Round(time.Millisecond), pf.InboundAddr, pf.SubmitAddr, pf.ReinjectAddr)
	return pf
}

// stop stops Postfix and waits for its master to exit; on failure it logs
// the mail log and the queue.
func (pf *Postfix) stop() {
	t := pf.t
	if t.Failed() {
		t.Logf("postfix queue:\n%s", pf.queueListing())
		t.Logf("postfix maillog %s:\n%s", pf.LogFile, pf.Log())
	}
	pid := pf.masterPID()
	if out, err := exec.Command("postfix", "-c", pf.Dir, "stop").CombinedOutput(); err != nil {
		t.Logf("postfix -c %s stop: %v\n%s", pf.Dir, err, out)
		exec.Command("postfix", "-c", pf.Dir, "abort").Run()
	}
	if pid > 0 && !waitFor(10*time.Second, func() bool { return !processAlive(pid) }) {
		t.Logf("postfix master %d still running after stop; aborting", pid)
		exec.Command("postfix", "-c", pf.Dir, "abort").Run()
	}
}

func (pf *Postfix) masterPID() int {
	b, err := os.ReadFile(filepath.Join(pf.QueueDir, "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

// Log returns the Postfix mail log so far.
func (pf *Postfix) Log() string {
	b, err := os.ReadFile(pf.LogFile)
	if err != nil {
		return fmt.Sprintf("(no maillog: %v)", err)
	}
	return string(b)
}

func (pf *Postfix) queueListing() string {
	// postqueue waits for showq without end when the instance is broken
	// (e.g. its queue directory is gone): bound it.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "postqueue", "-c", pf.Dir, "-p").CombinedOutput()
	if err != nil {
		return fmt.Sprintf("postqueue -p: %v\n%s", err, out)
	}
	return string(out) + "maildrop: " + strconv.Itoa(pf.maildropCount()) + " file(s)\n"
}

// SMTPStageError is a refusal with the SMTP stage that got it: "EHLO",
// "MAIL", "RCPT <addr>", "DATA" or "end of DATA". errors.As finds the
// *smtp.SMTPError inside.
type SMTPStageError struct {
	Stage string
	Err   error
}

func (e *SMTPStageError) Error() string { return e.Stage + ": " + e.Err.Error() }
func (e *SMTPStageError) Unwrap() error { return e.Err }

// SendSMTP sends msg over SMTP to addr (pf.InboundAddr, pf.SubmitAddr, …).
// A refusal comes back as *SMTPStageError wrapping *smtp.SMTPError.
func (pf *Postfix) SendSMTP(addr, from string, rcpts []string, msg []byte) error {
	return pf.SendSMTPWith(addr, smtpClient{}, from, rcpts, msg)
}

// SendSMTPCode sends like SendSMTP and returns the SMTP code of a refusal
// (0 when the message was accepted); any other error fails the test.
func (pf *Postfix) SendSMTPCode(t testing.TB, addr, from string, rcpts []string, msg []byte) (int, string) {
	t.Helper()
	err := pf.SendSMTP(addr, from, rcpts, msg)
	if err == nil {
		return 0, ""
	}
	var se *smtp.SMTPError
	if errors.As(err, &se) {
		return se.Code, fmt.Sprintf("%d %d.%d.%d %s", se.Code, se.EnhancedCode[0], se.EnhancedCode[1], se.EnhancedCode[2], se.Message)
	}
	t.Fatalf("smtp to %s: %v", addr, err)
	return 0, ""
}

// Sendmail submits msg with Postfix's sendmail command (non-SMTP mail:
// maildrop, pickup, cleanup with non_smtpd_milters).
func (pf *Postfix) Sendmail(t testing.TB, from string, rcpts []string, msg []byte) {
	t.Helper()
	args := append([]string{"-C", pf.Dir, "-i", "-f", from, "--"}, rcpts...)
	runCmd(t, bytes.NewReader(msg), "sendmail", args...)
}

// Flush asks Postfix to retry the deferred queue and the maildrop now.
func (pf *Postfix) Flush(t testing.TB) {
	t.Helper()
	runCmd(t, nil, "postqueue", "-c", pf.Dir, "-f")
}

// maildropCount counts messages waiting for pickup.
func (pf *Postfix) maildropCount() int {
	es, _ := os.ReadDir(filepath.Join(pf.QueueDir, "maildrop"))
	return len(es)
}

// queueCount counts messages anywhere in the queue (maildrop, incoming,
// active, deferred, hold).
func (pf *Postfix) queueCount() int {
	n := 0
	for _, q := range []string{"maildrop", "incoming", "active", "deferred", "hold"} {
		filepath.WalkDir(filepath.Join(pf.QueueDir, q), func(_ string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				n++
			}
			return nil
		})
	}
	return n
}

// WaitQueueEmpty waits until no message is left anywhere in the queue.
func (pf *Postfix) WaitQueueEmpty(t testing.TB, timeout time.Duration) {
	t.Helper()
	if !waitFor(timeout, func() bool { return pf.queueCount() == 0 }) {
		t.Fatalf("postfix queue not empty after %v:\n%s", timeout, pf.queueListing())
	}
}

// mailboxDir is the maildir of addr.
func (pf *Postfix) mailboxDir(addr string) string {
	local, domain, ok := strings.Cut(addr, "@")
	if !ok {
		pf.t.Fatalf("bad address %q", addr)
	}
	return filepath.Join(pf.MailDir, domain, local)
}

// Maildir returns the messages delivered to addr so far, oldest first.
func (pf *Postfix) Maildir(t testing.TB, addr string) []*Mail {
	t.Helper()
	dir := pf.mailboxDir(addr)
	type entry struct {
		path string
		mod  time.Time
	}
	var es []entry
	for _, sub := range []string{"new", "cur"} {
		ds, err := os.ReadDir(filepath.Join(dir, sub))
		if err != nil {
			continue
		}
		for _, d := range ds {
			info, err := d.Info()
			if err != nil {
				continue
			}
			es = append(es, entry{filepath.Join(dir, sub, d.Name()), info.ModTime()})
		}
	}
	sort.Slice(es, func(i, j int) bool {
		if !es[i].mod.Equal(es[j].mod) {
			return es[i].mod.Before(es[j].mod)
		}
		return es[i].path < es[j].path
	})
	var mails []*Mail
	for _, e := range es {
		b, err := os.ReadFile(e.path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := parseMail(b)
		if err != nil {
			t.Fatalf("%s: %v", e.path, err)
		}
		m.Path = e.path
		mails = append(mails, m)
	}
	return mails
}

// WaitMaildir waits until at least n messages were delivered to addr and
// returns them all.
func (pf *Postfix) WaitMaildir(t testing.TB, addr string, n int, timeout time.Duration) []*Mail {
	t.Helper()
	var mails []*Mail
	if !waitFor(timeout, func() bool { mails = pf.Maildir(t, addr); return len(mails) >= n }) {
		t.Fatalf("%d message(s) delivered to %s after %v, want %d\nqueue:\n%s", len(mails), addr, timeout, n, pf.queueListing())
	}
	return mails
}

func writeTemplate(t testing.TB, path, text string, data any) {
	t.Helper()
	var b bytes.Buffer
	if err := template.Must(template.New(filepath.Base(path)).Parse(text)).Execute(&b, data); err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, b.String(), 0o644)
}

func writeFile(t testing.TB, path, content string, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), mode); err != nil {
		t.Fatal(err)
	}
}
