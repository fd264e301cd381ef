// Package crypto implements cryptmilter's engine: a pure function from one
// message (envelope, header, spooled body), a keyring snapshot and the
// policy to a Plan that says what to do with the message. The milter and
// `cryptmilter process` both call it; neither sockets nor globals are used
// here.
package crypto

import (
	"context"
	"fmt"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/crypto/verdict"
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
	// Now is when processing began: keys are judged at this time and the
	// decryption deadline (Plan.NotBefore) counts from it.
	Now time.Time
	// Keys is the keyring snapshot the message started with.
	Keys *keystore.Snapshot
	// Discovered holds the keys key discovery found for outbound
	// recipients without a keystore key, looked up by the caller before
	// the engine runs (nil: discovery off). See discovered.go.
	Discovered Discovered
}

// Engine holds the policy the engine runs with.
type Engine struct {
	pol   Policy
	spool *spool.Dir
}

// New returns an engine deciding with pol and spooling to sp.
func New(pol Policy, sp *spool.Dir) *Engine {
	return &Engine{pol: pol, spool: sp}
}

// Policy returns the policy the engine decides with.
func (e *Engine) Policy() Policy { return e.pol }

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
	HeaderEncryption = verdict.HeaderEncryption
	HeaderSignature  = verdict.HeaderSignature
)
