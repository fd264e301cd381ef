package crypto

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// BenchmarkInboundFailureTiming measures how long each kind of decryption
// failure takes, next to a successful decryption of a message of the same
// kind, so that timing differences between outcomes (an oracle) can be
// seen: all should sit at the floor of Engine.decryptFloor. Run with: go test -run '^$' -bench InboundFailureTiming ./crypto/
func BenchmarkInboundFailureTiming(b *testing.B) {
	pgp := inPGPFixture(b)
	sm := inSMIMEFixture(b)
	e := inEngine(b, nil)
	for _, c := range []struct {
		name string
		msg  []byte
		keys any
	}{
		{"openpgp/ok", pgp.msgs["enc"], nil},
		{"openpgp/tampered", pgp.msgs["u-tampered"], nil},
		{"openpgp/truncated", pgp.msgs["u-truncated"], nil},
		{"openpgp/garbage", pgp.msgs["u-garbage"], nil},
		{"openpgp/wrong-session-key", pgp.msgs["u-wrong-session-key"], nil},
		{"openpgp/rsa-padding", pgp.msgs["u-rsa-padding"], nil},
		{"openpgp/no-mdc", pgp.msgs["u-nomdc"], nil},
		{"smime/ok-gcm", sm.msgs["env-gcm"], 1},
		{"smime/gcm-tag", sm.msgs["su-gcm-tag"], 1},
	} {
		keys := pgp.keys
		if c.keys != nil {
			keys = sm.keys
		}
		if c.msg == nil {
			b.Fatalf("%s: no such fixture message", c.name)
		}
		b.Run(c.name, func(b *testing.B) {
			for i := 0; i < b.N; i++ {
				inProcess(b, e, keys, c.msg, time.Time{})
			}
		})
	}
}

// BenchmarkForgedResultFields measures the engine on a plain inbound
// message carrying n forged result fields (X-Cryptmilter-* and
// Authentication-Results under the gateway's authserv-id), all of which
// it deletes: the cost per field stays flat from 1,000 to 35,000 fields
// (the deletion was quadratic: 35,000 fields took 8 s). Run with: go test
// -run '^$' -bench ForgedResultFields ./crypto/
func BenchmarkForgedResultFields(b *testing.B) {
	e := inEngine(b, func(p *Policy) { p.Limits.MaxHeaderSize = 8 << 20 })
	for _, n := range []int{1000, 5000, 35000} {
		var h mime.Header
		h = append(h, mime.Field{Name: "From", Value: "alice@example.net"}, mime.Field{Name: "Subject", Value: "forged"})
		for i := range n {
			switch i % 3 {
			case 0:
				h = append(h, mime.Field{Name: HeaderEncryption, Value: "decrypted; protocol=openpgp"})
			case 1:
				h = append(h, mime.Field{Name: HeaderSignature, Value: "valid; protocol=openpgp"})
			default:
				h = append(h, mime.Field{Name: "Authentication-Results", Value: inHost + "; smime=pass"})
			}
		}
		body := []byte("hello\r\n")
		b.Run(fmt.Sprintf("fields-%d", n), func(b *testing.B) {
			for b.Loop() {
				plan, err := e.Process(context.Background(), &Input{
					Direction: Inbound,
					Envelope:  Envelope{From: "alice@example.net", Rcpts: []string{"rt@example.org"}},
					Message:   Message{Header: h, Body: spool.FromBytes(body)},
					Now:       time.Now(),
					Keys:      &keystore.Snapshot{},
				})
				if err != nil {
					b.Fatal(err)
				}
				deletes := 0
				for _, op := range plan.HeaderOps {
					if op.Kind == OpDelete {
						deletes++
					}
				}
				if deletes != n {
					b.Fatalf("%d of %d forged fields deleted", deletes, n)
				}
				plan.Close()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/field")
		})
	}
}
