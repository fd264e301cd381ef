package discover

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// BenchmarkLookupMessage measures what key discovery adds to the end of
// one outbound message with one recipient, both sources (WKD and DANE)
// on loopback servers:
//   - cold: nothing cached: DNS queries (OPENPGPKEY, SMIMEA, A/AAAA of the
//     WKD host), a TLS handshake, the policy file and the key, the key
//     checked and the answers written to the cache (fsync);
//   - warm-disk: cached on disk, first use after a restart (the file read
//     and the key checked again);
//   - warm: cached and already used (what most messages see).
func BenchmarkLookupMessage(b *testing.B) {
	e := newEnv(b, nil)
	key, _ := pgpKey(b, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	reqs := []Request{{Address: "alice@example.net", Sources: []string{"dane", "wkd"}}}
	check := func(b *testing.B, got map[string][]Answer) {
		if a := got["alice@example.net"]; a[1].Status != Found || a[0].Status != NotFound {
			b.Fatalf("answers %+v", a)
		}
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			e.d.Flush()
			os.RemoveAll(e.dir)
			e.restart() // no connection to reuse either
			b.StartTimer()
			check(b, e.d.LookupMessage(context.Background(), reqs, time.Now()))
		}
	})
	b.Run("warm-disk", func(b *testing.B) {
		e.restart()
		e.d.LookupMessage(context.Background(), reqs, time.Now())
		e.d.Flush()
		for b.Loop() {
			b.StopTimer()
			e.restart()
			b.StartTimer()
			check(b, e.d.LookupMessage(context.Background(), reqs, time.Now()))
		}
	})
	b.Run("warm", func(b *testing.B) {
		e.restart()
		e.d.LookupMessage(context.Background(), reqs, time.Now())
		e.d.Flush()
		for b.Loop() {
			check(b, e.d.LookupMessage(context.Background(), reqs, time.Now()))
		}
	})
}
