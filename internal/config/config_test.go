package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/cryptmilter/cryptmilter/crypto"
)

// TestBadConfigs is the bad-config suite: each testdata/bad/NAME.toml must
// fail with an error containing testdata/bad/NAME.err.
func TestBadConfigs(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no bad configs found: %v", err)
	}
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), ".toml")
		t.Run(name, func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".toml") + ".err")
			if err != nil {
				t.Fatal(err)
			}
			_, err = Load(f)
			if err == nil {
				t.Fatalf("Load(%s) succeeded, want error containing %q", f, want)
			}
			// Every message names the file and, after it, the problem.
			prefix := "config: " + f + ":"
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
			if w := strings.TrimSpace(string(want)); !strings.Contains(err.Error(), w) {
				t.Errorf("error %q\ndoes not contain %q", err, w)
			}
		})
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load("")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Socket{{Network: "tcp", Address: "127.0.0.1:8895", Spec: DefaultListen}}, c.Sockets); diff != "" {
		t.Errorf("default sockets (-want +got):\n%s", diff)
	}
	if c.Keystore != "./cryptmilter-data" || c.SpoolDir() != "cryptmilter-data/.spool" {
		t.Errorf("keystore %q spool %q", c.Keystore, c.SpoolDir())
	}
	if c.Outbound.Policy != crypto.Opportunistic || c.Actions.OnDecryptError != crypto.Accept || !c.Outbound.ProtectHeaders {
		t.Errorf("policy defaults: %+v %+v", c.Outbound, c.Inbound)
	}
	if c.Hostname == "" {
		t.Error("hostname not filled in")
	}
}

// TestContribExample checks that contrib/cryptmilter.toml, with every line
// uncommented, parses and equals the defaults: it lists every key at its
// default value.
func TestContribExample(t *testing.T) {
	data, err := os.ReadFile("../../contrib/cryptmilter.toml")
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		// Uncomment settings ("#key = v", "#[table]") but not prose.
		if s, ok := strings.CutPrefix(l, "#"); ok && s != "" && s[0] != ' ' {
			l = s
		}
		lines = append(lines, l)
	}
	doc := strings.Join(lines, "\n")
	// The example rule and pin show the syntax; they are not defaults.
	got, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("uncommented contrib/cryptmilter.toml: %v", err)
	}
	want := Default()
	if err := want.finish(nil); err != nil {
		t.Fatal(err)
	}
	got.Outbound.Rules = nil
	want.Outbound.Rules = nil
	delete(got.Keyring.Pin, "bob@example.net")
	prefixEq := cmp.Comparer(func(a, b netip.Prefix) bool { return a == b })
	if diff := cmp.Diff(want, got, prefixEq, cmpopts.IgnoreUnexported(Config{})); diff != "" {
		t.Errorf("contrib/cryptmilter.toml differs from the defaults (-want +got):\n%s", diff)
	}
	// Every field of the defaults appears in the example.
	for _, key := range []string{"keystore", "listen", "hostname", "socket_mode", "socket_group", "spool", "drain_timeout",
		"format", "level", "fold_local_part", "service_group", "watch", "addresses", "on_decrypt_error", "on_no_key",
		"on_limits", "on_malformed", "on_internal_error", "rt_headers",
		"keep_original", "unwrap_signed", "allow_sha1", "exact_local_part", "policy", "prefer", "split", "reinject", "sign_as",
		"protect_headers", "header_confidentiality", "defer_rcpt", "originating_daemons", "internal_hosts", "authenticated",
		"max_message_size", "max_mime_depth", "max_parts", "max_header_size", "max_decompressed_size",
		"message_timeout", "memory_spool", "max_concurrent", "sources", "resolver", "ca_file", "timeout",
		"cache_ttl", "negative_ttl", "min_trust", "idle_timeout", "max_connections", "reinject_journal_ttl"} {
		if !strings.Contains(doc, "\n"+key+" = ") {
			t.Errorf("contrib/cryptmilter.toml lacks %q", key)
		}
	}
}

func TestParseValues(t *testing.T) {
	doc := `
keystore = "/tmp"
listen = ["unix:/run/cm/milter.sock", "inet:[::1]:8895", "inet6:[::1]:8896", "inet:8897@127.0.0.1"]
hostname = "mx.example.org"
[identity]
addresses = ["rt@example.org"]
[outbound]
policy = "required"
[[outbound.rule]]
match = "@partner.example"
policy = "sign-only"
[[outbound.rule]]
match = "*"
policy = "none"
[direction]
internal_hosts = ["10.0.0.0/8", "192.0.2.1"]
[limits]
max_message_size = 1048576
memory_spool = "64KiB"
message_timeout = "5s"
`
	c, err := Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	wantSockets := []Socket{
		{"unix", "/run/cm/milter.sock", "unix:/run/cm/milter.sock"},
		{"tcp", "[::1]:8895", "inet:[::1]:8895"},
		{"tcp", "[::1]:8896", "inet6:[::1]:8896"},
		{"tcp", "127.0.0.1:8897", "inet:8897@127.0.0.1"},
	}
	if diff := cmp.Diff(wantSockets, c.Sockets); diff != "" {
		t.Errorf("sockets (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]Rule{{Match: "@partner.example", Policy: crypto.SignOnly}, {Match: "*", Policy: crypto.NoCrypto}}, c.Outbound.Rules); diff != "" {
		t.Errorf("rules (-want +got):\n%s", diff)
	}
	if c.Limits.MaxMessageSize != 1<<20 || c.Limits.MemorySpool != 64<<10 || c.Limits.MessageTimeout.D() != 5*time.Second {
		t.Errorf("limits: %+v", c.Limits)
	}
	if len(c.InternalNets) != 2 || c.InternalNets[1].Bits() != 32 {
		t.Errorf("internal nets: %v", c.InternalNets)
	}
	// Lists replace the defaults: originating_daemons keeps its default.
	if diff := cmp.Diff([]string{"ORIGINATING"}, c.Direction.OriginatingDaemons); diff != "" {
		t.Errorf("originating_daemons (-want +got):\n%s", diff)
	}
}

func FuzzParse(f *testing.F) {
	files, _ := filepath.Glob("testdata/bad/*.toml")
	for _, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(b)
	}
	ex, _ := os.ReadFile("../../contrib/cryptmilter.toml")
	f.Add(ex)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err == nil && (len(c.Sockets) == 0 || c.Limits.MaxMessageSize <= 0) {
			t.Fatalf("accepted an invalid config: %+v", c)
		}
	})
}
