package main

import (
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/milter"
)

// TestObservedEngineKeepsRcptDefer: the metrics wrapper around the engine
// still offers the RCPT-time check the milter looks for ([outbound]
// defer_rcpt), so that counting operations changes nothing else.
func TestObservedEngineKeepsRcptDefer(t *testing.T) {
	var p milter.Processor = observedEngine{Engine: crypto.New(crypto.Policy{}, nil)}
	if _, ok := p.(interface {
		RcptDefer(keys *keystore.Snapshot, now time.Time, envFrom, first, rcpt string) crypto.Reply
	}); !ok {
		t.Error("observedEngine hides the engine's RcptDefer")
	}
}
