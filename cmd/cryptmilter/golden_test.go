package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pelletier/go-toml/v2"
)

// The golden engine suite (testdata/golden/README.md): every case
// directory testdata/golden/{in,out}/NN-name holds a message, the flags of
// `cryptmilter process` and optionally a config.toml; the case runs
// through the process --out contract (run(), in this process) against the
// committed keystore at a fixed clock, and its outcome (result.json and
// each copy) is compared with expected/. `go test -run Golden -update`
// rewrites the expectations (and the case list in the README); a
// mismatch prints (-want +got) and leaves a .got file beside the
// expectation.

var updateGolden = flag.Bool("update", false, "rewrite the expectations of the golden suite (testdata/golden)")

// goldenClock is the time every golden case is processed at. The fixtures
// (testdata/golden/gen) are all older: keys from 2025-01-01, signatures
// from 2025-09-01, the expired key and certificate expired on 2025-06-01,
// revocations from 2025-03-01. It lies in the past, so that the milter,
// whose reply waits for Plan.NotBefore on the real clock, never waits.
var goldenClock = time.Date(2025, 10, 1, 12, 0, 0, 0, time.UTC)

const goldenRoot = "testdata/golden"

// goldenCase is one case directory.
type goldenCase struct {
	name string // "in/03-pgp-encrypted"
	dir  string
	// args are the flags of cryptmilter process (without -c and --out),
	// and what they say.
	args      []string
	direction string
	from      string
	rcpts     []string
	macros    []string
	// config is the case's config.toml (nil: none).
	config  map[string]any
	readme  string
	message []byte
}

func (c *goldenCase) inbound() bool { return c.direction == "in" }

// goldenCases reads every case directory.
func goldenCases(t *testing.T) []*goldenCase {
	t.Helper()
	var cases []*goldenCase
	for _, d := range []string{"in", "out"} {
		ents, err := os.ReadDir(filepath.Join(goldenRoot, d))
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range ents {
			if !e.IsDir() {
				continue
			}
			c, err := readGoldenCase(d+"/"+e.Name(), filepath.Join(goldenRoot, d, e.Name()))
			if err != nil {
				t.Fatalf("golden case %s/%s: %v", d, e.Name(), err)
			}
			cases = append(cases, c)
		}
	}
	return cases
}

var caseNameRE = regexp.MustCompile(`^(in|out)/[0-9]{2}-[a-z0-9-]+$`)

func readGoldenCase(name, dir string) (*goldenCase, error) {
	if !caseNameRE.MatchString(name) {
		return nil, fmt.Errorf("the directory name is not NN-name (digits, lower-case letters, digits and dashes)")
	}
	c := &goldenCase{name: name, dir: dir}
	var err error
	if c.message, err = os.ReadFile(filepath.Join(dir, "message.eml")); err != nil {
		return nil, err
	}
	readme, err := os.ReadFile(filepath.Join(dir, "README"))
	if err != nil {
		return nil, err
	}
	if c.readme = strings.TrimSpace(string(readme)); c.readme == "" || strings.Contains(c.readme, "\n") {
		return nil, fmt.Errorf("README: want one line saying what the case proves")
	}
	args, err := os.ReadFile(filepath.Join(dir, "args"))
	if err != nil {
		return nil, err
	}
	for i, l := range strings.Split(strings.TrimSpace(string(args)), "\n") {
		l = strings.TrimSpace(l)
		name, value, ok := strings.Cut(l, "=")
		if !ok || !strings.HasPrefix(name, "--") {
			return nil, fmt.Errorf("args:%d: %q: want one flag a line, as --name=value", i+1, l)
		}
		c.args = append(c.args, l)
		switch name {
		case "--direction":
			c.direction = value
		case "--from":
			c.from = value
		case "--rcpt":
			c.rcpts = append(c.rcpts, value)
		case "--macro":
			c.macros = append(c.macros, value)
		default:
			return nil, fmt.Errorf("args:%d: unknown flag %s (the test adds -c and --out itself)", i+1, name)
		}
	}
	if want := strings.SplitN(name, "/", 2)[0]; c.direction != want {
		return nil, fmt.Errorf("args: --direction=%s in a case under %s/", c.direction, want)
	}
	if cfg, err := os.ReadFile(filepath.Join(dir, "config.toml")); err == nil {
		if err := toml.Unmarshal(cfg, &c.config); err != nil {
			return nil, fmt.Errorf("config.toml: %v", err)
		}
	} else if !os.IsNotExist(err) {
		return nil, err
	}
	return c, nil
}

// goldenEnv is what every case of one test runs with: a copy of the
// committed keystore (with the modes the loader wants) and the viewer
// that opens outbound copies.
type goldenEnv struct {
	dir      string
	keystore string
	view     *viewer
}

func newGoldenEnv(t *testing.T) *goldenEnv {
	t.Helper()
	dir := t.TempDir()
	env := &goldenEnv{dir: dir, keystore: filepath.Join(dir, "keystore")}
	copyKeystore(t, filepath.Join(goldenRoot, "keystore"), env.keystore)
	env.view = newViewer(t, env.keystore, filepath.Join(goldenRoot, "peers"))
	// process reads the clock through processClock; fix it for the test.
	old := processClock
	processClock = func() time.Time { return goldenClock }
	t.Cleanup(func() { processClock = old })
	return env
}

// copyKeystore copies the committed keystore to dst. Git keeps no modes:
// private/ and its directories get 0700 and their files 0600, the rest
// 0755 and 0644, as the loader requires.
func copyKeystore(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		private := rel == "private" || strings.HasPrefix(rel, "private"+string(filepath.Separator))
		if d.IsDir() {
			mode := os.FileMode(0o755)
			if private || rel == "." {
				mode = 0o700
			}
			if err := os.MkdirAll(target, mode); err != nil {
				return err
			}
			return os.Chmod(target, mode)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if private {
			mode = 0o600
		}
		return os.WriteFile(target, data, mode)
	})
	if err != nil {
		t.Fatalf("copy keystore: %v", err)
	}
}

// writeConfig writes the case's configuration: the golden base (the
// keystore copy, hostname, the gateway identity) with the case's
// config.toml over it, and over both extra (settings of the test itself,
// such as the milter's re-injection listener).
func (env *goldenEnv) writeConfig(t *testing.T, c *goldenCase, extra map[string]any) string {
	t.Helper()
	cfg := map[string]any{
		"keystore": env.keystore,
		"hostname": "mx.example.org",
		"identity": map[string]any{"addresses": []any{"rt@example.org"}},
		"keyring":  map[string]any{"watch": false},
	}
	mergeTOML(cfg, c.config)
	mergeTOML(cfg, extra)
	data, err := toml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "cryptmilter.toml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// mergeTOML sets src's keys in dst, merging tables.
func mergeTOML(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeTOML(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// processOutcome is what `cryptmilter process --out` gave for a case.
type processOutcome struct {
	code   int
	stderr string
	res    result
	copies [][]byte // each copy's text (LF line ends)
}

// runProcessCase runs the case through `cryptmilter process --out`.
func runProcessCase(t *testing.T, c *goldenCase, cfg string) processOutcome {
	t.Helper()
	out := filepath.Join(t.TempDir(), "out")
	args := append([]string{"process", "-c", cfg, "--out", out}, c.args...)
	var stdout, stderr bytes.Buffer
	o := processOutcome{code: run(args, bytes.NewReader(c.message), &stdout, &stderr), stderr: stderr.String()}
	if stdout.Len() > 0 {
		t.Errorf("process --out wrote to standard output: %q", stdout.String())
	}
	if strings.Contains(o.stderr, "keystore file skipped") {
		t.Fatalf("the golden keystore has a problem (check testdata/golden/keystore):\n%s", o.stderr)
	}
	data, err := os.ReadFile(filepath.Join(out, "result.json"))
	if err != nil {
		t.Fatalf("process exited %d without result.json: %v\n%s", o.code, err, o.stderr)
	}
	if err := json.Unmarshal(data, &o.res); err != nil {
		t.Fatalf("result.json: %v", err)
	}
	if got := string(data); got != string(resultJSON(o.res)) {
		t.Errorf("result.json is not in the contract's form:\n%s", got)
	}
	for _, cp := range o.res.Copies {
		b, err := os.ReadFile(filepath.Join(out, cp.File))
		if err != nil {
			t.Fatal(err)
		}
		o.copies = append(o.copies, b)
	}
	want := map[string]int{"accept": 0, "quarantine": 0, "discard": 0, "reject": exitReject, "tempfail": exitTempfail}
	if code, ok := want[o.res.Action]; !ok || code != o.code {
		t.Errorf("process exited %d with action %q (want exit %d)\n%s", o.code, o.res.Action, code, o.stderr)
	}
	return o
}

// resultJSON is result.json as process writes it.
func resultJSON(r result) []byte {
	if r.Copies == nil {
		r.Copies = []resultCopy{}
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		panic(err)
	}
	return append(j, '\n')
}

// outcomeFiles are the files a case's outcome is compared as: result.json
// and, for each copy, N.eml (inbound: the exact text; only the boundary
// keep_original draws at random is normalized) or N.view (outbound:
// ciphertext and signatures are random, so the view opens them; see
// viewer).
func (env *goldenEnv) outcomeFiles(t *testing.T, c *goldenCase, res result, copies [][]byte) map[string]string {
	t.Helper()
	files := map[string]string{"result.json": string(resultJSON(res))}
	for i, cp := range copies {
		if c.inbound() {
			files[fmt.Sprintf("%d.eml", i+1)] = normalizeBoundaries(string(cp))
		} else {
			files[fmt.Sprintf("%d.view", i+1)] = env.view.message(t, cp)
		}
	}
	return files
}

// TestGolden runs every golden case through `cryptmilter process --out`
// and compares the outcome with its expectations.
func TestGolden(t *testing.T) {
	cases := goldenCases(t)
	if len(cases) < 60 {
		t.Errorf("the golden suite has %d cases; it must keep at least 60", len(cases))
	}
	checkGoldenReadme(t, cases)
	env := newGoldenEnv(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			cfg := env.writeConfig(t, c, nil)
			o := runProcessCase(t, c, cfg)
			compareGolden(t, c, env.outcomeFiles(t, c, o.res, o.copies))
		})
	}
}

// compareGolden compares got with the case's expected/ directory (or
// rewrites it with -update).
func compareGolden(t *testing.T, c *goldenCase, got map[string]string) {
	t.Helper()
	dir := filepath.Join(c.dir, "expected")
	if *updateGolden {
		if err := os.RemoveAll(dir); err != nil {
			t.Fatal(err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, data := range got {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return
	}
	want := map[string]string{}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("%v (run go test -run Golden -update to write the expectations)", err)
	}
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".got") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		want[e.Name()] = string(b)
	}
	var names []string
	for n := range want {
		names = append(names, n)
	}
	for n := range got {
		if _, ok := want[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	for _, n := range names {
		gotFile := filepath.Join(dir, n+".got")
		w, inWant := want[n]
		g, inGot := got[n]
		switch {
		case !inGot:
			t.Errorf("%s/expected/%s: expected, but the outcome has no such file", c.name, n)
		case !inWant:
			t.Errorf("%s/expected/%s: not expected, got:\n%s", c.name, n, g)
			os.WriteFile(gotFile, []byte(g), 0o644)
		default:
			if diff := cmp.Diff(strings.SplitAfter(w, "\n"), strings.SplitAfter(g, "\n")); diff != "" {
				t.Errorf("%s/expected/%s (%s) (-want +got):\n%s", c.name, n, c.readme, diff)
				os.WriteFile(gotFile, []byte(g), 0o644)
			} else {
				os.Remove(gotFile)
			}
		}
	}
}

var boundaryRE = regexp.MustCompile(`(=_cm_|cryptmilter-)[0-9a-f]{24}`)

// normalizeBoundaries names the random MIME boundaries cryptmilter draws
// (mime.NewBoundary, keep_original's) by their order of appearance.
func normalizeBoundaries(s string) string {
	seen := map[string]string{}
	return boundaryRE.ReplaceAllStringFunc(s, func(b string) string {
		if n, ok := seen[b]; ok {
			return n
		}
		prefix := boundaryRE.FindStringSubmatch(b)[1]
		seen[b] = fmt.Sprintf("%sBOUNDARY%d", prefix, len(seen)+1)
		return seen[b]
	})
}

// The case list in testdata/golden/README.md, between these lines.
const (
	readmeBegin = "<!-- golden cases: begin (written by go test -run Golden -update) -->"
	readmeEnd   = "<!-- golden cases: end -->"
)

// checkGoldenReadme checks that the README lists every case with its
// README line (or rewrites the list with -update).
func checkGoldenReadme(t *testing.T, cases []*goldenCase) {
	t.Helper()
	path := filepath.Join(goldenRoot, "README.md")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	i, j := strings.Index(doc, readmeBegin), strings.Index(doc, readmeEnd)
	if i < 0 || j < i {
		t.Fatalf("%s: no %q … %q section", path, readmeBegin, readmeEnd)
	}
	var b strings.Builder
	b.WriteString(readmeBegin + "\n\n| case | what it proves |\n|---|---|\n")
	for _, c := range cases {
		fmt.Fprintf(&b, "| `%s` | %s |\n", c.name, strings.ReplaceAll(c.readme, "|", `\|`))
	}
	b.WriteString("\n")
	want := doc[:i] + b.String() + doc[j:]
	if want == doc {
		return
	}
	if *updateGolden {
		if err := os.WriteFile(path, []byte(want), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	t.Errorf("%s: the case list is out of date (-want +got):\n%s", path, cmp.Diff(want, doc))
}

// splitMessage reads a message file the way an MTA hands it to a milter:
// header fields (name, and value without the space after the colon,
// folded lines joined with "\n") and the body with CRLF line ends. It
// follows the same rules as crypto.Intake.ReadMessage.
func splitMessage(msg []byte) ([][2]string, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(msg))
	var fields [][2]string
	for {
		line, err := br.ReadString('\n')
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" {
			break
		}
		switch {
		case trimmed[0] == ' ' || trimmed[0] == '\t':
			if len(fields) == 0 {
				return nil, nil, fmt.Errorf("continuation line before the first header field")
			}
			fields[len(fields)-1][1] += "\n" + trimmed
		default:
			n, v, ok := strings.Cut(trimmed, ":")
			if !ok {
				return nil, nil, fmt.Errorf("%q is not a header field", trimmed)
			}
			if len(v) > 0 && (v[0] == ' ' || v[0] == '\t') {
				v = v[1:]
			}
			fields = append(fields, [2]string{n, v})
		}
		if err != nil {
			return fields, nil, nil
		}
	}
	rest := new(bytes.Buffer)
	rest.ReadFrom(br)
	// SMTP carries lines ending in CRLF: an LF alone gets a CR.
	var body bytes.Buffer
	b := rest.Bytes()
	for i, ch := range b {
		if ch == '\n' && (i == 0 || b[i-1] != '\r') {
			body.WriteByte('\r')
		}
		body.WriteByte(ch)
	}
	return fields, body.Bytes(), nil
}
