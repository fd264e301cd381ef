package main

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/internal/config"
)

// TestServeExitStatusForSetupProblems: serve exits 78 (EX_CONFIG, the
// shipped unit's RestartPreventExitStatus) for a configuration that does
// not load, a fatal preflight finding and no usable gateway identity,
// before it listens on anything.
func TestServeExitStatusForSetupProblems(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	port := freePort(t)
	conf := func(keystore, host, identity string) string {
		c := "keystore = \"" + keystore + "\"\nhostname = \"" + host + "\"\nlisten = [\"inet:127.0.0.1:" + itoa(port) + "\"]\n"
		if identity != "" {
			c += "[identity]\naddresses = [\"" + identity + "\"]\n"
		}
		return c + "[outbound]\npolicy = \"none\"\n[direction]\ninternal_hosts = []\n"
	}
	ks := filepath.Join(dir, "keys")
	other := write("other.toml", conf(ks, "mx.example.org", "other@example.org"))
	var out, errb bytes.Buffer
	if code := run([]string{"keys", "-c", other, "init", "other@example.org"}, nil, &out, &errb); code != 0 {
		t.Fatalf("keys init: %d %s", code, errb.String())
	}
	cases := []struct {
		name, config, want string
		env                map[string]string
		chdir              string
	}{
		{name: "unknown key", config: "keystore = \"" + ks + "\"\nbogus = 1\n", want: `unknown key "bogus"`},
		{name: "relative keystore under systemd", config: conf("cryptmilter-data", "mx.example.org", ""),
			env: map[string]string{"INVOCATION_ID": "0123"}, chdir: "/", want: "the working directory is /"},
		{name: "no usable identity", config: conf(ks, "mx.example.org", "rt@example.org"),
			want: "no usable gateway identity: rt@example.org"},
		{name: "unqualified host name", config: conf(filepath.Join(dir, "empty"), "gateway", ""),
			want: `the host name "gateway" is not a qualified domain name`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := write(strings.ReplaceAll(c.name, " ", "-")+".toml", c.config)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			if c.chdir != "" {
				t.Chdir(c.chdir)
			}
			var out, errb bytes.Buffer
			code := run([]string{"serve", "-c", f}, nil, &out, &errb)
			if code != exitConfig {
				t.Errorf("serve exit status %d, want %d (EX_CONFIG)\n%s", code, exitConfig, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Errorf("serve said\n%s\nwant %q", errb.String(), c.want)
			}
			if dialable("127.0.0.1:" + itoa(port)) {
				t.Error("serve listened before refusing to start")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "empty", "private")); err == nil {
		t.Error("a refused first start created a gateway identity")
	}
}

// TestSocketGroupMembership: a daemon that is not root can give its unix
// sockets only to a group it is in.
func TestSocketGroupMembership(t *testing.T) {
	cfg := config.Default()
	cfg.Keystore = t.TempDir()
	cfg.Listen = []string{"unix:" + filepath.Join(cfg.Keystore, "m.sock")}
	cfg.SocketGroup = "root"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	got := checkSocketGroup(cfg, preflightEnv{euid: 12345, gids: []int{12345}})
	if len(got) != 1 || !got[0].fatal || !strings.Contains(got[0].msg, `socket_group "root": this user (12345) is not in that group`) || !strings.Contains(got[0].fix, "adduser 12345 root") {
		t.Errorf("non-member: %+v", got)
	}
	if got := checkSocketGroup(cfg, preflightEnv{euid: 12345, gids: []int{0}}); len(got) != 0 {
		t.Errorf("member: %+v", got)
	}
	if got := checkSocketGroup(cfg, preflightEnv{euid: 0}); len(got) != 0 {
		t.Errorf("root: %+v", got)
	}
	if got := checkSocketGroup(cfg, preflightEnv{euid: 12345, activated: true}); len(got) != 0 {
		t.Errorf("socket activation (systemd sets the group): %+v", got)
	}
}

// TestReinjectOnlyWarnsAtStart: without reinject, serve -n fails but the
// daemon starts (a message that needs copies is tempfailed, the others
// flow); the embedded default (a trial) only warns.
func TestReinjectOnlyWarnsAtStart(t *testing.T) {
	cfg := config.Default()
	cfg.File = "c.toml"
	got := checkReinject(cfg)
	if len(got) != 1 || !got[0].stops(true) || got[0].stops(false) {
		t.Errorf("with a file: %+v (stops -n %v, start %v)", got, got[0].stops(true), got[0].stops(false))
	}
	cfg.File = ""
	if got := checkReinject(cfg); len(got) != 1 || got[0].stops(true) {
		t.Errorf("embedded default: %+v", got)
	}
	cfg.Outbound.Reinject = "inet:127.0.0.1:10026"
	if got := checkReinject(cfg); len(got) != 0 {
		t.Errorf("with reinject: %+v", got)
	}
}

func TestMayNeedCopies(t *testing.T) {
	for _, c := range []struct {
		policy string
		rules  []string
		want   bool
	}{
		{"none", nil, false},
		{"sign-only", nil, false},
		{"sign-only", []string{"sign-only"}, false},
		{"opportunistic", nil, true},
		{"required", nil, true},
		{"none", []string{"sign-only"}, true},
		{"sign-only", []string{"required"}, true},
	} {
		cfg := config.Default()
		if err := cfg.Outbound.Policy.UnmarshalText([]byte(c.policy)); err != nil {
			t.Fatal(err)
		}
		for _, r := range c.rules {
			rule := config.Rule{Match: "*"}
			if err := rule.Policy.UnmarshalText([]byte(r)); err != nil {
				t.Fatal(err)
			}
			cfg.Outbound.Rules = append(cfg.Outbound.Rules, rule)
		}
		if got := mayNeedCopies(cfg); got != c.want {
			t.Errorf("policy %s rules %v: mayNeedCopies %v, want %v", c.policy, c.rules, got, c.want)
		}
	}
}

func TestQualified(t *testing.T) {
	for host, want := range map[string]bool{
		"mx.example.org": true, "vm": false, "localhost": false, "localhost.localdomain": false,
		"vm.localdomain": false, "mail.localhost": false, "a.b": true,
	} {
		if got := qualified(host); got != want {
			t.Errorf("qualified(%q) = %v, want %v", host, got, want)
		}
	}
}

func TestInternalHostsLoopback(t *testing.T) {
	cfg := config.Default()
	for _, c := range []struct {
		hosts []string
		warn  bool
	}{
		{[]string{"127.0.0.0/8", "::1"}, true},
		{[]string{"10.0.0.0/8", "::1"}, true},
		{[]string{"0.0.0.0/0"}, true},
		{[]string{"10.0.0.0/8", "192.0.2.1"}, false},
		{nil, false},
	} {
		cfg.Direction.InternalHosts = c.hosts
		cfg.InternalNets = nil
		for _, h := range c.hosts {
			cfg.InternalNets = append(cfg.InternalNets, netip.MustParsePrefix(prefixOf(h)))
		}
		if got := checkInternalHosts(cfg); (len(got) > 0) != c.warn {
			t.Errorf("internal_hosts %v: %+v, want warning %v", c.hosts, got, c.warn)
		}
	}
}

func prefixOf(h string) string {
	if strings.Contains(h, "/") {
		return h
	}
	if strings.Contains(h, ":") {
		return h + "/128"
	}
	return h + "/32"
}

func itoa(n int) string { return strconv.Itoa(n) }

func dialable(addr string) bool {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return false
	}
	c.Close()
	return true
}

// TestDecryptErrorCBCNote: on_decrypt_error = reject or tempfail gets a
// warning that CBC EnvelopedData failures are tagged all the same (a
// padding oracle otherwise); tag and quarantine get none.
func TestDecryptErrorCBCNote(t *testing.T) {
	for a, want := range map[crypto.Action]bool{crypto.Accept: false, crypto.Quarantine: false, crypto.Reject: true, crypto.Tempfail: true} {
		cfg := config.Default()
		cfg.Actions.OnDecryptError = a
		got := checkDecryptErrorCBC(cfg)
		if (len(got) == 1) != want || len(got) == 1 && (got[0].fatal || got[0].stops(true) || !strings.Contains(got[0].msg, "padding oracle")) {
			t.Errorf("on_decrypt_error = %v: %+v", a, got)
		}
	}
}

// TestAllowedUIDs: listen_users names (unknown ones skipped) and uids,
// and always the daemon's own user; "*" turns the check off.
func TestAllowedUIDs(t *testing.T) {
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	allow := allowedUIDs([]string{"root", "no-such-user-here", "4242"}, log)
	for uid, want := range map[uint32]bool{0: true, 4242: true, uint32(os.Getuid()): true, 65534: false, 4243: false} {
		if allow(uid) != want {
			t.Errorf("uid %d allowed = %v, want %v", uid, !want, want)
		}
	}
	if allowedUIDs([]string{"postfix", "*"}, log) != nil {
		t.Error(`"*" still checks users`)
	}
}
