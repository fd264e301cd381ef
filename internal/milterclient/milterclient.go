// Package milterclient sends a message through a milter as an MTA would,
// for cryptmilter bench and the benchmark drivers (test/bench): one
// transaction on a d--j/go-milter client session.
package milterclient

import (
	"fmt"
	"net"
	"time"

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

// Open opens a milter session on network/address as an MTA offering
// protocol version 6 would (the milter chooses the no-reply options it
// wants) and sends the connection data of a client: for direction "out" a
// local submission from 127.0.0.1 whose daemon is daemon, else an outside
// client (192.0.2.1, daemon "smtpd"). j names the MTA. Set macro "i" in
// the returned bag before each Transaction.
func Open(network, address, direction, daemon, j string, timeout time.Duration) (*dj.ClientSession, *dj.MacroBag, error) {
	c := dj.NewClient(network, address,
		dj.WithDialer(&net.Dialer{Timeout: 10 * time.Second}),
		dj.WithActions(dj.OptAddHeader|dj.OptChangeBody|dj.OptAddRcpt|dj.OptRemoveRcpt|
			dj.OptChangeHeader|dj.OptQuarantine|dj.OptSetMacros),
		dj.WithReadTimeout(timeout), dj.WithWriteTimeout(timeout))
	host, addr, name := "mx.example.net", "192.0.2.1", "smtpd"
	if direction == "out" {
		host, addr, name = "localhost", "127.0.0.1", daemon
	}
	bag := dj.NewMacroBag()
	bag.Set("{daemon_name}", name)
	bag.Set("{client_addr}", addr)
	bag.Set("j", j)
	s, err := c.Session(bag)
	if err != nil {
		return nil, nil, err
	}
	for _, step := range []func() (*dj.Action, error){
		func() (*dj.Action, error) { return s.Conn(host, dj.FamilyInet, 25, addr) },
		func() (*dj.Action, error) { return s.Helo(host) },
	} {
		if a, err := step(); err != nil || a.Type != dj.ActionContinue {
			s.Close()
			if err == nil {
				err = fmt.Errorf("milter answered %v at connect", a)
			}
			return nil, nil, err
		}
	}
	return s, bag, nil
}
