package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cryptmilter/cryptmilter/keystore"
)

const keysUsage = `Usage:
  cryptmilter keys [-c FILE] import [--ca] [--passphrase-file F] FILE|- ...
  cryptmilter keys [-c FILE] list [--json]
  cryptmilter keys [-c FILE] show ADDR|FPR
  cryptmilter keys [-c FILE] remove [--secret] FPR
  cryptmilter keys [-c FILE] export [--secret] ADDR|FPR
  cryptmilter keys [-c FILE] check
  cryptmilter keys [-c FILE] init [--csr] ADDR...

The keystore is the directory named by "keystore" in the configuration.

import   adds OpenPGP keys (armored or binary, public or secret, many per
         file: "gpg --export" output), certificates (PEM or DER), PEM
         key+certificate bundles (RT's S/MIME keyring files) and PKCS#12
         files. Secret keys and key bundles become gateway identities;
         --ca imports trust anchors for S/MIME; --passphrase-file gives the
         passphrase of PKCS#12 files and protected secret keys. Everything
         is checked first: if any input is unreadable or holds nothing
         usable, nothing is written.
list     shows every key and certificate: protocol, kind, addresses,
         fingerprint (SHA-256 for certificates), algorithm, expiry, status.
show     shows the keys and certificates of an address or fingerprint.
remove   deletes a key or certificate (--secret for a gateway identity).
export   writes public keys and certificates to standard output (with
         --secret, the gateway's secret keys).
check    reports expired and soon (30 days) expiring keys, unusable keys,
         unsafe permissions and orphaned files; exit status 1 if any.
init     creates the gateway identity for each address: an OpenPGP key
         (Ed25519/X25519) and an S/MIME key with a self-signed certificate;
         --csr also writes a certificate signing request and prints it.

Examples:
  cryptmilter keys import alice.asc bob.pem carol.p12 --passphrase-file p.txt
  gpg --homedir /opt/rt/var/data/gpg --export | cryptmilter keys import -
  gpg --homedir /opt/rt/var/data/gpg --export-secret-keys | cryptmilter keys import --passphrase-file rt-pass -
  cryptmilter keys import /opt/rt/var/data/smime/keys/*.pem
  cryptmilter keys import --ca ca.pem
  cryptmilter keys list --json
  cryptmilter keys show alice@example.org
  cryptmilter keys export rt@example.org > rt-public.asc
  cryptmilter keys remove 0123456789ABCDEF0123456789ABCDEF01234567
  cryptmilter keys check
  cryptmilter keys init --csr rt@example.org
`

// maxImportSize bounds one input of keys import.
const maxImportSize = 64 << 20

// runKeys implements `cryptmilter keys`. args excludes "keys".
// keystoreDir is the effective keystore path from the configuration.
func runKeys(keystoreDir string, opts keystore.Options, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	opts.Dir = keystoreDir
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 1
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, keysUsage)
		return 0
	case "import":
		return keysImport(opts, rest, stdin, stdout, stderr)
	case "list":
		return keysList(opts, rest, stdout, stderr)
	case "show":
		return keysShow(opts, rest, stdout, stderr)
	case "remove":
		return keysRemove(opts, rest, stdout, stderr)
	case "export":
		return keysExport(opts, rest, stdout, stderr)
	case "check":
		return keysCheck(opts, rest, stdout, stderr)
	case "init":
		return keysInit(opts, rest, stdout, stderr)
	}
	errorf(stderr, "keys: unknown subcommand %q", cmd)
	hintf(stderr, "the subcommands are import, list, show, remove, export, check and init; run \"cryptmilter keys -h\"")
	return 1
}

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments; "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	var pos []string
	for {
		if code, ok := parseFlags(fs, args, stdout, stderr, keysSubUsage(fs.Name())); !ok {
			return nil, code, false
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, 0, true
		}
		if args[0] == "--" {
			return append(pos, args[1:]...), 0, true
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func keysFlagSet(name string, stderr io.Writer) *flag.FlagSet {
	fs := newFlagSet("cryptmilter keys "+name, keysUsage, stderr)
	fs.Usage = func() {} // parseFlags prints the error and a hint
	return fs
}

func keysImport(opts keystore.Options, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := keysFlagSet("import", stderr)
	asCA := fs.Bool("ca", false, "import trust anchors (CA certificates)")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase")
	files, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(files) == 0 {
		errorf(stderr, "keys import: no file given")
		hintf(stderr, "give files, or - for standard input: gpg --export | cryptmilter keys import -")
		return 1
	}
	var pass []byte
	if *passFile != "" {
		b, err := os.ReadFile(*passFile)
		if err != nil {
			errorf(stderr, "keys import: passphrase file: %v", err)
			return 1
		}
		b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
		pass = b
	}
	var inputs []keystore.Input
	for _, f := range files {
		var data []byte
		var err error
		name := f
		if f == "-" {
			name = "(stdin)"
			data, err = io.ReadAll(io.LimitReader(stdin, maxImportSize+1))
		} else {
			data, err = readFileLimited(f)
		}
		if err == nil && len(data) > maxImportSize {
			err = fmt.Errorf("larger than %d bytes", maxImportSize)
		}
		if err != nil {
			errorf(stderr, "keys import: %s: %v", name, err)
			return 1
		}
		inputs = append(inputs, keystore.Input{Name: name, Data: data})
	}
	results, err := keystore.ImportAll(opts, inputs, *asCA, pass, time.Now())
	for _, r := range results {
		line := fmt.Sprintf("%s %s %s %s %s", r.Action, r.Protocol, r.Kind, orDash(r.Fingerprint), orDash(strings.Join(r.Addresses, ",")))
		if r.File != "" && r.Action != "skipped" {
			line += " " + r.File
		}
		if r.Reason != "" {
			line += " (" + r.Reason + ")"
		}
		if err != nil && r.Action != "skipped" {
			line = "not written: " + line
		}
		fmt.Fprintf(stdout, "%s: %s\n", r.Source, line)
	}
	if err != nil {
		for _, e := range splitJoined(err) {
			errorf(stderr, "%s", strings.TrimPrefix(e.Error(), "keystore: "))
		}
		hintf(stderr, "nothing was written; fix or leave out the files named above")
		if strings.Contains(err.Error(), "passphrase") && pass == nil {
			hintf(stderr, "give the passphrase in a file: --passphrase-file FILE")
		}
		return 1
	}
	return 0
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// splitJoined undoes errors.Join.
func splitJoined(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func readFileLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, maxImportSize+1))
}

// loadSnapshot loads the keystore for the read-only subcommands.
func loadSnapshot(opts keystore.Options, stderr io.Writer) (*keystore.Snapshot, bool) {
	s, err := keystore.Load(opts)
	if err != nil {
		errorf(stderr, "%v", err)
		if errors.Is(err, os.ErrNotExist) {
			hintf(stderr, "create it with \"cryptmilter keys init ADDR\" or \"cryptmilter keys import FILE\", or set keystore in the configuration")
		}
		return nil, false
	}
	return s, true
}

func keysList(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("list", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		errorf(stderr, "keys list: unexpected argument %q", pos[0])
		hintf(stderr, "to see one address or key: cryptmilter keys show %s", pos[0])
		return 1
	}
	s, ok := loadSnapshot(opts, stderr)
	if !ok {
		return 1
	}
	entries := s.Entries(time.Now())
	if *asJSON {
		if entries == nil {
			entries = []keystore.Entry{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(entries)
	} else {
		printEntries(stdout, entries)
	}
	for _, p := range s.Problems() {
		errorf(stderr, "%s: %v (skipped)", p.File, p.Err)
	}
	return 0
}

func printEntries(w io.Writer, entries []keystore.Entry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tKIND\tADDRESSES\tFINGERPRINT\tALGORITHM\tEXPIRES\tSTATUS\tFILE")
	for _, e := range entries {
		exp := "never"
		if e.Expires != nil {
			exp = e.Expires.Format(time.DateOnly)
		}
		status := "usable"
		if !e.Usable {
			status = "unusable: " + e.Reason
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Protocol, e.Kind, orDash(strings.Join(e.Addresses, ",")),
			e.Fingerprint, e.Algorithm, exp, status, e.File)
	}
	tw.Flush()
}

func keysShow(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("show", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys show: give one address or fingerprint")
		return 1
	}
	s, ok := loadSnapshot(opts, stderr)
	if !ok {
		return 1
	}
	entries := s.Describe(pos[0], time.Now())
	if len(entries) == 0 {
		errorf(stderr, "keys show: no key or certificate for %s", pos[0])
		hintf(stderr, "\"cryptmilter keys list\" shows everything in the keystore")
		return 1
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(entries)
		return 0
	}
	for i, e := range entries {
		if i > 0 {
			fmt.Fprintln(stdout)
		}
		exp := "never"
		if e.Expires != nil {
			exp = e.Expires.Format(time.RFC3339)
		}
		status := "usable"
		if !e.Usable {
			status = "unusable: " + e.Reason
		}
		fmt.Fprintf(stdout, "protocol:    %s\nkind:        %s\naddresses:   %s\nfingerprint: %s\nalgorithm:   %s\ncreated:     %s\nexpires:     %s\nstatus:      %s\nfile:        %s\n",
			e.Protocol, e.Kind, orDash(strings.Join(e.Addresses, ", ")), e.Fingerprint, e.Algorithm,
			e.Created.Format(time.RFC3339), exp, status, e.File)
		if e.Subject != "" {
			fmt.Fprintf(stdout, "subject:     %s\n", e.Subject)
		}
	}
	return 0
}

func keysRemove(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("remove", stderr)
	secret := fs.Bool("secret", false, "allow removing a gateway identity")
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys remove: give one fingerprint (see \"cryptmilter keys list\")")
		return 1
	}
	files, err := keystore.Remove(opts, pos[0], *secret)
	for _, f := range files {
		fmt.Fprintf(stdout, "removed %s from %s\n", pos[0], f)
	}
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		if errors.Is(err, keystore.ErrNotFound) {
			hintf(stderr, "\"cryptmilter keys list\" shows the fingerprints")
		}
		return 1
	}
	return 0
}

func keysExport(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("export", stderr)
	secret := fs.Bool("secret", false, "export the gateway's secret keys")
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys export: give one address or fingerprint")
		return 1
	}
	s, ok := loadSnapshot(opts, stderr)
	if !ok {
		return 1
	}
	b, err := s.Export(pos[0], *secret)
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		return 1
	}
	stdout.Write(b)
	return 0
}

func keysCheck(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("check", stderr)
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		errorf(stderr, "keys check: unexpected argument %q", pos[0])
		return 1
	}
	s, ok := loadSnapshot(opts, stderr)
	if !ok {
		return 1
	}
	findings := s.Check(time.Now())
	for _, f := range findings {
		fmt.Fprintln(stdout, f.String())
	}
	if len(findings) > 0 {
		errorf(stderr, "keys check: %d problem(s) in %s", len(findings), opts.Dir)
		return 1
	}
	fmt.Fprintf(stdout, "ok: %d keys and certificates, no problems\n", len(s.Entries(time.Now())))
	return 0
}

func keysInit(opts keystore.Options, args []string, stdout, stderr io.Writer) int {
	fs := keysFlagSet("init", stderr)
	csr := fs.Bool("csr", false, "also write and print a certificate signing request")
	addrs, code, ok := parseInterspersed(fs, args, stdout, stderr)
	if !ok {
		return code
	}
	if len(addrs) == 0 {
		errorf(stderr, "keys init: give the gateway's address(es)")
		hintf(stderr, "cryptmilter keys init rt@example.org")
		return 1
	}
	created, err := keystore.Init(opts, addrs, *csr, time.Now())
	for _, c := range created {
		fmt.Fprintf(stdout, "created %s\n", c)
	}
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		return 1
	}
	if len(created) == 0 {
		fmt.Fprintln(stdout, "nothing to do: every address already has a gateway identity")
	}
	if *csr {
		for _, a := range addrs {
			if b, err := keystore.CSR(opts, a); err == nil {
				stdout.Write(b)
			}
		}
	}
	return 0
}
