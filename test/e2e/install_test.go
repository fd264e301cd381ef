package e2e

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestInstallFromREADME follows README's "Install" section as a new admin
// would, on a fresh Debian with the system Postfix: the machine's own
// Debian booted with its systemd in a throwaway container (systemd-nspawn
// over a tmpfs overlay of /, private network: nothing on the host
// changes). It runs the README blocks marked `sh install` and `sh try` as
// written, then checks what they promise: mail from outside gets the
// result headers, mail encrypted to the published key arrives decrypted,
// mail from the sendmail command arrives signed, two recipients with keys
// get two encrypted copies (one re-injected), the keys-check service
// passes, reload and stop work, the socket and the daemon have the owner,
// mode, user, capabilities and seccomp filter the units promise, and
// systemd-analyze rates the running service OK.
func TestInstallFromREADME(t *testing.T) {
	requirePeers(t, true, "systemd-nspawn", "unshare", "nsenter", "mount", "make", "go", "swaks", "gpg", "dpkg-reconfigure")
	install := readmeBlocks(t, "install")
	try := readmeBlocks(t, "try")
	repo, err := filepath.Abs(repoRoot)
	if err != nil {
		t.Fatal(err)
	}
	c := bootContainer(t)

	// What Debian's installer leaves: Postfix as an "Internet Site".
	c.sh(t, 5*time.Minute, `hostname mx.example.org
echo mx.example.org > /etc/hostname
printf '%s\n' 'postfix postfix/main_mailer_type select Internet Site' 'postfix postfix/mailname string mx.example.org' | debconf-set-selections
DEBIAN_FRONTEND=noninteractive dpkg-reconfigure -f noninteractive postfix >/dev/null 2>&1
postconf -h mydestination`)

	out := c.sh(t, 10*time.Minute, "cd "+shellQuote(repo)+"\nset -x\n"+strings.Join(install, "\n"))
	t.Logf("README's install steps:\n%s", out)
	out = c.sh(t, time.Minute, strings.Join(try, "\n"))
	if !strings.Contains(out, "250 2.0.0 Ok: queued") {
		t.Errorf("README's try step: the message was not accepted:\n%s", out)
	}
	c.waitFor(t, "the README's test message in /var/mail/root with the result headers",
		`grep -q '^Subject: cryptmilter test' /var/mail/root && grep -q '^X-Cryptmilter-Encryption: none' /var/mail/root && grep -q '^X-Cryptmilter-Signature: none' /var/mail/root`)
	c.waitFor(t, "the journal's line for the README's test message", `journalctl -u cryptmilter --no-pager | grep -q 'direction=in .*decision=passed'`)

	// Mail encrypted to the key the README published arrives decrypted.
	c.sh(t, time.Minute, `export GNUPGHOME=$(mktemp -d)
gpg --batch --quiet --import /root/rt@example.org.asc 2>/dev/null
printf 'the plaintext 4711\n' | gpg --batch --quiet --trust-model always --armor --encrypt -r rt@example.org > "$GNUPGHOME/ct.asc"
swaks --server 127.0.0.1 --from alice@example.net --to root@localhost --header 'Subject: encrypted' --body @"$GNUPGHOME/ct.asc" >/dev/null`)
	c.waitFor(t, "the encrypted message delivered decrypted",
		`grep -q '^X-Cryptmilter-Encryption: decrypted; protocol=openpgp' /var/mail/root && grep -q '^the plaintext 4711' /var/mail/root`)

	// Mail from the sendmail command (cleanup-ns: outbound) arrives signed.
	c.sh(t, time.Minute, `printf 'From: rt@example.org\nTo: root@localhost\nSubject: signed\n\nticket 1\n' | sendmail -f rt@example.org root@localhost`)
	c.waitFor(t, "the sendmail message delivered signed", `grep -q 'protocol="application/pgp-signature"' /var/mail/root`)

	// Two recipients with keys: two encrypted copies, one through the
	// re-injection smtpd of README's master.cf lines.
	c.sh(t, 2*time.Minute, `export GNUPGHOME=$(mktemp -d)
for a in root@mx.example.org postmaster@mx.example.org; do
	gpg --batch --quiet --passphrase '' --pinentry-mode loopback --quick-gen-key "$a" ed25519 sign never 2>/dev/null
	fpr=$(gpg --batch --with-colons --list-keys "$a" | awk -F: '/^fpr/ {print $10; exit}')
	gpg --batch --quiet --passphrase '' --pinentry-mode loopback --quick-add-key "$fpr" cv25519 encr never 2>/dev/null
done
gpg --batch --armor --export > /tmp/rcpts.asc
chmod 0644 /tmp/rcpts.asc
runuser -u cryptmilter -- cryptmilter keys -c /etc/cryptmilter/cryptmilter.toml import /tmp/rcpts.asc`)
	// The daemon sees the import without a restart (it watches the keystore).
	c.waitFor(t, "the daemon's reload of the keystore", `journalctl -u cryptmilter --no-pager | grep -q 'msg="keystore loaded".* openpgp=2 '`)
	c.sh(t, time.Minute, `printf 'From: rt@example.org\nTo: root@mx.example.org, postmaster@mx.example.org\nSubject: two\n\nticket 2\n' | sendmail -f rt@example.org root@mx.example.org postmaster@mx.example.org`)
	c.waitFor(t, "two encrypted copies delivered", `[ "$(grep -c '^Content-Type: multipart/encrypted' /var/mail/root)" -ge 2 ]`)
	c.waitFor(t, "a copy re-injected through 127.0.0.1:10026", `journalctl --no-pager | grep -q 'postfix/reinject/smtpd.*client=localhost'`)
	c.waitFor(t, "an empty Postfix queue", `postqueue -p | grep -q 'Mail queue is empty'`)

	// The keys-check service passes on this keystore.
	c.sh(t, time.Minute, `systemctl start cryptmilter-keys-check.service`)
	if r := strings.TrimSpace(c.sh(t, time.Minute, `systemctl show -p Result --value cryptmilter-keys-check.service`)); r != "success" {
		t.Errorf("cryptmilter-keys-check.service: result %q", r)
	}

	// The socket and the daemon are what the units say.
	if got := strings.TrimSpace(c.sh(t, time.Minute, `stat -c '%U:%G %a' /var/spool/postfix/cryptmilter /var/spool/postfix/cryptmilter/milter.sock`)); got != "cryptmilter:postfix 2750\ncryptmilter:postfix 660" {
		t.Errorf("socket directory and socket: %q, want cryptmilter:postfix 2750 and 660", got)
	}
	status := c.sh(t, time.Minute, `uid=$(id -u cryptmilter)
pid=$(systemctl show -p MainPID --value cryptmilter.service)
echo "uid $uid"
grep -E '^(Uid|CapEff|CapBnd|NoNewPrivs|Seccomp):' /proc/$pid/status`)
	uid := field(status, "uid")
	for _, want := range []string{"Uid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid, "CapEff:\t0000000000000000", "CapBnd:\t0000000000000000", "NoNewPrivs:\t1", "Seccomp:\t2"} {
		if uid == "" || !strings.Contains(status, want) {
			t.Errorf("the running daemon's /proc status lacks %q:\n%s", want, status)
		}
	}
	out = c.sh(t, time.Minute, `systemd-analyze security cryptmilter.service | tail -n 1`)
	if s, ok := exposure(t, out)["cryptmilter.service"]; !ok || s > 2.0 {
		t.Errorf("systemd-analyze security cryptmilter.service (running): %q, want 2.0 or lower", out)
	} else {
		t.Logf("systemd-analyze security cryptmilter.service, running under systemd: %.1f", s)
	}

	// Reload and stop.
	c.sh(t, time.Minute, `systemctl reload cryptmilter.service`)
	c.waitFor(t, "the reload in the journal", `journalctl -u cryptmilter --no-pager | grep -q 'msg=reloaded'`)
	c.sh(t, time.Minute, `systemctl stop cryptmilter.service`)
	if got := c.sh(t, time.Minute, `systemctl show -p Result -p ExecMainStatus cryptmilter.service`); !strings.Contains(got, "Result=success") || !strings.Contains(got, "ExecMainStatus=0") {
		t.Errorf("cryptmilter.service after stop:\n%s", got)
	}
}

// readmeBlocks returns the fenced blocks of README.md whose info string
// is "sh TAG", in order.
func readmeBlocks(t *testing.T, tag string) []string {
	t.Helper()
	f, err := os.Open(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var blocks []string
	var cur []string
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := sc.Text()
		switch {
		case !in && strings.TrimSpace(l) == "```sh "+tag:
			in, cur = true, nil
		case in && strings.TrimSpace(l) == "```":
			in = false
			blocks = append(blocks, strings.Join(cur, "\n"))
		case in:
			cur = append(cur, l)
		}
	}
	if len(blocks) == 0 || in {
		t.Fatalf("README.md has no complete ```sh %s block", tag)
	}
	return blocks
}

// container is a booted systemd-nspawn container of this machine's root.
type container struct {
	name   string
	dir    string
	cmd    *exec.Cmd
	done   chan error
	leader int      // the container's systemd, as seen from here
	env    []string // what commands in the container run with
}

// bootContainer boots the machine's own root (a tmpfs overlay over /, in a
// private mount namespace) with its systemd, to basic.target, without
// network but loopback, and stops it at the end of the test. The Go build
// cache is shared (so that make install builds quickly); the module cache
// is read-only.
func bootContainer(t *testing.T) *container {
	t.Helper()
	if _, err := os.Stat("/lib/systemd/systemd"); err != nil {
		skipOrFail(t, "the install test boots this machine's Debian with systemd: /lib/systemd/systemd is missing")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	gocache, gomod := goEnv(t, "GOCACHE"), goEnv(t, "GOMODCACHE")
	dir := tempDir(t, "cm-nspawn-")
	c := &container{name: fmt.Sprintf("cm-install-%d", os.Getpid()), dir: dir, done: make(chan error, 1)}
	c.env = []string{
		"PATH=" + filepath.Dir(goBin) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"HOME=/root", "LANG=C.UTF-8", "TERM=dumb",
		"GOCACHE=" + gocache, "GOMODCACHE=" + gomod, "GOPROXY=off", "GOTOOLCHAIN=local", "GOTELEMETRY=off",
	}
	binds := "--bind-ro=" + gomod
	if gocache != "" && gocache != "off" {
		os.MkdirAll(gocache, 0o755)
		binds += " --bind=" + gocache
	}
	script := fmt.Sprintf(`set -e
d=%s
mkdir "$d/layers" "$d/root"
mount -t tmpfs -o mode=0755 tmpfs "$d/layers"
mkdir "$d/layers/upper" "$d/layers/work"
mount -t overlay overlay -o lowerdir=/,upperdir="$d/layers/upper",workdir="$d/layers/work" "$d/root"
exec systemd-nspawn --quiet --directory="$d/root" --machine=%s --private-network --register=no --keep-unit --link-journal=no %s --boot systemd.unit=basic.target
`, shellQuote(dir), c.name, binds)
	console, err := os.Create(filepath.Join(dir, "console.log"))
	if err != nil {
		t.Fatal(err)
	}
	c.cmd = exec.Command("unshare", "--mount", "--propagation", "private", "sh", "-c", script)
	c.cmd.Stdout, c.cmd.Stderr = console, console
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("systemd-nspawn: %v", err)
	}
	go func() { c.done <- c.cmd.Wait(); console.Close() }()
	t.Cleanup(func() { c.stop(t) })

	if !waitFor(time.Minute, func() bool { c.leader = childNamed(c.cmd.Process.Pid, "systemd"); return c.leader > 0 }) {
		b, _ := os.ReadFile(console.Name())
		t.Fatalf("the container's systemd did not start:\n%s", b)
	}
	start := time.Now()
	// systemctl answers once systemd listens on its private socket.
	var state string
	waitFor(time.Minute, func() bool {
		state, _ = c.exec(t, time.Minute, "", "systemctl", "is-system-running")
		return !strings.Contains(state, "Failed to connect")
	})
	state, _ = c.exec(t, 3*time.Minute, "", "systemctl", "is-system-running", "--wait")
	if s := strings.TrimSpace(state); s != "running" && s != "degraded" {
		t.Fatalf("the container did not boot: %q\n%s", s, c.journal(t))
	}
	t.Logf("container %s booted in %v (%s)", c.name, time.Since(start).Round(time.Millisecond), strings.TrimSpace(state))
	return c
}

// exec runs a command in the container with stdin, returning its
// combined output.
func (c *container) exec(t *testing.T, timeout time.Duration, stdin string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	full := append([]string{"-t", strconv.Itoa(c.leader), "-a", "--wd", "--", "env", "-i"}, c.env...)
	cmd := exec.CommandContext(ctx, "nsenter", append(full, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("timed out after %v", timeout)
	}
	return out.String(), err
}

// sh runs a bash script in the container (errexit, pipefail) and fails the
// test with its output if it fails.
func (c *container) sh(t *testing.T, timeout time.Duration, script string) string {
	t.Helper()
	out, err := c.exec(t, timeout, script, "bash", "-euo", "pipefail", "-s")
	if err != nil {
		t.Fatalf("in the container: %v\n--- script:\n%s\n--- output:\n%s", err, script, out)
	}
	return out
}

// waitFor waits up to 30 s for a shell condition in the container.
func (c *container) waitFor(t *testing.T, what, cond string) {
	t.Helper()
	script := fmt.Sprintf("for i in $(seq 1 60); do if %s; then exit 0; fi; sleep 0.5; done; exit 1", cond)
	if out, err := c.exec(t, time.Minute, script, "bash", "-s"); err != nil {
		t.Fatalf("waiting for %s: %v\n%s\n--- journal:\n%s", what, err, out, c.journal(t))
	}
}

// journal returns the end of the container's journal.
func (c *container) journal(t *testing.T) string {
	out, _ := c.exec(t, time.Minute, "", "journalctl", "--no-pager", "-n", "300")
	return out
}

// stop shuts the container down (SIGTERM to systemd-nspawn: an orderly
// poweroff), killing it if that takes over a minute.
func (c *container) stop(t *testing.T) {
	if t.Failed() && c.leader > 0 {
		t.Logf("container journal:\n%s", c.journal(t))
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.done:
	case <-time.After(time.Minute):
		t.Logf("container %s did not stop in a minute: killing it", c.name)
		if c.leader > 0 {
			syscall.Kill(c.leader, syscall.SIGKILL)
		}
		c.cmd.Process.Kill()
		<-c.done
	}
	os.RemoveAll("/run/systemd/nspawn/propagate/" + c.name)
}

// childNamed returns a child process of parent whose command is name.
func childNamed(parent int, name string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, close := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || close < open {
			continue
		}
		rest := strings.Fields(s[close+1:])
		if len(rest) > 1 && rest[1] == strconv.Itoa(parent) && s[open+1:close] == name {
			return pid
		}
	}
	return 0
}

func goEnv(t *testing.T, name string) string {
	t.Helper()
	out, err := exec.Command("go", "env", name).Output()
	if err != nil {
		t.Fatalf("go env %s: %v", name, err)
	}
	return strings.TrimSpace(string(out))
}

// field returns the value after "name " on a line of out.
func field(out, name string) string {
	for _, l := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
