package e2e

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestRenderSettings(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string
	}{
		{
			name:  "top level first, tables in order",
			lines: []string{`log.level = "debug"`, `keystore = "/k"`, `direction.internal_hosts = []`, `log.format = "json"`},
			want:  "keystore = \"/k\"\n\n[log]\nlevel = \"debug\"\nformat = \"json\"\n\n[direction]\ninternal_hosts = []\n",
		},
		{
			name:  "later replaces earlier",
			lines: []string{`outbound.policy = "opportunistic"`, `outbound.reinject = "inet:127.0.0.1:1"`, `outbound.policy = "none"`},
			want:  "\n[outbound]\npolicy = \"none\"\nreinject = \"inet:127.0.0.1:1\"\n",
		},
		{
			name:  "dotted key inside a table",
			lines: []string{`keyring.pin."bob@example.net" = "ABCD"`},
			want:  "\n[keyring]\npin.\"bob@example.net\" = \"ABCD\"\n",
		},
		{
			name:  "value with an equals sign",
			lines: []string{`outbound.sign_as = "a=b@example.org"`},
			want:  "\n[outbound]\nsign_as = \"a=b@example.org\"\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := renderSettings(tt.lines)
			if err != nil {
				t.Fatal(err)
			}
			if d := cmp.Diff(tt.want, got); d != "" {
				t.Errorf("(-want +got):\n%s", d)
			}
		})
	}
	if _, err := renderSettings([]string{"no equals sign"}); err == nil {
		t.Error("a line without = was accepted")
	}
}

func TestParseMail(t *testing.T) {
	m, err := parseMail([]byte("A: 1\r\nB-Folded: x\r\n\ty\r\nC:\r\n\r\nbody\r\n\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := []Field{
		{Name: "A", Value: "1", Raw: "A: 1"},
		{Name: "B-Folded", Value: "x\n\ty", Raw: "B-Folded: x\n\ty"},
		{Name: "C", Value: "", Raw: "C:"},
	}
	if d := cmp.Diff(want, m.Header); d != "" {
		t.Errorf("header (-want +got):\n%s", d)
	}
	if d := cmp.Diff("body\n\n", string(m.Body)); d != "" {
		t.Errorf("body (-want +got):\n%s", d)
	}
	for _, bad := range []string{"no colon\n\nbody", "A: 1\n", " leading: blank\n\n"} {
		if _, err := parseMail([]byte(bad)); err == nil {
			t.Errorf("parseMail(%q) accepted", bad)
		}
	}
}
