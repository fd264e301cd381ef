package milter

import (
	"context"
	"net"
	"strings"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// TestProgress: end-of-message work longer than the MTA's milter timeout
// (here a client that waits 400 ms for each packet) is not cut off:
// progress notifications keep the MTA waiting, for a slow engine, a slow
// re-injection listener and a long NotBefore wait alike. Without them
// the client gives up.
func TestProgress(t *testing.T) {
	const (
		slow          = 1500 * time.Millisecond
		clientTimeout = 400 * time.Millisecond
	)
	// A re-injection listener that takes slow to answer the greeting.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	l := startReinjectListener(t, map[string]int{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				time.Sleep(slow)
				up, err := net.Dial("tcp", l.addr)
				if err != nil {
					return
				}
				defer up.Close()
				go copyConn(up, c)
				copyConn(c, up)
			}()
		}
	}()
	for _, tc := range []struct {
		name string
		eng  processorFunc
	}{
		{"engine", func(context.Context, *crypto.Input) (*crypto.Plan, error) {
			time.Sleep(slow)
			return &crypto.Plan{Action: crypto.Accept}, nil
		}},
		{"hand-over", func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
			return &crypto.Plan{Action: crypto.Accept, Copies: []crypto.Copy{{Recipients: in.Envelope.Rcpts[1:],
				Header: mime.Header{{Name: "Subject", Value: "copy"}}, Body: spool.FromBytes([]byte("copy\r\n"))}}}, nil
		}},
		{"not-before", func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
			return &crypto.Plan{Action: crypto.Accept, NotBefore: in.Now.Add(slow)}, nil
		}},
	} {
		for _, progress := range []bool{true, false} {
			name := tc.name + "/without progress"
			if progress {
				name = tc.name + "/with progress"
			}
			t.Run(name, func(t *testing.T) {
				ts := startServer(t, func(c *config.Config) { c.Outbound.Reinject = "inet:" + ln.Addr().String() }, tc.eng)
				ts.srv.ProgressInterval = 100 * time.Millisecond
				if !progress {
					ts.srv.ProgressInterval = -1
				}
				s := dial(t, ts.addr, dj.WithReadTimeout(clientTimeout))
				s.Conn("mx.example.net", dj.FamilyInet, 40000, "192.0.2.7")
				s.Helo("mx.example.net")
				m := plain
				m.rcpts = []string{"rt@example.org", "bob@example.net"}
				o, err := trySend(s, m)
				switch {
				case progress && err != nil:
					t.Fatalf("with progress: %v", err)
				case progress && o.act.Type != dj.ActionAccept:
					t.Errorf("with progress: %v", o.act)
				case !progress && (err == nil || !strings.Contains(err.Error(), "timeout")):
					t.Errorf("without progress the client did not time out: %v %v", o.act, err)
				}
			})
		}
	}
}

func copyConn(dst, src net.Conn) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			dst.Close()
			return
		}
	}
}
