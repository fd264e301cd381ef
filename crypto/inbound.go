package crypto

import (
	"context"
	"log/slog"
)

// inbound handles mail arriving from outside: every incoming copy of the
// result headers is removed and cryptmilter's own are added.
func (e *Engine) inbound(_ context.Context, in *Input) (*Plan, error) {
	var rt []string
	if e.cfg.Inbound.RTHeaders {
		rt = rtHeaders
	}
	p := &Plan{Action: Accept, Decision: "passed"}
	p.HeaderOps = stripOps(in.Message.Header, rt, []string{"X-Cryptmilter-"})
	enc, sig := "none", "none"
	// Inserted at the top, signature first so that encryption reads first.
	p.HeaderOps = append(p.HeaderOps,
		HeaderOp{Kind: OpInsert, Index: 0, Name: HeaderSignature, Value: sig},
		HeaderOp{Kind: OpInsert, Index: 0, Name: HeaderEncryption, Value: enc},
	)
	if e.cfg.Inbound.RTHeaders {
		p.HeaderOps = append(p.HeaderOps, HeaderOp{Kind: OpInsert, Index: 0, Name: "X-RT-Incoming-Encryption", Value: "Not encrypted"})
	}
	p.Attrs = append(p.Attrs, slog.String("encryption", enc), slog.String("signature", sig))
	return p, nil
}
