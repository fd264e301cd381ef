package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestObserveAndScrape(t *testing.T) {
	m := New()
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
	if strings.Contains(scrape(t, New()), "cryptmilter_messages_total{") {
		t.Error("a new Metrics starts with counts")
	}
}

func scrape(t *testing.T, m *Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func TestDiscoveryMetrics(t *testing.T) {
	m := New()
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
