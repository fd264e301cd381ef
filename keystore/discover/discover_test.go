package discover

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// TestLookupMessage: the lookups of one message run in parallel under one
// deadline: a slow source does not delay the others' answers, and the
// whole is answered when the timeout ends, not when the slow server does.
func TestLookupMessage(t *testing.T) {
	e := newEnv(t, nil)
	e.opts.Timeout = config.Duration(500 * time.Millisecond)
	e.restart()
	for _, l := range []string{"alice", "bob", "carol"} {
		k, _ := pgpKey(t, l+"@example.net", nil)
		e.wkd.Publish(l+"@example.net", k, discovertest.Advanced, WKDHash(l))
	}
	e.dns.Slow("alice@example.net", 3*time.Second)
	reqs := []Request{
		{Address: "alice@example.net", Sources: []string{"dane", "wkd"}},
		{Address: "bob@example.net", Sources: []string{"wkd"}},
		{Address: "<carol@example.net>", Sources: []string{"wkd", "dane"}},
	}
	start := time.Now()
	got := e.d.LookupMessage(context.Background(), reqs, time.Now())
	if el := time.Since(start); el > 2500*time.Millisecond {
		t.Fatalf("LookupMessage took %v: it waited for the slow server", el)
	}
	want := map[string][]Status{
		"alice@example.net":   {Temporary, Found},
		"bob@example.net":     {Found},
		"<carol@example.net>": {Found, NotFound},
	}
	for addr, ws := range want {
		as := got[addr]
		if len(as) != len(ws) {
			t.Fatalf("%s: %d answers, want %d", addr, len(as), len(ws))
		}
		for i, w := range ws {
			if as[i].Status != w || as[i].Address != addr || as[i].Source != reqs[indexOf(reqs, addr)].Sources[i] {
				t.Errorf("%s answer %d: %+v, want %s", addr, i, as[i], w)
			}
		}
	}
	// The JSON form (keys discover --json) carries no key material.
	b, _ := json.Marshal(got["bob@example.net"][0])
	if strings.Contains(string(b), "BEGIN PGP") || !strings.Contains(string(b), `"fingerprint"`) {
		t.Errorf("JSON %s", b)
	}
}

func indexOf(reqs []Request, addr string) int {
	for i, r := range reqs {
		if r.Address == addr {
			return i
		}
	}
	return -1
}

func TestRefreshInterval(t *testing.T) {
	for _, c := range [][2]time.Duration{{24 * time.Hour, time.Hour}, {time.Hour, 3 * time.Minute}, {5 * time.Minute, time.Minute}} {
		if got := RefreshInterval(c[0]); got != c[1] {
			t.Errorf("RefreshInterval(%v) = %v, want %v", c[0], got, c[1])
		}
	}
}
