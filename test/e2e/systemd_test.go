package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

// repoRoot is the source tree (the Makefile, README.md, contrib/).
const repoRoot = "../.."

// units are the systemd units make install installs.
var units = []string{"cryptmilter.service", "cryptmilter.socket", "cryptmilter-keys-check.service", "cryptmilter-keys-check.timer"}

// makeInstall runs `make install PREFIX=prefix DESTDIR=dest`, building
// into a directory of the test's (not the source tree's bin/), and returns
// its output.
func makeInstall(t *testing.T, dest, prefix string) string {
	t.Helper()
	build := filepath.Join(tempDir(t, "cm-build-"))
	cmd := exec.Command("make", "-C", repoRoot, "install", "PREFIX="+prefix, "DESTDIR="+dest, "BUILDDIR="+build)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make install PREFIX=%s DESTDIR=%s: %v\n%s", prefix, dest, err, out)
	}
	return string(out)
}

// TestMakeInstall: make install PREFIX=/usr DESTDIR=… installs the binary,
// the units with their paths under PREFIX, tmpfiles.d, the man pages, the
// docs, and the configuration only when there is none.
func TestMakeInstall(t *testing.T) {
	requirePeers(t, false, "make")
	for _, prefix := range []string{"/usr", "/usr/local"} {
		t.Run(strings.TrimPrefix(prefix, "/"), func(t *testing.T) {
			dest := tempDir(t, "cm-destdir-")
			makeInstall(t, dest, prefix)
			files := map[string]os.FileMode{
				prefix + "/bin/cryptmilter":                                0o755,
				prefix + "/lib/tmpfiles.d/cryptmilter.conf":                0o644,
				prefix + "/share/man/man8/cryptmilter.8":                   0o644,
				prefix + "/share/man/man5/cryptmilter.toml.5":              0o644,
				prefix + "/share/doc/cryptmilter/README.md":                0o644,
				"/etc/cryptmilter/cryptmilter.toml":                        0o644,
				prefix + "/share/doc/cryptmilter/cryptmilter.toml.example": 0o644,
				prefix + "/share/doc/cryptmilter/grafana-dashboard.json":   0o644,
				prefix + "/share/doc/cryptmilter/master.cf.snippet":        0o644,
			}
			for _, u := range units {
				files[prefix+"/lib/systemd/system/"+u] = 0o644
			}
			for f, mode := range files {
				fi, err := os.Stat(filepath.Join(dest, f))
				if err != nil {
					t.Errorf("not installed: %v", err)
					continue
				}
				if fi.Mode().Perm() != mode {
					t.Errorf("%s has mode %#o, want %#o", f, fi.Mode().Perm(), mode)
				}
			}
			out, err := exec.Command(filepath.Join(dest, prefix, "bin/cryptmilter"), "version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "cryptmilter ") {
				t.Errorf("installed binary: %v %s", err, out)
			}
			for _, u := range units {
				b, err := os.ReadFile(filepath.Join(dest, prefix, "lib/systemd/system", u))
				if err != nil {
					continue
				}
				unit := string(b)
				for _, l := range strings.Split(unit, "\n") {
					if strings.HasPrefix(l, "ExecStart=") && !strings.HasPrefix(l, "ExecStart="+prefix+"/bin/cryptmilter ") {
						t.Errorf("%s: %s, want the binary under PREFIX %s", u, l, prefix)
					}
				}
				if prefix != "/usr/local" && strings.Contains(unit, "/usr/local/") {
					t.Errorf("%s still names /usr/local/ with PREFIX=%s", u, prefix)
				}
			}

			if prefix != "/usr" {
				return
			}
			// A configuration the admin changed is kept.
			conf := filepath.Join(dest, "etc/cryptmilter/cryptmilter.toml")
			if err := os.WriteFile(conf, []byte("# mine\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			if out := makeInstall(t, dest, prefix); !strings.Contains(out, "kept "+conf) {
				t.Errorf("second make install does not say it kept the configuration:\n%s", out)
			}
			if b, _ := os.ReadFile(conf); string(b) != "# mine\n" {
				t.Errorf("make install overwrote the configuration: %q", b)
			}
		})
	}
}

// TestSystemdUnits: the units make install installs pass `systemd-analyze
// verify` (with the installed binary and man pages in place: a private
// mount namespace lays DESTDIR/usr over /usr), and the services score OK
// (2.0 or lower) in `systemd-analyze security --offline`; so does the
// committed contrib/systemd/cryptmilter.service.
func TestSystemdUnits(t *testing.T) {
	requirePeers(t, true, "make", "systemd-analyze", "unshare", "mount", "man")
	dest := tempDir(t, "cm-destdir-")
	makeInstall(t, dest, "/usr")
	var paths []string
	for _, u := range units {
		paths = append(paths, "/usr/lib/systemd/system/"+u)
	}
	script := fmt.Sprintf(`set -e
mount -t overlay overlay -o lowerdir=%s/usr:/usr /usr
echo '== verify'
systemd-analyze verify %s 2>&1 || echo "verify exit status $?"
for s in cryptmilter.service cryptmilter-keys-check.service; do
	echo "== security $s"
	systemd-analyze security --offline=yes /usr/lib/systemd/system/$s 2>&1 | tail -n 1
done
`, dest, strings.Join(paths, " "))
	out, err := exec.Command("unshare", "-m", "sh", "-c", script).CombinedOutput()
	if err != nil {
		t.Fatalf("unshare -m: %v\n%s", err, out)
	}
	verify, security, _ := strings.Cut(string(out), "== security")
	// verify also reports on units the ones here pull in (other
	// packages' units on this machine): only lines about ours count.
	for _, l := range strings.Split(verify, "\n") {
		if strings.Contains(l, "verify exit status") || strings.Contains(l, "cryptmilter") {
			t.Errorf("systemd-analyze verify: %s", l)
		}
	}
	scores := exposure(t, "== security"+security)
	for _, s := range []string{"cryptmilter.service", "cryptmilter-keys-check.service"} {
		score, ok := scores[s]
		switch {
		case !ok:
			t.Errorf("no exposure level for %s:\n%s", s, out)
		case score > 2.0:
			t.Errorf("systemd-analyze security %s: exposure %.1f, want 2.0 or lower (OK)", s, score)
		default:
			t.Logf("systemd-analyze security --offline=yes %s: %.1f", s, score)
		}
	}

	// The committed unit, as the README's command reads it.
	out, err = exec.Command("systemd-analyze", "security", "--offline=yes", "--threshold=20", filepath.Join(repoRoot, "contrib/systemd/cryptmilter.service")).CombinedOutput()
	if err != nil {
		t.Errorf("systemd-analyze security --offline=yes --threshold=20 contrib/systemd/cryptmilter.service: %v\n%s", err, out)
	}
	if s, ok := exposure(t, string(out))["cryptmilter.service"]; !ok || s > 2.0 {
		t.Errorf("contrib/systemd/cryptmilter.service: exposure %v (found %v), want 2.0 or lower", s, ok)
	}
}

var exposureRE = regexp.MustCompile(`Overall exposure level for (\S+): (\d+\.\d+)`)

// exposure returns the overall exposure level per unit in
// systemd-analyze security output.
func exposure(t *testing.T, out string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, s := range exposureRE.FindAllStringSubmatch(out, -1) {
		v, err := strconv.ParseFloat(s[2], 64)
		if err != nil {
			t.Fatal(err)
		}
		m[s[1]] = v
	}
	return m
}
