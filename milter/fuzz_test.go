package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// The milter-protocol fuzzer plays an MTA that sends anything: a
// negotiation with any version, actions and protocol options, then
// packets of any code, length and content in any order, and bytes that
// are no packet at all. It checks that the server never panics (a panic
// in the library's session goroutine would stop the daemon), that it
// answers every end of message it reads with a valid final reply, that
// every other reply it sends is one the MTA expects, and that nothing
// of the session is left running once the connection is gone.
//
// An input is: version (1 byte), actions (4), protocol options (4),
// then operations: a code byte, a 2-byte length and that many bytes of
// packet data; or 0xFF, a length byte and bytes written as they are
// (after which nothing more is sent).

// fuzzInput builds inputs (for the seeds).
type fuzzInput struct{ b []byte }

func newFuzzInput(version uint32, act dj.OptAction, proto dj.OptProtocol) *fuzzInput {
	f := &fuzzInput{b: []byte{byte(version)}}
	f.b = binary.BigEndian.AppendUint32(f.b, uint32(act))
	f.b = binary.BigEndian.AppendUint32(f.b, uint32(proto))
	return f
}

// pkt adds a packet whose data is the strings, each NUL-terminated.
func (f *fuzzInput) pkt(code byte, strs ...string) *fuzzInput {
	var d []byte
	for _, s := range strs {
		d = append(append(d, s...), 0)
	}
	return f.data(code, d)
}

// macros adds a macro packet for the command code.
func (f *fuzzInput) macros(code byte, kv ...string) *fuzzInput {
	d := []byte{code}
	for _, s := range kv {
		d = append(append(d, s...), 0)
	}
	return f.data('D', d)
}

func (f *fuzzInput) data(code byte, d []byte) *fuzzInput {
	f.b = append(f.b, code)
	f.b = binary.BigEndian.AppendUint16(f.b, uint16(len(d)))
	f.b = append(f.b, d...)
	return f
}

func (f *fuzzInput) raw(b []byte) *fuzzInput {
	f.b = append(f.b, 0xFF, byte(len(b)))
	f.b = append(f.b, b...)
	return f
}

// connData is a connect packet's data for an IPv4 client.
func connData(host string, port uint16, addr string) []byte {
	d := append([]byte(host), 0, '4')
	d = binary.BigEndian.AppendUint16(d, port)
	return append(append(d, addr...), 0)
}

// message adds one message, headers and body as the MTA sends them.
func (f *fuzzInput) message(from string, rcpts []string, hdr [][2]string, body ...string) *fuzzInput {
	f.macros('M', "i", "QFUZZ", "{auth_authen}", "alice")
	f.pkt('M', "<"+from+">", "BODY=8BITMIME", "SIZE=100")
	for _, r := range rcpts {
		f.pkt('R', "<"+r+">", "NOTIFY=SUCCESS")
	}
	f.pkt('T')
	for _, h := range hdr {
		f.pkt('L', h[0], h[1])
	}
	f.macros('N', "i", "QFUZZ")
	f.pkt('N')
	for _, b := range body {
		f.data('B', []byte(b))
	}
	f.macros('E', "i", "QFUZZ", "{daemon_name}", "cleanup")
	return f.pkt('E')
}

func fuzzSeeds() map[string][]byte {
	const acts = clientActions
	all := dj.OptProtocol(0x1FFFFF)
	hdr := [][2]string{{"From", "Alice <alice@example.net>"}, {"Subject", "fuzz"}, {"X-Cryptmilter-Signature", "valid"}}
	session := func(v uint32, proto dj.OptProtocol) *fuzzInput {
		f := newFuzzInput(v, acts, proto)
		f.macros('C', "{daemon_name}", "ORIGINATING", "j", "mx.example.org")
		f.data('C', connData("client.example", 4000, "192.0.2.1"))
		return f.pkt('H', "client.example")
	}
	return map[string][]byte{
		"v6-noreply": session(6, all).message("a@example.net", []string{"b@example.org", "c@example.org"}, hdr, "Hello.\r\n", "World.\r\n").
			message("d@example.net", []string{"e@example.org"}, hdr[:1], "x\r\n").pkt('A').pkt('Q').b,
		"v6-replies": session(6, dj.OptSkip).message("a@example.net", []string{"b@example.org"}, hdr, "body\r\n").pkt('Q').b,
		"v2":         session(2, 0).message("a@example.net", []string{"b@example.org"}, hdr, "body\r\n").b,
		"eom-without-mail": session(6, all).pkt('E').pkt('L', "Subject", "x").data('B', []byte("x")).pkt('E').
			pkt('R', "<x@example.org>").pkt('E').b,
		"abort-midway": session(6, all).pkt('M', "<a@example.net>").pkt('R', "<b@example.org>").pkt('L', "Subject", "x").
			pkt('A').pkt('A').message("a@example.net", []string{"b@example.org"}, hdr, "x").b,
		"quit-new-conn": session(6, all).message("a@example.net", []string{"b@example.org"}, hdr, "x").pkt('K').
			data('C', connData("other.example", 5000, "198.51.100.2")).pkt('H', "other").
			message("a@example.net", []string{"b@example.org"}, hdr, "y").b,
		"zero-length":       session(6, all).raw([]byte{0, 0, 0, 0}).b,
		"huge-length":       session(6, all).raw([]byte{0x1f, 0xff, 0xff, 0xff, 'B', 'x'}).b,
		"connect-no-nul":    newFuzzInput(6, acts, all).data('C', []byte("host")).b,
		"connect-no-family": newFuzzInput(6, acts, all).data('C', []byte("host\x00")).b,
		"mail-no-nul":       session(6, all).data('M', []byte("<a@b>")).b,
		"bad-negotiation":   newFuzzInput(1, 0, 0).pkt('C').b,
		"second-optneg":     session(6, all).data('O', make([]byte, 12)).b,
		"unknown-code":      session(6, all).pkt('Z', "x").b,
		"bad-macro":         session(6, all).data('D', nil).b,
		"header-bad-strings": session(6, dj.OptSkip).pkt('M', "<a@b>").pkt('R', "<c@d>").
			data('L', []byte("only-one")).b,
		"big-body": session(6, all).message("a@example.net", []string{"b@example.org"}, hdr,
			strings.Repeat("line of text\r\n", 4000), strings.Repeat("z", 60000)).b,
		"ipv6-unknown": newFuzzInput(6, acts, all).data('C', append([]byte("h\x006"), 0, 25, 'I', 'P', 'v', '6', ':', ':', ':', '1', 0)).
			data('C', []byte("h\x00U")).pkt('H', "h").message("a@x", []string{"b@y"}, hdr, "b").b,
	}
}

// fuzzEnv is the environment of every fuzzed session: a fake engine that
// picks its plan from the message (the number of header fields).
func fuzzEnv(t testing.TB, dir string) *Env {
	cfg := config.Default()
	cfg.Keystore = filepath.Join(dir, "keys")
	cfg.Limits.MaxMessageSize = 200000
	cfg.Limits.MessageTimeout = config.Duration(5 * time.Second)
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), 4096)
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(cfg.Keystore, 0o700)
	holder, err := keystore.NewHolder(keystore.Options{Dir: cfg.Keystore})
	if err != nil {
		t.Fatal(err)
	}
	eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
		switch len(in.Message.Header) % 9 {
		case 0:
			return &crypto.Plan{Action: crypto.Accept}, nil
		case 1:
			return &crypto.Plan{Action: crypto.Accept, HeaderOps: []crypto.HeaderOp{
				{Kind: crypto.OpDelete, Name: "X-Cryptmilter-Signature", Index: 1},
				{Kind: crypto.OpInsert, Name: "X-Cryptmilter-Signature", Value: "none"},
				{Kind: crypto.OpChange, Name: "Subject", Index: 1, Value: "[fuzz] 100%"},
				{Kind: crypto.OpAdd, Name: "X-Fuzz", Value: "a\r\n b"}}}, nil
		case 2:
			return &crypto.Plan{Action: crypto.Accept, Body: spool.FromBytes([]byte("new\r\nbody\r\n")),
				AddRcpts: []string{"added@example.org"}, DelRcpts: in.Envelope.Rcpts[:min(1, len(in.Envelope.Rcpts))]}, nil
		case 3:
			return &crypto.Plan{Action: crypto.Quarantine, Quarantine: "fuzz"}, nil
		case 4:
			return &crypto.Plan{Action: crypto.Reject, Reply: crypto.NoKeyReply("100%@example.net", false)}, nil
		case 5:
			return &crypto.Plan{Action: crypto.Tempfail, Reply: crypto.DecryptTempfailReply, NotBefore: in.Now.Add(3 * time.Millisecond)}, nil
		case 6:
			return &crypto.Plan{Action: crypto.Discard}, nil
		case 7:
			return nil, errors.New("fuzz engine error")
		default:
			// Copies without [outbound] reinject: a tempfail.
			return &crypto.Plan{Action: crypto.Accept, Copies: []crypto.Copy{{Recipients: in.Envelope.Rcpts,
				Header: mime.Header{{Name: "Subject", Value: "c"}}, Body: spool.FromBytes([]byte("c\r\n"))}}}, nil
		}
	})
	return &Env{Engine: eng, Policy: cfg.EnginePolicy(), Config: cfg, Spool: sp, Keys: holder, Slots: make(chan struct{}, 2)}
}

func FuzzSession(f *testing.F) {
	// The seeds are in testdata/fuzz/FuzzSession (TestFuzzSeeds).
	env := fuzzEnv(f, f.TempDir())
	log.SetOutput(io.Discard) // the library's warnings
	f.Cleanup(func() { log.SetOutput(os.Stderr) })
	f.Fuzz(func(t *testing.T, data []byte) {
		fuzzSession(t, env, data)
	})
}

// pipeListener hands out one end of a net.Pipe.
type pipeListener struct {
	conns chan net.Conn
	once  sync.Once
	done  chan struct{}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.once.Do(func() { close(l.done) }); return nil }
func (l *pipeListener) Addr() net.Addr { return pipeAddr{} }

type pipeAddr struct{}

func (pipeAddr) Network() string { return "pipe" }
func (pipeAddr) String() string  { return "pipe" }

func fuzzSession(t *testing.T, env *Env, data []byte) *fuzzMTA {
	before := runtime.NumGoroutine()
	srv := &Server{Env: func() *Env { return env }, Logger: slog.New(slog.DiscardHandler), ProgressInterval: time.Millisecond}
	ln := &pipeListener{conns: make(chan net.Conn, 1), done: make(chan struct{})}
	client, server := net.Pipe()
	ln.conns <- server
	served := make(chan struct{})
	go func() { srv.Serve(ln); close(served) }()

	mta := &fuzzMTA{t: t, c: client, finals: map[byte]int{}}
	mta.run(data)
	client.Close()

	waitUntil(t, "session ended", func() bool { return srv.Active() == 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-served
	waitUntil(t, fmt.Sprintf("goroutines back to %d", before), func() bool { return runtime.NumGoroutine() <= before })
	return mta
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	end := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(end) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%s: not after 10s\n%s", what, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(time.Millisecond)
	}
}

// fuzzMTA sends an input's packets and checks the replies.
type fuzzMTA struct {
	t       *testing.T
	c       net.Conn
	version uint32
	proto   dj.OptProtocol
	// finals counts the ends of message answered, by final reply code.
	finals map[byte]int
}

// run returns when the input is used up or the server has closed the
// connection.
func (m *fuzzMTA) run(in []byte) {
	if len(in) < 9 {
		return
	}
	neg := make([]byte, 12)
	binary.BigEndian.PutUint32(neg, uint32(in[0]))
	copy(neg[4:], in[1:9])
	in = in[9:]
	if !m.write('O', neg) {
		return
	}
	p, ok := m.read("negotiation")
	if !ok {
		return
	}
	if p.code != 'O' || len(p.data) < 12 {
		m.t.Fatalf("negotiation answered with %c (%d bytes)", p.code, len(p.data))
	}
	m.version = binary.BigEndian.Uint32(p.data)
	m.proto = dj.OptProtocol(binary.BigEndian.Uint32(p.data[8:]))
	if m.version < 2 || m.version > 6 || m.version > uint32(neg[3]) {
		m.t.Fatalf("negotiated version %d for an MTA offering %d", m.version, neg[3])
	}
	if offered := dj.OptProtocol(binary.BigEndian.Uint32(neg[8:])); m.proto&^offered&^0x30000000 != 0 {
		m.t.Fatalf("the milter asked for protocol options %v the MTA did not offer (%v)", m.proto, offered)
	}
	for len(in) > 0 {
		code := in[0]
		if code == 0xFF {
			if len(in) >= 2 {
				n := min(int(in[1]), len(in)-2)
				m.c.SetWriteDeadline(time.Now().Add(time.Second))
				m.c.Write(in[2 : 2+n])
			}
			return
		}
		if len(in) < 3 {
			return
		}
		n := min(int(binary.BigEndian.Uint16(in[1:])), len(in)-3)
		d := in[3 : 3+n]
		in = in[3+n:]
		if !m.write(code, d) {
			return
		}
		if !m.answer(code) {
			return
		}
	}
}

// noReply is the protocol option that spares a command its reply.
var noReply = map[byte]dj.OptProtocol{
	'C': dj.OptNoConnReply, 'H': dj.OptNoHeloReply, 'M': dj.OptNoMailReply, 'R': dj.OptNoRcptReply,
	'T': dj.OptNoDataReply, 'L': dj.OptNoHeaderReply, 'N': dj.OptNoEOHReply, 'B': dj.OptNoBodyReply,
	'U': dj.OptNoUnknownReply,
}

// answer reads what the server sends for a command; false when the
// connection is gone.
func (m *fuzzMTA) answer(code byte) bool {
	switch code {
	case 'E':
		return m.endOfMessage()
	case 'D', 'A', 'K':
		return true // no reply
	}
	opt, known := noReply[code]
	if !known {
		// Quit, a second negotiation, unknown codes: the server closes.
		m.expectEOF(code)
		return false
	}
	if m.proto&opt != 0 {
		return true
	}
	p, ok := m.read(string(code))
	if !ok {
		return false // a malformed command may end the session
	}
	switch p.code {
	case 'c', 's', 'a', 'r', 't', 'd':
	case 'y':
		m.checkReply(code, p.data)
	default:
		m.t.Fatalf("reply %c (%q) to %c", p.code, p.data, code)
	}
	return true
}

// endOfMessage reads modifications and progress up to the final reply,
// which there must be: an end of message the server read is answered.
func (m *fuzzMTA) endOfMessage() bool {
	for {
		p, ok := m.read("end of message")
		if !ok {
			m.t.Fatal("end of message not answered: the connection was closed")
		}
		switch p.code {
		case 'p', '+', '-', 'b', 'h', 'm', 'i', 'q', 'e', '2':
			if p.code == 'p' && m.version < 6 {
				m.t.Fatalf("progress sent on protocol version %d", m.version)
			}
			if p.code == 'b' && len(p.data) > maxBodyPacket {
				m.t.Fatalf("body replacement packet of %d bytes", len(p.data))
			}
		case 'a', 'd', 'r', 't':
			m.finals[p.code]++
			return true
		case 'y':
			m.checkReply('E', p.data)
			m.finals[p.code]++
			return true
		default:
			m.t.Fatalf("end of message answered with %c (%q)", p.code, p.data)
		}
	}
}

// checkReply checks a custom reply: a 4xx or 5xx code, an enhanced code
// of the same class, a NUL-terminated single line.
func (m *fuzzMTA) checkReply(code byte, d []byte) {
	s, ok := bytes.CutSuffix(d, []byte{0})
	if !ok || bytes.ContainsAny(s, "\r\n\x00") || len(s) < 10 || (s[0] != '4' && s[0] != '5') || s[3] != ' ' || s[4] != s[0] || s[5] != '.' {
		m.t.Fatalf("malformed reply to %c: %q", code, d)
	}
}

func (m *fuzzMTA) expectEOF(code byte) {
	m.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, m.c); err != nil && !errors.Is(err, io.ErrClosedPipe) {
		m.t.Fatalf("after %c the server did not close the connection: %v", code, err)
	}
}

func (m *fuzzMTA) write(code byte, d []byte) bool {
	p := make([]byte, 5, 5+len(d))
	binary.BigEndian.PutUint32(p, uint32(len(d)+1))
	p[4] = code
	m.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
	_, err := m.c.Write(append(p, d...))
	if err != nil && !errors.Is(err, io.ErrClosedPipe) && !errors.Is(err, io.EOF) {
		m.t.Fatalf("writing %c: %v", code, err)
	}
	return err == nil
}

type fuzzPacket struct {
	code byte
	data []byte
}

// read reads one packet; false at EOF (the server closed the connection).
func (m *fuzzMTA) read(what string) (fuzzPacket, bool) {
	m.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var h [4]byte
	if _, err := io.ReadFull(m.c, h[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrClosedPipe) {
			return fuzzPacket{}, false
		}
		m.t.Fatalf("no reply to %s: %v", what, err)
	}
	n := binary.BigEndian.Uint32(h[:])
	if n == 0 || n > 1<<20 {
		m.t.Fatalf("reply to %s with length %d", what, n)
	}
	b := make([]byte, n)
	if _, err := io.ReadFull(m.c, b); err != nil {
		m.t.Fatalf("reply to %s cut: %v", what, err)
	}
	return fuzzPacket{b[0], b[1:]}, true
}

// TestFuzzSeeds writes the seed corpus to testdata/fuzz/FuzzSession when
// CRYPTMILTER_WRITE_SEEDS=1, and otherwise checks that it is there.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSession")
	for name, b := range fuzzSeeds() {
		path := filepath.Join(dir, "seed-"+name)
		want := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
		if os.Getenv("CRYPTMILTER_WRITE_SEEDS") == "1" {
			os.MkdirAll(dir, 0o755)
			if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != want {
			t.Errorf("%s is missing or stale: CRYPTMILTER_WRITE_SEEDS=1 go test -run TestFuzzSeeds ./milter/", path)
		}
	}
}

// TestFuzzSessionSeeds: the fuzzer's MTA gets through whole sessions
// (the seeds reach the end of their messages), with and without the
// no-reply options and on protocol version 2.
func TestFuzzSessionSeeds(t *testing.T) {
	env := fuzzEnv(t, t.TempDir())
	seeds := fuzzSeeds()
	for name, want := range map[string]map[byte]int{
		"v6-noreply":       {'a': 2},
		"v6-replies":       {'a': 1},
		"v2":               {'a': 1},
		"eom-without-mail": {'y': 3},
		"quit-new-conn":    {'a': 2},
	} {
		m := fuzzSession(t, env, seeds[name])
		if fmt.Sprint(m.finals) != fmt.Sprint(want) {
			t.Errorf("%s: final replies %v, want %v", name, m.finals, want)
		}
	}
}
