package keystore

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// PermError is a secret file or directory whose mode or owner is unsafe.
type PermError struct {
	Path string      // full path
	Mode fs.FileMode // permission bits found
	Fix  string      // the command that fixes it
	Why  string
}

func (e *PermError) Error() string {
	return fmt.Sprintf("%s (mode %04o); fix: %s", e.Why, e.Mode.Perm(), e.Fix)
}

// secretPolicy decides which modes and owners secrets may have.
type secretPolicy struct {
	uid      int
	groupGID int // -1 if no service group
}

func newSecretPolicy(o Options) (secretPolicy, error) {
	p := secretPolicy{uid: os.Geteuid(), groupGID: -1}
	if o.ServiceGroup != "" {
		g, err := user.LookupGroup(o.ServiceGroup)
		if err != nil {
			return p, fmt.Errorf("keystore: service group %q: %w", o.ServiceGroup, err)
		}
		gid, err := strconv.Atoi(g.Gid)
		if err != nil {
			return p, fmt.Errorf("keystore: service group %q: bad gid %q", o.ServiceGroup, g.Gid)
		}
		p.groupGID = gid
	}
	return p, nil
}

func ownerGroup(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// checkSecretFile refuses a secret file readable by others than its owner
// (or the service group), or owned by someone other than us or root, as
// ssh does for private keys.
func (p secretPolicy) checkSecretFile(path string, fi fs.FileInfo) error {
	return p.check(path, fi, 0o600, 0o640, "600")
}

// checkSecretDir applies the same rule to the private directories.
func (p secretPolicy) checkSecretDir(path string, fi fs.FileInfo) error {
	return p.check(path, fi, 0o700, 0o750, "700")
}

func (p secretPolicy) check(path string, fi fs.FileInfo, strict, group fs.FileMode, chmod string) error {
	uid, gid := ownerGroup(fi)
	return p.checkSecret(path, fi.Mode().Perm(), uid, gid, strict, group, chmod)
}

func (p secretPolicy) checkSecret(path string, perm fs.FileMode, uid, gid int, strict, group fs.FileMode, chmod string) error {
	if uid != p.uid && uid != 0 {
		return &PermError{Path: path, Mode: perm, Why: fmt.Sprintf("owned by uid %d, not by uid %d or root", uid, p.uid),
			Fix: fmt.Sprintf("chown %d %s", p.uid, path)}
	}
	if perm&^strict == 0 {
		return nil
	}
	if p.groupGID >= 0 && gid == p.groupGID && perm&^group == 0 {
		return nil
	}
	return &PermError{Path: path, Mode: perm, Why: "permissions too open for secret key material",
		Fix: fmt.Sprintf("chmod %s %s", chmod, path)}
}
