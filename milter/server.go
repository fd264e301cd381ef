// Package milter implements cryptmilter's milter side: it speaks the milter
// protocol with Postfix or Sendmail (through github.com/emersion/go-milter,
// which no other package sees), keeps per-connection and per-message
// state, spools the body, calls the engine at end of message and applies
// the plan it returns.
package milter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

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
	// timeouts).
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

	mu        sync.Mutex
	conns     map[*conn]struct{}
	listeners map[net.Listener]struct{}
	draining  bool
	wg        sync.WaitGroup
}

// actions are the modifications cryptmilter may make.
const actions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
	gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine |
	gomilter.OptSetSymList

// symList asks the MTA for the macros needed at each stage. Each macro
// packet replaces the previous one, so what matters is asked again later.
var symList = map[gomilter.Stage][]string{
	gomilter.StageConnect:  {"j", "{daemon_name}", "{client_addr}", "{client_name}", "_"},
	gomilter.StageHelo:     {"{tls_version}", "{cipher}"},
	gomilter.StageMailFrom: {"i", "{auth_type}", "{auth_authen}", "{mail_addr}", "{daemon_name}", "{client_addr}"},
	gomilter.StageRcptTo:   {"i", "{rcpt_addr}"},
	gomilter.StageEOH:      {"i"},
	// Not {daemon_name} at EOM: Postfix sends it from cleanup there, with
	// cleanup's value ($myhostname), not the smtpd's.
	gomilter.StageEOM: {"i"},
}

// Serve accepts milter connections on ln until Shutdown. It returns nil
// after Shutdown and the accept error otherwise.
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
	var delay time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			draining := s.draining
			s.mu.Unlock()
			if draining {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		c := &conn{srv: s, macros: map[string]string{}}
		c.nc = &trackedConn{Conn: nc, c: c, done: make(chan struct{})}
		s.mu.Lock()
		if s.draining {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown stops accepting, lets messages in flight finish and closes idle
// connections. When ctx ends first, the remaining connections are closed
// (the MTA then tempfails those messages).
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.draining = true
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.mu.Lock()
		if !c.busy {
			c.nc.SetReadDeadline(time.Now())
		}
		c.mu.Unlock()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		n := len(s.conns)
		for c := range s.conns {
			c.nc.abort()
		}
		s.mu.Unlock()
		<-done
		return &DrainError{Aborted: n}
	}
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

// serve runs the milter protocol on one connection. go-milter creates a new
// handler value per message, so connection data lives in c, and a server
// per connection lets each handler find it.
func (c *conn) serve() {
	defer func() {
		c.nc.Close()
		c.reset()
		c.srv.mu.Lock()
		delete(c.srv.conns, c)
		c.srv.mu.Unlock()
		c.srv.wg.Done()
	}()
	ms := &gomilter.Server{
		NewMilter: func() gomilter.Milter { return &handler{c: c} },
		Actions:   actions,
		SymList:   symList,
	}
	ms.Serve(&oneConnListener{conn: c.nc})
}

// trackedConn ends the session (EOF) once the server drains and no message
// is in flight, and signals when it is closed.
type trackedConn struct {
	net.Conn
	c    *conn
	once sync.Once
	done chan struct{}
}

func (t *trackedConn) Read(p []byte) (int, error) {
	if t.c.srv.isDraining() && !t.c.isBusy() {
		return 0, io.EOF
	}
	n, err := t.Conn.Read(p)
	if err != nil && t.c.srv.isDraining() {
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return n, io.EOF
		}
	}
	return n, err
}

// abort closes the connection under the session; the session goroutine
// then ends and calls Close.
func (t *trackedConn) abort() { t.Conn.Close() }

// Close is called by go-milter when its session goroutine ends.
func (t *trackedConn) Close() error {
	err := net.ErrClosed
	t.once.Do(func() {
		err = t.Conn.Close()
		close(t.done)
	})
	return err
}

// oneConnListener hands one connection to go-milter's Serve and then blocks
// until that connection is closed.
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
