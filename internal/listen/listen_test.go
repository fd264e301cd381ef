package listen

import (
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

func cfgFor(t *testing.T, specs ...string) *config.Config {
	t.Helper()
	c := config.Default()
	c.Keystore = t.TempDir()
	c.Listen = specs
	c.SocketMode = "0640"
	if g, err := user.LookupGroupId(strconv.Itoa(os.Getgid())); err == nil {
		c.SocketGroup = g.Name
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

func TestOpenUnixAndInet(t *testing.T) {
	dir, err := os.MkdirTemp("", "cmlisten")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "sub", "milter.sock")
	// A stale socket file (nobody listening) is replaced.
	os.MkdirAll(filepath.Dir(sock), 0o755)
	stale, _ := net.Listen("unix", sock)
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()

	ls, err := Open(cfgFor(t, "unix:"+sock, "inet:127.0.0.1:0"))
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(sock)
	if err != nil || fi.Mode().Perm() != 0o640 {
		t.Fatalf("socket mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
	if c, err := net.Dial("tcp", ls[1].Addr().String()); err != nil {
		t.Errorf("inet listener: %v", err)
	} else {
		c.Close()
	}
	// A second Open on a served socket is refused.
	if _, err := Open(cfgFor(t, "unix:"+sock)); err == nil || !strings.Contains(err.Error(), "another process is serving") {
		t.Errorf("second open: %v", err)
	}
	for _, l := range ls {
		l.Close()
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket file left after Close: %v", err)
	}
	// A regular file in the way is not removed.
	os.WriteFile(sock, []byte("data"), 0o600)
	if _, err := Open(cfgFor(t, "unix:"+sock)); err == nil || !strings.Contains(err.Error(), "is not a socket") {
		t.Errorf("open over a regular file: %v", err)
	}
	if b, _ := os.ReadFile(sock); string(b) != "data" {
		t.Error("the regular file was changed")
	}
}

func TestSystemdWithoutSockets(t *testing.T) {
	t.Setenv("LISTEN_FDS", "")
	ls, err := Systemd()
	if err != nil || len(ls) != 0 {
		t.Errorf("Systemd() without LISTEN_FDS = %v, %v", ls, err)
	}
}
