// Package listen opens the milter sockets: the ones systemd passes (socket
// activation) or else those of the `listen` setting, in Postfix syntax.
package listen

import (
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coreos/go-systemd/v22/activation"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

// Listener is an open socket and where it came from.
type Listener struct {
	net.Listener
	// Name is the socket spec, or "systemd:NAME" for an activated one.
	Name string
	path string // unix socket file to remove on close
}

// Close closes the listener and removes its socket file.
func (l *Listener) Close() error {
	err := l.Listener.Close()
	if l.path != "" {
		os.Remove(l.path)
	}
	return err
}

// Systemd returns the sockets passed by systemd, if any. It reads (and
// unsets) LISTEN_FDS, so call it once.
func Systemd() ([]*Listener, error) {
	named, err := activation.ListenersWithNames()
	if err != nil {
		return nil, fmt.Errorf("listen: systemd sockets: %w", err)
	}
	var out []*Listener
	for name, ls := range named {
		for _, l := range ls {
			if l == nil {
				return nil, fmt.Errorf("listen: systemd passed socket %q that is not a stream socket", name)
			}
			out = append(out, &Listener{Listener: l, Name: "systemd:" + name})
		}
	}
	return out, nil
}

// Open opens every socket of cfg.Sockets. Unix sockets get the configured
// mode and group, and a stale socket file is replaced; one that a running
// process still answers on is an error.
func Open(cfg *config.Config) ([]*Listener, error) {
	var out []*Listener
	fail := func(err error) ([]*Listener, error) {
		for _, l := range out {
			l.Close()
		}
		return nil, err
	}
	for _, s := range cfg.Sockets {
		l, err := openOne(cfg, s)
		if err != nil {
			return fail(err)
		}
		out = append(out, l)
	}
	return out, nil
}

func openOne(cfg *config.Config, s config.Socket) (*Listener, error) {
	if s.Network != "unix" {
		ln, err := net.Listen("tcp", s.Address)
		if err != nil {
			return nil, fmt.Errorf("listen: %s: %w", s.Spec, err)
		}
		return &Listener{Listener: ln, Name: s.Spec}, nil
	}
	path := s.Address
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("listen: %s: %w", s.Spec, err)
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("listen: %s: %s exists and is not a socket; remove it or pick another path", s.Spec, path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("listen: %s: another process is serving on %s (is cryptmilter already running?)", s.Spec, path)
		}
		os.Remove(path)
	}
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen: %s: %w", s.Spec, err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	l := &Listener{Listener: ln, Name: s.Spec, path: path}
	mode, _ := strconv.ParseUint(cfg.SocketMode, 8, 32)
	if err := os.Chmod(path, os.FileMode(mode)); err != nil {
		l.Close()
		return nil, fmt.Errorf("listen: %s: chmod %s: %w", s.Spec, cfg.SocketMode, err)
	}
	if cfg.SocketGroup != "" {
		g, err := user.LookupGroup(cfg.SocketGroup)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("listen: socket_group %q: %w", cfg.SocketGroup, err)
		}
		gid, _ := strconv.Atoi(g.Gid)
		if err := os.Chown(path, -1, gid); err != nil {
			l.Close()
			return nil, fmt.Errorf("listen: %s: chgrp %s: %w", s.Spec, cfg.SocketGroup, err)
		}
	}
	return l, nil
}
