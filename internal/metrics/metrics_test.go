package metrics

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestObserveAndScrape(t *testing.T) {
	m := New("test")
	m.Observe("in", "decrypted", "accept", 30*time.Millisecond)
	m.Observe("in", "decrypted", "accept", 10*time.Millisecond)
	m.Observe("out", "passed", "accept", time.Millisecond)
	srv := httptest.NewServer(m.Handler())
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	body := string(b)
	for _, want := range []string{
		`cryptmilter_messages_total{action="accept",decision="decrypted",direction="in"} 2`,
		`cryptmilter_messages_total{action="accept",decision="passed",direction="out"} 1`,
		`cryptmilter_message_duration_seconds_count{direction="in"} 2`,
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Two sets of metrics do not share state.
	if strings.Contains(scrape(t, New("test")), "cryptmilter_messages_total{") {
		t.Error("a new Metrics starts with counts")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestDiscoveryMetrics(t *testing.T) {
	m := New("test")
	m.DiscoveryLookup("wkd", "found")
	m.DiscoveryLookup("wkd", "found")
	m.DiscoveryLookup("dane", "tempfail")
	m.DiscoveryCache("wkd", "hit")
	body := scrape(t, m)
	for _, want := range []string{
		`cryptmilter_discovery_lookups_total{result="found",source="wkd"} 2`,
		`cryptmilter_discovery_lookups_total{result="tempfail",source="dane"} 1`,
		`cryptmilter_discovery_cache_total{result="hit",source="wkd"} 1`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestMilterHooks: the counters the milter drives (re-injection, slot
// wait, messages in flight) and build_info.
func TestMilterHooks(t *testing.T) {
	m := New("1.2.3")
	m.Reinject(nil)
	m.Reinject(nil)
	m.Reinject(errors.New("refused"))
	m.SlotWait(2 * time.Millisecond)
	m.SlotWait(0)
	m.MessagesInFlight(1)
	m.MessagesInFlight(1)
	m.MessagesInFlight(-1)
	body := scrape(t, m)
	for _, want := range []string{
		"cryptmilter_reinject_attempts_total 3",
		"cryptmilter_reinject_failures_total 1",
		"cryptmilter_slot_wait_seconds_count 2",
		"cryptmilter_slot_wait_seconds_sum 0.002",
		"cryptmilter_messages_in_flight 1",
		`cryptmilter_build_info{version="1.2.3"} 1`,
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// TestKeyringAndHealth: the keyring gauges and cryptmilter_healthy are read
// from their sources at each scrape; every kind is exported, 0 when absent.
func TestKeyringAndHealth(t *testing.T) {
	m := New("test")
	if body := scrape(t, m); strings.Contains(body, "cryptmilter_keyring_") || strings.Contains(body, "cryptmilter_healthy") {
		t.Errorf("keyring or health metrics without a source:\n%s", body)
	}
	k := Keyring{Kinds: map[string]int{"public": 3, "secret": 1, "identity": 1}, LoadedAt: time.Unix(1700000000, 500000000), OK: true}
	healthy := true
	m.SetKeyring(func() Keyring { return k })
	m.SetHealth(func() bool { return healthy })
	body := scrape(t, m)
	for _, want := range []string{
		`cryptmilter_keyring_keys{kind="public"} 3`,
		`cryptmilter_keyring_keys{kind="secret"} 1`,
		`cryptmilter_keyring_keys{kind="identity"} 1`,
		`cryptmilter_keyring_keys{kind="certificate"} 0`,
		`cryptmilter_keyring_keys{kind="ca"} 0`,
		`cryptmilter_keyring_keys{kind="crl"} 0`,
		"cryptmilter_keyring_last_reload_timestamp_seconds 1.7000000005e+09",
		"cryptmilter_keyring_last_reload_success 1",
		"cryptmilter_healthy 1",
	} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("metrics lack %q", want)
		}
	}
	k.OK, healthy = false, false
	body = scrape(t, m)
	for _, want := range []string{"cryptmilter_keyring_last_reload_success 0", "cryptmilter_healthy 0"} {
		if !strings.Contains(body, want+"\n") {
			t.Errorf("after a failed reload: metrics lack %q", want)
		}
	}
}
