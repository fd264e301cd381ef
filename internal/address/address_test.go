package address

import "testing"

func TestCanonical(t *testing.T) {
	for _, tc := range []struct {
		in   string
		fold bool
		want string
	}{
		{"alice@example.net", false, "alice@example.net"},
		{"<alice@example.net>", false, "alice@example.net"},
		{" <Alice@Example.NET.> ", false, "Alice@example.net"},
		{"Alice@Example.NET", true, "alice@example.net"},
		{`"alice"@example.net`, false, "alice@example.net"},
		{`"al\ice"@example.net`, false, "alice@example.net"},
		{`"alice.smith"@example.net`, false, "alice.smith@example.net"},
		{`"alice smith"@example.net`, false, `"alice smith"@example.net`},
		{`"a\"b"@example.net`, false, `"a\"b"@example.net`},
		{"bob@bücher.example", false, "bob@xn--bcher-kva.example"},
		{"bob@XN--BCHER-KVA.example", false, "bob@xn--bcher-kva.example"},
		{"bob@[192.0.2.1]", false, "bob@[192.0.2.1]"},
		{"bob@[IPv6:2001:DB8::1]", false, "bob@[ipv6:2001:db8::1]"},
		{"not-an-address", false, ""},
		{"@example.net", false, ""},
		{"bob@", false, ""},
	} {
		if got := Canonical(tc.in, tc.fold); got != tc.want {
			t.Errorf("Canonical(%q, %v) = %q, want %q", tc.in, tc.fold, got, tc.want)
		}
	}
}
