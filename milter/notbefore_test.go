package milter

import (
	"context"
	"testing"
	"time"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
)

// TestNotBeforeHonoured: a plan's NotBefore delays the reply to the end of
// the message, whatever the plan says (accept after a decryption, reject
// or tempfail after a failure); a plan without it is answered at once.
func TestNotBeforeHonoured(t *testing.T) {
	const floor = 300 * time.Millisecond
	for _, tc := range []struct {
		name string
		plan func(now time.Time) *crypto.Plan
		wait bool
	}{
		{"accept", func(now time.Time) *crypto.Plan {
			return &crypto.Plan{Action: crypto.Accept, NotBefore: now.Add(floor)}
		}, true},
		{"reject", func(now time.Time) *crypto.Plan {
			return &crypto.Plan{Action: crypto.Reject, Reply: crypto.DecryptRejectReply, NotBefore: now.Add(floor)}
		}, true},
		{"tempfail", func(now time.Time) *crypto.Plan {
			return &crypto.Plan{Action: crypto.Tempfail, Reply: crypto.DecryptTempfailReply, NotBefore: now.Add(floor)}
		}, true},
		{"none", func(time.Time) *crypto.Plan { return &crypto.Plan{Action: crypto.Accept} }, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			notBefores := make(chan time.Time, 1)
			eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
				p := tc.plan(in.Now)
				notBefores <- p.NotBefore
				return p, nil
			})
			ts := startServer(t, nil, eng)
			o := send(t, session(t, ts), plain)
			answered := time.Now()
			notBefore := <-notBefores
			if tc.wait && answered.Before(notBefore) {
				t.Errorf("answered %v before NotBefore", notBefore.Sub(answered))
			}
			if !tc.wait && o.act.Type != dj.ActionAccept {
				t.Errorf("action %v", o.act)
			}
		})
	}
}

// TestNotBeforeReleasesSlot: with one processing slot, a message waiting
// out its NotBefore does not keep another message from being processed
// and answered.
func TestNotBeforeReleasesSlot(t *testing.T) {
	const floor = 5 * time.Second
	slow := make(chan struct{}, 1)
	eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
		if in.Envelope.From == "slow@example.net" {
			defer func() { slow <- struct{}{} }()
			return &crypto.Plan{Action: crypto.Accept, NotBefore: in.Now.Add(floor)}, nil
		}
		return &crypto.Plan{Action: crypto.Accept}, nil
	})
	ts := startServer(t, func(c *config.Config) {
		c.Limits.MaxConcurrent = 1
		c.Limits.MessageTimeout = config.Duration(20 * time.Second)
	}, eng)
	m := plain
	m.from = "slow@example.net"
	first := make(chan time.Time, 1)
	start := time.Now()
	go func() { send(t, session(t, ts), m); first <- time.Now() }()
	<-slow
	o := send(t, session(t, ts), plain)
	done := time.Now()
	if o.act.Type != dj.ActionAccept {
		t.Fatalf("second message: %v", o.act)
	}
	if d := done.Sub(start); d >= floor {
		t.Errorf("second message answered after %v: the first one's wait held the slot", d)
	}
	if d := (<-first).Sub(start); d < floor {
		t.Errorf("first message answered after %v, before its NotBefore (%v)", d, floor)
	}
}
