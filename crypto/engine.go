// Package crypto implements cryptmilter's engine: a pure function from one
// message (envelope, header, spooled body), a keyring snapshot and the
// policy to a Plan that says what to do with the message. The milter and
// `cryptmilter process` both call it; neither sockets nor globals are used
// here.
package crypto

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Direction tells inbound from outbound mail.
type Direction int

// The directions.
const (
	Inbound Direction = iota + 1
	Outbound
)

func (d Direction) String() string {
	switch d {
	case Inbound:
		return "in"
	case Outbound:
		return "out"
	}
	return "unknown"
}

// ParseDirection parses "in" or "out".
func ParseDirection(s string) (Direction, error) {
	switch s {
	case "in", "inbound":
		return Inbound, nil
	case "out", "outbound":
		return Outbound, nil
	}
	return 0, fmt.Errorf("crypto: direction %q: want in or out", s)
}

// Envelope is the SMTP envelope of a message.
type Envelope struct {
	From   string
	Rcpts  []string
	Macros map[string]string
}

// Message is a message's header and spooled body (everything after the
// blank line, CRLF line ends).
type Message struct {
	Header mime.Header
	Body   *spool.Buffer
}

// Input is everything the engine decides on.
type Input struct {
	Direction Direction
	Envelope  Envelope
	Message   Message
	QueueID   string
	Now       time.Time
	// Keys is the keyring snapshot the message started with.
	Keys *keystore.Snapshot
	// Discovered holds the keys key discovery found for outbound
	// recipients without a keystore key, looked up by the caller before
	// the engine runs (nil: discovery off). See discovered.go.
	Discovered Discovered
}

// Action is the fate of a message.
type Action string

// The actions.
const (
	Accept   Action = "accept"
	Reject   Action = "reject"
	Tempfail Action = "tempfail"
	Discard  Action = "discard"
)

// OpKind is the kind of a header operation.
type OpKind int

// The header operations, as the milter protocol has them.
const (
	// OpDelete deletes the Index-th (1-based) field called Name.
	OpDelete OpKind = iota + 1
	// OpChange replaces the value of the Index-th field called Name.
	OpChange
	// OpInsert inserts a field at position Index (0 = top).
	OpInsert
	// OpAdd appends a field.
	OpAdd
)

// HeaderOp is one header change. Index is per name for delete and change
// and counts the fields of the original header (deletes come first, in
// descending order, so the indexes stay right).
type HeaderOp struct {
	Kind  OpKind
	Name  string
	Index int
	Value string
}

// Copy is an additional copy of the message for some recipients, handed to
// the re-injection listener before they are removed from the original.
type Copy struct {
	Recipients []string
	Header     mime.Header
	Body       *spool.Buffer
}

// Plan is the engine's decision for one message.
type Plan struct {
	Action Action
	// Reply is the SMTP reply for reject and tempfail ("550 5.7.1 text").
	Reply     string
	HeaderOps []HeaderOp
	// Body replaces the message body when not nil.
	Body     *spool.Buffer
	DelRcpts []string
	AddRcpts []string
	Copies   []Copy
	// Decision names what was done, for the log line ("decrypted", …).
	Decision string
	// Attrs are the log line's details; never key material or plaintext.
	Attrs []slog.Attr
}

// Close releases the plan's buffers.
func (p *Plan) Close() {
	if p.Body != nil {
		p.Body.Close()
	}
	for _, c := range p.Copies {
		if c.Body != nil {
			c.Body.Close()
		}
	}
}

// TempfailReply is the reply for every internal error.
const TempfailReply = "451 4.3.0 Temporary local problem, try again later"

// Replies for messages over the size limits.
const (
	TooBigReply       = "552 5.3.4 Message too big for cryptmilter (limits.max_message_size)"
	HeaderTooBigReply = "552 5.3.4 Message header too large (limits.max_header_size)"
)

// Engine holds the configuration the engine runs with.
type Engine struct {
	cfg   *config.Config
	spool *spool.Dir
	// waitUntil waits for the decryption floor (tests observe it instead
	// of timing it); nil means waiting on a timer.
	waitUntil func(ctx context.Context, deadline time.Time)
}

// New returns an engine for cfg spooling to sp.
func New(cfg *config.Config, sp *spool.Dir) *Engine {
	return &Engine{cfg: cfg, spool: sp}
}

// Process decides on one message. A returned error is an internal failure
// (the caller tempfails); every expected outcome is a Plan.
func (e *Engine) Process(ctx context.Context, in *Input) (*Plan, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("crypto: %w", err)
	}
	switch in.Direction {
	case Inbound:
		return e.inbound(ctx, in)
	case Outbound:
		return e.outbound(ctx, in)
	}
	return nil, fmt.Errorf("crypto: no direction for message")
}

// Result header names.
const (
	HeaderEncryption = "X-Cryptmilter-Encryption"
	HeaderSignature  = "X-Cryptmilter-Signature"
)

// rtHeaders are RT's own result headers, removed from incoming mail when
// cryptmilter sets them.
var rtHeaders = []string{"X-RT-Incoming-Encryption", "X-RT-Incoming-Signature", "X-RT-Privacy"}

// deleteOps turns positions to delete into per-name indexed deletions,
// last first so that the indexes stay right however the MTA counts.
func deleteOps(h mime.Header, del map[int]bool) []HeaderOp {
	var ops []HeaderOp
	for i := len(h) - 1; i >= 0; i-- {
		if !del[i] {
			continue
		}
		n := 0
		for j := 0; j <= i; j++ {
			if strings.EqualFold(h[j].Name, h[i].Name) {
				n++
			}
		}
		ops = append(ops, HeaderOp{Kind: OpDelete, Name: h[i].Name, Index: n})
	}
	return ops
}

// ApplyHeader returns h with the plan's header operations applied, as an
// MTA applies them.
func (p *Plan) ApplyHeader(h mime.Header) mime.Header {
	out := h.Clone()
	deleted := make([]bool, len(out))
	nth := func(name string, n int) int {
		for i, f := range out {
			if strings.EqualFold(f.Name, name) {
				n--
				if n == 0 {
					return i
				}
			}
		}
		return -1
	}
	var inserts, adds []mime.Field
	for _, op := range p.HeaderOps {
		switch op.Kind {
		case OpDelete:
			if i := nth(op.Name, op.Index); i >= 0 {
				deleted[i] = true
			}
		case OpChange:
			if i := nth(op.Name, op.Index); i >= 0 {
				out[i].Value = op.Value
			}
		case OpInsert:
			// Only top inserts are used; later inserts go above earlier ones.
			inserts = append([]mime.Field{{Name: op.Name, Value: op.Value}}, inserts...)
		case OpAdd:
			adds = append(adds, mime.Field{Name: op.Name, Value: op.Value})
		}
	}
	res := append(mime.Header(nil), inserts...)
	for i, f := range out {
		if !deleted[i] {
			res = append(res, f)
		}
	}
	return append(res, adds...)
}
