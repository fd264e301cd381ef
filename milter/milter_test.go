package milter

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"
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
	logs *bytes.Buffer
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
	return &testServer{srv: srv, addr: ln.Addr().String(), cfg: cfg, logs: &logs.Buffer}
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

// clientOpts restricts go-milter's client to the v2 actions so that it
// negotiates with its own server (see notes/libraries.md).
var clientOpts = gomilter.ClientOptions{
	Dialer:       &net.Dialer{Timeout: 5 * time.Second},
	ReadTimeout:  10 * time.Second,
	WriteTimeout: 10 * time.Second,
	ActionMask:   gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine,
}

type msgSpec struct {
	from      string
	rcpts     []string
	header    [][2]string
	body      string
	eomMacros []string
}

type outcome struct {
	mods []gomilter.ModifyAction
	act  *gomilter.Action
}

// send runs one message through a milter session as an MTA would.
func send(t *testing.T, s *gomilter.ClientSession, m msgSpec) outcome {
	t.Helper()
	must := func(a *gomilter.Action, err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		if a.Code != gomilter.ActContinue {
			t.Fatalf("milter answered %c (%d %s) before end of message", a.Code, a.SMTPCode, a.SMTPText)
		}
	}
	s.Macros(gomilter.CodeMail, "i", "QID123")
	must(s.Mail(m.from, nil))
	for _, r := range m.rcpts {
		must(s.Rcpt(r, nil))
	}
	for _, h := range m.header {
		must(s.HeaderField(h[0], h[1]))
	}
	must(s.HeaderEnd())
	body := []byte(m.body)
	for len(body) > 0 {
		n := min(len(body), gomilter.MaxBodyChunk)
		must(s.BodyChunk(body[:n]))
		body = body[n:]
	}
	if m.eomMacros != nil {
		s.Macros(gomilter.CodeEOB, m.eomMacros...)
	}
	mods, act, err := s.End()
	if err != nil {
		t.Fatal(err)
	}
	return outcome{mods, act}
}

func session(t *testing.T, ts *testServer, connMacros ...string) *gomilter.ClientSession {
	t.Helper()
	c := gomilter.NewClientWithOptions("tcp", ts.addr, clientOpts)
	s, err := c.Session()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if len(connMacros) > 0 {
		s.Macros(gomilter.CodeConn, connMacros...)
	}
	if a, err := s.Conn("mx.example.net", gomilter.FamilyInet, 40000, "192.0.2.7"); err != nil || a.Code != gomilter.ActContinue {
		t.Fatalf("conn: %v %v", a, err)
	}
	if a, err := s.Helo("mx.example.net"); err != nil || a.Code != gomilter.ActContinue {
		t.Fatalf("helo: %v %v", a, err)
	}
	return s
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

func headerMods(mods []gomilter.ModifyAction) []hdrMod {
	var out []hdrMod
	for _, m := range mods {
		switch m.Code {
		case gomilter.ActChangeHeader, gomilter.ActInsertHeader, gomilter.ActAddHeader:
			out = append(out, hdrMod{byte(m.Code), m.HeaderIndex, m.HeaderName, m.HeaderValue})
		}
	}
	return out
}

func TestInboundPassThrough(t *testing.T) {
	ts := startServer(t, nil, nil)
	s := session(t, ts)
	o := send(t, s, plain)
	if o.act.Code != gomilter.ActAccept {
		t.Fatalf("action %c %d %s, want accept", o.act.Code, o.act.SMTPCode, o.act.SMTPText)
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
		if m.Code == gomilter.ActReplBody {
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
			if o.act.Code != gomilter.ActReplyCode || o.act.SMTPCode != 451 || !strings.HasPrefix(o.act.SMTPText, "4.3.0 ") {
				t.Errorf("action %c %d %q, want 451 4.3.0", o.act.Code, o.act.SMTPCode, o.act.SMTPText)
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
	if o.act.SMTPCode != 552 || !strings.HasPrefix(o.act.SMTPText, "5.3.4 ") {
		t.Errorf("big body: %d %q, want 552 5.3.4", o.act.SMTPCode, o.act.SMTPText)
	}
	o = send(t, session(t, ts), msgSpec{from: "a@x.org", rcpts: []string{"b@y.org"}, header: [][2]string{{"Subject", strings.Repeat("x", 300)}}, body: "x"})
	if o.act.SMTPCode != 552 {
		t.Errorf("big header: %d %q, want 552", o.act.SMTPCode, o.act.SMTPText)
	}
}

func TestReplyEscapesPercent(t *testing.T) {
	eng := processorFunc(func(context.Context, *crypto.Input) (*crypto.Plan, error) {
		return &crypto.Plan{Action: crypto.Reject, Reply: crypto.NoKeyReply("100%@example.net", false)}, nil
	})
	ts := startServer(t, nil, eng)
	o := send(t, session(t, ts), plain)
	if o.act.SMTPCode != 550 || o.act.SMTPText != "5.7.1 <100%%@example.net>: no usable encryption key" {
		t.Errorf("reply %d %q", o.act.SMTPCode, o.act.SMTPText)
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
		switch m.Code {
		case gomilter.ActReplBody:
			if len(m.Body) > 65535 {
				t.Errorf("body packet of %d bytes", len(m.Body))
			}
			got.Write(m.Body)
		case gomilter.ActAddRcpt, gomilter.ActDelRcpt:
			rcpt = append(rcpt, string(m.Code)+m.Rcpt)
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
				t.Errorf("failed hand-over: %d %q with %d changes, want 451 and none", o.act.SMTPCode, o.act.SMTPText, len(o.mods))
			}
			continue
		}
		if o.act.Code != gomilter.ActAccept {
			t.Fatalf("action %c %d %s", o.act.Code, o.act.SMTPCode, o.act.SMTPText)
		}
		if want := []string{"rt@example.org>bcc@example.net\nSubject: copy\r\n\r\ncopy body\r\n"}; !cmp.Equal(want, be.got) {
			t.Errorf("re-injected %q, want %q", be.got, want)
		}
		var del []string
		for _, m := range o.mods {
			if m.Code == gomilter.ActDelRcpt {
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
	if _, err := idle.Mail("x@example.org", nil); err == nil {
		t.Error("idle connection still answers during drain")
	}
	close(release)
	o := <-done
	if o.act.Code != gomilter.ActAccept {
		t.Errorf("in-flight message: %c %d %s, want accept", o.act.Code, o.act.SMTPCode, o.act.SMTPText)
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
	go func() {
		s.Mail("a@example.org", nil)
		s.Rcpt("b@example.org", nil)
		s.HeaderEnd()
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
		c := gomilter.NewClientWithOptions("tcp", ts.addr, clientOpts)
		s, err := c.Session()
		if err != nil {
			t.Fatal(err)
		}
		s.Macros(gomilter.CodeConn, "{daemon_name}", tt.daemon)
		host := "mx.example.net"
		if tt.addr == "127.0.0.1" {
			host = "localhost"
		}
		s.Conn(host, gomilter.FamilyInet, 4000, tt.addr)
		s.Mail("rt@example.org", nil)
		if a, err := s.Rcpt("a@example.net", nil); err != nil || a.Code != gomilter.ActContinue {
			t.Fatalf("%s: first rcpt %v %v", tt.name, a, err)
		}
		a, err := s.Rcpt("b@example.net", nil)
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case tt.want == 0 && a.Code != gomilter.ActContinue:
			t.Errorf("%s: second rcpt got %c %d, want continue", tt.name, a.Code, a.SMTPCode)
		case tt.want != 0 && (a.SMTPCode != tt.want || !strings.HasPrefix(a.SMTPText, "4.5.3 ")):
			t.Errorf("%s: second rcpt got %c %d %q, want %d 4.5.3", tt.name, a.Code, a.SMTPCode, a.SMTPText, tt.want)
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
		t.Errorf("second message while the slot is taken: %c %d %q, want 451", o.act.Code, o.act.SMTPCode, o.act.SMTPText)
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
