package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

const processUsage = `Usage: cryptmilter process [-c FILE] --direction in|out --from ADDR --rcpt ADDR [--rcpt ADDR]...
                           [--macro NAME=VALUE]... [--out DIR] < message

Runs the engine the milter runs on one message read from standard input,
with the keystore and policy of the configuration.

  -c FILE              configuration file (default: the embedded default)
  --direction in|out   inbound (decrypt, verify) or outbound (sign, encrypt)
  --from ADDR          envelope sender
  --rcpt ADDR          envelope recipient, repeatable
  --macro NAME=VALUE   milter macro as the MTA would send it (e.g. i=4XyZ1), repeatable
  --out DIR            write DIR/result.json and DIR/N.eml per copy instead of
                       the message on standard output

Without --out the resulting message goes to standard output (LF line ends).
result.json: {"action": "accept|reject|tempfail|quarantine|discard", "reply": "…",
"copies": [{"recipients": [...], "file": "1.eml"}, ...]}; copy 1 is the
original message as changed, the others are the extra copies.

Exit status: 0 accept (or quarantine, discard), 65 reject, 75 tempfail, 1 usage error.

Examples:
  cryptmilter process --direction in --from alice@example.net --rcpt rt@example.org < msg.eml
  cryptmilter process --direction out --from rt@example.org --rcpt a@example.net --out /tmp/r < msg.eml
`

// Exit codes of process (sysexits.h).
const (
	exitReject   = 65
	exitTempfail = 75
)

type resultCopy struct {
	Recipients []string `json:"recipients"`
	File       string   `json:"file"`
}

type result struct {
	Action string       `json:"action"`
	Reply  string       `json:"reply"`
	Copies []resultCopy `json:"copies"`
}

func runProcess(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newFlagSet("process", processUsage, stderr)
	file := fs.String("c", "", "configuration file")
	dir := fs.String("direction", "", "in or out")
	from := fs.String("from", "", "envelope sender")
	out := fs.String("out", "", "output directory")
	var rcpts, macros multiFlag
	fs.Var(&rcpts, "rcpt", "envelope recipient")
	fs.Var(&macros, "macro", "NAME=VALUE")
	if code, ok := parseFlags(fs, args, stdout, stderr, processUsage); !ok {
		return code
	}
	if fs.NArg() > 0 {
		errorf(stderr, "process: unexpected argument %q; the message is read from standard input", fs.Arg(0))
		return 1
	}
	direction, err := crypto.ParseDirection(*dir)
	if err != nil {
		errorf(stderr, "process: --direction %q: want in or out", *dir)
		return 1
	}
	if len(rcpts) == 0 {
		errorf(stderr, "process: at least one --rcpt is needed")
		return 1
	}
	mac := map[string]string{}
	for _, m := range macros {
		k, v, ok := strings.Cut(m, "=")
		if !ok || k == "" {
			errorf(stderr, "process: --macro %q: want NAME=VALUE", m)
			return 1
		}
		mac[k] = v
	}
	cfg, err := config.Load(*file)
	if err != nil {
		errorf(stderr, "%v", err)
		return 1
	}
	res, msgs, done, err := processMessage(cfg, direction, *from, rcpts, mac, stdin, stderr)
	defer done()
	if err != nil {
		errorf(stderr, "process: %v", err)
		hintf(stderr, "the milter would tempfail this message (451 4.3.0); nothing was changed")
		res = &result{Action: crypto.Tempfail.String(), Reply: crypto.TempfailReply.String(), Copies: []resultCopy{}}
		msgs = nil
	}
	if *out != "" {
		if err := writeOut(*out, res, msgs); err != nil {
			errorf(stderr, "process: %v", err)
			return exitTempfail
		}
	} else if len(msgs) > 0 {
		if len(msgs) > 1 {
			hintf(stderr, "%d copies were made; only the first is on standard output (use --out DIR)", len(msgs))
		}
		if err := writeMessage(stdout, msgs[0]); err != nil {
			errorf(stderr, "process: %v", err)
			return exitTempfail
		}
	}
	switch res.Action {
	case crypto.Reject.String():
		fmt.Fprintf(stderr, "cryptmilter: %s\n", res.Reply)
		return exitReject
	case crypto.Tempfail.String():
		fmt.Fprintf(stderr, "cryptmilter: %s\n", res.Reply)
		return exitTempfail
	}
	return 0
}

// processClock is the time process judges keys at and counts the
// decryption deadline from (crypto.Input.Now). Tests fix it; nothing else
// sets it.
var processClock = time.Now

// processMessage runs the engine on the message read from r, through the
// milter's intake and plan application, and returns the result and each
// copy, whose bodies stay in the spool until done is called (also after
// an error).
func processMessage(cfg *config.Config, dir crypto.Direction, from string, rcpts []string, macros map[string]string, r io.Reader, stderr io.Writer) (res *result, copies []crypto.Delivery, done func(), err error) {
	var cleanup []func()
	done = func() {
		for i := len(cleanup) - 1; i >= 0; i-- {
			cleanup[i]()
		}
	}
	res, copies, err = runEngine(cfg, dir, from, rcpts, macros, r, stderr, func(f func()) { cleanup = append(cleanup, f) })
	return res, copies, done, err
}

// runEngine is processMessage; onDone registers what done releases.
func runEngine(cfg *config.Config, dir crypto.Direction, from string, rcpts []string, macros map[string]string, r io.Reader, stderr io.Writer, onDone func(func())) (*result, []crypto.Delivery, error) {
	tmp, err := os.MkdirTemp("", "cryptmilter-process-")
	if err != nil {
		return nil, nil, err
	}
	onDone(func() { os.RemoveAll(tmp) })
	sp, err := spool.Open(tmp, int64(cfg.Limits.MemorySpool))
	if err != nil {
		return nil, nil, err
	}
	pol := cfg.EnginePolicy()
	br := bufio.NewReader(r)
	// An mbox "From " separator line is not part of the message.
	if peek, _ := br.Peek(5); string(peek) == "From " {
		if _, err := br.ReadString('\n'); err != nil {
			return nil, nil, fmt.Errorf("standard input: %w", err)
		}
	}
	intake := crypto.NewIntake(pol.Limits, sp)
	onDone(intake.Close)
	if err := intake.ReadMessage(br); err != nil {
		return nil, nil, fmt.Errorf("standard input: %w", err)
	}
	msg, refused, err := intake.Message()
	if !refused.IsZero() {
		// Over a limit the milter refuses; so does process.
		res := &result{Action: crypto.Reject.String(), Reply: refused.String(), Copies: []resultCopy{}}
		if pol.Actions.OnLimits == crypto.Tempfail {
			res.Action, res.Reply = crypto.Tempfail.String(), crypto.TempfailOf(refused).String()
		}
		return res, nil, nil
	}
	if err != nil {
		return nil, nil, err
	}
	var snap *keystore.Snapshot
	if _, err := os.Stat(cfg.Keystore); err == nil {
		snap, err = keystore.Load(keystoreOptions(cfg, nil))
		if err != nil {
			return nil, nil, err
		}
		for _, p := range snap.Problems() {
			hintf(stderr, "keystore file skipped: %s: %v", p.File, p.Err)
		}
	}
	started := time.Now()
	in := &crypto.Input{
		Direction: dir,
		Envelope:  crypto.Envelope{From: from, Rcpts: rcpts, Macros: macros},
		Message:   msg,
		QueueID:   macros["i"],
		Now:       processClock(),
		Keys:      snap,
	}
	ctx, cancel := context.WithTimeout(context.Background(), cfg.Limits.MessageTimeout.D())
	defer cancel()
	eng := crypto.New(pol, sp)
	processDiscovery(ctx, cfg, eng, in, stderr) // key discovery (discovery.go)
	plan, err := eng.Process(ctx, in)
	if err != nil {
		return nil, nil, err
	}
	onDone(plan.Close)
	if err := plan.Check(); err != nil {
		return nil, nil, err
	}
	res, copies, err := renderPlan(plan, msg, rcpts)
	// The reply waits for the plan's deadline, as the milter's does. The
	// deadline counts from in.Now, which may be a fixed clock: what is
	// left of the wait is measured from the real start.
	if !plan.NotBefore.IsZero() {
		if d := plan.NotBefore.Sub(in.Now) - time.Since(started); d > 0 {
			time.Sleep(d)
		}
	}
	return res, copies, err
}

// renderPlan turns the plan's deliveries into result.json's copies.
func renderPlan(plan *crypto.Plan, msg crypto.Message, rcpts []string) (*result, []crypto.Delivery, error) {
	res := &result{Action: plan.Action.String(), Reply: plan.Reply.String(), Copies: []resultCopy{}}
	ds, err := plan.Deliveries(msg, rcpts)
	if err != nil {
		return nil, nil, err
	}
	for i, d := range ds {
		recipients := d.Recipients
		if recipients == nil {
			recipients = []string{}
		}
		res.Copies = append(res.Copies, resultCopy{Recipients: recipients, File: fmt.Sprintf("%d.eml", i+1)})
	}
	return res, ds, nil
}

// writeMessage writes a delivery with LF line ends, copying its body from
// the spool as it goes.
func writeMessage(w io.Writer, d crypto.Delivery) error {
	lw := &lfWriter{w: bufio.NewWriterSize(w, 64<<10)}
	d.Header.WriteTo(lw)
	if d.Body != nil {
		if _, err := io.Copy(lw, d.Body.Reader()); err != nil {
			return err
		}
	}
	return lw.Close()
}

// writeOut writes each copy to its file in dir and then result.json.
func writeOut(dir string, res *result, msgs []crypto.Delivery) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for i, m := range msgs {
		f, err := os.OpenFile(filepath.Join(dir, res.Copies[i].File), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		err = writeMessage(f, m)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return err
		}
	}
	j, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "result.json"), append(j, '\n'), 0o600)
}

// lfWriter writes to w with every CRLF turned into LF (a file's line
// ends); Close writes a final CR and flushes.
type lfWriter struct {
	w  *bufio.Writer
	cr bool // the last byte written was a CR, not yet passed on
}

func (l *lfWriter) Write(p []byte) (int, error) {
	n := len(p)
	if l.cr && len(p) > 0 {
		l.cr = false
		if p[0] != '\n' {
			l.w.WriteByte('\r')
		}
	}
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\r')
		if i < 0 {
			l.w.Write(p)
			break
		}
		l.w.Write(p[:i])
		if i+1 == len(p) {
			l.cr = true
			break
		}
		if p[i+1] != '\n' {
			l.w.WriteByte('\r')
		}
		p = p[i+1:]
	}
	return n, nil
}

func (l *lfWriter) Close() error {
	if l.cr {
		l.cr = false
		l.w.WriteByte('\r')
	}
	return l.w.Flush()
}
