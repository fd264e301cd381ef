package crypto

import (
	"testing"
	"time"
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
