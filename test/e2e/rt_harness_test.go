package e2e

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Request Tracker 5 from Debian's packages (request-tracker5, rt5-db-sqlite,
// rt5-clients), run privately for one test: RT's code from the package,
// everything else in a temporary directory laid out as an admin's install
// would be (../../contrib/rt/README.md):
//
//	DIR/etc/RT_SiteConfig.d/50-e2e.pm         this instance (web port, database, sendmail)
//	DIR/etc/RT_SiteConfig.d/60-cryptmilter.pm contrib/rt/RT_SiteConfig.d/60-cryptmilter.pm
//	DIR/local/lib/RT/Interface/Email/Cryptmilter.pm, DIR/local/html/Elements/CryptStatus
//	DIR/rtdb                                  a copy of the package's fresh SQLite database
//	DIR/mason_data, DIR/session_data          RT's caches, empty at start
//
// RT reads the first with RT_SITE_CONFIG_DIR and the plugin with PERL5LIB;
// the config points Mason at the local html directory and the caches. The
// package's own database, caches and /etc are never written, so runs are
// independent and may overlap.

const (
	rtServer    = "/usr/share/request-tracker5/libexec/rt-server"
	rtMailgate  = "/usr/bin/rt-mailgate"
	rtSetupDB   = "/usr/sbin/rt-setup-database"
	rtPackageDB = "/var/lib/dbconfig-common/sqlite3/request-tracker5/rtdb"
)

var rtInstall struct {
	once sync.Once
	out  []byte
	err  error
}

// requireRT skips the test unless it runs as root (RT's standalone
// server and Postfix need it), and installs RT with ../../.ci/deps-rt
// when it is missing (about a minute on a fresh machine, most of it
// downloading some 260 packages); a failed install fails the test.
func requireRT(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the RT suite runs as root only: it installs Request Tracker 5 (request-tracker5, rt5-db-sqlite, rt5-clients) and runs a private Postfix")
	}
	have := func() bool {
		for _, f := range []string{rtServer, rtMailgate, rtSetupDB, rtPackageDB} {
			if _, err := os.Stat(f); err != nil {
				return false
			}
		}
		return true
	}
	if have() {
		return
	}
	rtInstall.once.Do(func() {
		start := time.Now()
		rtInstall.out, rtInstall.err = exec.Command("bash", "../../.ci/deps-rt").CombinedOutput()
		fmt.Fprintf(os.Stderr, "e2e: installed Request Tracker in %v\n", time.Since(start).Round(time.Second))
	})
	if rtInstall.err != nil || !have() {
		t.Fatalf("installing Request Tracker with .ci/deps-rt: %v\n%s", rtInstall.err, rtInstall.out)
	}
}

// rtOptions configures a private RT.
type rtOptions struct {
	// Port for the standalone server on 127.0.0.1; 0 picks one.
	Port int
	// Sendmail is the private Postfix whose sendmail command RT uses.
	Sendmail *Postfix
	// EnvelopeSender is RT's SetOutgoingMailFrom.
	EnvelopeSender string
	// InitialData is an RT initialdata file (queues, users, rights)
	// loaded with rt-setup-database before the server starts.
	InitialData string
	// User and Password log in to the web UI and REST 2.
	User, Password string
}

// RT is a private Request Tracker: its standalone server on loopback.
type RT struct {
	t       testing.TB
	Dir     string
	URL     string // http://127.0.0.1:PORT (no trailing slash)
	LogFile string
	opts    rtOptions
	cmd     *exec.Cmd
	done    chan struct{}
	web     *http.Client // logged in to the web UI
	// How long the initial data and the server's start took.
	loaded, served time.Duration
}

// newRTDir prepares the directory of a private RT (config, local files,
// database copy) without starting anything, so that Postfix can be told
// its port first.
func newRTDir(t testing.TB, opts rtOptions) *RT {
	t.Helper()
	requireRT(t)
	if opts.Port == 0 {
		opts.Port = freePort(t)
	}
	dir := tempDir(t, "cm-rt-")
	rt := &RT{t: t, Dir: dir, URL: "http://127.0.0.1:" + strconv.Itoa(opts.Port), LogFile: filepath.Join(dir, "rt.log"), opts: opts}
	for _, d := range []string{"etc/RT_SiteConfig.d", "local/lib/RT/Interface/Email", "local/html/Elements", "mason_data", "session_data"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	contrib := filepath.Join("..", "..", "contrib", "rt")
	for src, dst := range map[string]string{
		"RT_SiteConfig.d/60-cryptmilter.pm":     "etc/RT_SiteConfig.d/60-cryptmilter.pm",
		"lib/RT/Interface/Email/Cryptmilter.pm": "local/lib/RT/Interface/Email/Cryptmilter.pm",
		"html/Elements/CryptStatus":             "local/html/Elements/CryptStatus",
	} {
		b, err := os.ReadFile(filepath.Join(contrib, src))
		if err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, dst), string(b), 0o644)
	}
	db, err := os.ReadFile(rtPackageDB)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(dir, "rtdb"), string(db), 0o600)
	sendmailArgs := "-oi"
	if opts.Sendmail != nil {
		sendmailArgs += " -C " + opts.Sendmail.Dir
	}
	writeTemplate(t, filepath.Join(dir, "etc/RT_SiteConfig.d/50-e2e.pm"), rtSiteConfig, map[string]any{
		"Dir": dir, "Port": opts.Port, "SendmailArgs": sendmailArgs, "Sender": opts.EnvelopeSender,
	})
	return rt
}

// rtSiteConfig is this instance's part of the configuration; Debian's
// RT_SiteConfig.d (debconf answers, the package database) is not read.
const rtSiteConfig = `# The private RT of cryptmilter's end-to-end suite (test/e2e/rt_harness_test.go).
Set($rtname, 'example.org');
Set($Organization, 'example.org');
Set($CorrespondAddress, 'rt@example.org');
Set($CommentAddress, 'rt-comment@example.org');
Set($OwnerEmail, 'postmaster@example.org');
Set($WebPath, '');
Set($WebDomain, '127.0.0.1');
Set($WebPort, {{.Port}});
Set($WebBaseURL, 'http://127.0.0.1:{{.Port}}');
Set($DatabaseType, 'SQLite');
Set($DatabaseName, '{{.Dir}}/rtdb');
Set($LogToSyslog, undef);
Set($LogToFile, undef);
Set($LogToSTDERR, 'info');
Set($SendmailPath, '/usr/sbin/sendmail');
Set($SendmailArguments, '{{.SendmailArgs}}');
{{- if .Sender}}
Set($SetOutgoingMailFrom, '{{.Sender}}');
{{- end}}
# RT's code from the package; caches and local overrides here.
$RT::MasonDataDir = '{{.Dir}}/mason_data';
$RT::MasonSessionDir = '{{.Dir}}/session_data';
$RT::MasonLocalComponentRoot = '{{.Dir}}/local/html';
1;
`

// env is the environment of RT's programs for this instance.
func (rt *RT) env() []string {
	return append(os.Environ(),
		"RT_SITE_CONFIG_DIR="+filepath.Join(rt.Dir, "etc", "RT_SiteConfig.d"),
		"PERL5LIB="+filepath.Join(rt.Dir, "local", "lib"))
}

// Start loads the initial data and starts the standalone server (two
// workers) in the background, so that the test can prepare other things
// meanwhile; the returned function waits until RT answers, failing the
// test otherwise. RT is stopped at the end of the test.
func (rt *RT) Start(t testing.TB) (wait func(testing.TB)) {
	t.Helper()
	res := make(chan error, 1)
	finished := make(chan struct{})
	begin := time.Now()
	t.Cleanup(func() {
		<-finished
		if rt.cmd != nil {
			rt.stop()
		}
	})
	go func() {
		defer close(finished)
		res <- rt.start()
	}()
	return func(t testing.TB) {
		t.Helper()
		if err := <-res; err != nil {
			t.Fatal(err)
		}
		t.Logf("RT %s up %v after the start (initial data %v, server %v)", rt.URL, time.Since(begin).Round(time.Millisecond),
			rt.loaded.Round(time.Millisecond), rt.served.Round(time.Millisecond))
	}
}

// start does Start's work and says what went wrong.
func (rt *RT) start() error {
	begin := time.Now()
	if rt.opts.InitialData != "" {
		cmd := exec.Command(rtSetupDB, "--action", "insert", "--skip-create", "--datafile", rt.opts.InitialData)
		cmd.Env = rt.env()
		if out, err := cmd.CombinedOutput(); err != nil || !bytes.Contains(out, []byte("Done inserting data")) {
			return fmt.Errorf("rt-setup-database --action insert --datafile %s: %v\n%s", rt.opts.InitialData, err, out)
		}
	}
	rt.loaded = time.Since(begin)
	begin = time.Now()
	logf, err := os.Create(rt.LogFile)
	if err != nil {
		return err
	}
	port := strings.TrimPrefix(rt.URL, "http://127.0.0.1:")
	cmd := exec.Command(rtServer, "--host", "127.0.0.1", "--port", port, "--max-workers", "2")
	cmd.Dir = rt.Dir
	cmd.Env = rt.env()
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group, so that the stop can tell whether a worker
	// outlived the master.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = cmd.Start()
	logf.Close()
	if err != nil {
		return fmt.Errorf("starting rt-server: %v", err)
	}
	rt.cmd, rt.done = cmd, make(chan struct{})
	go func() { cmd.Wait(); close(rt.done) }()
	up := waitFor(90*time.Second, func() bool {
		select {
		case <-rt.done:
			return true
		default:
		}
		resp, err := http.Get(rt.URL + "/")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	select {
	case <-rt.done:
		return fmt.Errorf("rt-server exited at start\n%s", rt.Log())
	default:
	}
	if !up {
		return fmt.Errorf("rt-server does not answer on %s after 90s\n%s", rt.URL, rt.Log())
	}
	rt.served = time.Since(begin)
	return nil
}

// stop sends SIGTERM to rt-server by its PID (its SIGINT handler would
// chown the package's /var/lib/request-tracker5) and waits for it and its
// workers to exit.
func (rt *RT) stop() {
	t := rt.t
	if t.Failed() {
		t.Logf("RT log %s:\n%s", rt.LogFile, rt.Log())
	}
	pid := rt.cmd.Process.Pid
	rt.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-rt.done:
	case <-time.After(20 * time.Second):
		t.Errorf("rt-server %d still running 20s after SIGTERM; killing it", pid)
		rt.cmd.Process.Kill()
		<-rt.done
	}
	// The workers are in the master's process group.
	if !waitFor(10*time.Second, func() bool { return syscall.Kill(-pid, 0) != nil }) {
		t.Errorf("rt-server workers (process group %d) still running after the master exited; terminating them", pid)
		syscall.Kill(-pid, syscall.SIGTERM)
	}
}

// Log returns what rt-server logged so far.
func (rt *RT) Log() string {
	b, err := os.ReadFile(rt.LogFile)
	if err != nil {
		return fmt.Sprintf("(no RT log: %v)", err)
	}
	return string(b)
}

// MailgateCommand is the rt-mailgate command line delivering to queue
// with action (correspond or comment).
func (rt *RT) MailgateCommand(queue, action string) string {
	return rtMailgate + " --queue " + queue + " --action " + action + " --url " + rt.URL + "/"
}

// rtHTTP is the client for RT's REST 2 API: RT on a busy machine is
// slow, but never this slow.
var rtHTTP = &http.Client{Timeout: 2 * time.Minute}

// REST calls RT's REST 2 API as the configured user: method on path
// (below /REST/2.0/), with body as JSON when not nil, decoding the answer
// into out when not nil. A status other than 2xx fails the test.
func (rt *RT) REST(t testing.TB, method, path string, body, out any) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, rt.URL+"/REST/2.0/"+path, r)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(rt.opts.User, rt.opts.Password)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := rtHTTP.Do(req)
	if err != nil {
		t.Fatalf("REST %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode/100 != 2 {
		t.Fatalf("REST %s %s: %s\n%s", method, path, resp.Status, b)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			t.Fatalf("REST %s %s: %v\n%s", method, path, err, b)
		}
	}
}

// rtAttachment is one stored MIME part of a transaction (REST 2).
type rtAttachment struct {
	ID          int
	Top         bool // the top-level message (RT stores it first)
	ContentType string
	Headers     string
}

// Header returns the values of the header field name (case-insensitive).
func (a *rtAttachment) Header(name string) []string {
	var vs []string
	for _, l := range strings.Split(a.Headers, "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(k, name) {
			vs = append(vs, strings.TrimSpace(v))
		}
	}
	return vs
}

// Attachments returns the stored parts of transaction txn by id, the
// top-level message first. (REST 2 of RT 5.0.3 fails on fields=Parent
// for a top-level part; RT creates the top-level part before its
// children, so it has the lowest id.)
func (rt *RT) Attachments(t testing.TB, txn int) []*rtAttachment {
	t.Helper()
	var list struct {
		Items []struct {
			ID          string
			ContentType string
			Headers     string
		}
	}
	rt.REST(t, "GET", fmt.Sprintf("transaction/%d/attachments?per_page=100&fields=ContentType,Headers", txn), nil, &list)
	var as []*rtAttachment
	for _, it := range list.Items {
		id, err := strconv.Atoi(it.ID)
		if err != nil {
			t.Fatalf("transaction %d: attachment id %q", txn, it.ID)
		}
		as = append(as, &rtAttachment{ID: id, ContentType: it.ContentType, Headers: it.Headers})
	}
	slices.SortFunc(as, func(a, b *rtAttachment) int { return a.ID - b.ID })
	if len(as) > 0 {
		as[0].Top = true
	}
	return as
}

// rtTicket is what REST 2 says about a ticket.
type rtTicket struct {
	ID        int
	Subject   string
	Requestor []struct{ ID string }
	Cc        []struct{ ID string }
}

// Ticket returns ticket id.
func (rt *RT) Ticket(t testing.TB, id int) *rtTicket {
	t.Helper()
	var tk rtTicket
	rt.REST(t, "GET", fmt.Sprintf("ticket/%d", id), nil, &tk)
	return &tk
}

// TicketIDs returns the ids of all tickets, ascending.
func (rt *RT) TicketIDs(t testing.TB) []int {
	t.Helper()
	var list struct {
		Items []struct{ ID string }
	}
	rt.REST(t, "GET", "tickets?query="+url.QueryEscape("id > 0")+"&orderby=id&order=ASC&per_page=100", nil, &list)
	var ids []int
	for _, it := range list.Items {
		n, _ := strconv.Atoi(it.ID)
		ids = append(ids, n)
	}
	return ids
}

// login logs in to the web UI (the login form, as a browser does).
func (rt *RT) login(t testing.TB) *http.Client {
	t.Helper()
	if rt.web != nil {
		return rt.web
	}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 2 * time.Minute}
	resp, err := c.PostForm(rt.URL+"/NoAuth/Login.html", url.Values{"user": {rt.opts.User}, "pass": {rt.opts.Password}, "next": {""}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// The answer is the login page either way; the home page tells.
	resp, err = c.Get(rt.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || bytes.Contains(b, []byte("<title>Login</title>")) {
		t.Fatalf("web login as %s failed: %s\n%.2000s", rt.opts.User, resp.Status, b)
	}
	rt.web = c
	return c
}

// rtRow is one line of a message's header box in the ticket history:
// "Encryption:", "Signature:", "Subject:", …, with the CSS classes of the
// value cell and the value as text.
type rtRow struct {
	Key, Classes, Value string
}

// rtTxn is one transaction of the ticket history page.
type rtTxn struct {
	ID          int
	Description string    // "Alice <alice@example.net> - Ticket created", as text
	Boxes       [][]rtRow // one header box per message part shown, the top-level message first
	Text        string    // everything shown, as text
}

// Crypt returns the Encryption and Signature lines of the header box of
// part i (0: the top-level message).
func (x *rtTxn) Crypt(i int) []rtRow {
	if i >= len(x.Boxes) {
		return nil
	}
	var rows []rtRow
	for _, r := range x.Boxes[i] {
		if r.Key == "Encryption" || r.Key == "Signature" {
			rows = append(rows, r)
		}
	}
	return rows
}

var (
	txnSplitRe  = regexp.MustCompile(`<div class="transaction [^"]*" data-transaction-id="(\d+)">`)
	descRe      = regexp.MustCompile(`(?s)<span class="description">(.*?)</span>\s*<span class="time-taken">`)
	rowRe       = regexp.MustCompile(`(?s)<td align="right" class="message-header-key">(.*?):</td>\s*<td class="message-header-value ?([^"]*)">(.*?)</td>`)
	tagRe       = regexp.MustCompile(`(?s)<[^>]*>`)
	spaceRe     = regexp.MustCompile(`\s+`)
	errNotFound = errors.New("not found")
)

// htmlText turns a fragment of RT's HTML into its text.
func htmlText(s string) string {
	return strings.TrimSpace(spaceRe.ReplaceAllString(html.UnescapeString(tagRe.ReplaceAllString(s, " ")), " "))
}

// History returns the transactions of ticket id as the web UI's history
// page shows them, and the page.
func (rt *RT) History(t testing.TB, id int) ([]*rtTxn, string) {
	t.Helper()
	c := rt.login(t)
	resp, err := c.Get(fmt.Sprintf("%s/Ticket/History.html?id=%d", rt.URL, id))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	page := string(b)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "data-transaction-id=") {
		t.Fatalf("history of ticket %d: %s\n%.3000s", id, resp.Status, page)
	}
	locs := txnSplitRe.FindAllStringSubmatchIndex(page, -1)
	var txns []*rtTxn
	for i, l := range locs {
		end := len(page)
		if i+1 < len(locs) {
			end = locs[i+1][0]
		}
		block := page[l[0]:end]
		x := &rtTxn{Text: htmlText(block)}
		x.ID, _ = strconv.Atoi(page[l[2]:l[3]])
		if m := descRe.FindStringSubmatch(block); m != nil {
			x.Description = htmlText(m[1])
		}
		for _, table := range strings.Split(block, "<table>")[1:] {
			var box []rtRow
			for _, m := range rowRe.FindAllStringSubmatch(table, -1) {
				box = append(box, rtRow{Key: htmlText(m[1]), Classes: strings.TrimSpace(m[2]), Value: htmlText(m[3])})
			}
			x.Boxes = append(x.Boxes, box)
		}
		txns = append(txns, x)
	}
	return txns, page
}

// findTxn returns the last transaction whose description contains desc
// and whose text contains text.
func findTxn(txns []*rtTxn, desc, text string) (*rtTxn, error) {
	for i := len(txns) - 1; i >= 0; i-- {
		if strings.Contains(txns[i].Description, desc) && strings.Contains(txns[i].Text, text) {
			return txns[i], nil
		}
	}
	return nil, errNotFound
}

// addMasterService appends a service to the private Postfix's master.cf
// and reloads it (the harness's master.cf has no room for one).
func (pf *Postfix) addMasterService(t testing.TB, lines string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(pf.Dir, "master.cf"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(lines)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	runCmd(t, nil, "postfix", "-c", pf.Dir, "reload")
}
