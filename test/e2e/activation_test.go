package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestSocketActivation: `systemd-socket-activate -l 127.0.0.1:PORT
// cryptmilter serve -c FILE` serves on the passed socket, not on the
// config's listen address; miltertest and Postfix both talk to it, and
// SIGTERM ends it with status 0.
func TestSocketActivation(t *testing.T) {
	t.Parallel()
	requirePeers(t, false, "systemd-socket-activate", "miltertest")
	pf, m := startStack(t, stackOptions{Milter: milterOptions{Activate: true}})

	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "in"})
	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "daemon_name": originatingDaemon, "expect": "out"})
	m.WaitLog(t, "using sockets passed by systemd", 5*time.Second)
	if strings.Contains(m.Log(), "socket=inet:"+m.ListenAddr) || dialable(m.ListenAddr) {
		t.Errorf("the milter also listens on the config's %s; socket activation must replace listen", m.ListenAddr)
	}

	msg := plainMessage("alice@example.net", "rt@example.org", "through an activated socket")
	if code, reply := pf.SendSMTPCode(t, pf.InboundAddr, "alice@example.net", []string{"rt@example.org"}, msg); code != 0 {
		t.Fatalf("SMTP refused the message: %s", reply)
	}
	mails := pf.WaitMaildir(t, "rt@example.org", 1, 20*time.Second)
	wantDelivered(t, mails[0], msg, noneHeaders, isResultHeader)

	m.Stop(t)
}

// TestEmbeddedDefault is the README's first command: `cryptmilter serve`
// without a config, in an empty directory, listens on inet:127.0.0.1:8895,
// creates ./cryptmilter-data with a gateway identity, answers miltertest
// (the default internal_hosts is empty: mail from loopback is inbound,
// like any client's, unless marked by {daemon_name}), and
// exits 0 on SIGTERM.
func TestEmbeddedDefault(t *testing.T) {
	requirePeers(t, false, "miltertest")
	if dialable("127.0.0.1:8895") {
		skipOrFail(t, "127.0.0.1:8895 is in use (another cryptmilter?); the embedded default needs it")
	}
	m := startMilter(t, milterOptions{NoConfig: true})
	if m.Addr != "127.0.0.1:8895" {
		t.Fatalf("embedded default milter at %s", m.Addr)
	}
	m.WaitLog(t, "socket=inet:127.0.0.1:8895", time.Second)

	info, err := os.Stat(filepath.Join(m.Dir, "cryptmilter-data"))
	if err != nil {
		t.Fatalf("keystore not created in the working directory: %v", err)
	}
	if perm := info.Mode().Perm(); perm != 0o700 {
		t.Errorf("./cryptmilter-data has mode %#o, want 0700", perm)
	}
	host, err := os.Hostname()
	if err != nil {
		t.Fatal(err)
	}
	// The identity, as the keys command sees it (same working directory,
	// same embedded default).
	out := m.Keys(t, nil, "list")
	addr := "cryptmilter@" + host
	for _, proto := range []string{"openpgp", "smime"} {
		found := false
		for _, l := range strings.Split(string(out), "\n") {
			f := strings.Fields(l)
			if len(f) > 2 && f[0] == proto && strings.Contains(l, addr) && strings.Contains(l, "usable") {
				found = true
			}
		}
		if !found {
			t.Errorf("no usable %s identity for %s in the keystore:\n%s", proto, addr, out)
		}
	}

	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "in"})
	miltertest(t, m.Addr, map[string]string{"client_ip": "127.0.0.1", "expect": "in"})
	miltertest(t, m.Addr, map[string]string{"client_ip": "127.0.0.1", "daemon_name": "ORIGINATING", "expect": "out"})
	m.Stop(t)
}

// TestReloadBadConfig: SIGHUP with a broken config file keeps the daemon
// serving with the old configuration and logs why; a later good config is
// applied by the next SIGHUP.
func TestReloadBadConfig(t *testing.T) {
	t.Parallel()
	requirePeers(t, false, "miltertest")
	m := startMilter(t, milterOptions{Settings: []string{`direction.internal_hosts = []`}})
	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "in"})

	good, err := os.ReadFile(m.ConfigFile)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, m.ConfigFile, string(good)+"no_such_key = 1\n", 0o600)
	got := m.Reload(t)
	if !strings.Contains(got, "configuration rejected") || !strings.Contains(got, "no_such_key") {
		t.Errorf("log after a bad reload lacks the rejection naming the key:\n%s", got)
	}
	pid := m.Pid()
	if err := syscall.Kill(pid, 0); err != nil {
		t.Fatalf("milter gone after a bad reload: %v", err)
	}
	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "in"})

	// A good config that makes 192.0.2.0/24 internal: its mail turns outbound.
	fixed := strings.Replace(string(good), "internal_hosts = []", `internal_hosts = ["192.0.2.0/24"]`, 1)
	if fixed == string(good) {
		t.Fatal("test config has no internal_hosts line to change")
	}
	writeFile(t, m.ConfigFile, fixed, 0o600)
	if got := m.Reload(t); !strings.Contains(got, "msg=reloaded") || strings.Contains(got, "rejected") {
		t.Fatalf("good config not reloaded:\n%s", got)
	}
	miltertest(t, m.Addr, map[string]string{"client_ip": "192.0.2.1", "expect": "out"})
	miltertest(t, m.Addr, map[string]string{"client_ip": "198.51.100.7", "expect": "in"})
	if m.Pid() != pid {
		t.Errorf("milter restarted during reload")
	}
	m.Stop(t)
}
