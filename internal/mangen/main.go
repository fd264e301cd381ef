// Command mangen writes the cryptmilter.toml(5) man page from
// contrib/cryptmilter.toml, the commented example that lists every key, so
// that the two cannot drift: `make man` runs it, and a test fails while the
// committed page differs from what it writes.
//
// The example's form, which mangen reads:
//
//	# Prose: what the next key (or table) does. Several lines are joined.
//	#key = "default"        a key, commented out at its default
//	#other = 1              a key right after another shares its prose
//	[table]                 a table (also commented: #[table], #[[array]])
//	#"quoted" = "value"     an entry of a map table: an example, not a default
//
// A blank line ends a paragraph; prose that no key follows describes the
// table it is in. The first paragraph of the file is its preamble and is
// not copied.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

// entry is one or more keys sharing a description.
type entry struct {
	keys   []string // as written: key, or "quoted" for map entries
	values []string // as written (TOML)
	desc   []string
}

// section is the top level ("") or one table.
type section struct {
	name    string // "log", "keyring.pin", "outbound.rule"
	array   bool   // [[name]]
	desc    []string
	entries []entry
}

// example is contrib/cryptmilter.toml parsed.
type example struct {
	sections []*section
}

// Keys returns every key as "table.key" ("key" at the top level), in
// order; map tables give "table.*", array tables "table[].key".
func (ex *example) Keys() []string {
	var out []string
	for _, s := range ex.sections {
		prefix := ""
		if s.name != "" {
			prefix = s.name + "."
			if s.array {
				prefix = s.name + "[]."
			}
		}
		if s.isMap() {
			out = append(out, s.name+".*")
			continue
		}
		for _, e := range s.entries {
			for _, k := range e.keys {
				out = append(out, prefix+k)
			}
		}
	}
	return out
}

// isMap reports whether the section's keys are free-form (quoted), so that
// its entries are examples.
func (s *section) isMap() bool {
	return len(s.entries) > 0 && strings.HasPrefix(s.entries[0].keys[0], `"`)
}

// parse reads the example. Errors name the line.
func parse(r io.Reader) (*example, error) {
	ex := &example{}
	cur := &section{}
	ex.sections = append(ex.sections, cur)
	var prose []string
	lastWasKey := false
	preamble := true
	sc := bufio.NewScanner(r)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimRight(sc.Text(), " \t")
		switch {
		case line == "":
			if len(prose) > 0 && !preamble {
				cur.desc = append(cur.desc, prose...)
			}
			prose, lastWasKey, preamble = nil, false, false
		case line == "#" || strings.HasPrefix(line, "# "):
			prose = append(prose, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			lastWasKey = false
		default:
			preamble = false
			toml := strings.TrimPrefix(line, "#")
			if strings.HasPrefix(toml, "[") {
				name, array, err := header(toml)
				if err != nil {
					return nil, fmt.Errorf("line %d: %v", n, err)
				}
				cur = &section{name: name, array: array, desc: prose}
				ex.sections = append(ex.sections, cur)
				prose, lastWasKey = nil, false
				continue
			}
			k, v, ok := strings.Cut(toml, "=")
			if !ok {
				return nil, fmt.Errorf("line %d: %q is neither prose (\"# …\"), a key (\"#key = value\") nor a table", n, line)
			}
			k, v = strings.TrimSpace(k), strings.TrimSpace(v)
			if k == "" || v == "" {
				return nil, fmt.Errorf("line %d: %q: want key = value", n, line)
			}
			if lastWasKey && len(prose) == 0 {
				e := &cur.entries[len(cur.entries)-1]
				e.keys, e.values = append(e.keys, k), append(e.values, v)
			} else if len(prose) == 0 && !strings.HasPrefix(k, `"`) {
				return nil, fmt.Errorf("line %d: key %s has no description: add a line \"# what it does\" above it", n, k)
			} else {
				cur.entries = append(cur.entries, entry{keys: []string{k}, values: []string{v}, desc: prose})
			}
			prose, lastWasKey = nil, true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(prose) > 0 {
		cur.desc = append(cur.desc, prose...)
	}
	return ex, nil
}

func header(s string) (name string, array bool, err error) {
	s = strings.TrimSpace(strings.SplitN(s, "#", 2)[0])
	if strings.HasPrefix(s, "[[") && strings.HasSuffix(s, "]]") {
		return strings.TrimSpace(s[2 : len(s)-2]), true, nil
	}
	if strings.HasPrefix(s, "[") && strings.HasSuffix(s, "]") && !strings.Contains(s, "]]") {
		return strings.TrimSpace(s[1 : len(s)-1]), false, nil
	}
	return "", false, fmt.Errorf("%q is not a table header", s)
}

// roff escapes text for a roff text line: backslashes, a leading control
// character, and anything outside ASCII (as \[uXXXX], so that groff needs
// no preprocessor). '-' becomes \- (an ASCII minus, not a typographic
// hyphen), so that values and command lines copied from the page work.
func roff(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == '\\':
			b.WriteString(`\e`)
		case r == '-':
			b.WriteString(`\-`)
		case r > 127:
			fmt.Fprintf(&b, `\[u%04X]`, r)
		default:
			b.WriteRune(r)
		}
	}
	out := b.String()
	if strings.HasPrefix(out, ".") || strings.HasPrefix(out, "'") {
		out = `\&` + out
	}
	return out
}

// sentences joins prose lines into one roff text line per source line.
func prose(w io.Writer, lines []string) {
	for _, l := range lines {
		fmt.Fprintln(w, roff(l))
	}
}

const head = `.\" Generated by internal/mangen from contrib/cryptmilter.toml: do not edit.
.\" Change contrib/cryptmilter.toml and run "make man".
.TH CRYPTMILTER.TOML 5 "" "cryptmilter" "cryptmilter manual"
.nh
.SH NAME
cryptmilter.toml \- configuration file of the cryptmilter milter
.SH SYNOPSIS
.I /etc/cryptmilter/cryptmilter.toml
.SH DESCRIPTION
.B cryptmilter serve
.B \-c
.I FILE
(and
.BR "cryptmilter process" ,
.BR "cryptmilter keys" )
read one TOML file.
It is strict: an unknown key or table is an error naming the key and its
line, and every value is checked when the file is read, with a message
naming the file, the line and the key.
Every key has a default, so a file holds only the keys that differ.
Without
.B \-c
the embedded default applies: loopback socket, keystore in the working
directory.
.PP
Check a file with
.BR "cryptmilter serve \-c " \fIFILE\fR " \-n" ,
which also checks the setup around it (socket directory, socket group,
re\-injection, gateway identity) and says what to do.
.PP
.B SIGHUP
re\-reads the file; a file that fails to load is logged and the running
configuration kept.
Settings bound at start (sockets, keystore, spool, log, metrics listener,
concurrency) keep their running values until a restart, and the log names
the ones that changed.
.SH VALUES
.TP
.I sizes
A number of bytes, or a string with a unit:
.BR """512KiB""" ,
.BR """50MiB""" ,
.B """1GiB"""
(K, M and G are binary units too).
.TP
.I durations
A string such as
.BR """30s""" ,
.B """2m"""
or
.BR """1h30m""" .
.TP
.I sockets
Postfix syntax:
.BI unix: /path ,
.IB inet: host : port ,
.BI inet6:[ addr ]: port\fR,
and Sendmail's
.IB inet: port @ host\fR.
.TP
.I modes
A quoted octal string such as
.B """0660"""
(a bare 660 is a decimal number, and refused).
.SH KEYS
Each key is shown with its default.
`

const tail = `.SH FILES
.TP
.I /etc/cryptmilter/cryptmilter.toml
The configuration read by the shipped systemd units
.RB ( "make install"
puts the commented example there when there is none).
.TP
.I PREFIX/share/doc/cryptmilter/cryptmilter.toml.example
Every key, commented out at its default: the source of this page.
.SH SEE ALSO
.BR cryptmilter (8),
.BR postconf (5),
.BR systemd.exec (5)
`

// render writes the man page.
func render(w io.Writer, ex *example) {
	io.WriteString(w, head)
	for _, s := range ex.sections {
		if len(s.entries) == 0 && len(s.desc) == 0 {
			continue
		}
		switch {
		case s.name == "":
			fmt.Fprintln(w, ".SS Top level")
		case s.array:
			fmt.Fprintf(w, ".SS [[%s]]\n", roff(s.name))
		default:
			fmt.Fprintf(w, ".SS [%s]\n", roff(s.name))
		}
		if len(s.desc) > 0 {
			prose(w, s.desc)
		}
		if s.isMap() {
			fmt.Fprintln(w, ".PP\nFor example:\n.PP\n.RS\n.nf")
			for _, e := range s.entries {
				for i := range e.keys {
					fmt.Fprintf(w, "%s = %s\n", roff(e.keys[i]), roff(e.values[i]))
				}
			}
			fmt.Fprintln(w, ".fi\n.RE")
			continue
		}
		if s.array {
			fmt.Fprintln(w, ".PP\nIts keys, with example values:")
		}
		for _, e := range s.entries {
			fmt.Fprintln(w, ".TP")
			var tag []string
			for i := range e.keys {
				tag = append(tag, fmt.Sprintf(`\fB%s\fR = %s`, roff(e.keys[i]), roff(e.values[i])))
			}
			fmt.Fprintln(w, strings.Join(tag, ", "))
			prose(w, e.desc)
		}
	}
	io.WriteString(w, tail)
}

// generate reads the example and returns the man page.
func generate(r io.Reader) ([]byte, error) {
	ex, err := parse(r)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	render(&b, ex)
	return b.Bytes(), nil
}

func main() {
	out := flag.String("o", "", "output file (default: standard output)")
	flag.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: go run ./internal/mangen [-o FILE] contrib/cryptmilter.toml")
	}
	flag.Parse()
	if flag.NArg() != 1 {
		flag.Usage()
		os.Exit(2)
	}
	in, err := os.Open(flag.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
	page, err := generate(in)
	in.Close()
	if err != nil {
		fmt.Fprintf(os.Stderr, "mangen: %s: %v\n", flag.Arg(0), err)
		os.Exit(1)
	}
	if *out == "" {
		os.Stdout.Write(page)
		return
	}
	if err := os.WriteFile(*out, page, 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "mangen:", err)
		os.Exit(1)
	}
}
