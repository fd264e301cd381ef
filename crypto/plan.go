package crypto

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
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
	// Reply is the SMTP reply for reject and tempfail.
	Reply Reply
	// Quarantine is the reason given to the MTA for Action Quarantine.
	Quarantine string
	// NotBefore is the earliest time the reply may be sent (zero: at
	// once). Every decryption with the gateway's keys, successful or
	// not, sets it, so that timing is no oracle. The caller waits for it
	// after releasing its processing slot.
	NotBefore time.Time
	// HeaderOps, Body, DelRcpts and AddRcpts change the original
	// message; Copies are extra messages. Deliveries puts them together.
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

// Delivery is one message that leaves the gateway: the original message as
// changed, or an extra copy.
type Delivery struct {
	// Original is set for the original message (changed in place by the
	// MTA); extra copies are handed over separately.
	Original   bool
	Recipients []string
	Header     mime.Header
	// Body is the body as delivered (the received one when unchanged).
	Body *spool.Buffer
}

// Deliveries returns what the plan delivers for msg received for rcpts:
// the original as changed first, then each extra copy. Every recipient is
// accounted for exactly once: each copy's recipients are envelope
// recipients (or added ones) that no other copy has, and the original
// keeps the rest. Only accepted (or quarantined) plans deliver anything.
// An error means the plan is inconsistent; the caller tempfails.
func (p *Plan) Deliveries(msg Message, rcpts []string) ([]Delivery, error) {
	if p.Action != Accept && p.Action != Quarantine {
		return nil, nil
	}
	all := append(slices.Clone(rcpts), p.AddRcpts...)
	taken := map[string]int{} // recipient → delivery number (1-based, copies from 2)
	for i, c := range p.Copies {
		if len(c.Recipients) == 0 {
			return nil, fmt.Errorf("crypto: plan: copy %d has no recipients", i+2)
		}
		if c.Body == nil {
			return nil, fmt.Errorf("crypto: plan: copy %d has no body", i+2)
		}
		for _, r := range c.Recipients {
			if !slices.Contains(all, r) {
				return nil, fmt.Errorf("crypto: plan: copy %d is for %q, not a recipient of the message", i+2, r)
			}
			if n, dup := taken[r]; dup {
				return nil, fmt.Errorf("crypto: plan: %q is in copies %d and %d", r, n, i+2)
			}
			taken[r] = i + 2
		}
	}
	var left []string
	for _, r := range all {
		if _, ok := taken[r]; ok || slices.Contains(p.DelRcpts, r) || slices.Contains(left, r) {
			continue
		}
		left = append(left, r)
	}
	body := msg.Body
	if p.Body != nil {
		body = p.Body
	}
	ds := []Delivery{{Original: true, Recipients: left, Header: p.ApplyHeader(msg.Header), Body: body}}
	for _, c := range p.Copies {
		ds = append(ds, Delivery{Recipients: slices.Clone(c.Recipients), Header: c.Header, Body: c.Body})
	}
	return ds, nil
}

// Check reports whether the plan is one a caller can carry out faithfully:
// a known action with a reply of the right class.
func (p *Plan) Check() error {
	switch p.Action {
	case Accept, Discard, Quarantine:
		if !p.Reply.IsZero() {
			return fmt.Errorf("crypto: plan: %s with a reply %q", p.Action, p.Reply)
		}
	case Reject:
		return p.Reply.Check(5)
	case Tempfail:
		return p.Reply.Check(4)
	default:
		return fmt.Errorf("crypto: plan: unknown action %d", p.Action)
	}
	return nil
}

// deleteOps turns positions to delete into per-name indexed deletions,
// last first so that the indexes stay right however the MTA counts. It is
// linear in the header size (a message may carry tens of thousands of
// forged fields).
func deleteOps(h mime.Header, del map[int]bool) []HeaderOp {
	if len(del) == 0 {
		return nil
	}
	nth := make([]int, len(h)) // 1-based index of field i among its name
	seen := map[string]int{}
	for i, f := range h {
		n := strings.ToLower(f.Name)
		seen[n]++
		nth[i] = seen[n]
	}
	ops := make([]HeaderOp, 0, len(del))
	for i := len(h) - 1; i >= 0; i-- {
		if del[i] {
			ops = append(ops, HeaderOp{Kind: OpDelete, Name: h[i].Name, Index: nth[i]})
		}
	}
	return ops
}

// ApplyHeader returns h with the plan's header operations applied, as an
// MTA applies them.
func (p *Plan) ApplyHeader(h mime.Header) mime.Header {
	out := h.Clone()
	deleted := make([]bool, len(out))
	byName := map[string][]int{} // lower-case name → positions in out
	for i, f := range out {
		n := strings.ToLower(f.Name)
		byName[n] = append(byName[n], i)
	}
	nth := func(name string, n int) int {
		if pos := byName[strings.ToLower(name)]; n >= 1 && n <= len(pos) {
			return pos[n-1]
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
			inserts = append(inserts, mime.Field{Name: op.Name, Value: op.Value})
		case OpAdd:
			adds = append(adds, mime.Field{Name: op.Name, Value: op.Value})
		}
	}
	slices.Reverse(inserts)
	res := append(mime.Header(nil), inserts...)
	for i, f := range out {
		if !deleted[i] {
			res = append(res, f)
		}
	}
	return append(res, adds...)
}
