package milter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/textproto"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// conn is the state of one MTA connection (one SMTP session, or one
// non-SMTP submission).
type conn struct {
	srv *Server
	nc  *trackedConn

	mu   sync.Mutex
	busy bool // a message is between MAIL and its end

	macros     map[string]string
	connHost   string
	clientAddr net.IP
	nonSMTP    bool // postfixNonSMTP
	helo       string
	msg        *message
}

// message is the state of one message.
type message struct {
	env        *Env
	keys       *keystore.Snapshot
	from       string
	rcpts      []string
	header     mime.Header
	headerSize int64
	body       *spool.Buffer
	tooBig     string // reply when a limit was exceeded
	spoolErr   error
	macros     map[string]string
	started    time.Time
}

func (c *conn) isBusy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.busy
}

// reset ends the current message and releases its buffers.
func (c *conn) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msg != nil && c.msg.body != nil {
		c.msg.body.Close()
	}
	c.msg = nil
	c.busy = false
}

// merge copies the macros of the latest packet: each one replaces the
// previous packet's, so they are accumulated here.
func (c *conn) merge(m *gomilter.Modifier) {
	for k, v := range m.Macros {
		c.macros[k] = v
		if c.msg != nil {
			c.msg.macros[k] = v
		}
	}
}

// handler is go-milter's per-message callback value; state lives in conn.
type handler struct{ c *conn }

var _ gomilter.Milter = (*handler)(nil)

func (h *handler) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	h.c.merge(m)
	h.c.connHost, h.c.clientAddr = host, addr
	h.c.nonSMTP = postfixNonSMTP(host, family, port, addr)
	return gomilter.RespContinue, nil
}

func (h *handler) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	h.c.merge(m)
	h.c.helo = name
	return gomilter.RespContinue, nil
}

func (h *handler) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	c := h.c
	c.reset()
	env := c.srv.Env()
	msg := &message{
		env:     env,
		keys:    env.Keys.Current(),
		from:    from,
		body:    env.Spool.New(),
		macros:  map[string]string{},
		started: c.srv.now(),
	}
	for k, v := range c.macros {
		msg.macros[k] = v
	}
	// Draining is checked and the connection marked busy under the
	// server's lock, so that Shutdown sees either an idle connection or
	// a message in flight, never one just starting.
	c.srv.mu.Lock()
	draining := c.srv.draining
	if !draining {
		c.mu.Lock()
		c.msg, c.busy = msg, true
		c.mu.Unlock()
	}
	c.srv.mu.Unlock()
	if draining {
		msg.body.Close()
		return reply("451 4.3.2 Service shutting down, try again later"), nil
	}
	c.merge(m)
	return gomilter.RespContinue, nil
}

func (h *handler) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	c := h.c
	if c.msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	c.merge(m)
	if r := c.deferRcpt(rcpt); r != "" {
		return reply(r), nil
	}
	c.msg.rcpts = append(c.msg.rcpts, rcpt)
	return gomilter.RespContinue, nil
}

// rcptDeferrer is the engine's optional RCPT-time check ([outbound]
// defer_rcpt): recipients of another class are deferred with 452 4.5.3 so
// that the client sends them in a new transaction.
type rcptDeferrer interface {
	RcptDefer(keys *keystore.Snapshot, now time.Time, envFrom, first, rcpt string) string
}

// deferRcpt returns the RCPT reply deferring rcpt, or "". It never defers
// mail that may come from Postfix's non_smtpd_milters (a fake connection
// from localhost at 127.0.0.1), where RCPT rejections are a configuration
// error: those messages get copies through re-injection instead.
func (c *conn) deferRcpt(rcpt string) string {
	msg := c.msg
	cfg := msg.env.Config
	if !cfg.Outbound.DeferRcpt || len(msg.rcpts) == 0 || c.maybeNonSMTP() {
		return ""
	}
	if direction(cfg, msg.macros, c.clientAddr) != crypto.Outbound {
		return ""
	}
	d, ok := msg.env.Engine.(rcptDeferrer)
	if !ok {
		return ""
	}
	return d.RcptDefer(msg.keys, c.srv.now(), msg.from, msg.rcpts[0], rcpt)
}

// maybeNonSMTP reports whether the connection looks like Postfix's
// non-SMTP submission (connect host "localhost", loopback address).
func (c *conn) maybeNonSMTP() bool {
	return c.connHost == "localhost" || c.clientAddr == nil || c.clientAddr.IsLoopback()
}

func (h *handler) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	msg := h.c.msg
	if msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	msg.headerSize += int64(len(name) + len(value) + 4)
	if msg.headerSize > int64(msg.env.Config.Limits.MaxHeaderSize) {
		msg.tooBig = crypto.HeaderTooBigReply
		return gomilter.RespContinue, nil
	}
	msg.header = append(msg.header, mime.FromMilter(name, value))
	return gomilter.RespContinue, nil
}

func (h *handler) Headers(_ textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	h.c.merge(m)
	return gomilter.RespContinue, nil
}

func (h *handler) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	msg := h.c.msg
	if msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	if msg.tooBig != "" || msg.spoolErr != nil {
		return gomilter.RespContinue, nil
	}
	if msg.body.Size()+int64(len(chunk)) > int64(msg.env.Config.Limits.MaxMessageSize) {
		msg.tooBig = crypto.TooBigReply
		return gomilter.RespContinue, nil
	}
	if _, err := msg.body.Write(chunk); err != nil {
		msg.spoolErr = err
	}
	return gomilter.RespContinue, nil
}

func (h *handler) Abort(m *gomilter.Modifier) error {
	h.c.reset()
	return nil
}

// Body is called at the end of the message: run the engine, apply the plan.
// Every failure becomes a 451 4.3.0 reply, never an error (which would drop
// the connection) and never an accept of a half-changed message.
func (h *handler) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	c := h.c
	// The direction macros come from the SMTP session; what the MTA sends
	// at end of message may come from another daemon (Postfix's cleanup)
	// and must not override them.
	if c.msg != nil {
		for _, k := range []string{"{daemon_name}", "{client_addr}", "{auth_authen}"} {
			if _, ok := c.msg.macros[k]; ok {
				delete(m.Macros, k)
			}
		}
	}
	c.merge(m)
	msg := c.msg
	log := c.srv.logger()
	if msg == nil {
		log.Error("end of message without a message", "reason", "protocol")
		return reply(crypto.TempfailReply), nil
	}
	defer c.reset()
	qid := msg.macros["i"]
	defer func() {
		if v := recover(); v != nil {
			log.Error("panic in message handling", "queue_id", qid, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = reply(crypto.TempfailReply), nil
		}
	}()
	if msg.tooBig != "" {
		log.Warn("message refused", "queue_id", qid, "action", "reject", "reason", msg.tooBig)
		return reply(msg.tooBig), nil
	}
	if msg.spoolErr != nil {
		log.Error("spool error", "queue_id", qid, "action", "tempfail", "error", msg.spoolErr)
		return reply(crypto.TempfailReply), nil
	}
	cfg := msg.env.Config
	in := &crypto.Input{
		Direction: direction(cfg, msg.macros, c.clientAddr),
		Envelope:  crypto.Envelope{From: msg.from, Rcpts: msg.rcpts, Macros: msg.macros},
		Message:   crypto.Message{Header: msg.header, Body: msg.body},
		QueueID:   qid,
		Now:       c.srv.now(),
		Keys:      msg.keys,
	}
	warnNonSMTPInbound(log, c.nonSMTP, in.Direction, qid)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Limits.MessageTimeout.D())
	defer cancel()
	release := func() {}
	if slots := msg.env.Slots; slots != nil {
		select {
		case slots <- struct{}{}:
			release = func() { <-slots }
		case <-ctx.Done():
			log.Error("no free processing slot within limits.message_timeout", "queue_id", qid, "action", "tempfail", "max_concurrent", cap(slots))
			return reply(crypto.TempfailReply), nil
		}
	}
	plan, err := process(ctx, msg.env.Engine, in, release)
	if errors.Is(err, errEngineTimeout) {
		// The engine may still be reading the body: it is released when
		// the engine returns, not here.
		c.mu.Lock()
		msg.body = nil
		c.mu.Unlock()
	}
	if err != nil {
		log.Error("message processing failed", "queue_id", qid, "direction", in.Direction.String(), "action", "tempfail", "error", err)
		return reply(crypto.TempfailReply), nil
	}
	defer plan.Close()
	if err := checkPlan(plan); err != nil {
		log.Error("engine returned a bad plan", "queue_id", qid, "action", "tempfail", "error", err)
		return reply(crypto.TempfailReply), nil
	}
	if plan.Action == crypto.Accept {
		if err := handOver(ctx, cfg, msg, plan, c.helo); err != nil {
			log.Error("re-injection failed", "queue_id", qid, "action", "tempfail", "error", err)
			return reply(crypto.TempfailReply), nil
		}
		if err := apply(m, plan); err != nil {
			// Changes may have been sent in part: a tempfail makes the
			// MTA discard them with the message. (If the connection is
			// broken, the MTA applies milter_default_action.)
			log.Error("applying changes failed", "queue_id", qid, "action", "tempfail", "error", err)
			return reply(crypto.TempfailReply), nil
		}
	}
	attrs := []any{
		"queue_id", qid, "direction", in.Direction.String(), "decision", plan.Decision,
		"action", string(plan.Action), "from", msg.from, "rcpts", len(msg.rcpts),
		"size", msg.body.Size(), "ms", time.Since(msg.started).Milliseconds(),
	}
	for _, a := range plan.Attrs {
		attrs = append(attrs, a)
	}
	if plan.Reply != "" {
		attrs = append(attrs, "reply", plan.Reply)
	}
	log.Info("message", attrs...)
	if c.srv.Observe != nil {
		c.srv.Observe(in.Direction.String(), plan.Decision, string(plan.Action), time.Since(msg.started))
	}
	switch plan.Action {
	case crypto.Accept:
		return gomilter.RespAccept, nil
	case crypto.Discard:
		return gomilter.RespDiscard, nil
	default:
		return reply(plan.Reply), nil
	}
}

// process runs the engine, bounded by ctx; a panic becomes an error.
// release is called when the engine has returned (after the reply, when
// it timed out), so that its processing slot stays taken while it works.
func process(ctx context.Context, p Processor, in *crypto.Input, release func()) (*crypto.Plan, error) {
	type result struct {
		plan *crypto.Plan
		err  error
	}
	ch := make(chan result, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				ch <- result{err: fmt.Errorf("milter: panic in engine: %v\n%s", v, debug.Stack())}
			}
		}()
		plan, err := p.Process(ctx, in)
		ch <- result{plan, err}
	}()
	select {
	case r := <-ch:
		release()
		return r.plan, r.err
	case <-ctx.Done():
		// The engine may still be reading the body: answer now, and
		// release the body and the plan when it returns (the caller
		// hands the body over on errEngineTimeout).
		go func() {
			if r := <-ch; r.plan != nil {
				r.plan.Close()
			}
			release()
			if in.Message.Body != nil {
				in.Message.Body.Close()
			}
		}()
		return nil, fmt.Errorf("%w: %w (limits.message_timeout)", errEngineTimeout, ctx.Err())
	}
}

// errEngineTimeout is returned by process when the engine did not finish
// within limits.message_timeout.
var errEngineTimeout = errors.New("milter: engine timed out")

// checkPlan refuses plans the milter cannot carry out faithfully.
func checkPlan(p *crypto.Plan) error {
	switch p.Action {
	case crypto.Accept, crypto.Discard:
	case crypto.Reject:
		if !validReply(p.Reply, '5') {
			return fmt.Errorf("milter: reject reply %q is not \"5XX 5.X.X text\"", p.Reply)
		}
	case crypto.Tempfail:
		if !validReply(p.Reply, '4') {
			return fmt.Errorf("milter: tempfail reply %q is not \"4XX 4.X.X text\"", p.Reply)
		}
	default:
		return fmt.Errorf("milter: unknown action %q", p.Action)
	}
	return nil
}

func validReply(r string, class byte) bool {
	return len(r) > 10 && r[0] == class && r[3] == ' ' && r[4] == class && r[5] == '.' &&
		!strings.ContainsAny(r, "\r\n")
}

// reply builds a custom SMTP reply; % is escaped as the MTA expands it.
func reply(text string) gomilter.Response {
	return gomilter.NewResponseStr('y', strings.ReplaceAll(text, "%", "%%"))
}

// direction decides inbound or outbound as OpenDKIM does: the daemon name,
// the client address, and SASL authentication.
func direction(cfg *config.Config, macros map[string]string, addr net.IP) crypto.Direction {
	if slices.Contains(cfg.Direction.OriginatingDaemons, macros["{daemon_name}"]) {
		return crypto.Outbound
	}
	if macros["{auth_authen}"] != "" && cfg.Direction.Authenticated == "outbound" {
		return crypto.Outbound
	}
	ip, ok := netip.AddrFromSlice(addr)
	if a := macros["{client_addr}"]; a != "" {
		if p, err := netip.ParseAddr(strings.Trim(strings.TrimPrefix(a, "IPv6:"), "[]")); err == nil {
			ip, ok = p, true
		}
	}
	if ok {
		ip = ip.Unmap()
		for _, n := range cfg.InternalNets {
			if n.Contains(ip) {
				return crypto.Outbound
			}
		}
	}
	return crypto.Inbound
}

var errNoReinject = errors.New("milter: the plan has extra copies but [outbound] reinject is not set")
