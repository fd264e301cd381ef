// Command cryptmilter is a milter that makes Postfix or Sendmail a
// secure-mail gateway: it decrypts and verifies OpenPGP and S/MIME mail on
// the way in, and signs and encrypts it per recipient on the way out.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

const usage = `cryptmilter: an OpenPGP and S/MIME milter for Postfix and Sendmail

Usage:
  cryptmilter serve   [-c FILE] [-n]
  cryptmilter process [-c FILE] --direction in|out --from ADDR --rcpt ADDR [--rcpt ADDR]...
                      [--macro NAME=VALUE]... [--out DIR] < message
  cryptmilter keys    [-c FILE] import|list|show|remove|export|check|init|discover ...
  cryptmilter bench   --connect SOCKET --direction in|out --from ADDR --rcpt ADDR...
                      --size BYTES --messages N --concurrency C [--json]
  cryptmilter version

serve runs the milter. Without -c it uses the embedded default: it listens
on inet:127.0.0.1:8895 and keeps its keystore in ./cryptmilter-data, created
with a fresh gateway identity on first run. -n checks the configuration and
exits (0 when it is valid).

process runs the engine the milter runs on one message read from standard
input. It writes the resulting message to standard output, or with --out DIR
writes DIR/result.json and one DIR/N.eml per copy. Exit status: 0 accept,
65 reject, 75 tempfail.

keys manages the on-disk keyring; "cryptmilter keys -h" tells more.

bench drives a running milter as an MTA would and reports throughput and
latency; "cryptmilter bench -h" tells more.

Examples:
  cryptmilter serve
  cryptmilter serve -c /etc/cryptmilter/cryptmilter.toml -n
  cryptmilter process --direction in --from alice@example.net --rcpt rt@example.org < msg.eml
  cryptmilter process -c cryptmilter.toml --direction out --from rt@example.org \
      --rcpt bob@example.net --rcpt carol@example.com --out /tmp/result < msg.eml
  cryptmilter keys import alice.asc
  cryptmilter keys list --json
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// run is main without the process exit, for tests.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return runServe(rest, stdout, stderr)
	case "process":
		return runProcess(rest, stdin, stdout, stderr)
	case "keys":
		return runKeysCommand(rest, stdin, stdout, stderr)
	case "bench":
		return runBench(rest, stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintf(stdout, "cryptmilter %s\n", versionString())
		return 0
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	errorf(stderr, "unknown command %q", cmd)
	hintf(stderr, "the commands are serve, process, keys, bench and version; run \"cryptmilter help\"")
	return 1
}

func errorf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "cryptmilter: error: "+format+"\n", args...)
}

func hintf(w io.Writer, format string, args ...any) {
	fmt.Fprintf(w, "cryptmilter: hint: "+format+"\n", args...)
}

func versionString() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "(unknown)"
	}
	v := bi.Main.Version
	if v == "" || v == "(devel)" {
		v = "devel"
		for _, s := range bi.Settings {
			if s.Key == "vcs.revision" && len(s.Value) >= 12 {
				v += "+" + s.Value[:12]
			}
			if s.Key == "vcs.modified" && s.Value == "true" {
				v += "-dirty"
			}
		}
	}
	return v
}

// newFlagSet returns a flag set that reports errors the cryptmilter way:
// parseFlags prints the help (once, on standard output) for -h, and an
// error with a hint otherwise; the flag package itself prints nothing.
func newFlagSet(name, _ string, _ io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

// parseFlags parses args and reports errors; it returns false when the
// caller should exit with code.
func parseFlags(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, usageText string) (code int, ok bool) {
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, usageText)
		return 0, false
	}
	if err != nil {
		errorf(stderr, "%s: %v", fs.Name(), err)
		hintf(stderr, "run \"cryptmilter %s -h\" for usage", strings.TrimPrefix(fs.Name(), "cryptmilter "))
		return 1, false
	}
	return 0, true
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }
