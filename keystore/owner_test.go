package keystore

import (
	"errors"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TestNewKeystoreIsPrivate: a keystore created by a write is 0700, its
// secret directories 0700, as README says.
func TestNewKeystoreIsPrivate(t *testing.T) {
	o := Options{Dir: filepath.Join(t.TempDir(), "ks")}
	a, _ := genPGP(t, "a@example.org", time.Now().Add(-time.Hour), false)
	if _, err := Import(o, []byte(a), "a.asc", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	for rel, want := range map[string]fs.FileMode{".": 0o700, DirOpenPGP: 0o755, DirPrivate: 0o700,
		filepath.Join(DirPrivate, PrivOpenPGP): 0o700, filepath.Join(DirPrivate, PrivSMIME): 0o700} {
		fi, err := os.Stat(filepath.Join(o.Dir, rel))
		if err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v %v, want mode %04o", rel, fi.Mode(), err, want)
		}
	}
}

// TestRootManagesServiceKeystore: root (an admin running `keys`) writes
// into a keystore owned by the service user (nobody here): every file and
// directory it creates belongs to that user, the user reads them all, and
// root reads the secrets it does not own.
func TestRootManagesServiceKeystore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("root's writes into another user's keystore can only be tested as root")
	}
	uid, gid := unprivUser(t)
	o := Options{Dir: unprivDir(t)}
	if _, err := Init(o, []string{"rt@example.org"}, true, time.Now()); err != nil {
		t.Fatal(err)
	}
	pub, _ := genPGP(t, "alice@example.org", time.Now().Add(-time.Hour), false)
	sec, _ := genPGP(t, "gw2@example.org", time.Now().Add(-time.Hour), true)
	if _, err := ImportAll(o, []Input{{"alice.asc", []byte(pub)}, {"gw2.asc", []byte(sec)},
		{"dave.pem", smimeCert(t, "dave@example.org", false)}}, false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	owners := func(wantGID int) {
		t.Helper()
		n := 0
		filepath.Walk(o.Dir, func(p string, fi os.FileInfo, err error) error {
			if err != nil {
				t.Fatal(err)
			}
			if u, g := ownerGroup(fi); u != uid || g != wantGID {
				t.Errorf("%s: owned by %d:%d, want the keystore's owner %d:%d", p, u, g, uid, wantGID)
			}
			n++
			return nil
		})
		if n < 12 {
			t.Fatalf("only %d files and directories in the keystore", n)
		}
	}
	owners(gid)
	if _, err := os.Stat(filepath.Join(o.Dir, lockName)); err != nil {
		t.Errorf("no lock file: %v", err)
	}
	// Root reads secrets owned by the keystore's owner.
	s := mustLoad(t, o)
	if len(s.Faults()) != 0 || len(s.Problems()) != 0 || len(s.GatewayAddresses()) != 2 {
		t.Fatalf("root's load: faults %v, problems %v, gateway %v", s.Faults(), s.Problems(), s.GatewayAddresses())
	}
	// The service user reads everything root wrote.
	h := startHelper(t, o.Dir, "rt@example.org", "gw2@example.org", "alice@example.org", "dave@example.org")
	r := h.do("load")
	for _, k := range []string{"rt@example.org gw-openpgp", "rt@example.org gw-smime", "gw2@example.org gw-openpgp",
		"alice@example.org openpgp", "dave@example.org cert"} {
		if r.Lookups[k] != "ok" {
			t.Errorf("as uid %d: %s = %s (faults %v, problems %v)", uid, k, r.Lookups[k], r.Faults, r.Problems)
		}
	}
	// With a service group, files get that group.
	g, err := user.LookupGroupId("1")
	if err != nil {
		t.Skipf("no group 1 for the service group case: %v", err)
	}
	o.ServiceGroup = g.Name
	if _, err := Import(o, smimeCert(t, "erin@example.org", false), "erin.pem", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	for _, r := range mustLoad(t, o).Entries(time.Now()) {
		if r.Addresses[0] == "erin@example.org" {
			fi, _ := os.Stat(filepath.Join(o.Dir, r.File))
			if _, gg := ownerGroup(fi); strconv.Itoa(gg) != g.Gid {
				t.Errorf("%s: group %d, want the service group %s", r.File, gg, g.Gid)
			}
		}
	}
}

// TestSecretOwner: a secret owned by another user is refused, and the
// error names the keystore's owner as the one it should have (never root
// when the keystore belongs to the service user).
func TestSecretOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("files owned by another user can only be made as root")
	}
	uid, _ := unprivUser(t)
	o := Options{Dir: unprivDir(t)}
	sec, _ := genPGP(t, "gw@example.org", time.Now().Add(-time.Hour), true)
	if _, err := Import(o, []byte(sec), "gw.asc", false, nil, time.Now()); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(o.Dir, DirPrivate, PrivOpenPGP, "*.asc"))
	os.Chown(files[0], 12345, 12345)
	s := mustLoad(t, o)
	var pe *PermissionError
	if len(s.Faults()) != 1 || !errors.As(s.Faults()[0].Err, &pe) || pe.Owner != 12345 || pe.WantOwner != uid {
		t.Fatalf("faults %v; want one PermissionError naming owner 12345 and the keystore's owner %d", s.Faults(), uid)
	}
	if _, err := s.GatewayOpenPGPAt("gw@example.org", time.Now()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("gateway key with a foreign owner: %v, want ErrUnavailable", err)
	}
}
