package milter

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
)

var acceptEngine = processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
	return &crypto.Plan{Action: crypto.Accept, Decision: "passed"}, nil
})

// flakyListener fails its first accepts with EMFILE, as a listener does
// when the process is out of file descriptors.
type flakyListener struct {
	net.Listener
	fail atomic.Int32
}

func (l *flakyListener) Accept() (net.Conn, error) {
	if l.fail.Add(-1) >= 0 {
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	}
	return l.Listener.Accept()
}

// TestAcceptErrorRetried: accept errors such as EMFILE do not stop the
// server; it retries and serves once descriptors are free again.
func TestAcceptErrorRetried(t *testing.T) {
	ts := startServer(t, nil, acceptEngine)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fl := &flakyListener{Listener: ln}
	fl.fail.Store(5)
	served := make(chan error, 1)
	go func() { served <- ts.srv.Serve(fl) }()
	c := &testServer{srv: ts.srv, addr: ln.Addr().String(), logs: ts.logs}
	if o := send(t, session(t, c), plain); o.act.Type != dj.ActionAccept {
		t.Errorf("after EMFILE: %v", o.act)
	}
	select {
	case err := <-served:
		t.Fatalf("Serve returned %v after an accept error", err)
	default:
	}
	if !strings.Contains(ts.logs.String(), "too many open files") {
		t.Errorf("the accept error is not logged:\n%s", ts.logs)
	}
	ln.Close()
	select {
	case err := <-served:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Serve returned %v when its listener was closed, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("Serve did not return when its listener was closed")
	}
}

// TestIdleTimeout: a connection on which the MTA sends nothing for
// limits.idle_timeout is closed, between messages and in the middle of
// one; one that keeps sending is not.
func TestIdleTimeout(t *testing.T) {
	const idle = 300 * time.Millisecond
	ts := startServer(t, func(c *config.Config) { c.Limits.IdleTimeout = config.Duration(idle) }, acceptEngine)
	// Between messages.
	s := session(t, ts)
	send(t, s, plain)
	waitFor(t, "idle connection closed", 5*time.Second, func() bool { return ts.srv.Active() == 0 })
	if _, err := s.Mail("a@example.net", ""); err == nil {
		t.Error("the idle connection still answers")
	}
	// In the middle of a message: after MAIL, nothing more.
	s = session(t, ts)
	if _, err := s.Mail("a@example.net", ""); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "idle connection closed mid-message", 5*time.Second, func() bool { return ts.srv.Active() == 0 })
	// Busy: packets more often than idle_timeout.
	s = session(t, ts)
	for range 4 {
		time.Sleep(idle / 2)
		if _, err := s.Mail("a@example.net", ""); err != nil {
			t.Fatalf("a connection used every %v was closed: %v", idle/2, err)
		}
		s.Abort(nil)
	}
	if !strings.Contains(ts.logs.String(), "closed an idle milter connection") {
		t.Errorf("the log does not say why:\n%s", ts.logs)
	}
}

// TestMaxConnections: with limits.max_connections open, another
// connection is closed at once; once one closes, a new one is served.
func TestMaxConnections(t *testing.T) {
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxConnections = 2 }, acceptEngine)
	a := session(t, ts)
	session(t, ts)
	c, err := dj.NewClient("tcp", ts.addr, dj.WithActions(clientActions), dj.WithReadTimeout(5*time.Second)).Session(nil)
	if err == nil {
		c.Close()
		t.Fatal("a third connection was served with max_connections = 2")
	}
	if !strings.Contains(ts.logs.String(), "too many milter connections") {
		t.Errorf("the refusal is not logged:\n%s", ts.logs)
	}
	a.Close()
	waitFor(t, "connection closed", 5*time.Second, func() bool { return ts.srv.Active() == 1 })
	if o := send(t, session(t, ts), plain); o.act.Type != dj.ActionAccept {
		t.Errorf("after one closed: %v", o.act)
	}
}

// TestNegotiation: the milter asks for the no-reply options the MTA
// offers and works with MTAs that offer fewer (older protocol versions,
// no no-reply options); it refuses an MTA that cannot change messages.
func TestNegotiation(t *testing.T) {
	ts := startServer(t, nil, acceptEngine)
	for _, tc := range []struct {
		name    string
		opts    []dj.Option
		noReply bool
	}{
		{"v6", nil, true},
		{"v6 without no-reply options", []dj.Option{dj.WithProtocols(dj.OptSkip | dj.OptNoUnknown)}, false},
		{"v2", []dj.Option{dj.WithMaximumVersion(2), dj.WithProtocols(0)}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := dial(t, ts.addr, tc.opts...)
			if got := s.ProtocolOption(dj.OptNoHeaderReply) && s.ProtocolOption(dj.OptNoBodyReply); got != tc.noReply {
				t.Errorf("no header and body replies: %v, want %v", got, tc.noReply)
			}
			if s.ProtocolOption(dj.OptNoMailReply) || s.ProtocolOption(dj.OptNoRcptReply) {
				t.Error("the milter gave up its MAIL or RCPT replies (drain, defer_rcpt)")
			}
			s.Conn("mx.example.net", dj.FamilyInet, 40000, "192.0.2.7")
			s.Helo("mx.example.net")
			if o := send(t, s, plain); o.act.Type != dj.ActionAccept {
				t.Errorf("%v", o.act)
			}
		})
	}
	if _, err := dj.NewClient("tcp", ts.addr, dj.WithActions(dj.OptAddHeader), dj.WithReadTimeout(5*time.Second)).Session(nil); err == nil {
		t.Error("negotiated with an MTA that cannot change the body or recipients")
	}
}

// TestMalformedPackets: packets the library would index past their end
// (a zero length, connect/MAIL/RCPT without their NUL-terminated strings)
// or too large end the connection; the server goes on serving.
func TestMalformedPackets(t *testing.T) {
	ts := startServer(t, nil, acceptEngine)
	optneg := make([]byte, 12)
	binary.BigEndian.PutUint32(optneg, 6)
	binary.BigEndian.PutUint32(optneg[4:], uint32(clientActions))
	binary.BigEndian.PutUint32(optneg[8:], uint32(wantProtocol))
	conn := func(host string) []byte {
		return append([]byte(host+"\x00"+"4"), 0x9c, 0x40, '1', '2', '7', '.', '0', '.', '0', '.', '1', 0)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"zero length", []byte{0, 0, 0, 0}},
		{"too long", []byte{0x7f, 0xff, 0xff, 0xff, 'B'}},
		{"connect without NUL", packet('C', []byte("host"))},
		{"connect without family", packet('C', []byte("host\x00"))},
		{"MAIL without NUL", append(packet('C', conn("h")), packet('M', []byte("<a@b>"))...)},
		{"RCPT without NUL", append(packet('C', conn("h")), packet('R', []byte("<a@b>"))...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := net.Dial("tcp", ts.addr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.Write(packet('O', optneg))
			c.Write(tc.raw)
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			// The negotiation reply, then EOF.
			if _, err := io.ReadAll(c); err != nil {
				t.Errorf("the connection was not closed: %v", err)
			}
		})
	}
	if o := send(t, session(t, ts), plain); o.act.Type != dj.ActionAccept {
		t.Errorf("after malformed packets: %v", o.act)
	}
}

func packet(code byte, data []byte) []byte {
	p := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(p, uint32(len(data)+1))
	p[4] = code
	return append(p, data...)
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	end := time.Now().Add(d)
	for !cond() {
		if time.Now().After(end) {
			t.Fatalf("%s: not after %v", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
