package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/msglog"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// conn is the state of one MTA connection (one SMTP session, or one
// non-SMTP submission). Its handler is the library's one Milter value for
// the connection, so the state lives across messages.
type conn struct {
	srv *Server
	nc  *trackedConn

	// busy is set between MAIL and the end of the message. It is set
	// under the server's lock (see MailFrom) and read without it.
	busy atomic.Bool
	// mu guards msg against the engine-timeout path (decide).
	mu sync.Mutex

	macros     map[string]string
	connHost   string
	clientAddr net.IP
	nonSMTP    bool // postfixNonSMTP
	helo       string
	msg        *message
}

// message is the state of one message.
type message struct {
	env  *Env
	keys *keystore.Snapshot
	from string
	// mailArgs are the ESMTP arguments of MAIL, rcptArgs those of each
	// RCPT (by index of rcpts): re-injected copies keep what applies.
	mailArgs string
	rcpts    []string
	rcptArgs []string
	intake   *crypto.Intake
	macros   map[string]string
	started  time.Time
}

// drainIdle reports whether the session should end at the next packet
// boundary: the server drains and no message is in flight.
func (c *conn) drainIdle() bool { return c.srv.drainFlag.Load() && !c.busy.Load() }

// reset ends the current message and releases its buffers.
func (c *conn) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.msg != nil {
		if c.msg.intake != nil {
			c.msg.intake.Close()
		}
		c.srv.metrics().MessagesInFlight(-1)
	}
	c.msg = nil
	c.busy.Store(false)
}

// sessionMacros are the direction macros the MTA also sends at end of
// message, where they may come from another daemon (Postfix's cleanup):
// there they never override the SMTP session's.
var sessionMacros = []string{"{daemon_name}", "{client_addr}", "{auth_authen}"}

// merge copies the macros the MTA has sent so far. At end of message
// (eom), the session's direction macros are kept.
func (c *conn) merge(m dj.Macros, eom bool) {
	for _, k := range macroNames {
		v, ok := m.GetEx(k)
		if !ok {
			continue
		}
		if eom && c.msg != nil && slices.Contains(sessionMacros, k) {
			if _, had := c.msg.macros[k]; had {
				continue
			}
		}
		c.macros[k] = v
		if c.msg != nil {
			c.msg.macros[k] = v
		}
	}
}

// handler is the library's Milter for one connection.
type handler struct{ c *conn }

var _ dj.Milter = (*handler)(nil)

func (h *handler) NewConnection(m dj.Modifier) (err error) {
	defer h.c.survive("negotiation", &err)
	c := h.c
	c.srv.logger().Debug("milter connection", "protocol_version", m.Version(),
		"actions", m.Actions().String(), "protocol_options", m.Protocol().String())
	c.reset()
	c.macros = map[string]string{}
	c.connHost, c.clientAddr, c.nonSMTP, c.helo = "", nil, false, ""
	return nil
}

func (h *handler) Connect(host, family string, port uint16, addr string, m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("connect", &err)
	c := h.c
	c.merge(m, false)
	c.connHost, c.clientAddr = host, net.ParseIP(addr)
	c.nonSMTP = postfixNonSMTP(host, family, port, c.clientAddr)
	return dj.RespContinue, nil
}

func (h *handler) Helo(name string, m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("helo", &err)
	h.c.merge(m, false)
	h.c.helo = name
	return dj.RespContinue, nil
}

func (h *handler) MailFrom(from, esmtpArgs string, m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("mail", &err)
	c := h.c
	c.reset()
	env := c.srv.Env()
	msg := &message{
		env:      env,
		keys:     env.Keys.Current(),
		from:     from,
		mailArgs: esmtpArgs,
		intake:   crypto.NewIntake(env.Policy.Limits, env.Spool),
		macros:   map[string]string{},
		started:  c.srv.now(),
	}
	for k, v := range c.macros {
		msg.macros[k] = v
	}
	// Draining is checked and the connection marked busy under the
	// server's lock, so that Shutdown sees either an idle connection or
	// a message in flight, never one just starting.
	s := c.srv
	s.mu.Lock()
	draining := s.draining
	if !draining {
		c.mu.Lock()
		c.msg = msg
		c.mu.Unlock()
		c.busy.Store(true)
	}
	s.mu.Unlock()
	if draining {
		msg.intake.Close()
		return reply(crypto.ShuttingDownReply), nil
	}
	s.metrics().MessagesInFlight(1)
	c.merge(m, false)
	return dj.RespContinue, nil
}

func (h *handler) RcptTo(rcpt, esmtpArgs string, m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("rcpt", &err)
	c := h.c
	if c.msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	c.merge(m, false)
	if r := c.deferRcpt(rcpt); !r.IsZero() {
		return reply(r), nil
	}
	c.msg.rcpts = append(c.msg.rcpts, rcpt)
	c.msg.rcptArgs = append(c.msg.rcptArgs, esmtpArgs)
	return dj.RespContinue, nil
}

func (h *handler) Data(dj.Modifier) (*dj.Response, error) { return dj.RespContinue, nil }

func (h *handler) Unknown(string, dj.Modifier) (*dj.Response, error) { return dj.RespContinue, nil }

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
	if dir, _ := direction(cfg, msg.macros, c.clientAddr); dir != crypto.Outbound {
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

// Header collects a header field. With the no-reply options negotiated
// (Postfix, Sendmail 8.14+) the MTA reads no answer: everything is
// answered at end of message.
func (h *handler) Header(name, value string, _ dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("header", &err)
	msg := h.c.msg
	if msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	msg.intake.Field(name, value)
	return dj.RespContinue, nil
}

func (h *handler) Headers(m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("end of header", &err)
	h.c.merge(m, false)
	return dj.RespContinue, nil
}

// BodyChunk spools a chunk of the body. Once the message is over a limit
// (answered at end of message), the rest of the body is skipped when the
// MTA can be told so.
func (h *handler) BodyChunk(chunk []byte, m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("body", &err)
	msg := h.c.msg
	if msg == nil {
		return reply(crypto.TempfailReply), nil
	}
	msg.intake.Write(chunk)
	if !msg.intake.Refused().IsZero() && m.Protocol()&dj.OptSkip != 0 {
		return dj.RespSkip, nil
	}
	return dj.RespContinue, nil
}

func (h *handler) Abort(dj.Modifier) (err error) {
	defer h.c.survive("abort", &err)
	h.c.reset()
	return nil
}

func (h *handler) Cleanup(dj.Modifier) {
	var err error
	defer h.c.survive("cleanup", &err)
	h.c.reset()
}

// survive turns a panic in a handler into an error, which ends this
// connection (the MTA then applies milter_default_action: tempfail)
// rather than the daemon: d--j/go-milter recovers none, and a panic in a
// session's goroutine would stop every session. EndOfMessage has its own
// recovery, which answers the message.
func (c *conn) survive(stage string, err *error) {
	if v := recover(); v != nil {
		c.srv.logger().Error("panic in milter handler", "stage", stage, "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
		*err = fmt.Errorf("milter: panic in %s: %v", stage, v)
	}
}

// EndOfMessage is called at the end of the message: decide (the engine,
// in a processing slot), carry the decision out (hand over copies, change
// the message), wait for the plan's NotBefore (outside the slot), log,
// reply. While it works it tells the MTA so (progress), so that long work
// does not run into the MTA's milter timeouts. Every failure becomes the
// internal-error reply, never an error (which would drop the connection)
// and never an accept of a half-changed message.
func (h *handler) EndOfMessage(m dj.Modifier) (resp *dj.Response, err error) {
	defer h.c.survive("end of message", &err) // before the message's own recovery below
	c := h.c
	c.merge(m, true)
	msg := c.msg
	log := c.srv.logger()
	if msg == nil {
		log.Error("end of message without a message", "reason", "protocol")
		return reply(crypto.TempfailReply), nil
	}
	defer c.reset()
	o := &disposition{qid: msg.macros["i"]}
	o.dir, o.dirBy = direction(msg.env.Config, msg.macros, c.clientAddr)
	warnNonSMTPInbound(log, c.nonSMTP, o.dir, o.qid)
	defer func() {
		if v := recover(); v != nil {
			stack := debug.Stack()
			if p, ok := v.(*panicked); ok {
				v, stack = p.v, p.stack
			}
			log.Error("panic in message handling", "queue_id", o.qid, "panic", fmt.Sprint(v), "stack", string(stack))
			resp, err = reply(msg.internalError()), nil
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), msg.env.Config.Limits.MessageTimeout.D())
	defer cancel()
	pr := &progress{m: m, every: c.srv.progressEvery()}
	pr.run(func() { c.decide(ctx, msg, o) })
	defer o.close()
	if o.plan != nil {
		c.carryOut(ctx, m, pr, msg, o)
	}
	if o.mustWait() {
		pr.run(func() { o.wait(ctx) })
	}
	c.logOutcome(msg, o)
	return o.response(), nil
}

// progress runs the slow steps of the end of a message in a goroutine
// while the session's goroutine tells the MTA every so often that work is
// in progress (milter protocol 6). Only the session's goroutine writes to
// the MTA.
type progress struct {
	m     dj.Modifier
	every time.Duration
	off   bool // not negotiated, or the connection failed
}

// panicked carries a panic of a step, with its stack, to the session's
// goroutine.
type panicked struct {
	v     any
	stack []byte
}

func (p *progress) run(f func()) {
	if p.every <= 0 || p.off || p.m.Version() < 6 {
		f()
		return
	}
	done := make(chan *panicked, 1)
	go func() {
		var pv *panicked
		defer func() { done <- pv }()
		defer func() {
			if v := recover(); v != nil {
				pv = &panicked{v, debug.Stack()}
			}
		}()
		f()
	}()
	t := time.NewTicker(p.every)
	defer t.Stop()
	for {
		select {
		case pv := <-done:
			if pv != nil {
				panic(pv)
			}
			return
		case <-t.C:
			if err := p.m.Progress(); err != nil {
				p.off = true
				t.Stop()
			}
		}
	}
}

// disposition is what became of one message.
type disposition struct {
	qid   string
	dir   crypto.Direction
	dirBy string       // why dir was chosen, for the log
	plan  *crypto.Plan // nil when refused before or by a failure
	// reply answers the message when there is no plan or the plan could
	// not be carried out (set together with level and why).
	reply crypto.Reply
	level slog.Level
	why   string
	err   error
	// reinjected are the queue ids of the copies handed over ("" where
	// the listener named none); skipped is the number of copies an
	// earlier attempt of the same message handed over already.
	reinjected []string
	skipped    int
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

// mustWait reports whether the reply waits for the plan's NotBefore.
func (o *disposition) mustWait() bool {
	return o.plan != nil && !o.plan.NotBefore.IsZero() && o.reply.IsZero() && time.Until(o.plan.NotBefore) > 0
}

// wait waits for the plan's NotBefore (or the message's deadline).
func (o *disposition) wait(ctx context.Context) {
	if !o.mustWait() {
		return
	}
	t := time.NewTimer(time.Until(o.plan.NotBefore))
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// response is the milter's answer.
func (o *disposition) response() *dj.Response {
	if !o.reply.IsZero() {
		return reply(o.reply)
	}
	switch o.plan.Action {
	case crypto.Accept, crypto.Quarantine:
		return dj.RespAccept
	case crypto.Discard:
		return dj.RespDiscard
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
		t0 := time.Now()
		select {
		case slots <- struct{}{}:
			c.srv.metrics().SlotWait(time.Since(t0))
			release = func() { <-slots }
		case <-ctx.Done():
			c.srv.metrics().SlotWait(time.Since(t0))
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
func (c *conn) carryOut(ctx context.Context, m dj.Modifier, pr *progress, msg *message, o *disposition) {
	if o.plan.Action != crypto.Accept && o.plan.Action != crypto.Quarantine {
		return
	}
	orig, _, _ := msg.intake.Message()
	ds, err := o.plan.Deliveries(orig, msg.rcpts)
	if err != nil {
		o.fail(msg.internalError(), "engine returned a bad plan", err)
		return
	}
	if len(ds) > 1 {
		var handed []string
		var skipped int
		pr.run(func() { handed, skipped, err = c.srv.handOver(ctx, msg, orig, ds[1:]) })
		o.reinjected, o.skipped = handed, skipped
		if err != nil {
			o.fail(msg.internalError(), "re-injection failed", err)
			return
		}
	}
	if err := apply(m, o.plan, ds[0], msg.rcpts); err != nil {
		// Changes may have been sent in part: the failure reply makes the
		// MTA discard them with the message. (If the connection is
		// broken, the MTA applies milter_default_action.)
		o.fail(msg.internalError(), "applying changes failed", err)
	}
}

// logOutcome writes the message's one log line (internal/msglog) and
// counts its outcome.
func (c *conn) logOutcome(msg *message, o *disposition) {
	line := &msglog.Message{QueueID: o.qid, Direction: o.dir, DirectionBy: o.dirBy, From: msg.from, Rcpts: msg.rcpts,
		Size: msg.intake.Size(), Elapsed: time.Since(msg.started), Plan: o.plan, Reply: o.reply,
		Level: o.level, Why: o.why, Err: o.err, Reinjected: o.reinjected, Skipped: o.skipped, Macros: msg.macros}
	msglog.Log(context.Background(), c.srv.logger(), line)
	if c.srv.Observe != nil {
		decision, action := line.Outcome()
		c.srv.Observe(o.dir.String(), decision, action, line.Elapsed)
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

// reply builds a custom SMTP reply. The library escapes % as %% (the MTA
// expands it).
func reply(r crypto.Reply) *dj.Response {
	resp, err := dj.RejectWithCodeAndReason(uint16(r.Code), r.Enhanced+" "+r.Text)
	if err != nil {
		return dj.RespTempFail
	}
	return resp
}

// direction decides inbound or outbound as OpenDKIM does: the daemon name,
// the client address, and SASL authentication. It also says why, for the
// log.
func direction(cfg *config.Config, macros map[string]string, addr net.IP) (crypto.Direction, string) {
	if d := macros["{daemon_name}"]; slices.Contains(cfg.Direction.OriginatingDaemons, d) {
		return crypto.Outbound, "daemon_name=" + d
	}
	if macros["{auth_authen}"] != "" && cfg.Direction.Authenticated == config.AuthOutbound {
		return crypto.Outbound, "sasl"
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
				return crypto.Outbound, "internal_hosts=" + ip.String()
			}
		}
	}
	return crypto.Inbound, "default inbound"
}

var errNoReinject = errors.New("milter: the plan has extra copies but [outbound] reinject is not set")
