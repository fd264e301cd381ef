package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"
)

// testDaemon is a `cryptmilter serve` process started from the test binary.
type testDaemon struct {
	cmd    *exec.Cmd
	logs   *lockedBuffer
	notify *notifyListener
	done   chan error
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// notifyListener is a NOTIFY_SOCKET as systemd provides it.
type notifyListener struct {
	conn *net.UnixConn
	path string
	mu   sync.Mutex
	msgs []string
}

func newNotifyListener(t *testing.T) *notifyListener {
	dir, err := os.MkdirTemp("", "cmnotify")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "notify.sock")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifyListener{conn: c, path: path}
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() { c.Close() })
	return n
}

// wait waits for the state to be notified count times in all.
func (n *notifyListener) wait(t *testing.T, state string, count int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		n.mu.Lock()
		got := 0
		for _, m := range n.msgs {
			if strings.Contains(m, state) {
				got++
			}
		}
		n.mu.Unlock()
		if got >= count {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	t.Fatalf("no %d× %q from sd_notify; got %q", count, state, n.msgs)
}

func startDaemon(t *testing.T, dir string, extraEnv ...string) *testDaemon {
	t.Helper()
	d := &testDaemon{logs: &lockedBuffer{}, notify: newNotifyListener(t), done: make(chan error, 1)}
	d.cmd = exec.Command(os.Args[0], "serve", "-c", "c.toml")
	d.cmd.Dir = dir
	d.cmd.Env = append(os.Environ(), "CRYPTMILTER_AS_MAIN=1", "NOTIFY_SOCKET="+d.notify.path)
	d.cmd.Env = append(d.cmd.Env, extraEnv...)
	d.cmd.Stderr = d.logs
	if err := d.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.done <- d.cmd.Wait() }()
	t.Cleanup(func() {
		d.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("daemon log:\n%s", d.logs)
		}
	})
	d.notify.wait(t, "READY=1", 1)
	return d
}

func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func milterSession(t *testing.T, network, addr string) *dj.ClientSession {
	t.Helper()
	c := dj.NewClient(network, addr,
		dj.WithDialer(&net.Dialer{Timeout: 5 * time.Second}),
		dj.WithReadTimeout(10*time.Second), dj.WithWriteTimeout(10*time.Second),
		dj.WithActions(dj.OptAddHeader|dj.OptChangeBody|dj.OptAddRcpt|dj.OptRemoveRcpt|dj.OptChangeHeader|dj.OptSetMacros))
	s, err := c.Session(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conn("mx.example.net", dj.FamilyInet, 4000, "192.0.2.1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Helo("mx.example.net"); err != nil {
		t.Fatal(err)
	}
	return s
}

// begin sends a message up to the end of its body, without the end.
func begin(t *testing.T, s *dj.ClientSession) {
	t.Helper()
	if _, err := s.Mail("alice@example.net", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Rcpt("rt@example.org", ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.DataStart(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderField("Subject", "x", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.HeaderEnd(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.BodyChunk([]byte("hello\r\n")); err != nil {
		t.Fatal(err)
	}
}

// inserted returns the header names the milter inserted for one message.
func inserted(t *testing.T, s *dj.ClientSession) []string {
	t.Helper()
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	if act.Type != dj.ActionAccept {
		t.Fatalf("action %v", act)
	}
	var names []string
	for _, m := range mods {
		if m.Type == dj.ActionInsertHeader {
			names = append(names, m.HeaderName+": "+m.HeaderValue)
		}
	}
	return names
}

// TestServeLifecycle drives a real `cryptmilter serve` process: sd_notify,
// reload with a bad and a good configuration, and a drain on SIGTERM that
// lets the message in flight finish.
func TestServeLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	port := freePort(t)
	sock := filepath.Join(dir, "milter.sock")
	conf := func(extra string) {
		c := fmt.Sprintf("keystore = \"keys\"\nhostname = \"mx.example.test\"\nlisten = [\"inet:127.0.0.1:%d\", \"unix:%s\"]\nsocket_mode = \"0600\"\n[direction]\ninternal_hosts = []\n%s", port, sock, extra)
		if err := os.WriteFile(filepath.Join(dir, "c.toml"), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	conf("")
	d := startDaemon(t, dir, "WATCHDOG_USEC=300000")
	addr := fmt.Sprintf("127.0.0.1:%d", port)

	// The unix socket exists with the configured mode; it serves too.
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("unix socket: %v %v, want a 0600 socket", fi, err)
	}
	s := milterSession(t, "unix", sock)
	begin(t, s)
	if got := inserted(t, s); len(got) != 2 || got[1] != "X-Cryptmilter-Encryption: none" {
		t.Errorf("inserted %q", got)
	}
	s.Close()
	// First start created the gateway identity.
	if entries, _ := os.ReadDir(filepath.Join(dir, "keys", "private")); len(entries) == 0 {
		t.Error("no gateway identity created on first start")
	}
	d.notify.wait(t, "WATCHDOG=1", 2)

	// A broken configuration is refused; the daemon keeps serving.
	os.WriteFile(filepath.Join(dir, "c.toml"), []byte("keystore = \"keys\"\nbogus = 1\n"), 0o644)
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.notify.wait(t, "RELOADING=1", 1)
	d.notify.wait(t, "READY=1", 2)
	if !strings.Contains(d.logs.String(), `unknown key \"bogus\"`) && !strings.Contains(d.logs.String(), `unknown key "bogus"`) {
		t.Errorf("log does not name the bad key:\n%s", d.logs)
	}
	s = milterSession(t, "tcp", addr)
	begin(t, s)
	if got := inserted(t, s); len(got) != 2 {
		t.Errorf("after a bad reload: inserted %q", got)
	}
	s.Close()

	// A good configuration is applied to new messages.
	conf("[inbound]\nrt_headers = true\n")
	d.cmd.Process.Signal(syscall.SIGHUP)
	d.notify.wait(t, "READY=1", 3)
	s = milterSession(t, "tcp", addr)
	begin(t, s)
	if got := inserted(t, s); len(got) != 3 || got[0] != "X-RT-Incoming-Encryption: Not encrypted" {
		t.Errorf("after a good reload: inserted %q, want RT's header too", got)
	}

	// SIGTERM with a message in flight: it still completes, then the
	// daemon exits 0 and removes its unix socket.
	begin(t, s)
	d.cmd.Process.Signal(syscall.SIGTERM)
	d.notify.wait(t, "STOPPING=1", 1)
	select {
	case err := <-d.done:
		t.Fatalf("daemon exited (%v) with a message in flight", err)
	case <-time.After(300 * time.Millisecond):
	}
	if got := inserted(t, s); len(got) != 3 {
		t.Errorf("in-flight message: inserted %q", got)
	}
	select {
	case err := <-d.done:
		if err != nil {
			t.Errorf("daemon exit: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("daemon did not exit after the drain")
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("unix socket left behind: %v", err)
	}
	if !strings.Contains(d.logs.String(), "drained") {
		t.Errorf("no drain in the log:\n%s", d.logs)
	}
}

// TestServeRefusesBusySocket: a second daemon on the same unix socket
// fails with a clear message instead of stealing it.
func TestServeRefusesBusySocket(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	sock := filepath.Join(dir, "m.sock")
	os.WriteFile(filepath.Join(dir, "c.toml"), []byte(fmt.Sprintf("keystore = \"keys\"\nhostname = \"mx.example.test\"\nlisten = [\"unix:%s\"]\n", sock)), 0o644)
	startDaemon(t, dir)
	cmd := exec.Command(os.Args[0], "serve", "-c", "c.toml")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "CRYPTMILTER_AS_MAIN=1")
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "another process is serving on") {
		t.Errorf("second daemon: %v\n%s", err, out)
	}
}

// TestBench drives a real daemon with `cryptmilter bench`.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts daemons")
	}
	dir := t.TempDir()
	port := freePort(t)
	os.WriteFile(filepath.Join(dir, "c.toml"), []byte(fmt.Sprintf("keystore = \"keys\"\nhostname = \"mx.example.test\"\nlisten = [\"inet:127.0.0.1:%d\"]\n[direction]\ninternal_hosts = []\n", port)), 0o644)
	startDaemon(t, dir)
	var out, errb bytes.Buffer
	code := run([]string{"bench", "--connect", fmt.Sprintf("inet:127.0.0.1:%d", port), "--direction", "in",
		"--from", "a@example.net", "--rcpt", "rt@example.org", "--size", "20000", "--messages", "20", "--concurrency", "3", "--json"},
		nil, &out, &errb)
	if code != 0 {
		t.Fatalf("bench exit %d: %s", code, errb.String())
	}
	var res benchResult
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("bench output: %v\n%s", err, out.String())
	}
	// Inbound: every message accepted with the two result headers.
	if res.Messages != 20 || res.Errors != 0 || res.Actions["accept"] != 20 || res.Modifications != 40 || res.PerSecond <= 0 || res.LatencyMaxMs <= 0 {
		t.Errorf("bench result %+v", res)
	}
	// A dead socket is an error, with exit 1.
	out.Reset()
	errb.Reset()
	if code := run([]string{"bench", "--connect", fmt.Sprintf("inet:127.0.0.1:%d", freePort(t)), "--direction", "out",
		"--from", "a@example.net", "--rcpt", "b@example.org", "--messages", "2"}, nil, &out, &errb); code != 1 || !strings.Contains(errb.String(), "2 of 2 messages failed") {
		t.Errorf("bench against nothing: exit %d, %s", code, errb.String())
	}
}
