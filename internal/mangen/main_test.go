package main

import (
	"bytes"
	"os"
	"os/exec"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/cryptmilter/cryptmilter/internal/config"
)

const (
	examplePath = "../../contrib/cryptmilter.toml"
	manPath     = "../../contrib/man/cryptmilter.toml.5"
)

// TestManPageCurrent: the committed cryptmilter.toml(5) is what mangen
// writes from contrib/cryptmilter.toml.
func TestManPageCurrent(t *testing.T) {
	in, err := os.Open(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	want, err := generate(in)
	if err != nil {
		t.Fatalf("%s: %v", examplePath, err)
	}
	got, err := os.ReadFile(manPath)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("contrib/man/cryptmilter.toml.5 is stale: run \"make man\" (-committed +generated):\n%s", cmp.Diff(string(got), string(want)))
	}
}

// TestExampleListsEveryKey: every key of config.Default() (found through
// the toml tags) is in contrib/cryptmilter.toml, and every key there is
// one of them.
func TestExampleListsEveryKey(t *testing.T) {
	in, err := os.Open(examplePath)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	ex, err := parse(in)
	if err != nil {
		t.Fatal(err)
	}
	have := ex.Keys()
	want := configKeys(reflect.TypeOf(*config.Default()), "")
	for _, k := range want {
		if !slices.Contains(have, k) {
			t.Errorf("key %s of config.Default() is missing from contrib/cryptmilter.toml: add it, commented out at its default, with a line saying what it does (then run \"make man\")", k)
		}
	}
	for _, k := range have {
		if !slices.Contains(want, k) {
			t.Errorf("contrib/cryptmilter.toml lists %s, which the configuration does not have", k)
		}
	}
}

// configKeys lists the TOML keys of a configuration struct as Keys does.
func configKeys(t reflect.Type, prefix string) []string {
	var out []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		tag := strings.Split(f.Tag.Get("toml"), ",")[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := prefix + tag
		switch ft := f.Type; {
		case ft.Kind() == reflect.Struct && ft.NumMethod() == 0 && !implementsText(ft):
			out = append(out, configKeys(ft, key+".")...)
		case ft.Kind() == reflect.Map:
			out = append(out, key+".*")
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			out = append(out, configKeys(ft.Elem(), key+"[].")...)
		default:
			out = append(out, key)
		}
	}
	return out
}

func implementsText(t reflect.Type) bool {
	_, ok := reflect.PointerTo(t).MethodByName("UnmarshalText")
	return ok
}

// TestParseErrors: the example's form is enforced, with the line.
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ doc, want string }{
		{"# prose\n#key = 1\n#other = 2\n\n#lonely = 3\n", "line 5: key lonely has no description"},
		{"# prose\n#[broken\n", `line 2: "[broken" is not a table header`},
		{"# a\n#not a key\n", `line 2: "#not a key" is neither prose`},
	} {
		_, err := parse(strings.NewReader(c.doc))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("parse(%q): %v, want %q", c.doc, err, c.want)
		}
	}
	ex, err := parse(strings.NewReader("# preamble\n\n# Both.\n#a = 1\n#b = \"x\"\n[t]\n# C.\n#c = true\n# Pins:\n#[t.pin]\n#\"k\" = \"v\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"a", "b", "t.c", "t.pin.*"}, ex.Keys()); diff != "" {
		t.Errorf("keys (-want +got):\n%s", diff)
	}
}

// TestManPagesRender: both pages format without a warning from groff (all
// warnings on) and read well with man -l.
func TestManPagesRender(t *testing.T) {
	for _, p := range []string{"groff", "man"} {
		if _, err := exec.LookPath(p); err != nil {
			msg := p + " is needed to check the man pages (Debian: groff-base, man-db; make deps installs them)"
			if os.Getenv("CRYPTMILTER_REQUIRE_PEERS") == "1" {
				t.Fatal(msg + " (CRYPTMILTER_REQUIRE_PEERS=1)")
			}
			t.Skip(msg)
		}
	}
	for page, wants := range map[string][]string{
		manPath:                           {"cryptmilter.toml - configuration file", "keystore = \"./cryptmilter-data\"", "[[outbound.rule]]", "SEE ALSO"},
		"../../contrib/man/cryptmilter.8": {"cryptmilter - OpenPGP and S/MIME milter", "EXIT STATUS", "RestartPreventExitStatus=78", "SIGHUP"},
	} {
		cmd := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", page)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Run(); err != nil || stderr.Len() > 0 {
			t.Errorf("groff -man -ww %s: %v\n%s", page, err, stderr.String())
		}
		cmd = exec.Command("man", "--warnings", "-l", page)
		cmd.Env = append(os.Environ(), "MANWIDTH=80", "MAN_KEEP_FORMATTING=", "PAGER=cat", "MANPAGER=cat", "LC_ALL=C.UTF-8")
		stderr.Reset()
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", page, err, stderr.String())
		}
		text := stripOverstrike(string(out))
		for _, w := range wants {
			if !strings.Contains(text, w) {
				t.Errorf("man -l %s lacks %q:\n%s", page, w, text)
			}
		}
		if strings.Contains(text, "\u2010") {
			t.Errorf("man -l %s renders a typographic hyphen: escape '-' as \\- so that copied commands work", page)
		}
	}
}

// stripOverstrike removes man's bold and underline (c\bc, _\bc).
func stripOverstrike(s string) string {
	r := []rune(s)
	var out []rune
	for i := 0; i < len(r); i++ {
		if i+1 < len(r) && r[i+1] == '\b' {
			i++
			continue
		}
		out = append(out, r[i])
	}
	return string(out)
}
