package milter

import (
	"context"
	"strings"
	"testing"

	dj "github.com/d--j/go-milter"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
)

// TestDiscoverHook: Env.Discover runs for outbound mail only, before the
// message takes a processing slot (network waits hold none), with the
// message's context, and what it finds reaches the engine.
func TestDiscoverHook(t *testing.T) {
	type call struct {
		slotsTaken int
		deadline   bool
		rcpts      []string
	}
	calls := make(chan call, 4)
	var env *Env
	eng := processorFunc(func(_ context.Context, in *crypto.Input) (*crypto.Plan, error) {
		got := "none"
		if d := in.Discovered["bob@example.net"]; len(d) == 1 {
			got = d[0].Source.String()
		}
		return &crypto.Plan{Action: crypto.Accept, Decision: "passed:" + got}, nil
	})
	ts := startServer(t, func(c *config.Config) { c.Limits.MaxConcurrent = 1 }, eng, func(e *Env) {
		env = e
		e.Discover = func(ctx context.Context, in *crypto.Input) {
			_, dl := ctx.Deadline()
			calls <- call{slotsTaken: len(env.Slots), deadline: dl, rcpts: in.Envelope.Rcpts}
			in.Discovered = crypto.Discovered{"bob@example.net": {{Source: crypto.TrustWKD}}}
		}
	})
	out := msgSpec{from: "rt@example.org", rcpts: []string{"<bob@example.net>"}, header: [][2]string{{"From", "rt@example.org"}}, body: "Hi.\r\n"}
	o := send(t, session(t, ts, "{daemon_name}", "ORIGINATING"), out)
	if o.act.Type != dj.ActionAccept {
		t.Fatalf("outbound: %v", o.act)
	}
	select {
	case c := <-calls:
		if c.slotsTaken != 0 || !c.deadline || len(c.rcpts) != 1 {
			t.Errorf("Discover called with %+v, want no slot taken and a deadline", c)
		}
	default:
		t.Fatal("Discover was not called for outbound mail")
	}
	if !strings.Contains(ts.logs.String(), "decision=passed:wkd") {
		t.Errorf("the engine did not get the discovered keys:\n%s", ts.logs.String())
	}
	send(t, session(t, ts), plain) // inbound
	select {
	case c := <-calls:
		t.Errorf("Discover called for inbound mail: %+v", c)
	default:
	}
}
