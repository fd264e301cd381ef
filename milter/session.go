package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
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
	"github.com/cryptmilter/cryptmilter/internal/config"
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
	env     *Env
	keys    *keystore.Snapshot
	from    string
	rcpts   []string
	intake  *crypto.Intake
	macros  map[string]string
	started time.Time
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
	if c.msg != nil && c.msg.intake != nil {
		c.msg.intake.Close()
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
		intake:  crypto.NewIntake(env.Policy.Limits, env.Spool),
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
		msg.intake.Close()
		return reply(crypto.ShuttingDownReply), nil
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
	if r := c.deferRcpt(rcpt); !r.IsZero() {
		return reply(r), nil
	}
	c.msg.rcpts = append(c.msg.rcpts, rcpt)
	return gomilter.RespContinue, nil
}

// rcptDeferrer is the engine's optional RCPT-time check ([outbound]
// defer_rcpt): recipients of another class are deferred with 452 4.5.3 so
// that the client sends them in a new transaction.
type rcptDeferrer interface {
	RcptDefer(keys *keystore.Snapshot, now time.Time, envFrom, first, rcpt string) crypto.Reply
}

// deferRcpt returns the RCPT reply deferring rcpt, or none. It never defers
// mail that may come from Postfix's non_smtpd_milters (a fake connection
// from localhost at 127.0.0.1), where RCPT rejections are a configuration
// error: those messages get copies through re-injection instead.
func (c *conn) deferRcpt(rcpt string) crypto.Reply {
	msg := c.msg
	cfg := msg.env.Config
	if !cfg.Outbound.DeferRcpt || len(msg.rcpts) == 0 || c.maybeNonSMTP() {
		return crypto.Reply{}
	}
	if direction(cfg, msg.macros, c.clientAddr) != crypto.Outbound {
		return crypto.Reply{}
	}
	d, ok := msg.env.Engine.(rcptDeferrer)
	if !ok {
		return crypto.Reply{}
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
	msg.intake.Field(name, value)
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
	msg.intake.Write(chunk)
	return gomilter.RespContinue, nil
}

func (h *handler) Abort(m *gomilter.Modifier) error {
	h.c.reset()
	return nil
}

// Body is called at the end of the message: decide (the engine, in a
// processing slot), carry the decision out (hand over copies, change the
// message), wait for the plan's NotBefore (outside the slot), log, reply.
// Every failure becomes the internal-error reply, never an error (which
// would drop the connection) and never an accept of a half-changed
// message.
func (h *handler) Body(m *gomilter.Modifier) (resp gomilter.Response, err error) {
	c := h.c
	c.keepSessionMacros(m)
	c.merge(m)
	msg := c.msg
	log := c.srv.logger()
	if msg == nil {
		log.Error("end of message without a message", "reason", "protocol")
		return reply(crypto.TempfailReply), nil
	}
	defer c.reset()
	o := &disposition{qid: msg.macros["i"], dir: direction(msg.env.Config, msg.macros, c.clientAddr)}
	warnNonSMTPInbound(log, c.nonSMTP, o.dir, o.qid)
	defer func() {
		if v := recover(); v != nil {
			log.Error("panic in message handling", "queue_id", o.qid, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			resp, err = reply(msg.internalError()), nil
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), msg.env.Config.Limits.MessageTimeout.D())
	defer cancel()
	c.decide(ctx, msg, o)
	defer o.close()
	if o.plan != nil {
		c.carryOut(ctx, m, msg, o)
	}
	o.wait(ctx)
	c.logOutcome(msg, o)
	return o.response(), nil
}

// keepSessionMacros drops the direction macros the MTA sends at end of
// message: they may come from another daemon (Postfix's cleanup) and must
// not override the SMTP session's.
func (c *conn) keepSessionMacros(m *gomilter.Modifier) {
	if c.msg == nil {
		return
	}
	for _, k := range []string{"{daemon_name}", "{client_addr}", "{auth_authen}"} {
		if _, ok := c.msg.macros[k]; ok {
			delete(m.Macros, k)
		}
	}
}

// disposition is what became of one message.
type disposition struct {
	qid  string
	dir  crypto.Direction
	plan *crypto.Plan // nil when refused before or by a failure
	// reply answers the message when there is no plan or the plan could
	// not be carried out (set together with level and why).
	reply crypto.Reply
	level slog.Level
	why   string
	err   error
	// copies is the number of copies handed over.
	copies int
}

// fail records a failure that ends the message with reply.
func (o *disposition) fail(reply crypto.Reply, why string, err error) {
	o.reply, o.level, o.why, o.err = reply, slog.LevelError, why, err
}

func (o *disposition) close() {
	if o.plan != nil {
		o.plan.Close()
	}
}

// wait waits for the plan's NotBefore (or the message's deadline).
func (o *disposition) wait(ctx context.Context) {
	if o.plan == nil || o.plan.NotBefore.IsZero() || !o.reply.IsZero() {
		return
	}
	d := time.Until(o.plan.NotBefore)
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// response is the milter's answer.
func (o *disposition) response() gomilter.Response {
	if !o.reply.IsZero() {
		return reply(o.reply)
	}
	switch o.plan.Action {
	case crypto.Accept, crypto.Quarantine:
		return gomilter.RespAccept
	case crypto.Discard:
		return gomilter.RespDiscard
	}
	return reply(o.plan.Reply)
}

// internalError is the reply for an internal failure ([actions]
// on_internal_error).
func (msg *message) internalError() crypto.Reply {
	if msg.env.Policy.Actions.OnInternalError == crypto.Reject {
		return crypto.InternalRejectReply
	}
	return crypto.TempfailReply
}

// decide runs the engine on the message received, holding a processing
// slot only while the engine works.
func (c *conn) decide(ctx context.Context, msg *message, o *disposition) {
	m, refused, err := msg.intake.Message()
	if !refused.IsZero() {
		p := &crypto.Plan{Action: crypto.Reject, Reply: refused, Decision: "refused"}
		if msg.env.Policy.Actions.OnLimits == crypto.Tempfail {
			p.Action, p.Reply = crypto.Tempfail, crypto.TempfailOf(refused)
		}
		o.plan, o.level, o.why = p, slog.LevelWarn, "limits"
		return
	}
	if err != nil {
		o.fail(msg.internalError(), "spool error", err)
		return
	}
	in := &crypto.Input{
		Direction: o.dir,
		Envelope:  crypto.Envelope{From: msg.from, Rcpts: msg.rcpts, Macros: msg.macros},
		Message:   m,
		QueueID:   o.qid,
		Keys:      msg.keys,
	}
	if d := msg.env.Discover; d != nil && in.Direction == crypto.Outbound {
		in.Now = c.srv.now()
		d(ctx, in) // key discovery: network lookups, before taking a processing slot
	}
	release := func() {}
	if slots := msg.env.Slots; slots != nil {
		select {
		case slots <- struct{}{}:
			release = func() { <-slots }
		case <-ctx.Done():
			o.fail(msg.internalError(), "no free processing slot within limits.message_timeout", ctx.Err())
			return
		}
	}
	in.Now = c.srv.now()
	plan, err := process(ctx, msg.env.Engine, in, release)
	if errors.Is(err, errEngineTimeout) {
		// The engine may still be reading the body: it is closed when
		// the engine returns, not here.
		c.mu.Lock()
		msg.intake.Release()
		c.mu.Unlock()
	}
	if err != nil {
		o.fail(msg.internalError(), "message processing failed", err)
		return
	}
	if err := plan.Check(); err != nil {
		plan.Close()
		o.fail(msg.internalError(), "engine returned a bad plan", err)
		return
	}
	o.plan, o.level = plan, slog.LevelInfo
}

// carryOut hands the extra copies over, then changes the message in place.
func (c *conn) carryOut(ctx context.Context, m *gomilter.Modifier, msg *message, o *disposition) {
	if o.plan.Action != crypto.Accept && o.plan.Action != crypto.Quarantine {
		return
	}
	orig, _, _ := msg.intake.Message()
	ds, err := o.plan.Deliveries(orig, msg.rcpts)
	if err != nil {
		o.fail(msg.internalError(), "engine returned a bad plan", err)
		return
	}
	if err := handOver(ctx, msg.env.Config, msg.from, c.helo, ds[1:]); err != nil {
		o.fail(msg.internalError(), "re-injection failed", err)
		return
	}
	o.copies = len(ds) - 1
	if err := apply(m, o.plan, ds[0], msg.rcpts); err != nil {
		// Changes may have been sent in part: the failure reply makes the
		// MTA discard them with the message. (If the connection is
		// broken, the MTA applies milter_default_action.)
		o.fail(msg.internalError(), "applying changes failed", err)
	}
}

// logOutcome writes the message's one log line.
func (c *conn) logOutcome(msg *message, o *disposition) {
	attrs := []slog.Attr{slog.String("queue_id", o.qid), slog.String("direction", o.dir.String())}
	decision, action := "failed", ""
	if o.plan != nil {
		decision, action = o.plan.Decision, o.plan.Action.String()
	}
	if !o.reply.IsZero() {
		action = "tempfail"
		if o.reply.Code/100 == 5 {
			action = "reject"
		}
	}
	attrs = append(attrs, slog.String("decision", decision), slog.String("action", action),
		slog.String("from", msg.from), slog.Int("rcpts", len(msg.rcpts)),
		slog.Int64("size", msg.intake.Size()), slog.Int64("ms", time.Since(msg.started).Milliseconds()))
	if o.copies > 0 {
		attrs = append(attrs, slog.Int("copies", o.copies))
	}
	if o.plan != nil && o.reply.IsZero() {
		attrs = append(attrs, o.plan.Attrs...)
		if !o.plan.Reply.IsZero() {
			attrs = append(attrs, slog.String("reply", o.plan.Reply.String()))
		}
	}
	if o.why != "" {
		attrs = append(attrs, slog.String("reason", o.why))
	}
	if o.err != nil {
		attrs = append(attrs, slog.String("error", o.err.Error()))
	}
	if !o.reply.IsZero() {
		attrs = append(attrs, slog.String("reply", o.reply.String()))
	}
	c.srv.logger().LogAttrs(context.Background(), o.level, "message", attrs...)
	if c.srv.Observe != nil {
		c.srv.Observe(o.dir.String(), decision, action, time.Since(msg.started))
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

// reply builds a custom SMTP reply; % is escaped as the MTA expands it.
func reply(r crypto.Reply) gomilter.Response {
	return gomilter.NewResponseStr('y', strings.ReplaceAll(r.String(), "%", "%%"))
}

// direction decides inbound or outbound as OpenDKIM does: the daemon name,
// the client address, and SASL authentication.
func direction(cfg *config.Config, macros map[string]string, addr net.IP) crypto.Direction {
	if slices.Contains(cfg.Direction.OriginatingDaemons, macros["{daemon_name}"]) {
		return crypto.Outbound
	}
	if macros["{auth_authen}"] != "" && cfg.Direction.Authenticated == config.AuthOutbound {
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
