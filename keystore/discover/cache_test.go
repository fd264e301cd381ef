package discover

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ProtonMail/go-crypto/openpgp/packet"

	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/keystore/discover/discovertest"
)

// TestCacheTTL: a fresh answer is served from the cache; after cache_ttl
// it is looked up again.
func TestCacheTTL(t *testing.T) {
	obs := &counter{}
	e := newEnv(t, func(o *Options) { o.Observer = obs })
	key, fpr := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	now := time.Now()
	e.lookup(t, "alice@example.net", "wkd", now)
	if a := e.lookup(t, "alice@example.net", "wkd", now.Add(23*time.Hour)); !a.Cached {
		t.Fatalf("not from the cache before cache_ttl: %+v", a)
	}
	if n := len(e.wkd.Requests()); n != 2 {
		t.Fatalf("%d requests before cache_ttl, want 2", n)
	}
	a := e.lookup(t, "alice@example.net", "wkd", now.Add(25*time.Hour))
	if a.Cached || a.Status != Found || a.OpenPGP.Fingerprint != fpr || len(e.wkd.Requests()) != 4 {
		t.Fatalf("after cache_ttl: %+v, %d requests", a, len(e.wkd.Requests()))
	}
	for k, want := range map[string]int{"cache wkd miss": 1, "cache wkd hit": 1, "cache wkd stale": 1, "lookup wkd found": 2} {
		if got := obs.get(k); got != want {
			t.Errorf("%s: %d, want %d", k, got, want)
		}
	}
}

// TestCacheSurvivesRestart: a new Discoverer on the same directory (a
// daemon restart) answers from the cache, the servers gone.
func TestCacheSurvivesRestart(t *testing.T) {
	e := newEnv(t, nil)
	key, fpr := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	e.lookup(t, "alice@example.net", "wkd", time.Now())
	e.wkd.SetStatus(503)
	e.restart()
	a := e.lookup(t, "alice@example.net", "wkd", time.Now())
	if a.Status != Found || !a.Cached || a.OpenPGP.Fingerprint != fpr || a.OpenPGP.OpenPGP == nil {
		t.Fatalf("after restart: %+v", a)
	}
}

// TestCacheChecksAgain: the cache is read as untrusted: a key that expired
// since it was fetched, a file edited so that the key no longer matches
// its fingerprint, or a damaged file, are not used.
func TestCacheChecksAgain(t *testing.T) {
	e := newEnv(t, nil)
	key, _ := pgpKey(t, "alice@example.net", nil)
	expiring, _ := pgpKey(t, "erin@example.net", &pgpCfgLifetime)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	e.wkd.Publish("erin@example.net", expiring, discovertest.Advanced, WKDHash("erin"))
	now := time.Now()
	e.lookup(t, "alice@example.net", "wkd", now)
	if a := e.lookup(t, "erin@example.net", "wkd", now); a.Status != Found {
		t.Fatalf("erin: %+v", a)
	}
	if a := e.lookup(t, "erin@example.net", "wkd", now.Add(2*time.Hour)); a.Status != Unusable || !a.Cached || !strings.Contains(a.Reason, "expired") {
		t.Errorf("erin after her key expired: %+v", a)
	}
	file := filepath.Join(e.dir, "alice@example.net.wkd.json")
	b, _ := os.ReadFile(file)
	other, _ := pgpKey(t, "alice@example.net", nil)
	now = time.Now() // after other was made
	ck, err := keystore.CheckOpenPGP(other, "alice@example.net", false, now)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := readRecord(file)
	rec.OpenPGP.Data = string(ck.Armored) // a different key under the recorded fingerprint
	writeRecordFile(t, file, rec)
	e.restart()
	if a := e.lookup(t, "alice@example.net", "wkd", now); a.Status != Unusable || !strings.Contains(a.Reason, "does not match its fingerprint") {
		t.Errorf("edited file: %+v", a)
	}
	os.WriteFile(file, b[:len(b)/2], 0o644)
	e.restart()
	if a := e.lookup(t, "alice@example.net", "wkd", now); a.Cached || a.Status != Found {
		t.Errorf("damaged file: %+v (want a fresh lookup)", a)
	}
}

// TestKeyChangeLogged: a different fingerprint for a cached address is
// logged with both fingerprints.
func TestKeyChangeLogged(t *testing.T) {
	e := newEnv(t, nil)
	k1, f1 := pgpKey(t, "alice@example.net", nil)
	k2, f2 := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", k1, discovertest.Advanced, WKDHash("alice"))
	e.lookup(t, "alice@example.net", "wkd", time.Now())
	e.wkd.Publish("alice@example.net", k2, discovertest.Advanced, WKDHash("alice"))
	a := e.d.Discover(context.Background(), "alice@example.net", []string{"wkd"}, time.Now())[0]
	if a.OpenPGP.Fingerprint != f2 {
		t.Fatalf("answer %+v", a)
	}
	log := e.log.String()
	if !strings.Contains(log, `msg="discovered key changed"`) || !strings.Contains(log, "old="+f1) || !strings.Contains(log, "new="+f2) {
		t.Errorf("log lacks the key change:\n%s", log)
	}
	// Withdrawn: the next answer has no key.
	e.wkd.SetStatus(404)
	e.d.Discover(context.Background(), "alice@example.net", []string{"wkd"}, time.Now())
	if !strings.Contains(e.log.String(), `msg="discovered key withdrawn"`) {
		t.Errorf("log lacks the withdrawal:\n%s", e.log.String())
	}
}

// TestRefreshDue: an answer a message used (the message that fetched it
// counts) is looked up again in the background before it expires; one
// only `keys discover` fetched is not; "no key" answers expired for longer
// than negative_ttl are removed.
func TestRefreshDue(t *testing.T) {
	e := newEnv(t, nil)
	for _, l := range []string{"alice", "bob"} {
		k, _ := pgpKey(t, l+"@example.net", nil)
		e.wkd.Publish(l+"@example.net", k, discovertest.Advanced, WKDHash(l))
	}
	now := time.Now()
	e.lookup(t, "alice@example.net", "wkd", now)
	e.d.Discover(context.Background(), "bob@example.net", []string{"wkd"}, now)
	e.lookup(t, "nobody@example.net", "wkd", now)
	negative := filepath.Join(e.dir, "nobody@example.net.wkd.json")
	before := len(e.wkd.Requests())
	e.d.RefreshDue(context.Background(), now.Add(90*time.Minute))
	if n := len(e.wkd.Requests()); n != before {
		t.Fatalf("refreshed %d requests early", n-before)
	}
	if _, err := os.Stat(negative); err != nil {
		t.Fatalf("negative answer removed before negative_ttl past its expiry: %v", err)
	}
	later := now.Add(23 * time.Hour)
	e.d.RefreshDue(context.Background(), later)
	keyRequests := func(reqs []string) (out []string) {
		for _, r := range reqs {
			if strings.Contains(r, "/hu/") {
				out = append(out, r)
			}
		}
		return out
	}
	refreshed := keyRequests(e.wkd.Requests()[before:])
	if len(refreshed) != 1 || !strings.Contains(refreshed[0], WKDHash("alice")) {
		t.Errorf("refreshed %v, want alice's key only", refreshed)
	}
	if _, err := os.Stat(negative); err == nil {
		t.Error("a negative answer expired for longer than negative_ttl was kept")
	}
	// The refreshed answer is fresh for another cache_ttl; unused since,
	// it is not refreshed again.
	before = len(e.wkd.Requests())
	e.d.RefreshDue(context.Background(), later.Add(23*time.Hour))
	if r := keyRequests(e.wkd.Requests()[before:]); len(r) != 0 {
		t.Errorf("refreshed again without use: %v", r)
	}
	if a := e.lookup(t, "alice@example.net", "wkd", later.Add(20*time.Hour)); !a.Cached {
		t.Errorf("refreshed answer: %+v", a)
	}
}

// TestEntriesRemove: what `keys list` and `keys remove` see.
func TestEntriesRemove(t *testing.T) {
	e := newEnv(t, nil)
	key, fpr := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	cert := smimeCert(t, "dana@example.com", x509.KeyUsageKeyEncipherment, nil, nil)
	e.dns.SMIMEA("dana@example.com", usageDANEEE, cert.Raw, true)
	e.lookup(t, "alice@example.net", "wkd", time.Now())
	e.lookup(t, "dana@example.com", "dane", time.Now())
	e.lookup(t, "nobody@example.net", "wkd", time.Now())
	ents, errs := Entries(e.opts, time.Now())
	if len(errs) != 0 || len(ents) != 2 {
		t.Fatalf("entries %+v %v", ents, errs)
	}
	if g := ents[0]; g.Kind != "discovered" || g.Source != "wkd" || g.Protocol != "openpgp" || g.Fingerprint != fpr || !g.Usable ||
		g.File != "discovered/alice@example.net.wkd.json" || g.Addresses[0] != "alice@example.net" {
		t.Errorf("entry %+v", g)
	}
	if g := ents[1]; g.Source != "dane" || g.Protocol != "smime" || !g.Usable || g.Expires == nil {
		t.Errorf("entry %+v", g)
	}
	if ents, _ := Entries(e.opts, cert.NotAfter.Add(time.Hour)); ents[1].Usable || !strings.Contains(ents[1].Reason, "expired") {
		t.Errorf("after the certificate expired: %+v", ents[1])
	}
	removed, err := Remove(e.dir, strings.ToLower(fpr))
	if err != nil || len(removed) != 1 || removed[0] != "discovered/alice@example.net.wkd.json" {
		t.Fatalf("Remove by fingerprint: %v %v", removed, err)
	}
	removed, err = Remove(e.dir, "DANA@example.COM")
	if err != nil || len(removed) != 0 {
		t.Fatalf("Remove matches the local part exactly: %v %v", removed, err)
	}
	if removed, _ = Remove(e.dir, "dana@example.COM"); len(removed) != 1 {
		t.Fatalf("Remove by address: %v", removed)
	}
	if ents, _ := Entries(e.opts, time.Now()); len(ents) != 0 {
		t.Errorf("left: %+v", ents)
	}
}

// TestCacheWriteFailure: an unwritable cache is logged; the answer is
// still given.
func TestCacheWriteFailure(t *testing.T) {
	e := newEnv(t, nil)
	// A file where the directory should be: even root cannot write there.
	if err := os.WriteFile(e.dir, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	key, _ := pgpKey(t, "alice@example.net", nil)
	e.wkd.Publish("alice@example.net", key, discovertest.Advanced, WKDHash("alice"))
	if a := e.lookup(t, "alice@example.net", "wkd", time.Now()); a.Status != Found {
		t.Fatalf("answer %+v", a)
	}
	if !strings.Contains(e.log.String(), "cannot cache the answer") {
		t.Errorf("not logged:\n%s", e.log.String())
	}
}

var pgpCfgLifetime = packet.Config{KeyLifetimeSecs: 3600}

func writeRecordFile(t *testing.T, file string, r *record) {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, b, 0o644); err != nil {
		t.Fatal(err)
	}
}
