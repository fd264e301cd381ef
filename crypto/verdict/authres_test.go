package verdict

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"
)

const ourID = "mx.example.org"

// arCases are Authentication-Results values with whether they claim
// ourID.
var arCases = []struct {
	value  string
	claims bool
}{
	{"mx.example.org; smime=pass", true},
	{"MX.Example.ORG; smime=pass", true},
	{"mx.example.org.; smime=pass", true},
	{"(c; d) mx.example.org; smime=pass", true},
	{"(nested (c; x) ;) mx.example.org; smime=pass", true},
	{"(esc \\) ;) mx.example.org; smime=pass", true},
	{`"mx.example.org"; smime=pass`, true},
	{`"mx.exa\mple.org"; smime=pass`, true},
	{"mx.example.org 1; smime=pass", true},
	{"mx.example.org (c) 1 (c); smime=pass", true},
	{"mx.example.org(c)1; none", true},
	{"  mx.example.org\r\n ; smime=pass", true},
	{"\r\n mx.example.org;\r\n smime=pass", true},
	{"mx.example.org; none", true},
	{"mx.example.org", true},
	{"mx.example.org;", true},
	{"mx.example.org x; smime=pass", true},
	{"mx.example.org/x; smime=pass", true},
	{"=?utf-8?q?mx.example.org?=; smime=pass", true},
	{"=?utf-8?b?bXguZXhhbXBsZS5vcmc=?=; smime=pass", true},
	{"(unterminated mx.example.org; smime=pass", true},
	{"mx.example.org\x00; smime=pass", true},
	{"other.example x mx.example.org; smime=pass", true},
	{"other.example; smime=pass", false},
	{"other.example (mx.example.org;) ; spf=pass", false},
	{"other.example; spf=pass smtp.mailfrom=x@mx.example.org", false},
	{"other.example; spf=pass smtp.helo=mx.example.org", false},
	{"mx.example.org.evil; smime=pass", false},
	{"xmx.example.org; smime=pass", false},
	{"other.example 1; none", false},
	{`"other.example"; none`, false},
	{"(mx.example.org) other.example; none", false},
}

func TestClaimsAuthservID(t *testing.T) {
	for _, c := range arCases {
		if got := ClaimsAuthservID(c.value, ourID); got != c.claims {
			id, ok := AuthservID(c.value)
			t.Errorf("ClaimsAuthservID(%q) = %v, want %v (AuthservID = %q, %v)", c.value, got, c.claims, id, ok)
		}
	}
	if ClaimsAuthservID("mx.example.org; none", "") {
		t.Error("an empty own id is claimed")
	}
}

func TestAuthservID(t *testing.T) {
	for _, tt := range []struct {
		in, id string
		ok     bool
	}{
		{"mx.example.org; smime=pass", "mx.example.org", true},
		{"(a;b) mx.example.org 1 (v); none", "mx.example.org", true},
		{`"quoted \"id\"" ; none`, `quoted "id"`, true},
		{"mx.example.org", "mx.example.org", true},
		{"mx.example.org 1x; none", "", false},
		{"mx.example.org/x; none", "", false},
		{"(open; none", "", false},
		{`"open; none`, "", false},
		{"; none", "", false},
		{"", "", false},
	} {
		id, ok := AuthservID(tt.in)
		if id != tt.id || ok != tt.ok {
			t.Errorf("AuthservID(%q) = %q, %v; want %q, %v", tt.in, id, ok, tt.id, tt.ok)
		}
	}
}

// needPeer skips the test when a peer program is missing, or fails it under
// CRYPTMILTER_REQUIRE_PEERS=1 (make test).
func needPeer(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
		t.Fatal(msg + " (CRYPTMILTER_REQUIRE_PEERS=1)")
	}
	t.Skip(msg)
}

// TestClaimsAuthservIDPeers reads every value with python3-authres and
// Mail::AuthenticationResults: wherever either reads ourID, the value
// claims it.
func TestClaimsAuthservIDPeers(t *testing.T) {
	if out, err := exec.Command("/usr/bin/python3", "-c", "import authres").CombinedOutput(); err != nil {
		needPeer(t, "python3-authres is not installed (Debian package python3-authres): "+strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("perl", "-MMail::AuthenticationResults::Parser", "-MJSON::PP", "-e1").CombinedOutput(); err != nil {
		needPeer(t, "Mail::AuthenticationResults is not installed (Debian package libmail-authenticationresults-perl): "+strings.TrimSpace(string(out)))
	}
	var in bytes.Buffer
	for _, c := range arCases {
		in.WriteString(c.value + "\n\x00\n")
	}
	read := func(name string, args ...string) []map[string]string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Stdin = bytes.NewReader(in.Bytes())
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, stderr.String())
		}
		lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
		if len(lines) != len(arCases) {
			t.Fatalf("%s printed %d readings for %d values", name, len(lines), len(arCases))
		}
		var res []map[string]string
		for _, l := range lines {
			var m map[string]string
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%s: %v: %s", name, err, l)
			}
			res = append(res, m)
		}
		return res
	}
	py := read("pyauthres.py", "/usr/bin/python3", "testdata/peers/pyauthres.py")
	pl := read("mailauthresults.pl", "perl", "testdata/peers/mailauthresults.pl")
	claimedBy := map[string]int{}
	for i, c := range arCases {
		for name, r := range map[string]map[string]string{"python3-authres": py[i], "Mail::AuthenticationResults": pl[i]} {
			id, ok := r["id"]
			if !ok || normID(id) != ourID {
				continue
			}
			claimedBy[name]++
			if !ClaimsAuthservID(c.value, ourID) {
				t.Errorf("%s reads authserv-id %q from %q, but ClaimsAuthservID is false", name, id, c.value)
			}
		}
		t.Logf("%-50q python=%v perl=%v claims=%v", c.value, py[i], pl[i], ClaimsAuthservID(c.value, ourID))
	}
	for _, name := range []string{"python3-authres", "Mail::AuthenticationResults"} {
		if claimedBy[name] == 0 {
			t.Errorf("%s read our id from no value: it is not being run right", name)
		}
	}
}

func FuzzClaimsAuthservID(f *testing.F) {
	for _, c := range arCases {
		f.Add(c.value)
	}
	f.Fuzz(func(t *testing.T, v string) {
		claims := ClaimsAuthservID(v, ourID)
		if id, ok := AuthservID(v); ok && normID(id) == ourID && !claims {
			t.Fatalf("%q: AuthservID reads our id but ClaimsAuthservID is false", v)
		}
		// Whatever precedes our id, a value that ends in it followed by
		// a result is claimed when it does not parse otherwise.
		forged := v + " " + ourID + "; smime=pass"
		if _, ok := AuthservID(forged); !ok && !ClaimsAuthservID(forged, ourID) {
			t.Fatalf("%q does not parse and names our id, but is not claimed", forged)
		}
	})
}
