package discover

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

func TestWKDAdvanced(t *testing.T) {
	e := newEnv(t, nil)
	key, fpr := pgpKey(t, "Alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	now := time.Now()
	a := e.lookup(t, "Alice@example.net", "wkd", now)
	want := "https://openpgpkey.example.net/.well-known/openpgpkey/example.net/hu/" + WKDHash("alice") + "?l=Alice"
	if a.Status != Found || a.OpenPGP == nil || a.OpenPGP.Fingerprint != fpr || a.From != want || a.Cached {
		t.Fatalf("answer %+v, want found %s from %s", a, fpr, want)
	}
	// The policy file, then the key; both by the advanced method.
	reqs := e.wkd.Requests()
	if len(reqs) != 2 || reqs[0] != "https://openpgpkey.example.net/.well-known/openpgpkey/example.net/policy" || reqs[1] != want {
		t.Errorf("requests %v", reqs)
	}
	// The cache answers the next message without the network.
	b := e.lookup(t, "Alice@example.net", "wkd", now.Add(time.Hour))
	if b.Status != Found || !b.Cached || b.OpenPGP.Fingerprint != fpr || len(e.wkd.Requests()) != 2 {
		t.Errorf("second lookup %+v after %d requests", b, len(e.wkd.Requests()))
	}
	rec, err := readRecord(filepath.Join(e.dir, "Alice@example.net.wkd.json"))
	if err != nil {
		t.Fatal(err)
	}
	if rec.Status != Found || rec.OpenPGP.Fingerprint != fpr || !strings.Contains(rec.OpenPGP.Data, "BEGIN PGP PUBLIC KEY BLOCK") ||
		rec.Expires.Sub(now).Round(time.Second) != 24*time.Hour {
		t.Errorf("cache record %+v", rec)
	}
	fi, _ := os.Stat(filepath.Join(e.dir, "Alice@example.net.wkd.json"))
	di, _ := os.Stat(e.dir)
	if fi.Mode().Perm() != 0o644 || di.Mode().Perm() != 0o755 {
		t.Errorf("modes: file %v dir %v", fi.Mode().Perm(), di.Mode().Perm())
	}
}

func TestWKDDirect(t *testing.T) {
	e := newEnv(t, nil)
	key, fpr := pgpKey(t, "bob@example.org", nil)
	e.wkd.Publish("bob@example.org", key, discovertest.Direct, WKDHash("bob"))
	// example.org has no openpgpkey host: the direct method.
	a := e.lookup(t, "bob@example.org", "wkd", time.Now())
	if a.Status != Found || a.OpenPGP.Fingerprint != fpr || !strings.HasPrefix(a.From, "https://example.org/.well-known/openpgpkey/hu/") {
		t.Fatalf("answer %+v", a)
	}
	// openpgpkey.example.com exists but serves no policy file (a web
	// server for the whole domain): the direct method too.
	key2, fpr2 := pgpKey(t, "carol@example.com", nil)
	e.wkd.Publish("carol@example.com", key2, discovertest.Direct, WKDHash("carol"))
	a = e.lookup(t, "carol@example.com", "wkd", time.Now())
	if a.Status != Found || a.OpenPGP.Fingerprint != fpr2 || !strings.HasPrefix(a.From, "https://example.com/") {
		t.Fatalf("answer %+v", a)
	}
	if !slices.Contains(e.wkd.Requests(), "https://openpgpkey.example.com/.well-known/openpgpkey/example.com/policy") {
		t.Errorf("the advanced method was not tried first: %v", e.wkd.Requests())
	}
}

func TestWKDAnswers(t *testing.T) {
	e := newEnv(t, nil)
	other, _ := pgpKey(t, "mallory@example.net", nil)
	expired, _ := pgpKey(t, "old@example.net", &packet.Config{Time: func() time.Time { return time.Now().Add(-48 * time.Hour) }, KeyLifetimeSecs: 3600})
	e.wkd.Publish("eve@example.net", other, discovertest.Advanced, WKDHash("eve"))
	e.wkd.Publish("old@example.net", expired, discovertest.Advanced, WKDHash("old"))
	e.wkd.Publish("big@example.net", bytes.Repeat([]byte{0x99}, maxKeyResponse+1), discovertest.Advanced, WKDHash("big"))
	e.wkd.Publish("junk@example.net", []byte("<html>hello</html>"), discovertest.Advanced, WKDHash("junk"))
	tests := []struct {
		addr   string
		status Status
		reason string
	}{
		{"eve@example.net", Unusable, "no user ID for eve@example.net"},
		{"old@example.net", Unusable, "expired"},
		{"big@example.net", Unusable, "larger than 1048576 bytes"},
		{"junk@example.net", Unusable, ""},
		{"nobody@example.net", NotFound, "HTTP 404"},
		{"x@nowkd.example", NotFound, "no Web Key Directory"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			a := e.lookup(t, tt.addr, "wkd", time.Now())
			if a.Status != tt.status || !strings.Contains(a.Reason, tt.reason) || a.OpenPGP != nil {
				t.Fatalf("answer %+v, want %s with %q", a, tt.status, tt.reason)
			}
			// Definite answers are cached, for negative_ttl.
			b := e.lookup(t, tt.addr, "wkd", time.Now().Add(30*time.Minute))
			if !b.Cached || b.Status != tt.status {
				t.Errorf("not cached: %+v", b)
			}
			if c := e.lookup(t, tt.addr, "wkd", time.Now().Add(61*time.Minute)); c.Cached {
				t.Errorf("cached past negative_ttl: %+v", c)
			}
		})
	}
}

func TestWKDTemporary(t *testing.T) {
	t.Run("server error", func(t *testing.T) {
		e := newEnv(t, nil)
		e.wkd.SetStatus(503)
		a := e.lookup(t, "alice@example.net", "wkd", time.Now())
		if a.Status != Temporary || !strings.Contains(a.Reason, "503") {
			t.Fatalf("answer %+v", a)
		}
		if _, err := os.Stat(filepath.Join(e.dir, "alice@example.net.wkd.json")); err == nil {
			t.Error("a temporary failure was cached")
		}
	})
	t.Run("untrusted certificate", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.CAFile = "" })
		a := e.lookup(t, "alice@example.net", "wkd", time.Now())
		if a.Status != Temporary || !strings.Contains(a.Reason, "certificate") {
			t.Fatalf("answer %+v", a)
		}
	})
	t.Run("nothing listens", func(t *testing.T) {
		e := newEnv(t, nil)
		_, port, _ := strings.Cut(freeAddr(t), ":")
		e.d.httpsPort = port
		a := e.lookup(t, "alice@example.net", "wkd", time.Now())
		if a.Status != Temporary || !strings.Contains(a.Reason, "refused") {
			t.Fatalf("answer %+v", a)
		}
	})
	t.Run("DNS failure", func(t *testing.T) {
		e := newEnv(t, nil)
		e.dns.Set("openpgpkey.example.net", 1, discovertest.Entry{Rcode: 2})
		e.dns.Set("openpgpkey.example.net", 28, discovertest.Entry{Rcode: 2})
		a := e.lookup(t, "alice@example.net", "wkd", time.Now())
		if a.Status != Temporary || !strings.Contains(a.Reason, "SERVFAIL") {
			t.Fatalf("answer %+v", a)
		}
	})
	t.Run("unreadable ca_file", func(t *testing.T) {
		e := newEnv(t, func(o *Options) { o.CAFile = filepath.Join(t.TempDir(), "missing.pem") })
		a := e.lookup(t, "alice@example.net", "wkd", time.Now())
		if a.Status != Temporary || !strings.Contains(a.Reason, "discovery.ca_file") {
			t.Fatalf("answer %+v", a)
		}
		if !strings.Contains(e.log.String(), "WKD lookups will fail") {
			t.Error("not logged")
		}
	})
}

// TestWKDSlow: a server slower than the timeout gives a temporary
// failure when the timeout ends, not when the server answers.
func TestWKDSlow(t *testing.T) {
	e := newEnv(t, nil)
	e.opts.Timeout = config.Duration(300 * time.Millisecond)
	e.restart()
	key, _ := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	e.wkd.SetDelay(20 * time.Second)
	start := time.Now()
	a := e.lookup(t, "alice@example.net", "wkd", time.Now())
	if el := time.Since(start); el > 10*time.Second {
		t.Fatalf("the lookup waited for the server (%v)", el)
	}
	if a.Status != Temporary || !strings.Contains(a.Reason, "discovery.timeout") {
		t.Fatalf("answer %+v", a)
	}
}

// TestLookupShared: concurrent lookups of one address share one fetch.
func TestLookupShared(t *testing.T) {
	e := newEnv(t, nil)
	key, _ := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	e.wkd.SetDelay(200 * time.Millisecond)
	reqs := []Request{{Address: "alice@example.net", Sources: []string{"wkd"}}, {Address: "alice@example.net", Sources: []string{"wkd"}}}
	done := make(chan map[string][]Answer, 2)
	for range 2 {
		go func() { done <- e.d.LookupMessage(context.Background(), reqs[:1], time.Now()) }()
	}
	for range 2 {
		if a := (<-done)["alice@example.net"][0]; a.Status != Found {
			t.Fatalf("answer %+v", a)
		}
	}
	if n := len(e.wkd.Requests()); n != 2 {
		t.Errorf("%d requests, want 2 (one policy, one key)", n)
	}
}
