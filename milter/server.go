// Package milter implements cryptmilter's milter side: it speaks the milter
// protocol with Postfix or Sendmail (through github.com/d--j/go-milter,
// which no other package sees), keeps per-connection and per-message
// state, spools the body, calls the engine at end of message and applies
// the plan it returns.
package milter

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Processor is the engine seam: the milter calls it once per message.
type Processor interface {
	Process(ctx context.Context, in *crypto.Input) (*crypto.Plan, error)
}

// Env is what a message is processed with. A message keeps the Env it
// started with, so a reload never changes a message in flight.
type Env struct {
	Engine Processor
	// Policy is the engine's policy: the milter takes the limits of its
	// intake and the actions for refusals and internal errors from it.
	Policy crypto.Policy
	// Config holds the milter's own settings (direction, re-injection,
	// timeouts, connection limits).
	Config *config.Config
	Spool  *spool.Dir
	// Keys gives the keyring snapshot a message starts with.
	Keys *keystore.Holder
	// Slots, when not nil, bounds the messages processed at once
	// (limits.max_concurrent): a message waits for a free slot up to
	// limits.message_timeout, then is tempfailed.
	Slots chan struct{}
	// Discover, when not nil, fills in.Discovered for outbound mail
	// before the engine runs (key discovery; it is bounded by its own
	// timeout and runs before a processing slot is taken).
	Discover func(ctx context.Context, in *crypto.Input)
	// AllowUID, when set, decides which local users may connect over
	// TCP (listen_users): a connection from a process of this host whose
	// user it refuses is closed at once (any local user could otherwise
	// have mail decrypted or text signed with the gateway's keys through
	// a loopback port). Connections from other hosts are not checked.
	AllowUID func(uid uint32) bool
}

// Server is a milter server. Set Env and Logger, then call Serve for each
// listener; Shutdown drains.
type Server struct {
	// Env returns the current environment.
	Env    func() *Env
	Logger *slog.Logger
	// Now returns the time; nil means time.Now.
	Now func() time.Time
	// Observe, when set, is told of every message decision.
	Observe func(direction, decision, action string, d time.Duration)
	// Metrics, when set, is told of messages in flight, waits for a
	// processing slot and hand-overs of copies.
	Metrics Observer
	// ProgressInterval is how often the end of a message that takes
	// long tells the MTA it is still being worked on, so that the MTA's
	// milter timeouts do not expire (0: every 10 s; negative: never).
	ProgressInterval time.Duration

	mu        sync.Mutex
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	draining  bool
	// drainFlag mirrors draining for the read path (no lock).
	drainFlag atomic.Bool
	wg        sync.WaitGroup
	// jmu guards the hand-over journals, by spool directory.
	jmu           sync.Mutex
	journals      map[string]*journal
	journalFailed time.Time
	// refused counts connections closed over limits.max_connections,
	// acceptErrs failed accepts, for their rate-limited log lines.
	refused, acceptErrs throttle
}

// defaultProgress is the default ProgressInterval: well below Postfix's
// milter_content_timeout (300 s) and Sendmail's T=E (5 m).
const defaultProgress = 10 * time.Second

// The modifications cryptmilter needs, and those it uses when the MTA
// offers them.
const (
	needActions = dj.OptAddHeader | dj.OptChangeBody | dj.OptAddRcpt | dj.OptRemoveRcpt | dj.OptChangeHeader
	wantActions = needActions | dj.OptQuarantine | dj.OptSetMacros
	// wantProtocol: no replies to what never gets one but "continue"
	// (and no DATA or unknown-command events); header fields and body
	// chunks are decided on at end of message, so they need no reply
	// either. MAIL and RCPT keep their replies (drain, defer_rcpt).
	wantProtocol = dj.OptNoUnknown | dj.OptNoData | dj.OptSkip |
		dj.OptNoConnReply | dj.OptNoHeloReply | dj.OptNoHeaderReply | dj.OptNoEOHReply |
		dj.OptNoBodyReply | dj.OptNoDataReply | dj.OptNoUnknownReply
)

// symList asks the MTA for the macros needed at each stage.
var symList = []struct {
	stage dj.MacroStage
	names []string
}{
	{dj.StageConnect, []string{"j", "{daemon_name}", "{client_addr}", "{client_name}", "_"}},
	{dj.StageHelo, []string{"{tls_version}", "{cipher}"}},
	{dj.StageMail, []string{"i", "{auth_type}", "{auth_authen}", "{mail_addr}", "{daemon_name}", "{client_addr}"}},
	{dj.StageRcpt, []string{"i", "{rcpt_addr}"}},
	{dj.StageEOH, []string{"i"}},
	// Not {daemon_name} at EOM: Postfix sends it from cleanup there, with
	// cleanup's value ($myhostname), not the smtpd's.
	{dj.StageEOM, []string{"i"}},
}

// macroNames is every macro name of symList: a session copies these (and
// only these) from each packet of macros.
var macroNames = func() []string {
	var out []string
	seen := map[string]bool{}
	for _, s := range symList {
		for _, n := range s.names {
			if !seen[n] {
				seen[n] = true
				out = append(out, n)
			}
		}
	}
	return out
}()

// negotiate answers the MTA's option negotiation: protocol version 6 (or
// the MTA's, if older), the needed actions (negotiation fails without
// them: the MTA then applies milter_default_action), and of the wanted
// protocol options those the MTA offers.
func negotiate(mtaVersion, _ uint32, mtaActions, _ dj.OptAction, mtaProtocol, _ dj.OptProtocol, _ dj.DataSize) (uint32, dj.OptAction, dj.OptProtocol, dj.DataSize, error) {
	if mtaVersion < 2 {
		return 0, 0, 0, 0, errors.New("milter: the MTA offers milter protocol version 1")
	}
	if mtaActions&needActions != needActions {
		return 0, 0, 0, 0, errors.New("milter: the MTA does not offer header, body and recipient changes")
	}
	proto := wantProtocol & mtaProtocol
	if proto&dj.OptNoBodyReply != 0 {
		proto &^= dj.OptSkip // a skip would be a reply
	}
	return min(mtaVersion, dj.MaxServerProtocolVersion), wantActions & mtaActions, proto, dj.DataSize64K, nil
}

func newLibServer(h dj.Milter) *dj.Server {
	opts := []dj.Option{
		dj.WithMilter(func() dj.Milter { return h }),
		dj.WithActions(wantActions),
		dj.WithProtocols(wantProtocol),
		dj.WithNegotiationCallback(negotiate),
		dj.WithWriteTimeout(30 * time.Second),
	}
	for _, s := range symList {
		opts = append(opts, dj.WithMacroRequest(s.stage, s.names))
	}
	return dj.NewServer(opts...)
}

// Serve accepts milter connections on ln until Shutdown. It returns nil
// after Shutdown and the listener's error when it is closed otherwise.
// Other accept errors (EMFILE, ENFILE, ECONNABORTED…) are retried with a
// growing delay, so that a burst of open files does not stop the milter.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.draining {
		s.mu.Unlock()
		ln.Close()
		return nil
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.isDraining() {
				return nil
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.acceptError(err, delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		env := s.Env()
		lim := env.Config.Limits
		if env.AllowUID != nil && !s.peerAllowed(nc, env.AllowUID) {
			nc.Close()
			continue
		}
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		if len(s.conns) >= lim.MaxConnections {
			s.mu.Unlock()
			nc.Close()
			s.refuse(lim.MaxConnections)
			continue
		}
		c := &conn{srv: s, macros: map[string]string{}}
		c.nc = newTrackedConn(nc, c, lim.IdleTimeout.D(), maxPacket(lim))
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// maxPacket is the largest milter packet read: a header field may be as
// large as the header limit; body chunks are at most 64 KiB.
func maxPacket(lim config.Limits) int {
	return int(min(max(int64(lim.MaxHeaderSize), 1<<20), 64<<20)) + 64<<10
}

// acceptError logs accept errors, at most one line a second.
func (s *Server) acceptError(err error, delay time.Duration) {
	if n, ok := s.acceptErrs.tick(time.Second); ok {
		s.logger().Error("accepting a milter connection failed; retrying", "error", err, "errors", n, "retry_in", delay.String(),
			"hint", "EMFILE or ENFILE: raise LimitNOFILE or lower limits.max_connections")
	}
}

// refuse logs connections closed over the limit, at most one line a minute.
func (s *Server) refuse(limit int) {
	if n, ok := s.refused.tick(time.Minute); ok {
		s.logger().Warn("too many milter connections: closed new ones at once (the MTA applies milter_default_action)",
			"max_connections", limit, "closed", n,
			"hint", "raise limits.max_connections if the MTA runs more smtpd and cleanup processes than that")
	}
}

// throttle counts events and lets a log line about them through at most
// once an interval.
type throttle struct {
	mu   sync.Mutex
	n    int
	last time.Time
}

// tick counts one event; ok says whether to log now, n how many events
// the line speaks for.
func (t *throttle) tick(every time.Duration) (n int, ok bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n++
	now := time.Now()
	if now.Sub(t.last) < every {
		return 0, false
	}
	n, t.n, t.last = t.n, 0, now
	return n, true
}

// peerAllowed reports whether the process at the other end of nc may use
// the milter (Env.AllowUID), and logs a refusal. A table that cannot be read
// refuses: the check fails closed.
func (s *Server) peerAllowed(nc net.Conn, allow func(uint32) bool) bool {
	uid, local, err := peerUID(nc)
	switch {
	case err != nil:
		s.logger().Warn("milter connection closed: its user could not be found", "remote", nc.RemoteAddr().String(), "error", err)
		return false
	case local && !allow(uid):
		s.logger().Warn("milter connection closed: a local process of a user not in listen_users", "remote", nc.RemoteAddr().String(), "uid", uid,
			"hint", "the MTA's user (postfix, smmsp, root) belongs in listen_users; any other local user could have mail decrypted or text signed with the gateway's keys")
		return false
	}
	return true
}

// Shutdown stops accepting, lets messages in flight finish and closes idle
// connections. When ctx ends first, the remaining connections are closed
// (the MTA then tempfails those messages).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	s.drainFlag.Store(true)
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		if !c.busy.Load() {
			c.nc.Conn.SetReadDeadline(time.Now())
		}
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	var err error
	select {
	case <-done:
	case <-ctx.Done():
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.nc.abort()
		}
		s.mu.Unlock()
		<-done
		err = &DrainError{Aborted: n}
	}
	s.jmu.Lock()
	for _, j := range s.journals {
		j.close()
	}
	s.journals = nil
	s.jmu.Unlock()
	return err
}

// DrainError reports sessions cut at the end of the drain timeout.
type DrainError struct{ Aborted int }

func (e *DrainError) Error() string {
	return "milter: drain timeout: closed sessions still in flight"
}

// Active returns the number of open connections.
func (s *Server) Active() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

func (s *Server) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Server) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.New(slog.NewTextHandler(os.Stderr, nil))
}

func (s *Server) metrics() Observer {
	if s.Metrics != nil {
		return s.Metrics
	}
	return NopObserver{}
}

func (s *Server) progressEvery() time.Duration {
	if s.ProgressInterval == 0 {
		return defaultProgress
	}
	return s.ProgressInterval
}

// serve runs the milter protocol on one connection: one library server
// per connection, whose one Milter value is this connection's handler.
func (c *conn) serve() {
	h := &handler{c: c}
	ls := newLibServer(h)
	ls.Serve(&oneConnListener{conn: c.nc})
	// Serve returns once the connection is closed (oneConnListener).
}

// closed is called once when the connection is closed: it ends the
// message (if any) and forgets the connection.
func (c *conn) closed() {
	c.reset()
	if c.nc.timer {
		c.srv.logger().Info("closed an idle milter connection", "idle_timeout", c.nc.idle.String())
	}
	c.srv.mu.Lock()
	delete(c.srv.conns, c)
	c.srv.mu.Unlock()
	c.srv.wg.Done()
}

// oneConnListener hands one connection to the library's Serve and then
// blocks until that connection is closed.
type oneConnListener struct {
	conn   *trackedConn
	served bool
}

func (l *oneConnListener) Accept() (net.Conn, error) {
	if !l.served {
		l.served = true
		return l.conn, nil
	}
	<-l.conn.done
	return nil, net.ErrClosed
}

func (l *oneConnListener) Close() error   { return nil }
func (l *oneConnListener) Addr() net.Addr { return l.conn.LocalAddr() }
