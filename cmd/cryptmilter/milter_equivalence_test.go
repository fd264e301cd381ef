package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/milter"
)

// TestGoldenMilterEquivalence proves, on every golden case, that the
// milter and `cryptmilter process` decide the same: the same bytes go
// through process --out and through the real milter server (the same
// configuration, keystore and clock), driven by a milter client that
// speaks the protocol as Postfix does. The milter's modifications are
// applied to the message as Postfix applies them, the extra copies are
// taken from the re-injection listener, and the outcome (action, reply,
// each copy's recipients and text, or its view where ciphertext is
// random) must equal process's.
func TestGoldenMilterEquivalence(t *testing.T) {
	env := newGoldenEnv(t)
	for _, c := range goldenCases(t) {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			reinject := startCapture(t)
			cfg := env.writeConfig(t, c, map[string]any{"outbound": map[string]any{"reinject": "inet:" + reinject.addr}})
			p := runProcessCase(t, c, cfg)
			want := env.outcomeFiles(t, c, p.res, p.copies)

			mres, mcopies := runMilterCase(t, c, cfg, reinject)
			got := env.outcomeFiles(t, c, mres, mcopies)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("%s: the milter's outcome differs from process's (-process +milter):\n%s", c.name, diff)
			}
		})
	}
}

// runMilterCase runs the case through a milter server of its own and
// returns the outcome in result.json's form with each copy's text (LF).
func runMilterCase(t *testing.T, c *goldenCase, cfgPath string, reinject *capture) (result, [][]byte) {
	t.Helper()
	cfg, err := config.Load(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(t.TempDir(), int64(cfg.Limits.MemorySpool))
	if err != nil {
		t.Fatal(err)
	}
	holder, err := keystore.NewHolder(keystoreOptions(cfg, slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	pol := cfg.EnginePolicy()
	menv := &milter.Env{Engine: crypto.New(pol, sp), Policy: pol, Config: cfg, Spool: sp, Keys: holder}
	var logs syncLog
	srv := &milter.Server{
		Env:    func() *milter.Env { return menv },
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Now:    func() time.Time { return goldenClock },
	}
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

	fields, body, err := splitMessage(c.message)
	if err != nil {
		t.Fatalf("message.eml: %v", err)
	}
	out, err := mtaSession(ln.Addr().String(), c, fields, body)
	if err != nil {
		t.Fatalf("milter session: %v", err)
	}
	res := result{Action: out.action, Reply: out.reply, Copies: []resultCopy{}}
	copies := reinject.take()
	if res.Action != "accept" && res.Action != "quarantine" {
		if len(out.mods) > 0 || len(copies) > 0 {
			t.Errorf("the milter answered %s %q but asked for %d modifications and re-injected %d copies", out.action, out.reply, len(out.mods), len(copies))
		}
		return res, nil
	}
	orig, rcpts := applyMods(t, fields, body, c.rcpts, out.mods)
	res.Copies = append(res.Copies, resultCopy{Recipients: rcpts, File: "1.eml"})
	texts := [][]byte{orig}
	for i, cp := range copies {
		if cp.from != c.from {
			t.Errorf("copy %d re-injected from %q, want the envelope sender %q", i+2, cp.from, c.from)
		}
		res.Copies = append(res.Copies, resultCopy{Recipients: cp.rcpts, File: fmt.Sprintf("%d.eml", i+2)})
		texts = append(texts, bytes.ReplaceAll(cp.data, []byte("\r\n"), []byte("\n")))
	}
	return res, texts
}

type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// applyMods applies the milter's modifications to the message as Postfix
// does: header changes and deletions by name and index, insertions by
// position, additions at the end, the body replaced, recipients deleted
// and added. It returns the message's text (LF line ends) and its
// recipients.
func applyMods(t *testing.T, fields [][2]string, body []byte, rcpts []string, mods []milterMod) ([]byte, []string) {
	t.Helper()
	var h mime.Header
	for _, f := range fields {
		h = append(h, mime.FromMilter(f[0], f[1]))
	}
	var newBody []byte
	replaced := false
	rc := slices.Clone(rcpts)
	for _, m := range mods {
		switch m.code {
		case 'm': // change (empty value: delete) the index-th field of that name
			n := 0
			for i := range h {
				if !strings.EqualFold(h[i].Name, m.name) {
					continue
				}
				if n++; n != m.index {
					continue
				}
				if m.value == "" {
					h = slices.Delete(h, i, i+1)
				} else {
					h[i].Value = mime.FromMilter(m.name, m.value).Value
				}
				break
			}
		case 'i': // insert at position index (0: the top)
			i := min(max(m.index, 0), len(h))
			h = slices.Insert(h, i, mime.FromMilter(m.name, m.value))
		case 'h':
			h = append(h, mime.FromMilter(m.name, m.value))
		case 'b':
			newBody, replaced = append(newBody, m.data...), true
		case '+', '2':
			rc = append(rc, strings.Trim(m.value, "<>"))
		case '-':
			r := strings.Trim(m.value, "<>")
			if i := slices.Index(rc, r); i >= 0 {
				rc = slices.Delete(rc, i, i+1)
			} else {
				t.Errorf("the milter deletes recipient %q, not one of %v", m.value, rc)
			}
		case 'q':
		default:
			t.Errorf("unexpected milter modification %q", m.code)
		}
	}
	if replaced {
		body = newBody
	}
	var b bytes.Buffer
	h.WriteTo(&b)
	b.Write(body)
	text := bytes.ReplaceAll(b.Bytes(), []byte("\r\n"), []byte("\n"))
	if rc == nil {
		rc = []string{}
	}
	return text, rc
}

// capture is an SMTP listener standing in for the MTA's re-injection
// service: it keeps every message handed over.
type capture struct {
	addr string
	mu   sync.Mutex
	msgs []captured
}

type captured struct {
	from  string
	rcpts []string
	data  []byte
}

func startCapture(t *testing.T) *capture {
	t.Helper()
	c := &capture{}
	s := smtp.NewServer(c)
	s.Domain = "reinject.example.org"
	s.ReadTimeout, s.WriteTimeout = 10*time.Second, 10*time.Second
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c.addr = ln.Addr().String()
	go s.Serve(ln)
	t.Cleanup(func() { s.Close() })
	return c
}

func (c *capture) take() []captured {
	c.mu.Lock()
	defer c.mu.Unlock()
	m := c.msgs
	c.msgs = nil
	return m
}

func (c *capture) NewSession(*smtp.Conn) (smtp.Session, error) { return &captureSession{c: c}, nil }

type captureSession struct {
	c   *capture
	msg captured
}

func (s *captureSession) Mail(from string, _ *smtp.MailOptions) error { s.msg.from = from; return nil }
func (s *captureSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.msg.rcpts = append(s.msg.rcpts, to)
	return nil
}

func (s *captureSession) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.msg.data = data
	s.c.mu.Lock()
	s.c.msgs = append(s.c.msgs, s.msg)
	s.c.mu.Unlock()
	s.msg = captured{}
	return nil
}

func (s *captureSession) Reset()        { s.msg = captured{} }
func (s *captureSession) Logout() error { return nil }

// The milter protocol as an MTA speaks it (Sendmail's libmilter
// documentation, milter-protocol.txt; version 6), reduced to what a
// message needs. It is written here rather than taken from a milter
// library so that the test drives whatever library package milter is
// built on with the same, independent client.

// milterMod is one modification the milter asked for at the end of the
// message.
type milterMod struct {
	code        byte
	index       int
	name, value string
	data        []byte
}

// milterOutcome is the milter's final answer: the action in result.json's
// words, the SMTP reply, and the modifications.
type milterOutcome struct {
	action, reply string
	mods          []milterMod
}

const (
	smfipNoConnect = 1 << 0
	smfipNoHelo    = 1 << 1
	smfipNoMail    = 1 << 2
	smfipNoRcpt    = 1 << 3
	smfipNoBody    = 1 << 4
	smfipNoHdrs    = 1 << 5
	smfipNoEOH     = 1 << 6
	smfipNRHdr     = 1 << 7
	smfipNoData    = 1 << 9
	smfipNRConn    = 1 << 12
	smfipNRHelo    = 1 << 13
	smfipNRMail    = 1 << 14
	smfipNRRcpt    = 1 << 15
	smfipNRData    = 1 << 16
	smfipNREOH     = 1 << 18
	smfipNRBody    = 1 << 19
)

type milterClient struct {
	conn  net.Conn
	r     *bufio.Reader
	proto uint32
}

func (m *milterClient) send(code byte, data []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(data)+1))
	hdr[4] = code
	if _, err := m.conn.Write(append(hdr[:], data...)); err != nil {
		return err
	}
	return nil
}

func (m *milterClient) recv() (byte, []byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(m.r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if n == 0 || n > 64<<20 {
		return 0, nil, fmt.Errorf("milter packet of length %d", n)
	}
	data := make([]byte, n-1)
	if _, err := io.ReadFull(m.r, data); err != nil {
		return 0, nil, err
	}
	return hdr[4], data, nil
}

func cstrings(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(append(b, s...), 0)
	}
	return b
}

func splitCStrings(data []byte) []string {
	return strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
}

// errStopped is returned by step when the milter ended the transaction
// before the end of the message.
var errStopped = errors.New("milter ended the transaction early")

// step sends one command and reads its reply, unless the negotiated flags
// say the milter does not want the command (no) or answers none (nr).
func (m *milterClient) step(code byte, data []byte, no, nr uint32, out *milterOutcome) error {
	if m.proto&no != 0 {
		return nil
	}
	if err := m.send(code, data); err != nil {
		return err
	}
	if m.proto&nr != 0 {
		return nil
	}
	for {
		rc, rdata, err := m.recv()
		if err != nil {
			return err
		}
		switch rc {
		case 'c', 's':
			return nil
		case 'p':
			continue
		}
		if final(rc, rdata, out) {
			return errStopped
		}
		return fmt.Errorf("unexpected reply %q to command %q", rc, code)
	}
}

// final records a final reply; false for anything else.
func final(rc byte, data []byte, out *milterOutcome) bool {
	switch rc {
	case 'a', 'c':
		out.action = "accept"
		if slices.ContainsFunc(out.mods, func(m milterMod) bool { return m.code == 'q' }) {
			out.action = "quarantine"
		}
	case 'd':
		out.action = "discard"
	case 'r':
		out.action, out.reply = "reject", "550 5.7.1 Command rejected"
	case 't':
		out.action, out.reply = "tempfail", "451 4.7.1 Service unavailable - try again later"
	case 'y':
		text := strings.ReplaceAll(strings.TrimSuffix(string(data), "\x00"), "%%", "%")
		out.action, out.reply = "tempfail", text
		if strings.HasPrefix(text, "5") {
			out.action = "reject"
		}
	default:
		return false
	}
	return true
}

// mtaSession sends one message to the milter at addr as Postfix would and
// returns the milter's answer.
func mtaSession(addr string, c *goldenCase, fields [][2]string, body []byte) (*milterOutcome, error) {
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	m := &milterClient{conn: conn, r: bufio.NewReader(conn)}
	var neg [12]byte
	binary.BigEndian.PutUint32(neg[0:], 6)
	binary.BigEndian.PutUint32(neg[4:], 0x1ff) // every action
	binary.BigEndian.PutUint32(neg[8:], 0)
	if err := m.send('O', neg[:]); err != nil {
		return nil, err
	}
	rc, data, err := m.recv()
	if err != nil {
		return nil, err
	}
	if rc != 'O' || len(data) < 12 {
		return nil, fmt.Errorf("option negotiation answered %q", rc)
	}
	m.proto = binary.BigEndian.Uint32(data[8:12])

	out := &milterOutcome{}
	macro := func(stage byte, kv ...string) error { return m.send('D', append([]byte{stage}, cstrings(kv...)...)) }
	host, ip, daemon := "client.example.net", "192.0.2.1", "smtpd"
	if c.direction == "out" {
		host, ip, daemon = "submit.example.org", "192.0.2.10", "ORIGINATING"
	}
	queueID := "GOLDEN" + strings.ToUpper(strings.NewReplacer("/", "", "-", "").Replace(c.name))
	for _, mc := range c.macros {
		if k, v, _ := strings.Cut(mc, "="); k == "i" {
			queueID = v
		}
	}
	port := make([]byte, 2)
	binary.BigEndian.PutUint16(port, 25)
	steps := []func() error{
		func() error {
			macro('C', "j", "mx.example.org", "{daemon_name}", daemon, "{client_addr}", ip, "{client_name}", host, "_", host+" ["+ip+"]")
			return m.step('C', append(append(cstrings(host), '4'), append(port, cstrings(ip)...)...), smfipNoConnect, smfipNRConn, out)
		},
		func() error { return m.step('H', cstrings(host), smfipNoHelo, smfipNRHelo, out) },
		func() error {
			kv := []string{"i", queueID, "{mail_addr}", c.from, "{daemon_name}", daemon, "{client_addr}", ip}
			for _, mc := range c.macros {
				k, v, _ := strings.Cut(mc, "=")
				kv = append(kv, k, v)
			}
			macro('M', kv...)
			return m.step('M', cstrings("<"+c.from+">"), smfipNoMail, smfipNRMail, out)
		},
	}
	for _, r := range c.rcpts {
		steps = append(steps, func() error {
			macro('R', "i", queueID, "{rcpt_addr}", r)
			return m.step('R', cstrings("<"+r+">"), smfipNoRcpt, smfipNRRcpt, out)
		})
	}
	steps = append(steps, func() error { return m.step('T', nil, smfipNoData, smfipNRData, out) })
	for _, f := range fields {
		steps = append(steps, func() error { return m.step('L', cstrings(f[0], f[1]), smfipNoHdrs, smfipNRHdr, out) })
	}
	steps = append(steps, func() error { return m.step('N', nil, smfipNoEOH, smfipNREOH, out) })
	for b := body; len(b) > 0; {
		chunk := b[:min(len(b), 65535)]
		b = b[len(chunk):]
		steps = append(steps, func() error { return m.step('B', chunk, smfipNoBody, smfipNRBody, out) })
	}
	for _, s := range steps {
		if err := s(); errors.Is(err, errStopped) {
			m.send('Q', nil)
			return out, nil
		} else if err != nil {
			return nil, err
		}
	}
	macro('E', "i", queueID)
	if err := m.send('E', nil); err != nil {
		return nil, err
	}
	for {
		rc, data, err := m.recv()
		if err != nil {
			return nil, fmt.Errorf("end of message: %w", err)
		}
		if final(rc, data, out) {
			break
		}
		mod, err := parseMod(rc, data)
		if err != nil {
			return nil, err
		}
		if mod != nil {
			out.mods = append(out.mods, *mod)
		}
	}
	m.send('Q', nil)
	return out, nil
}

// parseMod reads one modification packet (nil for progress).
func parseMod(rc byte, data []byte) (*milterMod, error) {
	mod := &milterMod{code: rc}
	switch rc {
	case 'p':
		return nil, nil
	case 'h':
		s := splitCStrings(data)
		if len(s) < 1 {
			return nil, fmt.Errorf("add header %q", data)
		}
		mod.name = s[0]
		if len(s) > 1 {
			mod.value = s[1]
		}
	case 'm', 'i':
		if len(data) < 4 {
			return nil, fmt.Errorf("header modification %q: %q", rc, data)
		}
		mod.index = int(binary.BigEndian.Uint32(data[:4]))
		s := splitCStrings(data[4:])
		mod.name = s[0]
		if len(s) > 1 {
			mod.value = s[1]
		}
	case 'b':
		mod.data = data
	case '+', '-', '2', 'e', 'q':
		mod.value = splitCStrings(data)[0]
	default:
		return nil, fmt.Errorf("unknown reply %q (%s) at the end of the message", rc, strconv.Quote(string(data)))
	}
	return mod, nil
}
