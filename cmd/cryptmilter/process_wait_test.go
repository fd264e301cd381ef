package main

import (
	"testing"
	"time"
)

// TestProcessWaitsNotBefore: process answers a decryption attempt no
// sooner than the plan's deadline, as the milter does (issue 9, "process
// honours it too"): a successful and a failed decryption of golden cases
// each take at least the 50 ms floor (crypto's decryptBase), however fast
// the machine, while the clock process judges keys by is the golden one.
func TestProcessWaitsNotBefore(t *testing.T) {
	const floor = 50 * time.Millisecond
	byName := map[string]*goldenCase{}
	for _, c := range goldenCases(t) {
		byName[c.name] = c
	}
	env := newGoldenEnv(t)
	for _, name := range []string{"in/03-pgp-encrypted", "in/09-pgp-decrypt-failed", "in/12-smime-enveloped", "in/53-decrypt-error-reject"} {
		c := byName[name]
		if c == nil {
			t.Fatalf("no golden case %s", name)
		}
		t.Run(name, func(t *testing.T) {
			cfg := env.writeConfig(t, c, nil)
			start := time.Now()
			o := runProcessCase(t, c, cfg)
			if d := time.Since(start); d < floor {
				t.Errorf("process answered %s (action %s) after %v, before the %v floor", name, o.res.Action, d, floor)
			}
		})
	}
}
