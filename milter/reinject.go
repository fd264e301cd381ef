package milter

import (
	"context"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
)

// handOver gives each extra copy to the re-injection listener. Any failure
// fails the whole message (the caller tempfails): copies already handed
// over may then be delivered twice, never lost. The recipients of the
// copies are removed from the original only after this returns.
func handOver(ctx context.Context, cfg *config.Config, from, helo string, copies []crypto.Delivery) error {
	if len(copies) == 0 {
		return nil
	}
	if cfg.Outbound.Reinject == "" {
		return errNoReinject
	}
	sock, err := config.ParseSocket(cfg.Outbound.Reinject)
	if err != nil {
		return err
	}
	for i, c := range copies {
		if err := sendCopy(ctx, sock, cfg.Hostname, from, c); err != nil {
			return fmt.Errorf("milter: copy %d of %d to %s: %w", i+1, len(copies), sock, err)
		}
	}
	return nil
}

func sendCopy(ctx context.Context, sock config.Socket, hostname, from string, c crypto.Delivery) error {
	d := net.Dialer{Timeout: 30 * time.Second}
	nc, err := d.DialContext(ctx, sock.Network, sock.Address)
	if err != nil {
		return err
	}
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	cl := smtp.NewClient(nc)
	defer cl.Close()
	if err := cl.Hello(hostname); err != nil {
		return err
	}
	if err := cl.Mail(from, nil); err != nil {
		return err
	}
	for _, r := range c.Recipients {
		if err := cl.Rcpt(r, nil); err != nil {
			return err
		}
	}
	w, err := cl.Data()
	if err != nil {
		return err
	}
	if _, err := c.Header.WriteTo(w); err != nil {
		return err
	}
	if c.Body != nil {
		if _, err := io.Copy(w, c.Body.Reader()); err != nil {
			return err
		}
	}
	if err := w.Close(); err != nil {
		return err
	}
	// The copy was accepted at the end of DATA: a failed QUIT must not
	// fail the message (its retry would deliver the copy twice).
	cl.Quit()
	return nil
}
