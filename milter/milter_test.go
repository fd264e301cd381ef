package milter

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"
	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// processorFunc turns a function into a Processor, for tests of the milter
// layer's handling of plans the engine may return.
type processorFunc func(ctx context.Context, in *crypto.Input) (*crypto.Plan, error)

func (f processorFunc) Process(ctx context.Context, in *crypto.Input) (*crypto.Plan, error) {
	return f(ctx, in)
}

type testServer struct {
	srv  *Server
	addr string
	cfg  *config.Config
	logs *syncBuffer
}

// startServer runs the real milter server on 127.0.0.1:0. A nil engine
// means the real engine.
func startServer(t *testing.T, mod func(*config.Config), engine Processor, envMods ...func(*Env)) *testServer {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Keystore = filepath.Join(dir, "keys")
	cfg.Direction.InternalHosts = nil
	if mod != nil {
		mod(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "spool"), int64(cfg.Limits.MemorySpool))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(cfg.Keystore, 0o700); err != nil {
		t.Fatal(err)
	}
	holder, err := keystore.NewHolder(keystore.Options{Dir: cfg.Keystore})
	if err != nil {
		t.Fatal(err)
	}
	if engine == nil {
		engine = crypto.New(cfg.EnginePolicy(), sp)
	}
	env := &Env{Engine: engine, Policy: cfg.EnginePolicy(), Config: cfg, Spool: sp, Keys: holder}
	if n := cfg.Limits.MaxConcurrent; n > 0 {
		env.Slots = make(chan struct{}, n)
	}
	for _, m := range envMods {
		m(env)
	}
	logs := &syncBuffer{}
	srv := &Server{Env: func() *Env { return env }, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if t.Failed() {
			t.Logf("milter log:\n%s", logs.String())
		}
	})
	return &testServer{srv: srv, addr: ln.Addr().String(), cfg: cfg, logs: logs}
}

type syncBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.String()
}

// testClient is d--j/go-milter's client, as an MTA drives a milter, with
// the raw connection under it for packets the client cannot send (macros
// the milter did not ask for, as Postfix's cleanup sends at end of
// message).
type testClient struct {
	*dj.ClientSession
	macros *dj.MacroBag
	raw    net.Conn
}

// rawDialer keeps the connection it dials.
type rawDialer struct{ conn net.Conn }

func (d *rawDialer) Dial(network, addr string) (net.Conn, error) {
	c, err := net.DialTimeout(network, addr, 5*time.Second)
	d.conn = c
	return c, err
}

// clientActions are the modifications the test MTA offers.
const clientActions = dj.OptAddHeader | dj.OptChangeBody | dj.OptAddRcpt | dj.OptRemoveRcpt |
	dj.OptChangeHeader | dj.OptQuarantine | dj.OptSetMacros

// dial opens a milter session as an MTA offering protocol version 6 and
// every protocol option (more client options may change that).
func dial(t *testing.T, addr string, opts ...dj.Option) *testClient {
	t.Helper()
	d := &rawDialer{}
	all := append([]dj.Option{dj.WithDialer(d), dj.WithActions(clientActions),
		dj.WithReadTimeout(10 * time.Second), dj.WithWriteTimeout(10 * time.Second)}, opts...)
	bag := dj.NewMacroBag()
	s, err := dj.NewClient("tcp", addr, all...).Session(bag)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return &testClient{ClientSession: s, macros: bag, raw: d.conn}
}

// writePacket writes one milter packet.
func writePacket(w io.Writer, code byte, data []byte) error {
	p := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(p, uint32(len(data)+1))
	p[4] = code
	_, err := w.Write(append(p, data...))
	return err
}

type msgSpec struct {
	from      string
	rcpts     []string
	header    [][2]string
	body      string
	eomMacros []string
	// mailArgs and rcptArgs are the ESMTP arguments of MAIL and of each
	// RCPT (by index; missing: none).
	mailArgs string
	rcptArgs []string
}

type outcome struct {
	mods []dj.ModifyAction
	act  *dj.Action
}

// send runs one message through a milter session as an MTA would.
func send(t *testing.T, s *testClient, m msgSpec) outcome {
	t.Helper()
	o, err := trySend(s, m)
	if err != nil {
		t.Fatal(err)
	}
	return o
}

// trySend is send returning the error.
func trySend(s *testClient, m msgSpec) (outcome, error) {
	must := func(a *dj.Action, err error) error {
		if err != nil {
			return err
		}
		if a.Type != dj.ActionContinue {
			return fmt.Errorf("milter answered %v before end of message", a)
		}
		return nil
	}
	s.macros.Set("i", "QID123")
	if err := must(s.Mail(m.from, m.mailArgs)); err != nil {
		return outcome{}, err
	}
	for i, r := range m.rcpts {
		args := ""
		if i < len(m.rcptArgs) {
			args = m.rcptArgs[i]
		}
		if err := must(s.Rcpt(r, args)); err != nil {
			return outcome{}, err
		}
	}
	if err := must(s.DataStart()); err != nil {
		return outcome{}, err
	}
	for _, h := range m.header {
		if err := must(s.HeaderField(h[0], h[1], nil)); err != nil {
			return outcome{}, err
		}
	}
	if err := must(s.HeaderEnd()); err != nil {
		return outcome{}, err
	}
	body := []byte(m.body)
	if len(body) == 0 {
		// The client needs a body chunk before the end (Postfix sends
		// none for an empty body).
		if err := must(s.BodyChunk(nil)); err != nil {
			return outcome{}, err
		}
	}
	for len(body) > 0 {
		n := min(len(body), int(dj.DataSize64K))
		if err := must(s.BodyChunk(body[:n])); err != nil {
			return outcome{}, err
		}
		body = body[n:]
	}
	if m.eomMacros != nil {
		kv := m.eomMacros
		data := []byte{'E'}
		for _, s := range kv {
			data = append(append(data, s...), 0)
		}
		if err := writePacket(s.raw, 'D', data); err != nil {
			return outcome{}, err
		}
	}
	mods, act, err := s.End()
	if err != nil {
		return outcome{}, err
	}
	return outcome{mods, act}, nil
}

// session opens a session and sends the connection data of a client at
// 192.0.2.7 (connMacros: name, value, … at connect).
func session(t *testing.T, ts *testServer, connMacros ...string) *testClient {
	t.Helper()
	s := dial(t, ts.addr)
	for i := 0; i+1 < len(connMacros); i += 2 {
		s.macros.Set(connMacros[i], connMacros[i+1])
	}
	if a, err := s.Conn("mx.example.net", dj.FamilyInet, 40000, "192.0.2.7"); err != nil || a.Type != dj.ActionContinue {
		t.Fatalf("conn: %v %v", a, err)
	}
	if a, err := s.Helo("mx.example.net"); err != nil || a.Type != dj.ActionContinue {
		t.Fatalf("helo: %v %v", a, err)
	}
	return s
}

// isReply reports whether a is the custom reply code with text starting
// with prefix ("451 4.3.0 ").
func isReply(a *dj.Action, code uint16, prefix string) bool {
	return a != nil && a.Type == dj.ActionRejectWithCode && a.SMTPCode == code && strings.HasPrefix(a.SMTPReply, prefix)
}

var plain = msgSpec{
	from:  "alice@example.net",
	rcpts: []string{"rt@example.org"},
	header: [][2]string{
		{"From", "Alice <alice@example.net>"},
		{"X-Cryptmilter-Signature", "valid; protocol=openpgp; signer=ceo@example.org"},
		{"Subject", "hello"},
		{"x-cryptmilter-encryption", "decrypted; protocol=smime"},
		{"X-Cryptmilter-Signature", "valid; forged twice"},
	},
	body: "Hello.\r\n",
}

type hdrMod struct {
	Code  byte
	Index uint32
	Name  string
	Value string
}

func headerMods(mods []dj.ModifyAction) []hdrMod {
	code := map[dj.ModifyActionType]byte{dj.ActionChangeHeader: 'm', dj.ActionInsertHeader: 'i', dj.ActionAddHeader: 'h'}
	var out []hdrMod
	for _, m := range mods {
		if c, ok := code[m.Type]; ok {
			out = append(out, hdrMod{c, m.HeaderIndex, m.HeaderName, m.HeaderValue})
		}
	}
	return out
}

func TestInboundPassThrough(t *testing.T) {
	ts := startServer(t, nil, nil)
	s := session(t, ts)
	o := send(t, s, plain)
	if o.act.Type != dj.ActionAccept {
		t.Fatalf("action %v, want accept", o.act)
	}
	want := []hdrMod{
		// Forged copies deleted, last first, indexes per name.
		{'m', 2, "X-Cryptmilter-Signature", ""},
		{'m', 1, "x-cryptmilter-encryption", ""},
		{'m', 1, "X-Cryptmilter-Signature", ""},
		{'i', 0, "X-Cryptmilter-Signature", "none"},
		{'i', 0, "X-Cryptmilter-Encryption", "none"},
	}
	if diff := cmp.Diff(want, headerMods(o.mods)); diff != "" {
		t.Errorf("header changes (-want +got):\n%s", diff)
	}
	for _, m := range o.mods {
		if m.Type == dj.ActionReplaceBody {
			t.Error("body replaced on a pass-through")
		}
	}
	// Second message on the same connection: state was reset.
	o = send(t, s, msgSpec{from: "b@example.net", rcpts: []string{"rt@example.org"}, header: [][2]string{{"Subject", "2"}}, body: "x\r\n"})
	if diff := cmp.Diff([]hdrMod{{'i', 0, "X-Cryptmilter-Signature", "none"}, {'i', 0, "X-Cryptmilter-Encryption", "none"}}, headerMods(o.mods)); diff != "" {
		t.Errorf("second message header changes (-want +got):\n%s", diff)
	}
	if !strings.Contains(ts.logs.String(), "queue_id=QID123") {
		t.Errorf("log line lacks the queue id:\n%s", ts.logs)
	}
}

func TestDirection(t *testing.T) {
	var mu sync.Mutex
	var got []crypto.Direction
	eng := processorFunc(func(ctx context.Context, in *crypto.Input) (*crypto.Plan, error) {
		mu.Lock()
		got = append(got, in.Direction)
		mu.Unlock()
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	ts := startServer(t, func(c *config.Config) {
		c.Direction.InternalHosts = []string{"10.0.0.0/8"}
		c.Direction.OriginatingDaemons = []string{"ORIGINATING"}
	}, eng)
	tests := []struct {
		name  string
		macro []string
		want  crypto.Direction
	}{
		{"plain", nil, crypto.Inbound},
		// Sent at connect only: must survive later macro packets.
		{"daemon", []string{"{daemon_name}", "ORIGINATING"}, crypto.Outbound},
		{"internal", []string{"{client_addr}", "10.1.2.3"}, crypto.Outbound},
		{"external", []string{"{client_addr}", "198.51.100.1"}, crypto.Inbound},
		{"auth", []string{"{auth_authen}", "alice"}, crypto.Outbound},
	}
	for _, tt := range tests {
		got = nil
		s := session(t, ts, tt.macro...)
		// Postfix's cleanup sends its own {daemon_name} at end of message:
		// it must not override the SMTP session's.
		send(t, s, msgSpec{from: "a@example.org", rcpts: []string{"b@example.net"}, header: [][2]string{{"Subject", "x"}}, body: "x\r\n", eomMacros: []string{"i", "Q", "{daemon_name}", "mx.example.org"}})
		mu.Lock()
		if len(got) != 1 || got[0] != tt.want {
			t.Errorf("%s: direction %v, want %v", tt.name, got, tt.want)
		}
		mu.Unlock()
	}
}

func TestFailuresTempfail(t *testing.T) {
	tests := []struct {
		name string
		eng  processorFunc
		mod  func(*config.Config)
	}{
		{"error", func(context.Context, *crypto.Input) (*crypto.Plan, error) {
			return nil, errors.New("keyring unreadable")
		}, nil},
		{"panic", func(context.Context, *crypto.Input) (*crypto.Plan, error) {
			panic("boom")
		}, nil},
		{"timeout", func(ctx context.Context, in *crypto.Input) (*crypto.Plan, error) {
			// Still reading the body after the reply went out: the body
			// must not have been released under it (-race).
			time.Sleep(300 * time.Millisecond)
			if _, err := io.ReadAll(in.Message.Body.Reader()); err != nil {
				return nil, err
			}
			return &crypto.Plan{Action: crypto.Accept}, nil
		}, func(c *config.Config) { c.Limits.MessageTimeout = config.Duration(100 * time.Millisecond) }},
		{"bad-reply", func(context.Context, *crypto.Input) (*crypto.Plan, error) {
			return &crypto.Plan{Action: crypto.Reject, Reply: crypto.Reply{Code: 250, Enhanced: "2.0.0", Text: "ok"}}, nil
		}, nil},
		{"copies-without-reinject", func(context.Context, *crypto.Input) (*crypto.Plan, error) {
			return &crypto.Plan{Action: crypto.Accept, Copies: []crypto.Copy{{Recipients: []string{"x@example.net"}}}}, nil
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := startServer(t, tt.mod, tt.eng)
			o := send(t, session(t, ts), plain)
			if !isReply(o.act, 451, "451 4.3.0 ") {
				t.Errorf("action %v, want 451 4.3.0", o.act)
			}
			if len(o.mods) != 0 {
				t.Errorf("modifications sent with a tempfail: %v", o.mods)
			}
			time.Sleep(400 * time.Millisecond) // let a slow engine finish under -race
		})
	}
}

func TestLimits(t *testing.T) {
	ts := startServer(t, func(c *config.Config) {
		c.Limits.MaxMessageSize = 1000
		c.Limits.MaxHeaderSize = 200
	}, nil)
	o := send(t, session(t, ts), msgSpec{from: "a@x.org", rcpts: []string{"b@y.org"}, header: [][2]string{{"Subject", "x"}}, body: strings.Repeat("a", 1001)})
	if !isReply(o.act, 552, "552 5.3.4 ") {
		t.Errorf("big body: %v, want 552 5.3.4", o.act)
	}
	o = send(t, session(t, ts), msgSpec{from: "a@x.org", rcpts: []string{"b@y.org"}, header: [][2]string{{"Subject", strings.Repeat("x", 300)}}, body: "x"})
	if o.act.SMTPCode != 552 {
		t.Errorf("big header: %v, want 552", o.act)
	}
}

func TestReplyEscapesPercent(t *testing.T) {
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Reject, Reply: crypto.NoKeyReply("100%@example.net", false)}, nil
	})
	ts := startServer(t, nil, eng)
	o := send(t, session(t, ts), plain)
	if o.act.SMTPReply != "550 5.7.1 <100%%@example.net>: no usable encryption key" {
		t.Errorf("reply %v", o.act)
	}
}

// TestBodyReplacement checks that a large replacement body arrives whole,
// in packets of at most 65535 bytes, with LF line ends, and that a large
// incoming body is spooled and handed to the engine whole.
func TestBodyReplacement(t *testing.T) {
	var line bytes.Buffer
	for i := 0; line.Len() < 300000; i++ {
		line.WriteString(strings.Repeat("z", i%97))
		line.WriteString("\r\n")
	}
	in := line.String()
	newBody := strings.ReplaceAll(in, "z", "y")
	var seen string
	eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
		b, err := io.ReadAll(in.Message.Body.Reader())
		if err != nil {
			return nil, err
		}
		seen = string(b)
		return &crypto.Plan{Action: crypto.Accept, Body: spool.FromBytes([]byte(newBody)),
			AddRcpts: []string{"new@example.org"}, DelRcpts: []string{"rt@example.org"}}, nil
	})
	ts := startServer(t, func(c *config.Config) { c.Limits.MemorySpool = 4096 }, eng)
	o := send(t, session(t, ts), msgSpec{from: "a@x.org", rcpts: []string{"rt@example.org"}, header: [][2]string{{"Subject", "x"}}, body: in})
	if seen != in {
		t.Fatalf("engine saw %d bytes, want %d (spooled body differs)", len(seen), len(in))
	}
	var got bytes.Buffer
	var rcpt []string
	for _, m := range o.mods {
		switch m.Type {
		case dj.ActionReplaceBody:
			if len(m.Body) > 65535 {
				t.Errorf("body packet of %d bytes", len(m.Body))
			}
			got.Write(m.Body)
		case dj.ActionAddRcpt:
			rcpt = append(rcpt, "+"+m.Rcpt)
		case dj.ActionDelRcpt:
			rcpt = append(rcpt, "-"+m.Rcpt)
		}
	}
	if want := strings.ReplaceAll(newBody, "\r\n", "\n"); got.String() != want {
		t.Errorf("replacement body: got %d bytes, want %d", got.Len(), len(want))
	}
	if diff := cmp.Diff([]string{"+<new@example.org>", "-<rt@example.org>"}, rcpt); diff != "" {
		t.Errorf("recipient changes (-want +got):\n%s", diff)
	}
}

func TestReplaceBodyChunking(t *testing.T) {
	// A CRLF split exactly at the packet boundary still becomes one LF.
	in := strings.Repeat("a", maxBodyPacket-1) + "\r\n" + "tail\r\n"
	var packets [][]byte
	err := replaceBody(func(p []byte) error { packets = append(packets, append([]byte(nil), p...)); return nil }, strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	got := string(bytes.Join(packets, nil))
	if want := strings.Repeat("a", maxBodyPacket-1) + "\ntail\n"; got != want {
		t.Errorf("got %q…, want LF line ends", got[len(got)-10:])
	}
	// An empty body is still sent (one empty packet) so that it replaces.
	packets = nil
	replaceBody(func(p []byte) error { packets = append(packets, p); return nil }, strings.NewReader(""))
	if len(packets) != 1 || len(packets[0]) != 0 {
		t.Errorf("empty body: %d packets", len(packets))
	}
}

// smtpBackend is an in-process SMTP server standing in for Postfix's
// re-injection listener in milter-level tests (the Postfix suite in
// test/e2e uses the real one).
type smtpBackend struct {
	mu   sync.Mutex
	got  []string
	fail bool
}

func (b *smtpBackend) NewSession(*smtp.Conn) (smtp.Session, error) { return &smtpSession{b: b}, nil }

type smtpSession struct {
	b     *smtpBackend
	from  string
	rcpts []string
}

func (s *smtpSession) Mail(from string, _ *smtp.MailOptions) error { s.from = from; return nil }
func (s *smtpSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if s.b.fail {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	s.rcpts = append(s.rcpts, to)
	return nil
}
func (s *smtpSession) Data(r io.Reader) error {
	b, _ := io.ReadAll(r)
	s.b.mu.Lock()
	s.b.got = append(s.b.got, s.from+">"+strings.Join(s.rcpts, ",")+"\n"+string(b))
	s.b.mu.Unlock()
	return nil
}
func (s *smtpSession) Reset()        {}
func (s *smtpSession) Logout() error { return nil }

func TestReinjection(t *testing.T) {
	for _, fail := range []bool{false, true} {
		be := &smtpBackend{fail: fail}
		ss := smtp.NewServer(be)
		ss.Domain = "reinject.test"
		ss.AllowInsecureAuth = true
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go ss.Serve(ln)
		eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
			return &crypto.Plan{Action: crypto.Accept, Copies: []crypto.Copy{{
				Recipients: []string{"bcc@example.net"},
				Header:     mime.Header{{Name: "Subject", Value: "copy"}},
				Body:       spool.FromBytes([]byte("copy body\r\n")),
			}}}, nil
		})
		ts := startServer(t, func(c *config.Config) { c.Outbound.Reinject = "inet:" + ln.Addr().String() }, eng)
		o := send(t, session(t, ts), msgSpec{from: "rt@example.org", rcpts: []string{"a@example.net", "bcc@example.net"}, header: [][2]string{{"Subject", "x"}}, body: "x\r\n"})
		ss.Close()
		if fail {
			if o.act.SMTPCode != 451 || len(o.mods) != 0 {
				t.Errorf("failed hand-over: %v with %d changes, want 451 and none", o.act, len(o.mods))
			}
			continue
		}
		if o.act.Type != dj.ActionAccept {
			t.Fatalf("action %v", o.act)
		}
		if want := []string{"rt@example.org>bcc@example.net\nSubject: copy\r\n\r\ncopy body\r\n"}; !cmp.Equal(want, be.got) {
			t.Errorf("re-injected %q, want %q", be.got, want)
		}
		var del []string
		for _, m := range o.mods {
			if m.Type == dj.ActionDelRcpt {
				del = append(del, m.Rcpt)
			}
		}
		if diff := cmp.Diff([]string{"<bcc@example.net>"}, del); diff != "" {
			t.Errorf("deleted recipients (-want +got):\n%s", diff)
		}
	}
}

// TestDrain: Shutdown lets a message in flight finish, closes idle
// connections, and refuses new ones.
func TestDrain(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		started <- struct{}{}
		<-release
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	ts := startServer(t, nil, eng)
	idle := session(t, ts)
	busy := session(t, ts)
	done := make(chan outcome, 1)
	go func() { done <- send(t, busy, plain) }()
	<-started
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- ts.srv.Shutdown(ctx)
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a message was in flight", err)
	default:
	}
	// The idle connection was closed.
	if _, err := idle.Mail("x@example.org", ""); err == nil {
		t.Error("idle connection still answers during drain")
	}
	close(release)
	o := <-done
	if o.act.Type != dj.ActionAccept {
		t.Errorf("in-flight message: %v, want accept", o.act)
	}
	if err := <-shut; err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if _, err := net.DialTimeout("tcp", ts.addr, time.Second); err == nil {
		t.Error("listener still accepts after Shutdown")
	}
}

func TestDrainTimeout(t *testing.T) {
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		time.Sleep(3 * time.Second)
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	ts := startServer(t, nil, eng)
	s := session(t, ts)
	ended := make(chan struct{})
	defer func() { <-ended }()
	go func() {
		defer close(ended)
		s.Mail("a@example.org", "")
		s.Rcpt("b@example.org", "")
		s.DataStart()
		s.HeaderEnd()
		s.BodyChunk([]byte("x\r\n"))
		s.End()
	}()
	time.Sleep(300 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	var de *DrainError
	if err := ts.srv.Shutdown(ctx); !errors.As(err, &de) || de.Aborted != 1 {
		t.Errorf("Shutdown = %v, want a DrainError with 1 session", err)
	}
}

// deferEngine defers every recipient after the first.
type deferEngine struct{ processorFunc }

func (deferEngine) RcptDefer(_ *keystore.Snapshot, _ time.Time, _, first, rcpt string) crypto.Reply {
	if rcpt != first {
		return crypto.DeferReply
	}
	return crypto.Reply{}
}

func TestRcptDefer(t *testing.T) {
	eng := deferEngine{func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Accept}, nil
	}}
	ts := startServer(t, func(c *config.Config) { c.Outbound.DeferRcpt = true }, eng)
	for _, tt := range []struct {
		name, addr, daemon string
		want               int
	}{
		{"smtp-outbound", "192.0.2.7", "ORIGINATING", 452},
		{"inbound", "192.0.2.7", "smtpd", 0},
		// Postfix's non-SMTP submissions come from a fake localhost
		// connection: never rejected at RCPT.
		{"loopback", "127.0.0.1", "ORIGINATING", 0},
	} {
		s := dial(t, ts.addr)
		s.macros.Set("{daemon_name}", tt.daemon)
		host := "mx.example.net"
		if tt.addr == "127.0.0.1" {
			host = "localhost"
		}
		s.Conn(host, dj.FamilyInet, 4000, tt.addr)
		s.Helo(host)
		s.Mail("rt@example.org", "")
		if a, err := s.Rcpt("a@example.net", ""); err != nil || a.Type != dj.ActionContinue {
			t.Fatalf("%s: first rcpt %v %v", tt.name, a, err)
		}
		a, err := s.Rcpt("b@example.net", "")
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tt.want == 0 && a.Type != dj.ActionContinue:
			t.Errorf("%s: second rcpt got %v, want continue", tt.name, a)
		case tt.want != 0 && !isReply(a, uint16(tt.want), fmt.Sprintf("%d 4.5.3 ", tt.want)):
			t.Errorf("%s: second rcpt got %v, want %d 4.5.3", tt.name, a, tt.want)
		}
		s.Close()
	}
}

// TestMaxConcurrent: with one processing slot, a second message waits for
// it and is tempfailed when message_timeout passes first.
func TestMaxConcurrent(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 2)
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		started <- struct{}{}
		<-release
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	ts := startServer(t, func(c *config.Config) {
		c.Limits.MaxConcurrent = 1
		c.Limits.MessageTimeout = config.Duration(500 * time.Millisecond)
	}, eng)
	first := make(chan outcome, 1)
	go func() { first <- send(t, session(t, ts), plain) }()
	<-started
	o := send(t, session(t, ts), plain)
	if o.act.SMTPCode != 451 {
		t.Errorf("second message while the slot is taken: %v, want 451", o.act)
	}
	select {
	case <-started:
		t.Error("the engine ran a second message at once")
	default:
	}
	close(release)
	<-first
	if !strings.Contains(ts.logs.String(), "no free processing slot") {
		t.Errorf("log does not say why:\n%s", ts.logs)
	}
}

// panicDeferEngine panics in its RCPT-time check.
type panicDeferEngine struct{ processorFunc }

func (panicDeferEngine) RcptDefer(*keystore.Snapshot, time.Time, string, string, string) crypto.Reply {
	panic("engine bug at RCPT")
}

// TestHandlerPanicEndsOnlyItsConnection (found by review): a panic in a
// handler before the end of the message (here the engine's RCPT check)
// ends that connection, so that the MTA applies milter_default_action, and
// the daemon serves the next connection; the panic is logged. d--j's
// session goroutine recovers nothing, so it stopped the daemon.
func TestHandlerPanicEndsOnlyItsConnection(t *testing.T) {
	eng := panicDeferEngine{func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Accept}, nil
	}}
	ts := startServer(t, func(c *config.Config) { c.Outbound.DeferRcpt = true }, eng)
	s := dial(t, ts.addr)
	s.macros.Set("{daemon_name}", "ORIGINATING")
	s.Conn("mx.example.net", dj.FamilyInet, 4000, "192.0.2.7")
	s.Helo("mx.example.net")
	s.Mail("rt@example.org", "")
	s.Rcpt("a@example.net", "")
	if a, err := s.Rcpt("b@example.net", ""); err == nil && a.Type == dj.ActionContinue {
		t.Errorf("RCPT after a panic: %v, want the connection to end", a)
	}
	s.Close()
	s2 := session(t, ts)
	o := send(t, s2, msgSpec{from: "x@example.net", rcpts: []string{"rt@example.org"}, header: [][2]string{{"Subject", "after"}}, body: "hi\r\n"})
	if o.act.Type != dj.ActionAccept && o.act.Type != dj.ActionContinue {
		t.Errorf("the next connection after a panic: %v", o.act)
	}
	if !strings.Contains(ts.logs.String(), "panic in milter handler") {
		t.Errorf("the panic is not logged:\n%s", ts.logs.String())
	}
}
