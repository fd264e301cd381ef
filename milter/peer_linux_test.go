package milter

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
)

func TestParseProcAddr(t *testing.T) {
	for in, want := range map[string]string{
		"0100007F:1F90":                         "127.0.0.1:8080",
		"00000000:0019":                         "0.0.0.0:25",
		"00000000000000000000000001000000:22C3": "[::1]:8899",
		"0000000000000000FFFF00000100007F:01BB": "127.0.0.1:443", // IPv4-mapped
	} {
		got, ok := parseProcAddr(in)
		if !ok || got != netip.MustParseAddrPort(want) {
			t.Errorf("parseProcAddr(%q) = %v, %v; want %s", in, got, ok, want)
		}
	}
	for _, bad := range []string{"", "0100007F", "0100007F:XYZ", "01007F:0019", "zz00007F:0019"} {
		if _, ok := parseProcAddr(bad); ok {
			t.Errorf("parseProcAddr(%q) accepted", bad)
		}
	}
}

// TestPeerUID: a loopback client's user is found (this test's own), over
// IPv4 and IPv6.
func TestPeerUID(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		addr := "127.0.0.1:0"
		if network == "tcp6" {
			addr = "[::1]:0"
		}
		ln, err := net.Listen(network, addr)
		if err != nil {
			t.Logf("%s: %v (skipped)", network, err)
			continue
		}
		go func() {
			c, err := net.Dial(network, ln.Addr().String())
			if err == nil {
				time.Sleep(200 * time.Millisecond)
				c.Close()
			}
		}()
		nc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		uid, found, err := peerUID(nc)
		if err != nil || !found || uid != uint32(os.Getuid()) {
			t.Errorf("%s: peerUID = %d, %v, %v; want %d, found", network, uid, found, err, os.Getuid())
		}
		nc.Close()
		ln.Close()
	}
}

// TestListenUsersRefused (found by review): a local process whose user is
// not allowed (listen_users) cannot use the milter over TCP, where it
// could have had mail decrypted or text signed with the gateway's keys:
// its connection is closed before negotiation, and the refusal is logged.
// An allowed user's connection works.
func TestListenUsersRefused(t *testing.T) {
	me := uint32(os.Getuid())
	pass := processorFunc(func(_ context.Context, _ *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	refused := startServer(t, nil, pass, func(e *Env) { e.AllowUID = func(uid uint32) bool { return uid != me } })
	nc, err := net.Dial("tcp", refused.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	// An option negotiation packet; the milter must not answer it.
	writePacket(nc, 'O', []byte{0, 0, 0, 6, 0, 0, 0x01, 0xff, 0, 0x1f, 0xff, 0xff})
	if n, err := nc.Read(make([]byte, 64)); err == nil || n > 0 {
		t.Errorf("a refused user's connection was answered (%d bytes, %v)", n, err)
	}
	nc.Close()
	waitFor(t, "the refusal in the log", 5*time.Second, func() bool { return strings.Contains(refused.logs.String(), "not in listen_users") })

	allowed := startServer(t, nil, pass, func(e *Env) { e.AllowUID = func(uid uint32) bool { return uid == me } })
	s := session(t, allowed)
	o := send(t, s, msgSpec{from: "x@example.net", rcpts: []string{"rt@example.org"}, header: [][2]string{{"Subject", "ok"}}, body: "hi\r\n"})
	if o.act == nil {
		t.Error("an allowed user's message got no answer")
	}
}

// TestPeerClosedBeforeLookup (found by review): a local client that sends
// its packets and closes its socket before the milter looks it up shows
// in the kernel's table without an inode (as root's): it is refused, not
// taken for root, whatever listen_users allows.
func TestPeerClosedBeforeLookup(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("a whole pipelined session"))
	c.Close()
	time.Sleep(100 * time.Millisecond)
	nc, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if uid, local, err := peerUID(nc); err == nil {
		t.Errorf("peerUID of a closed local client = %d, local %v, no error; want a refusal", uid, local)
	}
	srv := &Server{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if srv.peerAllowed(nc, func(uint32) bool { return true }) {
		t.Error("a closed local client was allowed")
	}
}

// TestPeerRemoteNotChecked: a peer that is not this host is not looked up
// (and so allowed: firewalls guard other hosts).
func TestPeerRemoteNotChecked(t *testing.T) {
	if isLocalAddr(netip.MustParseAddr("192.0.2.77")) {
		t.Skip("192.0.2.77 is an address of this host")
	}
	if !isLocalAddr(netip.MustParseAddr("127.0.0.1")) || !isLocalAddr(netip.MustParseAddr("::1")) {
		t.Error("loopback is not local")
	}
}
