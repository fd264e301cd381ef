package milter

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/msglog"
)

// handOver gives each extra copy to the re-injection listener, once
// across retries of the message (see journal.go): copies an earlier
// attempt handed over are skipped. Any failure fails the whole message
// (the caller tempfails); the recipients of the copies are removed from
// the original only after this returns. It returns the queue ids the
// listener gave the copies handed over now ("" where its reply named
// none) and the number skipped.
func (s *Server) handOver(ctx context.Context, msg *message, orig crypto.Message, copies []crypto.Delivery) (handed []string, skipped int, err error) {
	cfg := msg.env.Config
	if cfg.Outbound.Reinject == "" {
		return nil, 0, errNoReinject
	}
	sock, err := config.ParseSocket(cfg.Outbound.Reinject)
	if err != nil {
		return nil, 0, err
	}
	j := s.journal(msg.env)
	if j != nil && !identifiable(orig.Header) {
		// Two submissions of the same bytes could not be told from a
		// retry: a duplicate is better than a copy lost.
		j = nil
	}
	var base journalKey
	if j != nil {
		if base, err = contentKey(msg.from, msg.rcpts, orig); err != nil {
			return nil, 0, err
		}
	}
	for i, c := range copies {
		var key journalKey
		release := func() {}
		if j != nil {
			key = copyKey(base, c.Recipients)
			done, rel, err := j.claim(key)
			if err != nil {
				return handed, skipped, fmt.Errorf("milter: copy %d of %d: %w", i+1, len(copies), err)
			}
			if done {
				skipped++
				continue
			}
			release = rel
		}
		id, err := sendCopy(ctx, sock, cfg.Hostname, msg, c)
		s.metrics().Reinject(err)
		if err != nil {
			release()
			return handed, skipped, fmt.Errorf("milter: copy %d of %d to %s: %w", i+1, len(copies), sock.Spec, err)
		}
		handed = append(handed, id)
		if j != nil {
			if err := j.record(key); err != nil {
				s.logger().Error("the hand-over journal could not record a copy: a retry of the message may hand it over again",
					"error", err, "rcpts", len(c.Recipients))
			}
		}
		release()
	}
	return handed, skipped, nil
}

// journal returns the hand-over journal of env's spool, opening it on
// first use; nil when it cannot be opened (the error is logged, at most
// once a minute, and copies are then handed over on every attempt).
func (s *Server) journal(env *Env) *journal {
	if env.Spool == nil {
		return nil
	}
	dir := filepath.Join(env.Spool.Path(), "reinject")
	ttl := env.Config.Outbound.ReinjectJournalTTL.D()
	s.jmu.Lock()
	defer s.jmu.Unlock()
	if j := s.journals[dir]; j != nil {
		j.setTTL(ttl)
		return j
	}
	if time.Since(s.journalFailed) < time.Minute {
		return nil
	}
	j, err := openJournal(dir, ttl, s.now, s.logger())
	if err != nil {
		s.journalFailed = time.Now()
		s.logger().Error("the hand-over journal cannot be opened: retries of a message whose copies were handed over hand them over again",
			"error", err)
		return nil
	}
	if s.journals == nil {
		s.journals = map[string]*journal{}
	}
	s.journals[dir] = j
	return j
}

// sendCopy hands one copy over in one SMTP transaction, bounded by ctx
// (the message's deadline): the client's own per-command timeouts are set
// to what is left, and the connection is closed when ctx ends, so a
// stalled listener gives a tempfail before the MTA gives up on the milter.
// It returns the queue id the listener's reply to DATA names ("" when it
// names none).
func sendCopy(ctx context.Context, sock config.Socket, hostname string, msg *message, c crypto.Delivery) (string, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, sock.Network, sock.Address)
	if err != nil {
		return "", err
	}
	stop := context.AfterFunc(ctx, func() { nc.Close() })
	defer stop()
	id, err := transact(ctx, nc, hostname, msg, c)
	var ne net.Error
	if err != nil && (ctx.Err() != nil || errors.As(err, &ne) && ne.Timeout()) {
		return "", fmt.Errorf("no answer within the message's deadline (limits.message_timeout): %w", err)
	}
	return id, err
}

func transact(ctx context.Context, nc net.Conn, hostname string, msg *message, c crypto.Delivery) (string, error) {
	cl := smtp.NewClient(nc)
	defer cl.Close()
	if dl, ok := ctx.Deadline(); ok {
		left := time.Until(dl)
		cl.CommandTimeout, cl.SubmissionTimeout = left, left
	}
	var hdr bytes.Buffer
	if _, err := c.Header.WriteTo(&hdr); err != nil {
		return "", err
	}
	size := int64(hdr.Len())
	if c.Body != nil {
		size += c.Body.Size()
	}
	if err := cl.Hello(hostname); err != nil {
		return "", err
	}
	if err := cl.Mail(msg.from, mailOptions(msg.mailArgs, size)); err != nil {
		return "", err
	}
	for _, r := range c.Recipients {
		if err := cl.Rcpt(r, rcptOptions(msg.argsOf(r))); err != nil {
			return "", err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return "", err
	}
	if _, err := w.Write(hdr.Bytes()); err != nil {
		return "", err
	}
	if c.Body != nil {
		if _, err := io.Copy(w, c.Body.Reader()); err != nil {
			return "", err
		}
	}
	resp, err := w.CloseWithResponse()
	if err != nil {
		return "", err
	}
	// The copy was accepted at the end of DATA: a failed QUIT must not
	// fail the message.
	cl.Quit()
	return msglog.QueueID(resp.StatusText), nil
}

// argsOf returns the ESMTP arguments of the RCPT of r ("" for a
// recipient the plan added).
func (msg *message) argsOf(r string) string {
	if i := slices.Index(msg.rcpts, r); i >= 0 && i < len(msg.rcptArgs) {
		return msg.rcptArgs[i]
	}
	return ""
}
