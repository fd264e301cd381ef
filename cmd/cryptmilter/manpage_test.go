package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestManPageCoversUsage: contrib/man/cryptmilter.8 names every command,
// keys subcommand and flag of the usage texts, and every exit status, so
// that a new flag cannot be left out of it.
func TestManPageCoversUsage(t *testing.T) {
	b, err := os.ReadFile("../../contrib/man/cryptmilter.8")
	if err != nil {
		t.Fatal(err)
	}
	page := strings.ReplaceAll(string(b), `\-`, "-")
	var want []string
	for _, c := range []string{"serve", "process", "keys", "bench", "version"} {
		want = append(want, ".B "+c)
	}
	for _, l := range strings.Split(keysUsage, "\n") {
		if f := strings.Fields(l); len(f) > 2 && f[0] == "cryptmilter" && f[1] == "keys" {
			want = append(want, ".B "+usageSubcommand(f))
		}
	}
	// Flags, from the texts before their examples (which show other
	// programs' flags too).
	flagRE := regexp.MustCompile(`(?:^|[\s\[(|])(--?[a-z][a-z0-9-]*)`)
	for _, u := range []string{usage, serveUsage, processUsage, keysUsage, benchUsage} {
		u, _, _ = strings.Cut(u, "Examples:")
		for _, m := range flagRE.FindAllStringSubmatch(u, -1) {
			want = append(want, m[1])
		}
	}
	for _, code := range []string{"0", "1", "65", "75", "78"} {
		want = append(want, ".B "+code+"\n")
	}
	seen := map[string]bool{}
	for _, w := range want {
		if seen[w] {
			continue
		}
		seen[w] = true
		if !strings.Contains(page, w) {
			t.Errorf("contrib/man/cryptmilter.8 does not document %q (from the usage texts)", strings.TrimSpace(w))
		}
	}
}

// usageSubcommand returns the subcommand of a keys usage line's fields.
func usageSubcommand(fields []string) string {
	for i := 0; i < len(fields); i++ {
		if fields[i] != "keys" {
			continue
		}
		depth := 0
		for _, f := range fields[i+1:] {
			depth += strings.Count(f, "[") - strings.Count(f, "]")
			if depth == 0 && !strings.HasSuffix(f, "]") {
				return f
			}
		}
	}
	return ""
}
