package main

import (
	"errors"
	"fmt"
	"github.com/cryptmilter/cryptmilter/crypto"
	"io"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// exitConfig is serve's exit status when the configuration or the setup
// around it needs the admin (sysexits.h EX_CONFIG): a restart would fail
// the same way, so the shipped unit has RestartPreventExitStatus=78.
const exitConfig = 78

// setupError is a problem found before serving that only the admin can
// fix: serve exits with exitConfig.
type setupError struct {
	msg string // what is wrong
	fix string // what to do
}

func (e *setupError) Error() string {
	if e.fix == "" {
		return e.msg
	}
	return e.msg + "; fix: " + e.fix
}

// exitCode is serve's exit status for an error it stopped with.
func exitCode(err error) int {
	var se *setupError
	if errors.As(err, &se) {
		return exitConfig
	}
	return 1
}

// finding is one result of the preflight checks.
type finding struct {
	fatal bool // serve -n fails; serve refuses to start unless onlyCheck
	// onlyCheck makes a fatal finding a warning when serve starts: a
	// problem for some messages (which are tempfailed, not lost), where
	// refusing to start would stop all mail.
	onlyCheck bool
	msg       string // what is wrong
	fix       string // what to do
}

// stops reports whether f stops serve (check: serve -n) from going on.
func (f finding) stops(check bool) bool { return f.fatal && (check || !f.onlyCheck) }

// preflightEnv is what the checks look at besides the configuration.
type preflightEnv struct {
	check     bool   // serve -n: report everything, including the keystore
	systemd   bool   // started by systemd (INVOCATION_ID is set)
	activated bool   // systemd passes the sockets (LISTEN_FDS): listen is ignored
	cwd       string // the working directory
	euid      int
	gids      []int // the effective and supplementary groups
}

func currentEnv(check bool) preflightEnv {
	cwd, _ := os.Getwd()
	gids, _ := os.Getgroups()
	return preflightEnv{
		check:     check,
		systemd:   os.Getenv("INVOCATION_ID") != "",
		activated: os.Getenv("LISTEN_FDS") != "",
		cwd:       cwd,
		euid:      os.Geteuid(),
		gids:      append(gids, os.Getegid()),
	}
}

// preflight runs the checks of the setup around a loaded configuration:
// for serve -n all of them, printing each finding and the verdict (done is
// true, code is the exit status); before serving the ones that need no
// keystore (the identity is checked once it is loaded), logging warnings
// and stopping (done, exitConfig) on a fatal finding.
func preflight(cfg *config.Config, check bool, stdout, stderr io.Writer) (code int, done bool) {
	env := currentEnv(check)
	found := preflightChecks(cfg, env)
	if check {
		found = append(found, keystoreFindings(cfg)...)
	}
	fatal, warnings := 0, 0
	for _, f := range found {
		if f.stops(check) {
			fatal++
		} else {
			warnings++
		}
	}
	if check {
		for _, f := range found {
			if f.stops(check) {
				errorf(stderr, "%s", f.msg)
			} else {
				fmt.Fprintf(stderr, "cryptmilter: warning: %s\n", f.msg)
			}
			if f.fix != "" {
				hintf(stderr, "%s", f.fix)
			}
		}
		if fatal > 0 {
			errorf(stderr, "configuration %s: %d problem(s) to fix before serve can run", nameOf(cfg), fatal)
			return 1, true
		}
		note := ""
		if warnings > 0 {
			note = fmt.Sprintf(", with %d warning(s)", warnings)
		}
		fmt.Fprintf(stdout, "cryptmilter: configuration %s is valid%s\n", nameOf(cfg), note)
		return 0, true
	}
	log := newLogger(cfg, stderr)
	for _, f := range found {
		if !f.stops(check) {
			log.Warn(f.msg, "fix", f.fix)
		}
	}
	for _, f := range found {
		if f.stops(check) {
			log.Error("cryptmilter cannot start: "+f.msg, "fix", f.fix)
			errorf(stderr, "%s", f.msg)
			hintf(stderr, "%s", f.fix)
		}
	}
	if fatal > 0 {
		return exitConfig, true
	}
	return 0, false
}

// preflightChecks are the checks that need no keystore, in the order
// serve meets what they check.
func preflightChecks(cfg *config.Config, env preflightEnv) []finding {
	var out []finding
	out = append(out, checkRelativePaths(cfg, env)...)
	out = append(out, checkSocketDirs(cfg, env)...)
	out = append(out, checkSocketGroup(cfg, env)...)
	out = append(out, checkReinject(cfg)...)
	out = append(out, checkInternalHosts(cfg)...)
	out = append(out, checkDecryptErrorCBC(cfg)...)
	return out
}

// checkDecryptErrorCBC: on_decrypt_error = reject or tempfail applies to
// authenticated ciphertext only; say so rather than let an admin believe
// every failed decryption is refused.
func checkDecryptErrorCBC(cfg *config.Config) []finding {
	a := cfg.Actions.OnDecryptError
	if a != crypto.Reject && a != crypto.Tempfail {
		return nil
	}
	return []finding{{
		msg: fmt.Sprintf("[actions] on_decrypt_error = %q applies to OpenPGP and S/MIME AuthEnvelopedData only: a failed S/MIME EnvelopedData (CBC) decryption is always delivered tagged (failed in the result header), since any other reply would tell the sender whether the padding was valid (a padding oracle)", a),
		fix: "nothing to change; to hold such mail for review use a header check on X-Cryptmilter-Encryption: failed in the MTA or the mail store"}}
}

// checkRelativePaths: a relative keystore or spool is relative to the
// working directory, which is / in a unit without WorkingDirectory=.
func checkRelativePaths(cfg *config.Config, env preflightEnv) []finding {
	var out []finding
	for _, p := range []struct{ key, path string }{{"keystore", cfg.Keystore}, {"spool", cfg.Spool}} {
		if p.path == "" || filepath.IsAbs(p.path) {
			continue
		}
		abs := filepath.Join(env.cwd, p.path)
		switch {
		case env.systemd && env.cwd == "/":
			out = append(out, finding{fatal: true,
				msg: fmt.Sprintf("%s %q is relative and the working directory is / (a systemd unit without WorkingDirectory=): it would be %s", p.key, p.path, abs),
				fix: fmt.Sprintf(`set %s = "/var/lib/cryptmilter" (an absolute path), or WorkingDirectory= in the unit (the shipped cryptmilter.service has WorkingDirectory=/var/lib/cryptmilter)`, p.key)})
		case env.check && !env.systemd && cfg.File != "":
			out = append(out, finding{
				msg: fmt.Sprintf("%s %q is relative to the working directory: %s here, but under systemd the unit's WorkingDirectory=", p.key, p.path, abs),
				fix: fmt.Sprintf(`use an absolute path, e.g. %s = "/var/lib/cryptmilter"`, p.key)})
		}
	}
	return out
}

// checkSocketDirs: a unix socket's directory must exist, or serve must be
// able to create it. Under socket activation listen is ignored.
func checkSocketDirs(cfg *config.Config, env preflightEnv) []finding {
	if env.activated {
		return nil
	}
	var out []finding
	for _, s := range cfg.Sockets {
		if s.Network != "unix" {
			continue
		}
		dir := filepath.Dir(s.Address)
		fi, err := os.Stat(dir)
		switch {
		case err == nil && !fi.IsDir():
			out = append(out, finding{fatal: true,
				msg: fmt.Sprintf("listen %s: %s is not a directory", s.Spec, dir),
				fix: "choose a socket path in a directory"})
		case errors.Is(err, fs.ErrNotExist):
			parent := filepath.Dir(dir)
			fix := socketDirFix(dir)
			if syscall.Access(parent, 2 /* W_OK */) != nil {
				out = append(out, finding{fatal: true,
					msg: fmt.Sprintf("listen %s: the socket directory %s does not exist, and this user (uid %d) cannot create it in %s", s.Spec, dir, env.euid, parent),
					fix: fix})
			} else if env.check {
				out = append(out, finding{
					msg: fmt.Sprintf("listen %s: the socket directory %s does not exist; serve creates it (mode 0755) only when it may write to %s, which a service user usually may not", s.Spec, dir, parent),
					fix: fix})
			}
		case err != nil:
			out = append(out, finding{fatal: true, msg: fmt.Sprintf("listen %s: %v", s.Spec, err), fix: socketDirFix(dir)})
		}
	}
	return out
}

func socketDirFix(dir string) string {
	if strings.HasPrefix(dir, "/var/spool/postfix/") {
		return fmt.Sprintf("create it: systemd-tmpfiles --create cryptmilter.conf (the shipped tmpfiles.d entry makes /var/spool/postfix/cryptmilter, owner cryptmilter, group postfix, mode 2750), or install -d -o cryptmilter -g postfix -m 2750 %s; or use socket activation (cryptmilter.socket)", dir)
	}
	return fmt.Sprintf("create it: install -d -o cryptmilter -m 0755 %s; or use socket activation (cryptmilter.socket)", dir)
}

// checkSocketGroup: socket_group must exist, and a daemon that is not
// root can hand its socket only to a group it is in.
func checkSocketGroup(cfg *config.Config, env preflightEnv) []finding {
	if cfg.SocketGroup == "" {
		return nil
	}
	unix := !env.activated && slices.ContainsFunc(cfg.Sockets, func(s config.Socket) bool { return s.Network == "unix" })
	g, err := user.LookupGroup(cfg.SocketGroup)
	if err != nil {
		return []finding{{fatal: unix,
			msg: fmt.Sprintf("socket_group %q: no such group", cfg.SocketGroup),
			fix: `name an existing group (Postfix's smtpd runs in group "postfix"; getent group lists them), or leave socket_group empty`}}
	}
	gid, _ := strconv.Atoi(g.Gid)
	if unix && env.euid != 0 && !slices.Contains(env.gids, gid) {
		u := strconv.Itoa(env.euid)
		if pw, err := user.LookupId(u); err == nil {
			u = pw.Username
		}
		return []finding{{fatal: true,
			msg: fmt.Sprintf("socket_group %q: this user (%s) is not in that group, so it cannot give its sockets to it", cfg.SocketGroup, u),
			fix: fmt.Sprintf(`adduser %s %s; or leave socket_group empty and put the socket in a set-group-ID directory of that group (the shipped tmpfiles.d entry does, for /var/spool/postfix/cryptmilter); or use socket activation (cryptmilter.socket has SocketGroup=postfix)`, u, cfg.SocketGroup)}}
	}
	return nil
}

// checkReinject: copies beyond the first go to [outbound] reinject; without
// it a message that needs them is tempfailed at every retry. serve -n
// fails; serve itself warns (the other messages still flow).
func checkReinject(cfg *config.Config) []finding {
	if cfg.Outbound.Reinject != "" || !mayNeedCopies(cfg) {
		return nil
	}
	why := `recipients of different classes (encrypted, signed, unchanged) need copies of their own`
	if cfg.Outbound.Split == crypto.PerRecipient && mayEncrypt(cfg) {
		why = `split = "per-recipient" gives each recipient with a key a copy of its own`
	}
	return []finding{{fatal: cfg.File != "", onlyCheck: true,
		msg: "[outbound] reinject is not set, but outbound mail can need several copies (" + why + "): every such message would be tempfailed, again at each retry",
		fix: `add a re-injection smtpd without milters to master.cf (README, "Install") and set [outbound] reinject = "inet:127.0.0.1:10026"; or, if outbound mail is only ever signed, set [outbound] policy = "sign-only"`}}
}

// mayNeedCopies reports whether two recipients of one message can need
// different bodies: unless every policy (the default and the rules') is
// the same one of "none" and "sign-only", which give every recipient the
// same copy.
func mayNeedCopies(cfg *config.Config) bool {
	p := cfg.Outbound.Policy
	for _, r := range cfg.Outbound.Rules {
		if r.Policy != p {
			return true
		}
	}
	return p != crypto.NoCrypto && p != crypto.SignOnly
}

// mayEncrypt reports whether any policy encrypts.
func mayEncrypt(cfg *config.Config) bool {
	enc := func(p crypto.OutboundPolicy) bool { return p == crypto.Required || p == crypto.Opportunistic }
	return enc(cfg.Outbound.Policy) || slices.ContainsFunc(cfg.Outbound.Rules, func(r config.Rule) bool { return enc(r.Policy) })
}

// checkInternalHosts: behind a content filter that re-injects over
// loopback, every message comes from 127.0.0.1.
func checkInternalHosts(cfg *config.Config) []finding {
	for i, p := range cfg.InternalNets {
		if p.Contains(netip.MustParseAddr("127.0.0.1")) || p.Contains(netip.IPv6Loopback()) {
			return []finding{{
				msg: fmt.Sprintf("[direction] internal_hosts contains %s: mail from any loopback client counts as outbound, including inbound mail that a content filter (amavis, a spam filter) hands back over loopback, which is then signed and encrypted instead of decrypted", cfg.Direction.InternalHosts[i]),
				fix: `if nothing re-injects mail over loopback this is fine; else set internal_hosts = [] and mark outbound mail by {daemon_name} instead: -o milter_macro_daemon_name=ORIGINATING on the submission service, and for the sendmail command a cleanup service of its own (README, "Install")`}}
		}
	}
	return nil
}

// keystoreFindings checks the gateway identity for serve -n: the one the
// first start would create, or the usable ones in the keystore.
func keystoreFindings(cfg *config.Config) []finding {
	kopts := keystoreOptions(cfg, nil)
	initialized, err := keystore.IsInitialized(kopts)
	if err != nil {
		return []finding{{fatal: true, msg: fmt.Sprintf("the keystore %s cannot be read: %v", cfg.Keystore, err),
			fix: "give the service user read access to the keystore (it owns it: chown -R cryptmilter:cryptmilter " + cfg.Keystore + ")"}}
	}
	if !initialized {
		_, note, err := firstRunAddresses(cfg)
		if err != nil {
			var se *setupError
			errors.As(err, &se)
			return []finding{{fatal: true, msg: se.msg, fix: se.fix}}
		}
		if note != "" {
			return []finding{{msg: note, fix: `set [identity] addresses in a configuration file`}}
		}
		return nil
	}
	snap, err := keystore.Load(kopts)
	if err != nil {
		return []finding{{fatal: true,
			msg: fmt.Sprintf("keystore %s cannot be read: %v", cfg.Keystore, err),
			fix: "cryptmilter keys -c FILE check says more"}}
	}
	return identityFindings(cfg, snap, time.Now())
}

// firstRunAddresses returns the addresses serve gives the gateway
// identity it creates in an empty keystore: [identity] addresses, else
// cryptmilter@HOSTNAME when the host name is qualified. An unqualified one
// is refused with a configuration file; the embedded default (a trial)
// uses it with a warning (note).
func firstRunAddresses(cfg *config.Config) (addrs []string, note string, err error) {
	if len(cfg.Identity.Addresses) > 0 {
		return cfg.Identity.Addresses, "", nil
	}
	host := strings.TrimSuffix(cfg.Hostname, ".")
	addr := "cryptmilter@" + host
	if qualified(host) {
		return []string{addr}, "", nil
	}
	if cfg.File == "" {
		return []string{addr}, fmt.Sprintf("the gateway identity is named after the unqualified host name: %s; nobody outside can write to it (fine for a trial)", addr), nil
	}
	return nil, "", &setupError{
		msg: fmt.Sprintf("no gateway identity to create: [identity] addresses is empty and the host name %q is not a qualified domain name (%s would be an address nobody can write to)", host, addr),
		fix: fmt.Sprintf(`set [identity] addresses = ["rt@example.org"] in %s (or hostname = "mx.example.org"), or create the identity first: cryptmilter keys -c %s init ADDR`, cfg.File, cfg.File),
	}
}

// qualified reports whether host is a domain name others can resolve: it
// has a dot and is not a localhost name.
func qualified(host string) bool {
	h := strings.ToLower(host)
	return strings.Contains(h, ".") && h != "localhost.localdomain" && !strings.HasSuffix(h, ".localdomain") &&
		!strings.HasPrefix(h, "localhost.") && !strings.HasSuffix(h, ".localhost")
}

// checkGatewayIdentity is serve's check of the loaded keystore: warnings
// are logged, and no usable gateway identity at all stops it.
func checkGatewayIdentity(cfg *config.Config, snap *keystore.Snapshot, log *slog.Logger) error {
	for _, f := range identityFindings(cfg, snap, time.Now()) {
		if f.fatal {
			return &setupError{msg: f.msg, fix: f.fix}
		}
		log.Warn(f.msg, "fix", f.fix)
	}
	return nil
}

// identityFindings: at least one gateway identity (of [identity]
// addresses, or any in the keystore when none is configured) must have a
// secret key usable now, OpenPGP or S/MIME; configured ones that do not,
// and a sign_as without one, are warnings.
func identityFindings(cfg *config.Config, snap *keystore.Snapshot, now time.Time) []finding {
	file := "FILE"
	if cfg.File != "" {
		file = cfg.File
	}
	addrs := cfg.Identity.Addresses
	if len(addrs) == 0 {
		addrs = snap.GatewayAddresses()
	}
	skipped := ""
	if n := len(snap.Problems()); n > 0 {
		skipped = fmt.Sprintf(" (%d keystore file(s) could not be used)", n)
	}
	if len(addrs) == 0 {
		return []finding{{fatal: true,
			msg: fmt.Sprintf("no gateway identity: the keystore %s holds no secret key for the gateway%s", cfg.Keystore, skipped),
			fix: fmt.Sprintf("create one: cryptmilter keys -c %s init ADDR (or import the gateway's secret key); cryptmilter keys -c %s check shows what is wrong", file, file)}}
	}
	var usable, unusable []string
	for _, a := range addrs {
		_, perr := snap.GatewayOpenPGPAt(a, now)
		_, serr := snap.GatewaySMIMEAt(a, now)
		if perr == nil || serr == nil {
			usable = append(usable, a)
			continue
		}
		unusable = append(unusable, fmt.Sprintf("%s (openpgp: %v; smime: %v)", a, perr, serr))
	}
	var out []finding
	if len(usable) == 0 {
		return []finding{{fatal: true,
			msg: fmt.Sprintf("no usable gateway identity: %s%s", strings.Join(unusable, ", "), skipped),
			fix: fmt.Sprintf("cryptmilter keys -c %s check shows why; create a new identity with cryptmilter keys -c %s init ADDR, or import the gateway's secret key", file, file)}}
	}
	for _, u := range unusable {
		out = append(out, finding{
			msg: "gateway identity not usable: " + u + ": mail from it is not signed, mail to it not decrypted",
			fix: fmt.Sprintf("cryptmilter keys -c %s check shows why; cryptmilter keys -c %s init ADDR creates a new one", file, file)})
	}
	if sa := cfg.Outbound.SignAs; sa != "" && !slices.Contains(usable, sa) {
		_, perr := snap.GatewayOpenPGPAt(sa, now)
		_, serr := snap.GatewaySMIMEAt(sa, now)
		if perr != nil && serr != nil {
			out = append(out, finding{
				msg: fmt.Sprintf("[outbound] sign_as %s has no usable gateway key (openpgp: %v; smime: %v): mail from other addresses is signed by another gateway identity", sa, perr, serr),
				fix: fmt.Sprintf("cryptmilter keys -c %s init %s, or set sign_as to one of %s", file, sa, strings.Join(usable, ", "))})
		}
	}
	return out
}
