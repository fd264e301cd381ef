package e2e

// The Sendmail harness: Sendmail 8.17 from Debian's packages, extracted
// (never installed: sendmail-bin conflicts with postfix), configured from
// contrib/sendmail's snippet and run per test on loopback ports, delivering
// everything to an SMTP sink in the test:
//
//	sm, m := startSendmailStack(t, sendmailStackOptions{Milter: milterOptions{Keystore: ks}})
//	err := sendSMTP(sm.MTAAddr, from, rcpts, msg)   // inbound: daemon MTA
//	err = sendSMTP(sm.MSAAddr, from, rcpts, msg)    // outbound: daemon MSA
//	sm.Sendmail(t, from, rcpts, msg)                // the sendmail command: MSP, submit.cf
//	mails := sm.Sink.WaitMailbox(t, "rt@example.org", 1, 20*time.Second)
//
// Sendmail wants a syslog socket and a qualified host name of its own, so
// every Sendmail process runs under `unshare -m -u` with a private /dev
// (holding /dev/log, the test's syslog receiver), a private /etc/hosts and
// the host name mx.example.test; the host is left untouched. The packages
// are downloaded once (apt-get download) and extracted into
// $XDG_CACHE_HOME/cryptmilter-test/sendmail, else
// /var/cache/cryptmilter-test/sendmail; remove that directory to fetch them
// again. Root only (Sendmail's daemon and the namespaces need it).

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// sendmailPackages are the Debian packages the harness extracts; the
// shared libraries sendmail-bin also needs (libdb, libldap, libsasl2, …)
// are ordinary ones that .ci/deps installs.
var sendmailPackages = []string{"sendmail-bin", "sendmail-base", "sendmail-cf", "libwrap0", "liblockfile1"}

// sendmailDist is an extracted Sendmail.
type sendmailDist struct {
	Root    string // the extracted tree
	Bin     string // the sendmail binary, setgid bit cleared
	CF      string // usr/share/sendmail/cf (m4 files)
	LibDir  string // extracted shared libraries, for LD_LIBRARY_PATH
	Debs    string // the package files it came from
	Package string // the sendmail-bin package file, naming the version
}

var smDist struct {
	once       sync.Once
	d          *sendmailDist
	err        error
	unshareErr string
}

// sendmailCache is where the extracted packages are kept between runs.
func sendmailCache() string {
	if x := os.Getenv("XDG_CACHE_HOME"); x != "" {
		return filepath.Join(x, "cryptmilter-test")
	}
	return "/var/cache/cryptmilter-test"
}

// requireSendmail returns the extracted Sendmail, obtaining it on first
// use; without root or a needed program the test skips (fails under
// CRYPTMILTER_REQUIRE_PEERS=1).
func requireSendmail(t testing.TB) *sendmailDist {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "the Sendmail suite needs root (Sendmail's daemon, and private mount and UTS namespaces with unshare -m -u)")
	}
	requirePeers(t, true, "apt-get", "dpkg-deb", "m4", "unshare", "mount", "hostname")
	smDist.once.Do(func() {
		// Root in an unprivileged container may not make namespaces.
		if out, err := exec.Command("unshare", "--mount", "--uts", "true").CombinedOutput(); err != nil {
			smDist.unshareErr = fmt.Sprintf("the Sendmail suite needs private mount and UTS namespaces, but unshare -m -u fails: %v: %s", err, bytes.TrimSpace(out))
			return
		}
		smDist.d, smDist.err = obtainSendmail(sendmailCache())
	})
	if smDist.unshareErr != "" {
		skipOrFail(t, smDist.unshareErr)
	}
	if smDist.err != nil {
		t.Fatalf("obtaining Sendmail from Debian's packages: %v", smDist.err)
	}
	return smDist.d
}

// obtainSendmail extracts sendmailPackages into cache/sendmail unless a
// complete extraction is there already. A lock file keeps concurrent test
// binaries from extracting at the same time.
func obtainSendmail(cache string) (*sendmailDist, error) {
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return nil, err
	}
	lock, err := os.OpenFile(filepath.Join(cache, "sendmail.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return nil, err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	dir := filepath.Join(cache, "sendmail")
	stamp := filepath.Join(dir, "packages")
	if _, err := os.Stat(stamp); err != nil {
		if err := extractSendmail(cache, dir, stamp); err != nil {
			return nil, err
		}
	}
	d := &sendmailDist{
		Root: filepath.Join(dir, "root"),
		Debs: filepath.Join(dir, "debs"),
	}
	pkgs, err := os.ReadFile(stamp)
	if err != nil {
		return nil, err
	}
	for _, p := range strings.Fields(string(pkgs)) {
		if strings.HasPrefix(p, "sendmail-bin_") {
			d.Package = p
		}
	}
	d.Bin = filepath.Join(d.Root, "usr", "libexec", "sendmail", "sendmail")
	d.CF = filepath.Join(d.Root, "usr", "share", "sendmail", "cf")
	libs, _ := filepath.Glob(filepath.Join(d.Root, "usr", "lib", "*", "libwrap.so.0"))
	if len(libs) == 0 {
		return nil, fmt.Errorf("no libwrap.so.0 in %s (remove %s to extract again)", d.Root, dir)
	}
	d.LibDir = filepath.Dir(libs[0])
	for _, f := range []string{d.Bin, filepath.Join(d.CF, "m4", "cf.m4")} {
		if _, err := os.Stat(f); err != nil {
			return nil, fmt.Errorf("incomplete extraction (remove %s to extract again): %w", dir, err)
		}
	}
	// The libraries sendmail-bin does not bring along must be installed.
	cmd := exec.Command("ldd", d.Bin)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+d.LibDir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ldd %s: %v\n%s", d.Bin, err, out)
	}
	var missing []string
	for _, l := range strings.Split(string(out), "\n") {
		if strings.Contains(l, "not found") {
			missing = append(missing, strings.Fields(l)[0])
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("sendmail needs shared libraries that are not installed: %s; `make deps` as root installs sendmail-bin's library dependencies", strings.Join(missing, ", "))
	}
	return d, nil
}

// extractSendmail downloads the packages with apt-get and extracts them
// with dpkg-deb into a fresh directory renamed to dir when complete.
func extractSendmail(cache, dir, stamp string) error {
	os.RemoveAll(dir)
	tmp, err := os.MkdirTemp(cache, "sendmail.tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	if err := os.Chmod(tmp, 0o755); err != nil {
		return err
	}
	debs, root := filepath.Join(tmp, "debs"), filepath.Join(tmp, "root")
	for _, d := range []string{debs, root} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return err
		}
	}
	// As root apt-get would hand the download to the _apt user, who
	// cannot write here.
	cmd := exec.Command("apt-get", append([]string{"-q", "-o", "APT::Sandbox::User=root", "download"}, sendmailPackages...)...)
	cmd.Dir = debs
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("apt-get download %s: %v\n%s\nhint: `apt-get update` (make deps runs it when the package lists lack sendmail-bin)", strings.Join(sendmailPackages, " "), err, out)
	}
	files, _ := filepath.Glob(filepath.Join(debs, "*.deb"))
	if len(files) != len(sendmailPackages) {
		return fmt.Errorf("apt-get download left %d package files in %s, want %d", len(files), debs, len(sendmailPackages))
	}
	var names []string
	for _, f := range files {
		if out, err := exec.Command("dpkg-deb", "-x", f, root).CombinedOutput(); err != nil {
			return fmt.Errorf("dpkg-deb -x %s: %v\n%s", f, err, out)
		}
		names = append(names, filepath.Base(f))
	}
	// The binary is setgid smmsp; the loader would then ignore
	// LD_LIBRARY_PATH (and there is no smmsp group here).
	if err := os.Chmod(filepath.Join(root, "usr", "libexec", "sendmail", "sendmail"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(tmp, "packages"), []byte(strings.Join(names, "\n")+"\n"), 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return err
	}
	_, err = os.Stat(stamp)
	return err
}

// contribText returns a file of contrib/ with each old string (which must
// occur in it) replaced by its new one: the test runs contrib's own
// settings on its own ports.
func contribText(t testing.TB, rel string, repl ...string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "contrib", rel))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for i := 0; i+1 < len(repl); i += 2 {
		if !strings.Contains(s, repl[i]) {
			t.Fatalf("contrib/%s no longer contains %q, which the Sendmail suite replaces with its own port", rel, repl[i])
		}
		s = strings.ReplaceAll(s, repl[i], repl[i+1])
	}
	return s
}

// tomlSettings turns a flat TOML file (top-level keys, [table] headers,
// one-line values) into the milter harness's "[table.]key = value" lines.
func tomlSettings(t testing.TB, text string) []string {
	t.Helper()
	var lines []string
	table := ""
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			table = strings.Trim(l, "[]") + "."
		case strings.Contains(l, "="):
			lines = append(lines, table+l)
		default:
			t.Fatalf("unexpected TOML line %q", l)
		}
	}
	return lines
}

// sendmailOptions configures a private Sendmail.
type sendmailOptions struct {
	// MilterPort is cryptmilter's port: it replaces 8895 in the snippet
	// (0: a free port).
	MilterPort int
	// ReinjectPort replaces the snippet's re-injection port, 10026 (0: a
	// free port).
	ReinjectPort int
	// MC holds extra sendmail.mc lines, after the snippet.
	MC []string
	// MSPToMTA makes submit.cf relay to the MTA port, as the stock
	// submit.mc does for port 25, instead of the MSA port.
	MSPToMTA bool
}

// Sendmail is a private Sendmail daemon (MTA, MSA and re-injection
// daemons on loopback ports) with its MSP configuration for the sendmail
// command, delivering every message to Sink.
type Sendmail struct {
	t    testing.TB
	dist *sendmailDist
	Dir  string
	// MTAAddr is the daemon named MTA: mail from outside, inbound.
	MTAAddr string
	// MSAAddr is the daemon named MSA (M=E): submissions, outbound.
	MSAAddr string
	// ReinjectAddr is the daemon without milters for re-injected copies.
	ReinjectAddr string
	SendmailCF   string
	SubmitCF     string
	QueueDir     string
	MSPQueueDir  string
	Sink         *smtpSink

	syslog *syslogReceiver
	cmd    *exec.Cmd
	done   chan struct{}
	mntNS  string // the daemon's mount namespace, to find its children
}

// mspUser runs the MSP (Sendmail refuses root as RunAsUser); Debian's base
// system has it.
const mspUser = "mail"

// startSendmail builds sendmail.cf and submit.cf with m4 and starts the
// daemon in the foreground (sendmail -bD), stopped at the end of the test.
func startSendmail(t testing.TB, opts sendmailOptions) *Sendmail {
	t.Helper()
	dist := requireSendmail(t)
	msp, err := user.Lookup(mspUser)
	if err != nil {
		skipOrFail(t, "the Sendmail suite needs the user "+mspUser+" for the MSP (Debian's base-passwd has it)")
	}
	if opts.MilterPort == 0 {
		opts.MilterPort = freePort(t)
	}
	if opts.ReinjectPort == 0 {
		opts.ReinjectPort = freePort(t)
	}
	dir := tempDir(t, "cm-sendmail-")
	sm := &Sendmail{
		t:            t,
		dist:         dist,
		Dir:          dir,
		MTAAddr:      "127.0.0.1:" + strconv.Itoa(freePort(t)),
		MSAAddr:      "127.0.0.1:" + strconv.Itoa(freePort(t)),
		ReinjectAddr: "127.0.0.1:" + strconv.Itoa(opts.ReinjectPort),
		SendmailCF:   filepath.Join(dir, "sendmail.cf"),
		SubmitCF:     filepath.Join(dir, "submit.cf"),
		QueueDir:     filepath.Join(dir, "mqueue"),
		MSPQueueDir:  filepath.Join(dir, "clientmqueue"),
	}
	sm.Sink = startSink(t)
	uid, _ := strconv.Atoi(msp.Uid)
	gid, _ := strconv.Atoi(msp.Gid)
	for _, d := range []struct {
		path     string
		uid, gid int
		mode     os.FileMode
	}{
		{sm.QueueDir, 0, 0, 0o700},
		{sm.MSPQueueDir, uid, gid, 0o770},
		{filepath.Join(dir, "dev.host"), 0, 0, 0o755},
	} {
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
	writeFile(t, filepath.Join(dir, "hosts"), "127.0.0.1 mx.example.test mx localhost\n", 0o644)
	writeFile(t, filepath.Join(dir, "service.switch"), "hosts files\naliases files\n", 0o644)
	writeFile(t, filepath.Join(dir, "local-host-names"), "", 0o644)
	writeFile(t, filepath.Join(dir, "sendmail.st"), "", 0o644)
	writeFile(t, filepath.Join(sm.MSPQueueDir, "sm-client.st"), "", 0o660)
	os.Chown(filepath.Join(sm.MSPQueueDir, "sm-client.st"), uid, gid)
	sm.syslog = startSyslog(t, filepath.Join(dir, "log.sock"))
	writeTemplate(t, filepath.Join(dir, "namespace.sh"), namespaceScript, map[string]string{"Dir": dir, "Bin": dist.Bin})
	os.Chmod(filepath.Join(dir, "namespace.sh"), 0o755)

	snippet := contribText(t, "sendmail/sendmail.mc.snippet",
		"inet:8895@127.0.0.1", "inet:"+strconv.Itoa(opts.MilterPort)+"@127.0.0.1",
		"Port=10026", "Port="+strconv.Itoa(opts.ReinjectPort))
	mcData := map[string]string{
		"Dir": dir, "SinkPort": portOf(t, sm.Sink.Addr), "MTAPort": portOf(t, sm.MTAAddr),
		"MSAPort": portOf(t, sm.MSAAddr), "Snippet": snippet, "User": mspUser,
		"MSPRelayPort": portOf(t, sm.MSAAddr), "Extra": strings.Join(opts.MC, "\n"),
	}
	if opts.MSPToMTA {
		mcData["MSPRelayPort"] = portOf(t, sm.MTAAddr)
	}
	for _, f := range []string{"sendmail", "submit"} {
		tmpl, err := os.ReadFile(filepath.Join("testdata", "sendmail", f+".mc"))
		if err != nil {
			t.Fatal(err)
		}
		mc := filepath.Join(dir, f+".mc")
		writeTemplate(t, mc, string(tmpl), mcData)
		cmd := exec.Command("m4", "-D_CF_DIR_="+dist.CF+"/", filepath.Join(dist.CF, "m4", "cf.m4"), mc)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		cf, err := cmd.Output()
		if err != nil {
			t.Fatalf("m4 %s: %v\n%s", mc, err, stderr.Bytes())
		}
		if msg := strings.TrimSpace(stderr.String()); msg != "" {
			t.Fatalf("m4 %s warns:\n%s", mc, msg)
		}
		writeFile(t, filepath.Join(dir, f+".cf"), string(cf), 0o644)
	}

	start := time.Now()
	sm.cmd = sm.command("-C", sm.SendmailCF, "-bD")
	var out syncBuffer
	sm.cmd.Stdout, sm.cmd.Stderr = &out, &out
	sm.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := sm.cmd.Start(); err != nil {
		t.Fatalf("starting sendmail: %v", err)
	}
	sm.done = make(chan struct{})
	go func() { sm.cmd.Wait(); close(sm.done) }()
	t.Cleanup(sm.stop)
	up := func() bool {
		for _, a := range []string{sm.MTAAddr, sm.MSAAddr, sm.ReinjectAddr} {
			if !listening(a) {
				return false
			}
		}
		return true
	}
	if !waitFor(15*time.Second, func() bool { return up() || sm.exited() }) || sm.exited() {
		t.Fatalf("sendmail does not listen on %s, %s and %s\n%s\n%s", sm.MTAAddr, sm.MSAAddr, sm.ReinjectAddr, out.String(), sm.Log())
	}
	sm.mntNS, _ = os.Readlink(fmt.Sprintf("/proc/%d/ns/mnt", sm.cmd.Process.Pid))
	t.Logf("sendmail (%s) %s started in %v (MTA %s, MSA %s, reinject %s, sink %s)", dist.Package, dir, time.Since(start).Round(time.Millisecond), sm.MTAAddr, sm.MSAAddr, sm.ReinjectAddr, sm.Sink.Addr)
	return sm
}

// namespaceScript runs Sendmail (under unshare -m -u, so every mount and
// the host name are private to it and its children) with the instance's
// /etc/hosts, a /dev holding the host's basic devices and /dev/log, the
// test's syslog receiver, and the qualified host name it insists on.
const namespaceScript = `#!/bin/sh
set -e
mount --bind {{.Dir}}/hosts /etc/hosts
mount --rbind /dev {{.Dir}}/dev.host
mount -t tmpfs -o mode=0755 cryptmilter-e2e-dev /dev
for n in null zero full random urandom tty; do
	[ -e {{.Dir}}/dev.host/$n ] || continue
	: > /dev/$n
	mount --bind {{.Dir}}/dev.host/$n /dev/$n
done
ln -s /proc/self/fd /dev/fd
ln -s {{.Dir}}/log.sock /dev/log
hostname mx.example.test
exec {{.Bin}} "$@"
`

// command returns a command running the extracted sendmail with args in
// a private namespace.
func (sm *Sendmail) command(args ...string) *exec.Cmd {
	cmd := exec.Command("unshare", append([]string{"--mount", "--uts", "--propagation", "private", filepath.Join(sm.Dir, "namespace.sh")}, args...)...)
	cmd.Env = append(os.Environ(), "LD_LIBRARY_PATH="+sm.dist.LibDir)
	cmd.Dir = sm.Dir
	return cmd
}

func (sm *Sendmail) exited() bool {
	select {
	case <-sm.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM to the daemon, waits for it, and kills what is left
// of its children (found by its mount namespace); on failure it logs
// Sendmail's log, the queues and the sink.
func (sm *Sendmail) stop() {
	t := sm.t
	if t.Failed() {
		t.Logf("sendmail queues:\n%s", sm.queueListing())
		t.Logf("sendmail log:\n%s", sm.Log())
		t.Logf("sink:\n%s", sm.Sink.summary())
	}
	if !sm.exited() {
		sm.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-sm.done:
		case <-time.After(10 * time.Second):
			t.Logf("sendmail %d still running 10s after SIGTERM; killing it", sm.cmd.Process.Pid)
			sm.cmd.Process.Kill()
			<-sm.done
		}
	}
	if sm.mntNS == "" {
		return
	}
	// Delivery processes the daemon forked may outlive it for a moment.
	waitFor(5*time.Second, func() bool { return len(sm.namespacePids()) == 0 })
	for _, pid := range sm.namespacePids() {
		t.Logf("killing sendmail process %d left after the daemon", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
}

// namespacePids lists the processes in the daemon's mount namespace.
func (sm *Sendmail) namespacePids() []int {
	es, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range es {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt"); err == nil && ns == sm.mntNS && processAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// Log returns what Sendmail has written to syslog so far, one line each.
func (sm *Sendmail) Log() string { return sm.syslog.String() }

// run runs sendmail with args (and stdin) in the namespace and returns its
// combined output; a failure fails the test.
func (sm *Sendmail) run(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	cmd := sm.command(args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("sendmail %s: %v\n%s\n%s", strings.Join(args, " "), err, out, sm.Log())
	}
	return string(out)
}

// Sendmail submits msg with the sendmail command through the MSP
// (submit.cf), which relays it over SMTP to the MSA, or queues it in the
// MSP queue when the MSA tempfails.
func (sm *Sendmail) Sendmail(t testing.TB, from string, rcpts []string, msg []byte) {
	t.Helper()
	sm.run(t, msg, append([]string{"-C", sm.SubmitCF, "-i", "-f", from, "--"}, rcpts...)...)
}

// SendmailStatus submits like Sendmail and returns the command's exit
// status and output: the MSP delivers at once, and a refusal by the MSA
// makes it exit with EX_UNAVAILABLE (69) after sending the bounce.
func (sm *Sendmail) SendmailStatus(t testing.TB, from string, rcpts []string, msg []byte) (int, string) {
	t.Helper()
	cmd := sm.command(append([]string{"-C", sm.SubmitCF, "-i", "-f", from, "--"}, rcpts...)...)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("sendmail -C %s: %v", sm.SubmitCF, err)
	}
	return cmd.ProcessState.ExitCode(), string(out)
}

// SendmailDirect submits msg with `sendmail -C sendmail.cf`, the MTA's
// configuration: no SMTP, hence no milter.
func (sm *Sendmail) SendmailDirect(t testing.TB, from string, rcpts []string, msg []byte) {
	t.Helper()
	sm.run(t, msg, append([]string{"-C", sm.SendmailCF, "-i", "-f", from, "--"}, rcpts...)...)
}

// RunMSPQueue runs the MSP queue once, in the foreground (as the MSP's
// queue runner, sendmail -Ac -q30m, would).
func (sm *Sendmail) RunMSPQueue(t testing.TB) {
	t.Helper()
	sm.run(t, nil, "-C", sm.SubmitCF, "-q")
}

// queued counts the messages (qf files) in a queue directory.
func queued(dir string) int {
	files, _ := filepath.Glob(filepath.Join(dir, "qf*"))
	return len(files)
}

// WaitQueuesEmpty waits until neither the MTA queue nor the MSP queue
// holds a message: then every message accepted so far has reached the
// sink (Sendmail removes a queue file once the sink has said 250). The MSP
// queue is looked at first: a message leaves it only once the MSA has
// queued it.
func (sm *Sendmail) WaitQueuesEmpty(t testing.TB, timeout time.Duration) {
	t.Helper()
	if !waitFor(timeout, func() bool { return queued(sm.MSPQueueDir) == 0 && queued(sm.QueueDir) == 0 }) {
		t.Fatalf("sendmail queues not empty after %v:\n%s", timeout, sm.queueListing())
	}
}

func (sm *Sendmail) queueListing() string {
	var b strings.Builder
	for _, cf := range []string{sm.SendmailCF, sm.SubmitCF} {
		out, err := sm.command("-C", cf, "-bp").CombinedOutput()
		fmt.Fprintf(&b, "sendmail -C %s -bp (%v):\n%s", filepath.Base(cf), err, out)
	}
	return b.String()
}

// LogLines returns Sendmail's log lines containing every one of substrs.
func (sm *Sendmail) LogLines(substrs ...string) []string {
	var ls []string
	for _, l := range strings.Split(sm.Log(), "\n") {
		ok := l != ""
		for _, s := range substrs {
			ok = ok && strings.Contains(l, s)
		}
		if ok {
			ls = append(ls, l)
		}
	}
	return ls
}

// queueIDs returns the queue ids of the messages Sendmail received on the
// daemon named daemon ("from=…, daemon=NAME" lines).
func (sm *Sendmail) queueIDs(daemon string) []string {
	var ids []string
	for _, l := range sm.LogLines("daemon="+daemon+",", " from=") {
		// <pri>Mon dd hh:mm:ss sendmail[pid]: QUEUEID: from=...
		_, rest, _ := strings.Cut(l, "]: ")
		if id, _, ok := strings.Cut(rest, ": "); ok {
			ids = append(ids, id)
		}
	}
	return ids
}

// listening reports whether a TCP socket listens on addr (127.0.0.1:port),
// from /proc/net/tcp: connecting would start an SMTP session, and with it
// a milter session.
func listening(addr string) bool {
	_, p, _ := net.SplitHostPort(addr)
	port, _ := strconv.Atoi(p)
	want := fmt.Sprintf("0100007F:%04X", port)
	f, err := os.Open("/proc/net/tcp")
	if err != nil {
		return dialable(addr)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		fs := strings.Fields(s.Text())
		if len(fs) > 3 && fs[1] == want && fs[3] == "0A" {
			return true
		}
	}
	return false
}

func portOf(t testing.TB, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// syslogReceiver is a unix datagram socket standing in for /dev/log.
type syslogReceiver struct {
	conn *net.UnixConn
	log  syncBuffer
	done chan struct{}
}

func startSyslog(t testing.TB, path string) *syslogReceiver {
	t.Helper()
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	// The MSP logs as the MSP user.
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	r := &syslogReceiver{conn: c, done: make(chan struct{})}
	go func() {
		defer close(r.done)
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			r.log.Write(append(bytes.TrimRight(buf[:n], "\n\x00"), '\n'))
		}
	}()
	t.Cleanup(func() { c.Close(); <-r.done })
	return r
}

func (r *syslogReceiver) String() string { return r.log.String() }

// sinkMessage is one SMTP transaction the sink received.
type sinkMessage struct {
	From  string
	Rcpts []string
	Raw   []byte // CRLF, as received
}

// smtpSink is the SMTP server Sendmail relays every message to (its
// SMART_HOST): the recipients' mailboxes.
type smtpSink struct {
	Addr string
	mu   sync.Mutex
	msgs []sinkMessage
}

func startSink(t testing.TB) *smtpSink {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smtpSink{Addr: l.Addr().String()}
	srv := smtp.NewServer(smtp.BackendFunc(func(*smtp.Conn) (smtp.Session, error) { return &sinkSession{sink: s}, nil }))
	srv.Domain = "sink.example.test"
	srv.MaxMessageBytes = 64 << 20
	srv.MaxLineLength = 4000
	srv.ErrorLog = nopLogger{}
	done := make(chan struct{})
	go func() { srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return s
}

type nopLogger struct{}

func (nopLogger) Printf(string, ...interface{}) {}
func (nopLogger) Println(...interface{})        {}

type sinkSession struct {
	sink  *smtpSink
	from  string
	rcpts []string
}

func (s *sinkSession) Reset()        { s.from, s.rcpts = "", nil }
func (s *sinkSession) Logout() error { return nil }
func (s *sinkSession) Mail(from string, _ *smtp.MailOptions) error {
	s.from = from
	return nil
}
func (s *sinkSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.rcpts = append(s.rcpts, strings.ToLower(to))
	return nil
}
func (s *sinkSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.sink.mu.Lock()
	s.sink.msgs = append(s.sink.msgs, sinkMessage{From: s.from, Rcpts: slices.Clone(s.rcpts), Raw: b})
	s.sink.mu.Unlock()
	return nil
}

// Messages returns every transaction received so far.
func (s *smtpSink) Messages() []sinkMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.msgs)
}

// Mailbox returns the messages delivered to addr so far, oldest first,
// each with Path naming its transaction and envelope.
func (s *smtpSink) Mailbox(t testing.TB, addr string) []*Mail {
	t.Helper()
	var mails []*Mail
	for i, m := range s.Messages() {
		if !slices.Contains(m.Rcpts, strings.ToLower(addr)) {
			continue
		}
		mail, err := parseMail(m.Raw)
		if err != nil {
			t.Fatalf("sink message %d: %v", i, err)
		}
		mail.Path = fmt.Sprintf("sink message %d (from <%s> to %v)", i, m.From, m.Rcpts)
		mails = append(mails, mail)
	}
	return mails
}

// WaitMailbox waits until at least n messages were delivered to addr and
// returns them all.
func (s *smtpSink) WaitMailbox(t testing.TB, addr string, n int, timeout time.Duration) []*Mail {
	t.Helper()
	var mails []*Mail
	if !waitFor(timeout, func() bool { mails = s.Mailbox(t, addr); return len(mails) >= n }) {
		t.Fatalf("%d message(s) delivered to %s after %v, want %d\nsink:\n%s", len(mails), addr, timeout, n, s.summary())
	}
	return mails
}

func (s *smtpSink) summary() string {
	var b strings.Builder
	for i, m := range s.Messages() {
		subject := ""
		if mail, err := parseMail(m.Raw); err == nil {
			subject = strings.Join(mail.Get("Subject"), " ")
		}
		fmt.Fprintf(&b, "%d: from <%s> to %v, %d bytes, Subject %q\n", i, m.From, m.Rcpts, len(m.Raw), subject)
	}
	if b.Len() == 0 {
		return "(nothing)\n"
	}
	return b.String()
}

// sendSMTP sends msg over SMTP to addr, like (*Postfix).SendSMTP: a
// refusal comes back as *SMTPStageError wrapping *smtp.SMTPError.
func sendSMTP(addr, from string, rcpts []string, msg []byte) error {
	c, err := smtp.Dial(addr)
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer c.Close()
	stage := func(name string, err error) error {
		if err == nil {
			return nil
		}
		return &SMTPStageError{Stage: name, Err: err}
	}
	if err := c.Hello("client.example.net"); err != nil {
		return stage("EHLO", err)
	}
	if err := c.Mail(from, nil); err != nil {
		return stage("MAIL", err)
	}
	for _, r := range rcpts {
		if err := c.Rcpt(r, nil); err != nil {
			return stage("RCPT <"+r+">", err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return stage("DATA", err)
	}
	if _, err := w.Write(msg); err != nil {
		return stage("DATA", err)
	}
	if err := w.Close(); err != nil {
		return stage("end of DATA", err)
	}
	return c.Quit()
}

// refusal returns the stage and the reply ("451 4.3.2 text") of an SMTP
// refusal; any other error (or none) fails the test.
func refusal(t testing.TB, err error) (stage string, code int, reply string) {
	t.Helper()
	var se *SMTPStageError
	var re *smtp.SMTPError
	if !errors.As(err, &se) || !errors.As(err, &re) {
		t.Fatalf("want an SMTP refusal, got %v", err)
	}
	return se.Stage, re.Code, fmt.Sprintf("%d %d.%d.%d %s", re.Code, re.EnhancedCode[0], re.EnhancedCode[1], re.EnhancedCode[2], re.Message)
}

// sendmailStackOptions configures startSendmailStack.
type sendmailStackOptions struct {
	Milter   milterOptions
	Sendmail sendmailOptions
}

// startSendmailStack starts cryptmilter with contrib/sendmail/cryptmilter.toml
// (on the test's ports, then opts.Milter.Settings) and a private Sendmail
// using contrib/sendmail/sendmail.mc.snippet wired to it.
func startSendmailStack(t testing.TB, opts sendmailStackOptions) (*Sendmail, *Milter) {
	t.Helper()
	requireSendmail(t)
	if opts.Milter.Port == 0 {
		opts.Milter.Port = freePort(t)
	}
	reinject := freePort(t)
	toml := contribText(t, "sendmail/cryptmilter.toml",
		"inet:8895@127.0.0.1", "inet:"+strconv.Itoa(opts.Milter.Port)+"@127.0.0.1",
		"inet:127.0.0.1:10026", "inet:127.0.0.1:"+strconv.Itoa(reinject))
	opts.Milter.Settings = append(tomlSettings(t, toml), opts.Milter.Settings...)
	opts.Sendmail.MilterPort, opts.Sendmail.ReinjectPort = opts.Milter.Port, reinject
	sm := startSendmail(t, opts.Sendmail)
	m := startMilter(t, opts.Milter)
	return sm, m
}
