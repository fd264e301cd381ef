package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// systemConfig is the configuration `keys` uses without -c when it exists.
const systemConfig = "/etc/cryptmilter/cryptmilter.toml"

const keysUsage = `Usage:
  cryptmilter keys [-c FILE] import [--ca] [--passphrase-file F] FILE|- ...
  cryptmilter keys [-c FILE] list [--json]
  cryptmilter keys [-c FILE] show [--json] ADDR|FPR
  cryptmilter keys [-c FILE] remove [--secret] FPR
  cryptmilter keys [-c FILE] export [--secret] [--protocol openpgp|smime] ADDR|FPR
  cryptmilter keys [-c FILE] check [--warn 30d]
  cryptmilter keys [-c FILE] init [--csr] ADDR...
  cryptmilter keys [-c FILE] discover ADDR [--json]

The keystore is the directory named by "keystore" in the configuration:
-c FILE, else ` + systemConfig + ` when it exists, else the
embedded default (./cryptmilter-data). Which one is used is said on
standard error. Run as root, keys writes files owned like the keystore
directory (the service user), so that the daemon can read them.

import   adds OpenPGP keys, certificates, key+certificate bundles and PKCS#12
         files; nothing is written unless every input is usable.
list     shows every key and certificate and what it may be used for.
show     shows the keys and certificates of an address or fingerprint.
remove   deletes a key or certificate (--secret for a gateway identity).
export   writes public keys and certificates to standard output.
check    reports what needs attention; exit status 1 if anything does.
init     creates the gateway identity for each address.
discover looks an address's key up now by key discovery (WKD, DANE) and
         caches it in discovered/ (list shows it as discovered/SOURCE).

"cryptmilter keys SUBCOMMAND -h" tells more about each.

Examples:
  cryptmilter keys import alice.asc bob.pem carol.p12 --passphrase-file p.txt
  gpg --homedir /opt/rt/var/data/gpg --export | cryptmilter keys import -
  cryptmilter keys import --ca ca.pem
  cryptmilter keys list --json
  cryptmilter keys show alice@example.org
  cryptmilter keys export --protocol openpgp rt@example.org > rt-public.asc
  cryptmilter keys remove 0123456789ABCDEF0123456789ABCDEF01234567
  cryptmilter keys check --warn 60d
  cryptmilter keys init --csr rt@example.org
`

// keysHelp is the usage of each subcommand.
var keysHelp = map[string]string{
	"import": `Usage: cryptmilter keys [-c FILE] import [--ca] [--passphrase-file F] FILE|- ...

Adds keys and certificates to the keystore: OpenPGP keys (armored or
binary, public or secret, many per file: "gpg --export" output),
certificates (PEM or DER), PEM key+certificate bundles (RT's S/MIME keyring
files, the key possibly encrypted), PKCS#12 files and CRLs. Secret keys and
key bundles become gateway identities. Everything is checked first: if any
input is unreadable or holds nothing usable, nothing is written.

Keys that cannot be encrypted to are still imported when they vouch for
signatures: sign-only keys, and expired or revoked keys (so that old
signatures read expired or revoked rather than untrusted). An expired or
revoked gateway key is imported for decrypting old mail only. Each line of
output says what was done and why.

  --ca                  the certificates are trust anchors (CA certificates) for S/MIME
  --passphrase-file F   the passphrase of PKCS#12 files, encrypted keys and
                        protected secret keys (stored next to a protected
                        OpenPGP secret key as its .passphrase file)

Examples:
  cryptmilter keys import alice.asc bob.pem
  gpg --homedir /opt/rt/var/data/gpg --export | cryptmilter keys import -
  cryptmilter keys import --passphrase-file /root/rt-pass /opt/rt/var/data/smime/keys/*.pem
  cryptmilter keys import --ca ca.pem
`,
	"list": `Usage: cryptmilter keys [-c FILE] list [--json]

Lists every key and certificate: protocol, kind, addresses, fingerprint
(SHA-256 for certificates), algorithm, expiry, status and file. The status
is "usable", "USES only: REASON" (a sign-only key: "verify only: …", an
expired gateway key: "decrypt only: expired") or "unusable: REASON".

  --json   one JSON array of entries (fields documented in README)

Examples:
  cryptmilter keys list
  cryptmilter keys list --json | jq '.[] | select(.usable | not)'
`,
	"show": `Usage: cryptmilter keys [-c FILE] show [--json] ADDR|FPR

Shows the keys and certificates of an address, an OpenPGP fingerprint or
key ID, or a certificate's SHA-256 hash.

Examples:
  cryptmilter keys show alice@example.org
  cryptmilter keys show --json 0123456789ABCDEF
`,
	"remove": `Usage: cryptmilter keys [-c FILE] remove [--secret] FPR

Deletes the key or certificate with that fingerprint (as "keys list"
shows it). A file holding other keys too is rewritten without it.

  --secret   allow removing a gateway secret key or S/MIME identity

Examples:
  cryptmilter keys remove 0123456789ABCDEF0123456789ABCDEF01234567
`,
	"export": `Usage: cryptmilter keys [-c FILE] export [--secret] [--protocol openpgp|smime] ADDR|FPR

Writes the public keys (armored) and certificates (PEM) of an address or
fingerprint to standard output: the gateway's own, to give correspondents.

  --protocol P   only OpenPGP keys (openpgp) or only certificates (smime)
  --secret       the gateway's secret keys and identities instead (key backup)

Examples:
  cryptmilter keys export --protocol openpgp rt@example.org > rt.asc
  cryptmilter keys export --protocol smime rt@example.org > rt.pem
`,
	"check": `Usage: cryptmilter keys [-c FILE] check [--warn 30d]

Reports, one line per finding, what needs attention: files or directories
that cannot be read, unsafe permissions, broken files, gateway addresses
(with keys, or in [identity] addresses) without a usable secret key,
unusable keys, keys expiring within the warning period, orphaned files.
Keys kept only to verify signatures or to decrypt old mail are shown as
notes. Exit status 1 when there is a problem (notes alone are fine): run it
from a systemd timer.

  --warn D   how far ahead to warn of expiry: 30d (the default), 2w, 72h

Examples:
  cryptmilter keys check
  cryptmilter keys -c /etc/cryptmilter/cryptmilter.toml check --warn 60d
`,
	"init": `Usage: cryptmilter keys [-c FILE] init [--csr] ADDR...

Creates the gateway identity for each address that lacks one: an OpenPGP
key (Ed25519/X25519) and an S/MIME RSA-3072 key with a self-signed
certificate.

  --csr   also write a certificate signing request and print it, to have
          the S/MIME key certified by a CA (import the certificate later)

Examples:
  cryptmilter keys init rt@example.org
  cryptmilter keys init --csr rt@example.org > rt.csr
`,
}

// maxImportSize bounds one input of keys import.
const maxImportSize = 64 << 20

// keysEnv is what the keys subcommands work on.
type keysEnv struct {
	opts       keystore.Options
	identities []string // [identity] addresses
	config     string   // the configuration file used ("" = embedded default)
}

// runKeysCommand implements `cryptmilter keys`: it finds the
// configuration (-c, else the system one when it exists) and runs the
// subcommand. args excludes "keys".
func runKeysCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	return runKeysConfig(args, systemConfig, stdin, stdout, stderr)
}

// runKeysConfig is runKeysCommand with the system configuration's path.
func runKeysConfig(args []string, sysConfig string, stdin io.Reader, stdout, stderr io.Writer) int {
	file, given := "", false
	var rest []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case (a == "-c" || a == "--c") && i+1 < len(args):
			file, given = args[i+1], true
			i++
		case strings.HasPrefix(a, "-c="), strings.HasPrefix(a, "--c="):
			file, given = a[strings.IndexByte(a, '=')+1:], true
		default:
			rest = append(rest, a)
		}
	}
	if len(rest) == 0 || wantsHelp(rest) {
		return runKeys(keysEnv{}, rest, stdin, stdout, stderr) // no configuration needed
	}
	if !given {
		if _, err := os.Stat(sysConfig); err == nil {
			file = sysConfig
		}
	}
	cfg, err := config.Load(file)
	if err != nil {
		errorf(stderr, "%v", err)
		return 1
	}
	if !given {
		if file != "" {
			fmt.Fprintf(stderr, "cryptmilter: using %s (keystore %s)\n", file, cfg.Keystore)
		} else {
			fmt.Fprintf(stderr, "cryptmilter: no -c and no %s: using the embedded default configuration (keystore %s)\n", sysConfig, cfg.Keystore)
		}
	}
	if rest[0] == "discover" {
		return keysDiscover(cfg, rest[1:], stdout, stderr) // keys_discover.go
	}
	env := keysEnv{opts: keystoreOptions(cfg, nil), identities: cfg.Identity.Addresses, config: file}
	return runKeys(env, rest, stdin, stdout, stderr)
}

func isHelp(a string) bool { return a == "-h" || a == "-help" || a == "--help" || a == "help" }

// wantsHelp reports whether a subcommand's arguments ask for its usage.
func wantsHelp(args []string) bool {
	if isHelp(args[0]) {
		return true
	}
	for _, a := range args[1:] {
		if a == "--" {
			break
		}
		if a == "-h" || a == "-help" || a == "--help" {
			return true
		}
	}
	return false
}

// runKeys runs one subcommand; args starts with its name.
func runKeys(env keysEnv, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, keysUsage)
		return 1
	}
	cmd, rest := args[0], args[1:]
	if isHelp(cmd) {
		if len(rest) > 0 && keysHelp[rest[0]] != "" {
			fmt.Fprint(stdout, keysHelp[rest[0]])
		} else {
			fmt.Fprint(stdout, keysUsage)
		}
		return 0
	}
	run := map[string]func(keysEnv, []string, io.Reader, io.Writer, io.Writer) int{
		"import": keysImport, "list": keysList, "show": keysShow, "remove": keysRemove,
		"export": keysExport, "check": keysCheck, "init": keysInit,
	}[cmd]
	if run == nil {
		errorf(stderr, "keys: unknown subcommand %q", cmd)
		hintf(stderr, "the subcommands are import, list, show, remove, export, check, init and discover; run \"cryptmilter keys -h\"")
		return 1
	}
	return run(env, rest, stdin, stdout, stderr)
}

// parseInterspersed parses flags that may appear before, between or after
// the positional arguments; "--" ends flag parsing.
func parseInterspersed(fs *flag.FlagSet, args []string, stdout, stderr io.Writer, usageText string) ([]string, int, bool) {
	var pos []string
	for {
		if code, ok := parseFlags(fs, args, stdout, stderr, usageText); !ok {
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

// keysFlags is a subcommand's flag set; parse parses args with it.
type keysFlags struct {
	*flag.FlagSet
	name string
}

func newKeysFlags(name string, stderr io.Writer) keysFlags {
	fs := newFlagSet("cryptmilter keys "+name, keysHelp[name], stderr)
	fs.Usage = func() {} // parseFlags prints the error and a hint
	return keysFlags{fs, name}
}

func (f keysFlags) parse(args []string, stdout, stderr io.Writer) ([]string, int, bool) {
	return parseInterspersed(f.FlagSet, args, stdout, stderr, keysHelp[f.name])
}

func keysImport(env keysEnv, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("import", stderr)
	asCA := fs.Bool("ca", false, "import trust anchors (CA certificates)")
	passFile := fs.String("passphrase-file", "", "file holding the passphrase")
	files, code, ok := fs.parse(args, stdout, stderr)
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
		pass = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
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
	results, err := keystore.ImportAll(env.opts, inputs, *asCA, pass, time.Now())
	hints := map[string]bool{}
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
		if h := importHint(r.Err, pass != nil, *asCA); h != "" {
			hints[h] = true
		}
	}
	if err != nil {
		for _, e := range splitJoined(err) {
			errorf(stderr, "%s", strings.TrimPrefix(e.Error(), "keystore: "))
			if h := importHint(e, pass != nil, *asCA); h != "" {
				hints[h] = true
			}
		}
		if h := keystoreHint(err, env); h != "" {
			hints[h] = true
		}
		hintf(stderr, "nothing was written; fix or leave out the files named above")
	}
	for _, h := range slices.Sorted(maps.Keys(hints)) {
		hintf(stderr, "%s", h)
	}
	if err != nil {
		return 1
	}
	return 0
}

// importHint names the flag that helps with a skipped item or a failed input.
func importHint(err error, havePass, asCA bool) string {
	switch {
	case err == nil:
	case errors.Is(err, keystore.ErrNeedPassphrase) && !havePass:
		return "give the passphrase in a file: --passphrase-file FILE"
	case errors.Is(err, keystore.ErrWrongPassphrase):
		return "the passphrase in --passphrase-file does not unlock it; check the file (one line, the passphrase)"
	case errors.Is(err, keystore.ErrIsCA) && !asCA:
		return "to trust a CA certificate for S/MIME signatures, import it with --ca"
	case errors.Is(err, keystore.ErrCRLWithoutAnchor):
		return "import the CA that signed the CRL first: cryptmilter keys import --ca CA.pem"
	}
	return ""
}

// keystoreHint explains an error about the keystore itself (missing,
// unreadable) with the flags that choose it, or "".
func keystoreHint(err error, env keysEnv) string {
	var re *keystore.ReadError
	if !errors.As(err, &re) {
		return ""
	}
	if re.Path != env.opts.Dir {
		return fmt.Sprintf("the user running cryptmilter must be able to read %s (check its owner and mode)", re.Path)
	}
	where := "the embedded default configuration"
	if env.config != "" {
		where = env.config
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Sprintf("the keystore %s comes from %s; give the right configuration with -c FILE, or create it with \"cryptmilter keys init ADDR\" or \"cryptmilter keys import FILE\"", env.opts.Dir, where)
	}
	return fmt.Sprintf("the keystore %s comes from %s; give the right configuration with -c FILE, or check the directory's owner and mode", env.opts.Dir, where)
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
func loadSnapshot(env keysEnv, stderr io.Writer) (*keystore.Snapshot, bool) {
	s, err := keystore.Load(env.opts)
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		if h := keystoreHint(err, env); h != "" {
			hintf(stderr, "%s", h)
		}
		return nil, false
	}
	return s, true
}

// reportLoad prints what a load could not read or use, with hints.
func reportLoad(s *keystore.Snapshot, stderr io.Writer) {
	for _, f := range s.Faults() {
		errorf(stderr, "%s", f.String())
		if h := faultHint(f.Err); h != "" {
			hintf(stderr, "%s", h)
		}
	}
	for _, p := range s.Problems() {
		errorf(stderr, "%s: %v (skipped)", p.File, p.Err)
	}
}

// faultHint gives the command that fixes a permission problem.
func faultHint(err error) string {
	var pe *keystore.PermissionError
	var re *keystore.ReadError
	switch {
	case errors.As(err, &pe) && pe.WantOwner >= 0:
		return fmt.Sprintf("chown %s %s", userName(pe.WantOwner), pe.Path)
	case errors.As(err, &pe):
		return fmt.Sprintf("chmod %o %s", pe.Want, pe.Path)
	case errors.As(err, &re) && errors.Is(err, fs.ErrPermission):
		return fmt.Sprintf("the user cryptmilter runs as must be able to read %s (check its owner and mode)", re.Path)
	}
	return ""
}

// userName returns the name of a uid, or the uid.
func userName(uid int) string {
	if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
		return u.Username
	}
	return strconv.Itoa(uid)
}

func keysList(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("list", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		errorf(stderr, "keys list: unexpected argument %q", pos[0])
		hintf(stderr, "to see one address or key: cryptmilter keys show %s", pos[0])
		return 1
	}
	s, ok := loadSnapshot(env, stderr)
	if !ok {
		return 1
	}
	entries := s.Entries(time.Now())
	entries = append(entries, discoveredEntries(env.opts, s, time.Now(), stderr)...) // keys_discover.go
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(entries)
	} else {
		printEntries(stdout, entries)
	}
	reportLoad(s, stderr)
	return 0
}

// status is an entry's STATUS column.
func status(e keystore.Entry) string {
	switch {
	case e.Usable:
		return "usable"
	case len(e.Uses) > 0:
		return strings.Join(e.Uses, "+") + " only: " + e.Reason
	}
	return "unusable: " + e.Reason
}

func printEntries(w io.Writer, entries []keystore.Entry) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PROTOCOL\tKIND\tADDRESSES\tFINGERPRINT\tALGORITHM\tEXPIRES\tSTATUS\tFILE")
	for _, e := range entries {
		exp := "never"
		if e.Expires != nil {
			exp = e.Expires.Format(time.DateOnly)
		}
		kind := e.Kind
		if e.Source != "" {
			kind += "/" + e.Source // discovered/wkd, discovered/dane
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", e.Protocol, kind, orDash(strings.Join(e.Addresses, ",")),
			e.Fingerprint, e.Algorithm, exp, status(e), e.File)
	}
	tw.Flush()
}

func keysShow(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("show", stderr)
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys show: give one address or fingerprint")
		return 1
	}
	s, ok := loadSnapshot(env, stderr)
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
		fmt.Fprintf(stdout, "protocol:    %s\nkind:        %s\naddresses:   %s\nfingerprint: %s\nalgorithm:   %s\ncreated:     %s\nexpires:     %s\nstatus:      %s\nuses:        %s\nfile:        %s\n",
			e.Protocol, e.Kind, orDash(strings.Join(e.Addresses, ", ")), e.Fingerprint, e.Algorithm,
			e.Created.Format(time.RFC3339), exp, status(e), orDash(strings.Join(e.Uses, ", ")), e.File)
		if e.Subject != "" {
			fmt.Fprintf(stdout, "subject:     %s\n", e.Subject)
		}
	}
	return 0
}

func keysRemove(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("remove", stderr)
	secret := fs.Bool("secret", false, "allow removing a gateway identity")
	pos, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys remove: give one fingerprint (see \"cryptmilter keys list\")")
		return 1
	}
	files, err := keystore.Remove(env.opts, pos[0], *secret)
	for _, f := range files {
		fmt.Fprintf(stdout, "removed %s from %s\n", pos[0], f)
	}
	if ok, derr := removeDiscovered(env.opts, pos[0], stdout); derr != nil { // keys_discover.go
		err = derr
	} else if ok && (errors.Is(err, keystore.ErrNotFound) || strings.Contains(pos[0], "@")) {
		err = nil // only the discovery cache held it
	}
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		var se *keystore.SecretError
		switch {
		case errors.Is(err, keystore.ErrNotFound):
			hintf(stderr, "\"cryptmilter keys list\" shows the fingerprints")
		case errors.As(err, &se):
			hintf(stderr, "to remove the gateway's own key (it can no longer decrypt mail sent to it): cryptmilter keys remove --secret %s", se.Fingerprint)
		default:
			if h := keystoreHint(err, env); h != "" {
				hintf(stderr, "%s", h)
			}
		}
		return 1
	}
	return 0
}

func keysExport(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("export", stderr)
	secret := fs.Bool("secret", false, "export the gateway's secret keys")
	protocol := fs.String("protocol", "", "openpgp or smime")
	pos, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 1 {
		errorf(stderr, "keys export: give one address or fingerprint")
		return 1
	}
	if *protocol != "" && *protocol != keystore.ProtocolOpenPGP && *protocol != keystore.ProtocolSMIME {
		errorf(stderr, "keys export: --protocol %q: want openpgp or smime", *protocol)
		return 1
	}
	s, ok := loadSnapshot(env, stderr)
	if !ok {
		return 1
	}
	b, err := s.ExportProtocol(pos[0], *secret, *protocol)
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		return 1
	}
	stdout.Write(b)
	return 0
}

// parseWarn reads --warn: a number of days ("30d"), weeks ("2w") or a Go
// duration ("72h").
func parseWarn(s string) (time.Duration, error) {
	for suffix, unit := range map[string]time.Duration{"d": 24 * time.Hour, "w": 7 * 24 * time.Hour} {
		if n, ok := strings.CutSuffix(s, suffix); ok {
			v, err := strconv.ParseUint(n, 10, 16)
			if err != nil {
				return 0, fmt.Errorf("want a number of days (30d), weeks (2w) or hours (72h)")
			}
			return time.Duration(v) * unit, nil
		}
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a number of days (30d), weeks (2w) or hours (72h)")
	}
	return d, nil
}

func keysCheck(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("check", stderr)
	warnText := fs.String("warn", "30d", "how far ahead to warn of expiry")
	pos, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(pos) != 0 {
		errorf(stderr, "keys check: unexpected argument %q", pos[0])
		return 1
	}
	warn, err := parseWarn(*warnText)
	if err != nil {
		errorf(stderr, "keys check: --warn %q: %v", *warnText, err)
		return 1
	}
	s, ok := loadSnapshot(env, stderr)
	if !ok {
		return 1
	}
	problems := 0
	hints := map[string]bool{}
	for _, f := range s.Check(time.Now(), warn, env.identities) {
		if !f.Problem {
			fmt.Fprintf(stdout, "%s: note: %s\n", f.File, f.Message)
			continue
		}
		problems++
		fmt.Fprintln(stdout, f.String())
		if h := faultHint(f.Err); h != "" {
			hints[h] = true
		}
	}
	if problems > 0 {
		errorf(stderr, "keys check: %d problem(s) in %s", problems, env.opts.Dir)
		for _, h := range slices.Sorted(maps.Keys(hints)) {
			hintf(stderr, "%s", h)
		}
		return 1
	}
	fmt.Fprintf(stdout, "ok: %d keys and certificates, no problems\n", len(s.Entries(time.Now())))
	return 0
}

func keysInit(env keysEnv, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	fs := newKeysFlags("init", stderr)
	csr := fs.Bool("csr", false, "also write and print a certificate signing request")
	addrs, code, ok := fs.parse(args, stdout, stderr)
	if !ok {
		return code
	}
	if len(addrs) == 0 {
		errorf(stderr, "keys init: give the gateway's address(es)")
		hintf(stderr, "cryptmilter keys init rt@example.org")
		return 1
	}
	created, err := keystore.Init(env.opts, addrs, *csr, time.Now())
	for _, c := range created {
		fmt.Fprintf(stdout, "created %s\n", c)
	}
	if err != nil {
		errorf(stderr, "%s", strings.TrimPrefix(err.Error(), "keystore: "))
		if errors.Is(err, keystore.ErrUnavailable) {
			hintf(stderr, "no identity is created next to one that cannot be read or used; \"cryptmilter keys check\" says what to fix")
		} else if h := keystoreHint(err, env); h != "" {
			hintf(stderr, "%s", h)
		}
		return 1
	}
	if len(created) == 0 {
		fmt.Fprintln(stdout, "nothing to do: every address already has a gateway identity")
	}
	if *csr {
		for _, a := range addrs {
			if b, err := keystore.CSR(env.opts, a); err == nil {
				stdout.Write(b)
			}
		}
	}
	return 0
}
