package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// defaultSettings are the harness's configuration, one "[table.]key =
// value" line each, with {{.Field}} placeholders (Keystore, Listen, Spool,
// Reinject, Originating). internal_hosts keeps the product's default
// (empty), so that loopback SMTP on Postfix's inbound port counts as
// inbound; outbound paths are marked with {daemon_name}.
var defaultSettings = []string{
	`keystore = "{{.Keystore}}"`,
	`listen = ["inet:{{.Listen}}"]`,
	`hostname = "mx.example.test"`,
	`spool = "{{.Spool}}"`,
	`drain_timeout = "5s"`,
	`log.level = "debug"`,
	`identity.addresses = ["rt@example.org"]`,
	`direction.originating_daemons = ["{{.Originating}}"]`,
}

// renderSettings turns "[table.]key = value" lines into TOML: a later line
// replaces an earlier one with the same key; top-level keys first, then
// one table each, in order of first appearance.
func renderSettings(lines []string) (string, error) {
	type kv struct{ key, value string }
	tables := map[string][]kv{}
	var order []string
	for _, l := range lines {
		k, v, ok := strings.Cut(l, "=")
		if !ok {
			return "", fmt.Errorf("setting %q: want key = value", l)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		table, key := "", k
		if !strings.HasPrefix(k, `"`) {
			if t, rest, ok := strings.Cut(k, "."); ok {
				table, key = t, rest
			}
		}
		if _, seen := tables[table]; !seen {
			order = append(order, table)
		}
		kvs := tables[table]
		replaced := false
		for i := range kvs {
			if kvs[i].key == key {
				kvs[i].value, replaced = v, true
			}
		}
		if !replaced {
			kvs = append(kvs, kv{key, v})
		}
		tables[table] = kvs
	}
	sort.SliceStable(order, func(i, j int) bool { return order[i] == "" && order[j] != "" })
	var b strings.Builder
	for _, t := range order {
		if t != "" {
			fmt.Fprintf(&b, "\n[%s]\n", t)
		}
		for _, e := range tables[t] {
			fmt.Fprintf(&b, "%s = %s\n", e.key, e.value)
		}
	}
	return b.String(), nil
}

// milterOptions configures a cryptmilter process.
type milterOptions struct {
	// Settings override or extend defaultSettings, e.g.
	// `outbound.policy = "none"` or `inbound.rt_headers = true`.
	Settings []string
	// Extra is raw TOML appended after the settings (arrays of tables
	// such as [[outbound.rule]]).
	Extra string
	// Config, when set, replaces the generated file entirely (a
	// text/template with the same placeholders as defaultSettings).
	Config string
	// NoConfig runs `cryptmilter serve` without -c, in the milter's
	// directory: the embedded default (inet:127.0.0.1:8895,
	// ./cryptmilter-data). Port must then be 8895.
	NoConfig bool
	// Port to listen on (or to activate on); 0 picks a free one.
	Port int
	// Reinject is the re-injection listener (host:port), usually
	// Postfix.ReinjectAddr.
	Reinject string
	// Keystore, when set, is copied into the milter's own keystore before
	// the first start (e.g. one prepared with `cryptmilter keys`). Without
	// it the milter gets a copy of a gateway identity for rt@example.org
	// created once per test binary (RSA key generation is slow).
	Keystore string
	// FreshKeystore leaves the keystore empty, so that serve creates the
	// identity itself on first start.
	FreshKeystore bool
	// Activate runs the milter under systemd-socket-activate -l ADDR, so
	// that it gets the socket as LISTEN_FDS; the config's listen is then
	// another port that must stay unused.
	Activate bool
	// User runs the milter as this system user (the milter's directory
	// is given to it), so that file permissions apply (root bypasses
	// them).
	User string
}

// Milter is a cryptmilter serve process the test can stop, restart and
// signal. Its stderr (the log) survives restarts.
type Milter struct {
	Dir        string
	ConfigFile string
	Keystore   string
	Addr       string // host:port Postfix and miltertest connect to
	// ListenAddr is the config's listen address; equal to Addr unless
	// Activate.
	ListenAddr string
	opts       milterOptions

	mu    sync.Mutex
	cmd   *exec.Cmd
	done  chan struct{}
	state *os.ProcessState
	log   syncBuffer
}

// MilterAddr is the socket in Postfix syntax.
func (m *Milter) MilterAddr() string { return "inet:" + m.Addr }

// newMilter prepares a milter (directory, port, config) without starting it.
func newMilter(t testing.TB, opts milterOptions) *Milter {
	t.Helper()
	dir := tempDir(t, "cm-m-")
	port := opts.Port
	if opts.NoConfig && port == 0 {
		port = 8895
	}
	if port == 0 {
		port = freePort(t)
	}
	m := &Milter{
		Dir:        dir,
		ConfigFile: filepath.Join(dir, "cryptmilter.toml"),
		Keystore:   filepath.Join(dir, "keystore"),
		Addr:       "127.0.0.1:" + strconv.Itoa(port),
		opts:       opts,
	}
	m.ListenAddr = m.Addr
	if opts.Activate {
		requirePeers(t, false, "systemd-socket-activate")
		m.ListenAddr = "127.0.0.1:" + strconv.Itoa(freePort(t))
	}
	switch {
	case opts.NoConfig:
	case opts.Keystore != "":
		copyTree(t, opts.Keystore, m.Keystore)
	case !opts.FreshKeystore:
		copyTree(t, sharedKeystore(t), m.Keystore)
	}
	if opts.NoConfig {
		m.ConfigFile = ""
		m.Keystore = filepath.Join(dir, "cryptmilter-data")
	} else {
		m.writeConfig(t, opts)
	}
	t.Cleanup(func() {
		if m.running() {
			m.kill()
		}
		if t.Failed() {
			t.Logf("cryptmilter log (%s):\n%s", m.ConfigFile, m.Log())
		}
	})
	return m
}

// writeConfig writes the configuration file for opts.
func (m *Milter) writeConfig(t testing.TB, opts milterOptions) {
	t.Helper()
	tmpl := opts.Config
	if tmpl == "" {
		settings := slices.Clone(defaultSettings)
		if opts.Reinject != "" {
			settings = append(settings, `outbound.reinject = "inet:{{.Reinject}}"`)
		}
		var err error
		if tmpl, err = renderSettings(append(settings, opts.Settings...)); err != nil {
			t.Fatal(err)
		}
		tmpl += opts.Extra
	}
	writeTemplate(t, m.ConfigFile, tmpl, map[string]string{
		"Keystore": m.Keystore, "Listen": m.ListenAddr, "Spool": filepath.Join(m.Dir, "spool"),
		"Reinject": opts.Reinject, "Originating": originatingDaemon,
	})
}

// startMilter prepares and starts a milter.
func startMilter(t testing.TB, opts milterOptions) *Milter {
	t.Helper()
	m := newMilter(t, opts)
	m.Start(t)
	return m
}

// TryStart starts the milter and waits until it serves or exits; it
// returns an error (the log tells why) when it exits.
func (m *Milter) TryStart() (err error) {
	ft := &failT{}
	defer func() {
		if v := recover(); v != nil {
			if v != errFailT {
				panic(v)
			}
			err = errors.New(ft.msg)
		}
	}()
	m.Start(ft)
	return nil
}

var errFailT = errors.New("start failed")

// failT records a failure of Start instead of failing the test.
type failT struct {
	testing.TB
	failed bool
	msg    string
}

func (f *failT) Helper() {}
func (f *failT) Fatalf(format string, args ...any) {
	f.failed, f.msg = true, fmt.Sprintf(format, args...)
	panic(errFailT)
}
func (f *failT) Fatal(args ...any) { f.Fatalf("%s", fmt.Sprint(args...)) }

// Start starts the milter and waits until it serves (for an activated
// one: until systemd-socket-activate listens; the milter itself starts at
// the first connection).
func (m *Milter) Start(t testing.TB) {
	t.Helper()
	if m.running() {
		t.Fatal("milter already running")
	}
	args := []string{"serve"}
	if m.ConfigFile != "" {
		args = append(args, "-c", m.ConfigFile)
	}
	name := cryptmilterBin
	if m.opts.Activate {
		args = append([]string{"-l", m.Addr, cryptmilterBin}, args...)
		name = "systemd-socket-activate"
	}
	cmd := exec.Command(name, args...)
	cmd.Dir = m.Dir
	if m.opts.User != "" {
		cmd.SysProcAttr = runAs(t, m.opts.User, m.Dir)
	}
	cmd.Stdout = &m.log
	cmd.Stderr = &m.log
	mark := len(m.Log())
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	done := make(chan struct{})
	m.mu.Lock()
	m.cmd, m.done, m.state = cmd, done, nil
	m.mu.Unlock()
	go func() {
		cmd.Wait()
		m.mu.Lock()
		m.state = cmd.ProcessState
		m.mu.Unlock()
		close(done)
	}()
	ready := func() bool {
		if m.opts.Activate {
			return dialable(m.Addr)
		}
		return strings.Contains(m.Log()[mark:], "msg=ready") && dialable(m.Addr)
	}
	if !waitFor(30*time.Second, func() bool { return ready() || !m.running() }) || !m.running() {
		t.Fatalf("cryptmilter did not become ready on %s (exited: %v)\n%s", m.Addr, !m.running(), m.Log())
	}
}

func (m *Milter) running() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.done == nil {
		return false
	}
	select {
	case <-m.done:
		return false
	default:
		return true
	}
}

// Pid is the process id (of cryptmilter once an activated one has started).
func (m *Milter) Pid() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cmd == nil {
		return 0
	}
	return m.cmd.Process.Pid
}

// Signal sends sig to the running milter.
func (m *Milter) Signal(t testing.TB, sig syscall.Signal) {
	t.Helper()
	m.mu.Lock()
	cmd := m.cmd
	m.mu.Unlock()
	if cmd == nil || !m.running() {
		t.Fatal("milter not running")
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
}

// Wait waits for the milter to exit and returns its exit code (-1 when
// killed by a signal).
func (m *Milter) Wait(t testing.TB, timeout time.Duration) int {
	t.Helper()
	m.mu.Lock()
	done := m.done
	m.mu.Unlock()
	select {
	case <-done:
	case <-time.After(timeout):
		t.Fatalf("cryptmilter still running %v after the signal\n%s", timeout, m.Log())
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.state.ExitCode()
}

// Stop sends SIGTERM, waits for the exit and fails the test unless the
// exit status is 0 and the port is closed.
func (m *Milter) Stop(t testing.TB) {
	t.Helper()
	m.Signal(t, syscall.SIGTERM)
	if code := m.Wait(t, 15*time.Second); code != 0 {
		t.Fatalf("cryptmilter exited with %d after SIGTERM, want 0\n%s", code, m.Log())
	}
	if dialable(m.Addr) {
		t.Fatalf("%s still accepts connections after the milter stopped", m.Addr)
	}
}

// Reload sends SIGHUP and waits for the log line of the reload: "reloaded"
// or, for a rejected configuration, "configuration rejected". It returns
// the log written since the signal.
func (m *Milter) Reload(t testing.TB) string {
	t.Helper()
	mark := len(m.Log())
	m.Signal(t, syscall.SIGHUP)
	var since string
	if !waitFor(10*time.Second, func() bool {
		since = m.Log()[mark:]
		return strings.Contains(since, "msg=reloaded") || strings.Contains(since, "configuration rejected")
	}) {
		t.Fatalf("no reload in the log 10s after SIGHUP\n%s", m.Log())
	}
	return since
}

func (m *Milter) kill() {
	m.mu.Lock()
	cmd, done := m.cmd, m.done
	m.mu.Unlock()
	cmd.Process.Kill()
	<-done
}

// Log returns everything the milter wrote (stdout and stderr) so far,
// across restarts.
func (m *Milter) Log() string { return m.log.String() }

// WaitLog waits until the log contains substr.
func (m *Milter) WaitLog(t testing.TB, substr string, timeout time.Duration) {
	t.Helper()
	if !waitFor(timeout, func() bool { return strings.Contains(m.Log(), substr) }) {
		t.Fatalf("cryptmilter log lacks %q after %v\n%s", substr, timeout, m.Log())
	}
}

// stackOptions configures startStack.
type stackOptions struct {
	Milter  milterOptions
	Postfix postfixOptions
}

// startStack starts a milter and a private Postfix wired to it (both
// smtpd_milters and non_smtpd_milters), with the milter's [outbound]
// reinject pointing at Postfix's milter-less smtpd.
func startStack(t testing.TB, opts stackOptions) (*Postfix, *Milter) {
	t.Helper()
	requirePeers(t, true, "postfix", "sendmail", "postqueue")
	if opts.Milter.Port == 0 {
		opts.Milter.Port = freePort(t)
	}
	opts.Postfix.MilterAddr = "inet:127.0.0.1:" + strconv.Itoa(opts.Milter.Port)
	pf := startPostfix(t, opts.Postfix)
	if opts.Milter.Reinject == "" {
		opts.Milter.Reinject = pf.ReinjectAddr
	}
	m := startMilter(t, opts.Milter)
	return pf, m
}

var shared struct {
	once sync.Once
	dir  string
	err  error
	out  []byte
}

// sharedKeystore returns a keystore holding a gateway identity for
// rt@example.org, created once per test binary with `cryptmilter keys
// init`. Do not write to it: copy it (newMilter does).
func sharedKeystore(t testing.TB) string {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "cm-ks-")
		if err != nil {
			shared.err = err
			return
		}
		cfg := filepath.Join(dir, "cryptmilter.toml")
		ks := filepath.Join(dir, "keystore")
		if err := os.WriteFile(cfg, []byte("keystore = \""+ks+"\"\n"), 0o600); err != nil {
			shared.err = err
			return
		}
		cmd := exec.Command(cryptmilterBin, "keys", "-c", cfg, "init", "rt@example.org")
		shared.out, shared.err = cmd.CombinedOutput()
		shared.dir = ks
		sharedCleanup = append(sharedCleanup, dir)
	})
	if shared.err != nil {
		t.Fatalf("cryptmilter keys init: %v\n%s", shared.err, shared.out)
	}
	return shared.dir
}

// sharedCleanup lists directories TestMain removes at the end.
var sharedCleanup []string

// copyTree copies a directory tree keeping file modes.
func copyTree(t testing.TB, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.IsDir():
			if err := os.MkdirAll(target, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		case info.Mode().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			if err := os.WriteFile(target, b, info.Mode().Perm()); err != nil {
				return err
			}
			return os.Chmod(target, info.Mode().Perm())
		default:
			return nil // lock files, sockets
		}
	})
	if err != nil {
		t.Fatalf("copying %s: %v", src, err)
	}
}

// lastLine returns the last log line containing substr, or "".
func lastLine(log, substr string) string {
	lines := strings.Split(log, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		if strings.Contains(lines[i], substr) {
			return lines[i]
		}
	}
	return ""
}

// miltertest runs testdata/message.lua against the milter at addr with the
// given globals (port is set from addr) and fails the test unless the
// script succeeds.
func miltertest(t testing.TB, addr string, vars map[string]string) string {
	t.Helper()
	requirePeers(t, false, "miltertest")
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"-s", "testdata/message.lua", "-D", "port=" + port}
	for k, v := range vars {
		args = append(args, "-D", k+"="+v)
	}
	out, err := exec.Command("miltertest", args...).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "miltertest: ok") {
		t.Fatalf("miltertest %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Keys runs `cryptmilter keys -c CONFIG ARGS...` on the milter's keystore
// (in its directory, so the embedded default works too) and returns its
// standard output; a failure fails the test.
func (m *Milter) Keys(t testing.TB, stdin []byte, args ...string) string {
	t.Helper()
	all := []string{"keys"}
	if m.ConfigFile != "" {
		all = append(all, "-c", m.ConfigFile)
	}
	cmd := exec.Command(cryptmilterBin, append(all, args...)...)
	cmd.Dir = m.Dir
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("cryptmilter %s: %v\n%s%s", strings.Join(cmd.Args[1:], " "), err, out, stderr.Bytes())
	}
	return string(out)
}
