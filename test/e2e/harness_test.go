// Package e2e is the end-to-end suite: it runs the cryptmilter binary
// (built once by TestMain) against a private Postfix from Debian's package,
// started per test in a temporary directory on loopback ports, and against
// OpenDKIM's miltertest.
//
// The harness, for every suite that follows:
//
//	pf, m := startStack(t, stackOptions{Milter: milterOptions{Settings: []string{`outbound.policy = "none"`}}})
//	err := pf.SendSMTP(pf.InboundAddr, from, rcpts, msg) // inbound: smtpd_milters
//	err = pf.SendSMTP(pf.SubmitAddr, from, rcpts, msg)   // outbound: {daemon_name}=ORIGINATING
//	pf.Sendmail(t, from, rcpts, msg)                    // outbound: non_smtpd_milters
//	mails := pf.WaitMaildir(t, "rt@example.org", 1, 20*time.Second)
//	m.Stop(t); m.Start(t); m.Reload(t)                  // SIGTERM (exit 0) / restart / SIGHUP
//	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "in"})
//
// and the pieces of other Postfix setups (postfixOptions.InboundOptions,
// SubmitOptions, ReinjectOptions and Services add master.cf settings):
//
//	dv := startDovecotAuth(t, users)      // SASL: dv.SMTPDOptions(), serverTLS(t)
//	pf.SendSMTPWith(addr, smtpClient{StartTLS: true, Auth: sasl.NewPlainClient(…)}, from, rcpts, msg)
//	f := newContentFilter(t, "in")        // f.Transport(), contentFilterServices(…), f.start(t)
//	dk := startOpenDKIM(t, openDKIMOptions{Sign: sharedDKIMKey(t, "example.org", "gw")})
//	verdict := dk.Verify(t, mail)         // opendkim -t, keys from a file
//
// On failure the Postfix log and queue and the milter's log are dumped;
// CRYPTMILTER_E2E_KEEP=1 keeps the temporary directories. Postfix needs
// root: without root or a peer program the tests skip, unless
// CRYPTMILTER_REQUIRE_PEERS=1 (make test) turns the skip into a failure.
package e2e

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// cryptmilterBin is the binary built once by TestMain.
var cryptmilterBin string

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	dir, err := os.MkdirTemp("", "cm-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	// Daemons running as other users (none today) must be able to exec it.
	os.Chmod(dir, 0o755)
	cryptmilterBin = filepath.Join(dir, "cryptmilter")
	cmd := exec.Command("go", "build", "-o", cryptmilterBin, "../../cmd/cryptmilter")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building cryptmilter:", err)
		return 1
	}
	code := m.Run()
	for _, d := range sharedCleanup {
		os.RemoveAll(d)
	}
	return code
}

// requirePeers skips the test when a needed program is missing or, when
// needRoot, the test does not run as root; under
// CRYPTMILTER_REQUIRE_PEERS=1 (make test) it fails it instead.
func requirePeers(t testing.TB, needRoot bool, programs ...string) {
	t.Helper()
	var missing []string
	if needRoot && os.Geteuid() != 0 {
		missing = append(missing, "root (a private Postfix is started with `postfix -c DIR start`)")
	}
	for _, p := range programs {
		if _, err := exec.LookPath(p); err != nil {
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		skipOrFail(t, "end-to-end test needs "+strings.Join(missing, ", ")+"; `make deps` as root installs the programs")
	}
}

// skipOrFail skips the test with msg, or fails it under
// CRYPTMILTER_REQUIRE_PEERS=1.
func skipOrFail(t testing.TB, msg string) {
	t.Helper()
	if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
		t.Fatal(msg + " (CRYPTMILTER_REQUIRE_PEERS=1)")
	}
	t.Skip(msg)
}

// tempDir returns a short, world-traversable temporary directory (Postfix
// daemons run as the postfix user and unix socket paths are limited to
// 108 bytes), removed at the end of the test unless
// CRYPTMILTER_E2E_KEEP=1.
func tempDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if os.Getenv("CRYPTMILTER_E2E_KEEP") == "1" {
			t.Logf("kept %s (CRYPTMILTER_E2E_KEEP=1)", dir)
			return
		}
		os.RemoveAll(dir)
	})
	return dir
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitFor polls cond every 50 ms until it holds or timeout passes.
func waitFor(timeout time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// dialable reports whether something accepts TCP connections on addr.
func dialable(addr string) bool {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// syncBuffer is a bytes.Buffer safe for a writing child process and a
// reading test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// runCmd runs a command and fails the test with its output on error.
func runCmd(t testing.TB, stdin io.Reader, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// processAlive reports whether pid still exists (and is not a zombie).
func processAlive(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
