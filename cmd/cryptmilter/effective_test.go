package main

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

const effectiveTOML = `keystore = "/var/lib/cryptmilter"
listen = ["unix:/var/spool/postfix/cryptmilter/milter.sock", "inet:127.0.0.1:8895"]
hostname = "mx.example.org"
[keyring.pin]
"alice@example.org" = "0123456789ABCDEF0123456789ABCDEF01234567"
[inbound]
on_decrypt_error = "tempfail"
[outbound]
reinject = "inet:127.0.0.1:10026"
[[outbound.rule]]
match = "@partner.example"
policy = "required"
[[outbound.rule]]
match = "bob@example.net"
policy = "sign-only"
min_trust = "manual"
`

func loadEffective(t *testing.T) *config.Config {
	t.Helper()
	f := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(f, []byte(effectiveTOML), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func logged(cfg *config.Config) string {
	var b bytes.Buffer
	h := slog.Handler(slog.NewTextHandler(&b, nil))
	if cfg.Log.Format == config.LogJSON {
		h = slog.NewJSONHandler(&b, nil)
	}
	logEffective(slog.New(h), cfg)
	return b.String()
}

// TestEffectiveConfigText: in text logs every key is written under its
// TOML name, unescaped, lists joined by commas, rules numbered, one line
// for the top-level keys and one per table; the old alias and unset
// values are left out.
func TestEffectiveConfigText(t *testing.T) {
	logs := logged(loadEffective(t))
	lines := strings.Split(strings.TrimSpace(logs), "\n")
	tables := []string{"", "log", "keyring", "identity", "inbound", "outbound", "actions", "direction", "limits", "metrics", "discovery"}
	if len(lines) != len(tables) {
		t.Fatalf("%d lines, want one for the top-level keys and one per table %v:\n%s", len(lines), tables[1:], logs)
	}
	for i, l := range lines {
		if !strings.Contains(l, `msg="effective configuration"`) || i > 0 && !strings.Contains(l, "msg=\"effective configuration\" "+tables[i]+".") {
			t.Errorf("line %d is not table %q's: %s", i+1, tables[i], l)
		}
	}
	fields := map[string]bool{}
	for _, f := range strings.Fields(logs) {
		fields[f] = true
	}
	for _, want := range []string{
		"keystore=/var/lib/cryptmilter",
		"listen=unix:/var/spool/postfix/cryptmilter/milter.sock,inet:127.0.0.1:8895",
		"hostname=mx.example.org",
		"keyring.pin.alice@example.org=0123456789ABCDEF0123456789ABCDEF01234567",
		"keyring.watch=true",
		"actions.on_decrypt_error=tempfail",
		"outbound.policy=opportunistic",
		"outbound.reinject=inet:127.0.0.1:10026",
		"outbound.rule.1.match=@partner.example",
		"outbound.rule.1.policy=required",
		"outbound.rule.2.min_trust=manual",
		"direction.internal_hosts=[]",
		"limits.max_message_size=50MiB",
		`metrics.listen=""`,
		"discovery.timeout=3s",
	} {
		if !fields[want] {
			t.Errorf("the log lacks %s:\n%s", want, logs)
		}
	}
	line := logs
	for _, bad := range []string{`\"`, "invalid(", "inbound.on_decrypt_error", "rule.1.min_trust", "Keystore"} {
		if strings.Contains(line, bad) {
			t.Errorf("the line has %q:\n%s", bad, line)
		}
	}
}

// TestEffectiveConfigJSON: in JSON logs it is a real nested object.
func TestEffectiveConfigJSON(t *testing.T) {
	cfg := loadEffective(t)
	cfg.Log.Format = config.LogJSON
	line := logged(cfg)
	if n := strings.Count(line, "\n"); n != 1 {
		t.Errorf("%d lines, want 1:\n%s", n, line)
	}
	var got struct {
		Effective struct {
			Keystore string   `json:"keystore"`
			Listen   []string `json:"listen"`
			Keyring  struct {
				Pin map[string]string `json:"pin"`
			} `json:"keyring"`
			Inbound  map[string]any `json:"inbound"`
			Outbound struct {
				Policy string           `json:"policy"`
				Rule   []map[string]any `json:"rule"`
			} `json:"outbound"`
			Direction struct {
				InternalHosts []string `json:"internal_hosts"`
			} `json:"direction"`
			Limits map[string]any `json:"limits"`
		} `json:"effective"`
	}
	if err := json.Unmarshal([]byte(line), &got); err != nil {
		t.Fatalf("%v:\n%s", err, line)
	}
	e := got.Effective
	if e.Keystore != "/var/lib/cryptmilter" || len(e.Listen) != 2 || e.Listen[1] != "inet:127.0.0.1:8895" ||
		e.Keyring.Pin["alice@example.org"] == "" || e.Outbound.Policy != "opportunistic" ||
		e.Direction.InternalHosts == nil || len(e.Direction.InternalHosts) != 0 {
		t.Errorf("effective %+v\n%s", e, line)
	}
	if len(e.Outbound.Rule) != 2 || e.Outbound.Rule[0]["match"] != "@partner.example" || e.Outbound.Rule[1]["min_trust"] != "manual" {
		t.Errorf("rules %v", e.Outbound.Rule)
	}
	if _, ok := e.Outbound.Rule[0]["min_trust"]; ok {
		t.Errorf("unset min_trust written: %v", e.Outbound.Rule[0])
	}
	if _, ok := e.Inbound["on_decrypt_error"]; ok || e.Inbound["rt_headers"] != false {
		t.Errorf("inbound %v", e.Inbound)
	}
	if e.Limits["max_concurrent"] != float64(0) {
		t.Errorf("limits %v", e.Limits)
	}
}
