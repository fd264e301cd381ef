package mime

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The differential test: each case is read by this package, by MIME-tools
// (Perl, what Request Tracker uses, with RT's settings) and by Python's
// email package (compat32 and default policies). Wherever any of them
// reads another structure (number of parts, boundary, media types, a
// decoded body), Ambiguity must report the message, so that cryptmilter
// never vouches for it.

// needPeer skips the test when a peer program is missing, or fails it under
// CRYPTMILTER_REQUIRE_PEERS=1 (make test).
func needPeer(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
		t.Fatal(msg + " (CRYPTMILTER_REQUIRE_PEERS=1)")
	}
	t.Skip(msg)
}

// peerPython returns a python3 whose email package is the Debian one
// (/usr/bin/python3 first: other python3 on PATH may lack Debian's
// modules), or "".
func peerPython() string {
	for _, p := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	return ""
}

// peerReadings runs the peer scripts over the messages and returns, per
// message, each peer's reading as canonical JSON.
func peerReadings(t *testing.T, msgs [][]byte) []map[string]string {
	t.Helper()
	if _, err := exec.LookPath("perl"); err != nil {
		needPeer(t, "perl is not installed (Debian package perl)")
	}
	if out, err := exec.Command("perl", "-MMIME::Parser", "-MJSON::PP", "-MDigest::SHA", "-e1").CombinedOutput(); err != nil {
		needPeer(t, "MIME-tools is not installed (Debian package libmime-tools-perl): "+strings.TrimSpace(string(out)))
	}
	py := peerPython()
	if py == "" {
		needPeer(t, "python3 is not installed (Debian package python3)")
	}
	dir := t.TempDir()
	var files []string
	for i, m := range msgs {
		f := filepath.Join(dir, fmt.Sprintf("%04d.eml", i))
		if err := os.WriteFile(f, m, 0o600); err != nil {
			t.Fatal(err)
		}
		files = append(files, f)
	}
	out := make([]map[string]string, len(msgs))
	for i := range out {
		out[i] = map[string]string{}
	}
	run := func(name string, cmd *exec.Cmd, each func(i int, line []byte)) {
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		stdout, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", name, err, stderr.String())
		}
		lines := bytes.Split(bytes.TrimRight(stdout, "\n"), []byte("\n"))
		if len(lines) != len(msgs) {
			t.Fatalf("%s printed %d readings for %d messages\n%s", name, len(lines), len(msgs), stderr.String())
		}
		for i, l := range lines {
			each(i, l)
		}
	}
	run("mimetools.pl", exec.Command("perl", append([]string{"testdata/peers/mimetools.pl"}, files...)...), func(i int, l []byte) {
		out[i]["mimetools"] = canonicalJSON(t, l)
	})
	run("pyemail.py", exec.Command(py, append([]string{"testdata/peers/pyemail.py"}, files...)...), func(i int, l []byte) {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(l, &m); err != nil {
			t.Fatalf("pyemail.py: %v: %s", err, l)
		}
		out[i]["python-compat32"] = canonicalJSON(t, m["compat32"])
		out[i]["python-default"] = canonicalJSON(t, m["default"])
	})
	return out
}

func canonicalJSON(t *testing.T, b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("peer output %q: %v", b, err)
	}
	c, _ := json.Marshal(v)
	return string(c)
}

// goShape is this package's reading in the peers' form.
func goShape(e *Entity) map[string]any {
	n := map[string]any{"type": e.MediaType}
	if e.IsMultipart() {
		if b, ok := e.Params["boundary"]; ok {
			n["boundary"] = b
		}
	}
	if len(e.Parts) > 0 || e.split.seen {
		parts := []any{}
		for _, p := range e.Parts {
			parts = append(parts, goShape(p))
		}
		n["parts"] = parts
		return n
	}
	body, err := io.ReadAll(e.Decoded())
	if err != nil {
		n["body"] = "undecodable"
		return n
	}
	body = bytes.TrimRight(bytes.ReplaceAll(body, []byte("\r\n"), []byte("\n")), "\n")
	sum := sha256.Sum256(body)
	n["body"] = hex.EncodeToString(sum[:])
	return n
}

func goReading(raw []byte) (string, *Entity) {
	e, err := Parse(raw, Limits{MaxDepth: 20, MaxParts: 500})
	if err != nil {
		return fmt.Sprintf(`{"error":%q}`, err.Error()), nil
	}
	b, _ := json.Marshal(goShape(e))
	return string(b), e
}

// TestAmbiguityReasons checks the reason Ambiguity gives for each table
// and golden case (no peers needed).
func TestAmbiguityReasons(t *testing.T) {
	for _, c := range append(tableCases(), goldenCases(t)...) {
		_, e := goReading(c.raw)
		if e == nil {
			t.Errorf("%s: does not parse", c.name)
			continue
		}
		amb := Ambiguity(e)
		var ae *AmbiguousError
		switch {
		case c.want == "":
			if amb != nil {
				t.Errorf("%s: Ambiguity = %v, want none", c.name, amb)
			}
		case amb == nil || !errors.As(amb, &ae) || ae.Reason != c.want:
			t.Errorf("%s: Ambiguity = %v, want reason %s", c.name, amb, c.want)
		}
	}
}

// diffCase is one message of the differential test. want is the reason
// Ambiguity must give ("" for none; generated cases have none to give).
type diffCase struct {
	name string
	raw  []byte
	want string
}

func TestAmbiguityDifferential(t *testing.T) {
	cases := append(tableCases(), goldenCases(t)...)
	cases = append(cases, generatedCases(400)...)
	msgs := make([][]byte, len(cases))
	for i, c := range cases {
		msgs[i] = c.raw
	}
	peers := peerReadings(t, msgs)
	var disagree, flagged, needless int
	for i, c := range cases {
		goRead, e := goReading(c.raw)
		var amb error
		if e != nil {
			amb = Ambiguity(e)
		}
		readings := map[string]string{"go": goRead}
		for k, v := range peers[i] {
			readings[k] = v
		}
		differ := false
		for _, v := range readings {
			if v != goRead {
				differ = true
			}
		}
		if differ {
			disagree++
		}
		if amb != nil {
			flagged++
			if !differ {
				needless++
			}
		}
		if differ && amb == nil {
			t.Errorf("%s: readers disagree but Ambiguity is silent:\n%s\nmessage:\n%q", c.name, formatReadings(readings), c.raw)
		}
		if os.Getenv("MIME_DIFF_VERBOSE") != "" && (differ || amb != nil) {
			t.Logf("%s: differ=%v %v\n%s", c.name, differ, amb, formatReadings(readings))
		}
	}
	t.Logf("%d cases: readers disagree on %d, Ambiguity reports %d (%d where all readers agree)", len(cases), disagree, flagged, needless)
}

func formatReadings(r map[string]string) string {
	var b strings.Builder
	for _, k := range []string{"go", "mimetools", "python-compat32", "python-default"} {
		fmt.Fprintf(&b, "  %-16s %s\n", k, r[k])
	}
	return b.String()
}

// goldenCases are the messages kept under testdata/ambiguous: NAME.eml
// with the reason Ambiguity must give in NAME.reason (empty: none).
func goldenCases(t *testing.T) []diffCase {
	files, err := filepath.Glob("testdata/ambiguous/*.eml")
	if err != nil {
		t.Fatal(err)
	}
	var out []diffCase
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		reason, err := os.ReadFile(strings.TrimSuffix(f, ".eml") + ".reason")
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, diffCase{name: "golden-" + filepath.Base(f), raw: raw, want: strings.TrimSpace(string(reason))})
	}
	return out
}
