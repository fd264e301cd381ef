// Package milterclient sends a message through a milter as an MTA would,
// for cryptmilter bench and the benchmark drivers (test/bench): one
// transaction on a d--j/go-milter client session.
package milterclient

import (
	"fmt"

	dj "github.com/d--j/go-milter"
)

// Transaction sends one message on s (connected and greeted): MAIL, each
// RCPT, DATA, the header fields, the body in 64 KiB chunks and the end of
// the message. It returns the final action as a word ("accept",
// "discard", "reject" or "tempfail", a reply with a code by its class) and
// the modifications the milter asked for. A reply other than
// continue before the end of the message is an error.
func Transaction(s *dj.ClientSession, from string, rcpts []string, fields [][2]string, body []byte) (string, []dj.ModifyAction, error) {
	step := func(a *dj.Action, err error) error {
		if err != nil {
			return err
		}
		if a.Type != dj.ActionContinue {
			return fmt.Errorf("milter answered %v before the end of the message", a)
		}
		return nil
	}
	if err := step(s.Mail(from, "")); err != nil {
		return "", nil, err
	}
	for _, r := range rcpts {
		if err := step(s.Rcpt(r, "")); err != nil {
			return "", nil, err
		}
	}
	if err := step(s.DataStart()); err != nil {
		return "", nil, err
	}
	for _, f := range fields {
		if err := step(s.HeaderField(f[0], f[1], nil)); err != nil {
			return "", nil, err
		}
	}
	if err := step(s.HeaderEnd()); err != nil {
		return "", nil, err
	}
	if len(body) == 0 {
		if err := step(s.BodyChunk(nil)); err != nil {
			return "", nil, err
		}
	}
	for b := body; len(b) > 0; {
		n := min(len(b), int(dj.DataSize64K))
		if err := step(s.BodyChunk(b[:n])); err != nil {
			return "", nil, err
		}
		b = b[n:]
	}
	mods, act, err := s.End()
	if err != nil {
		return "", nil, err
	}
	switch act.Type {
	case dj.ActionAccept, dj.ActionContinue:
		return "accept", mods, nil
	case dj.ActionDiscard:
		return "discard", mods, nil
	case dj.ActionReject:
		return "reject", mods, nil
	case dj.ActionTempFail:
		return "tempfail", mods, nil
	case dj.ActionRejectWithCode:
		if act.SMTPCode >= 500 {
			return "reject", mods, nil
		}
		return "tempfail", mods, nil
	}
	return act.String(), mods, nil
}
