package keystore

import (
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// secretPolicy decides which modes and owners secrets may have. A secret
// may be owned by the user reading it, by root, or by the owner of the
// keystore directory: the directory's owner can replace any file in it
// anyway, and this lets root manage (and read) a keystore owned by the
// service user.
type secretPolicy struct {
	uid      int // effective uid of this process
	owner    int // owner of the keystore directory
	groupGID int // -1 if no service group
	group    string
}

func newSecretPolicy(o Options, dir fs.FileInfo) (secretPolicy, error) {
	p := secretPolicy{uid: os.Geteuid(), owner: -1, groupGID: -1}
	if uid, _ := ownerGroup(dir); uid >= 0 {
		p.owner = uid
	}
	if o.ServiceGroup != "" {
		gid, err := lookupGroup(o.ServiceGroup)
		if err != nil {
			return p, err
		}
		p.groupGID, p.group = gid, o.ServiceGroup
	}
	return p, nil
}

// lookupGroup returns the gid of a group name (or a numeric gid).
func lookupGroup(name string) (int, error) {
	if gid, err := strconv.Atoi(name); err == nil {
		return gid, nil
	}
	g, err := user.LookupGroup(name)
	if err != nil {
		return -1, fmt.Errorf("keystore: service group %q: %w", name, err)
	}
	gid, err := strconv.Atoi(g.Gid)
	if err != nil {
		return -1, fmt.Errorf("keystore: service group %q: bad gid %q", name, g.Gid)
	}
	return gid, nil
}

func ownerGroup(fi fs.FileInfo) (uid, gid int) {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return int(st.Uid), int(st.Gid)
	}
	return -1, -1
}

// checkSecretFile refuses a secret file readable by others than its owner
// (or the service group), or owned by someone not allowed.
func (p secretPolicy) checkSecretFile(path string, fi fs.FileInfo) error {
	uid, gid := ownerGroup(fi)
	return p.checkSecret(path, false, fi.Mode().Perm(), uid, gid)
}

// checkSecretDir applies the same rule to the private directories.
func (p secretPolicy) checkSecretDir(path string, fi fs.FileInfo) error {
	uid, gid := ownerGroup(fi)
	return p.checkSecret(path, true, fi.Mode().Perm(), uid, gid)
}

func (p secretPolicy) checkSecret(path string, dir bool, perm fs.FileMode, uid, gid int) error {
	want := fs.FileMode(0o600)
	if dir {
		want = 0o700
	}
	if uid != p.uid && uid != 0 && uid != p.owner {
		wantOwner := p.owner
		if wantOwner <= 0 {
			wantOwner = p.uid
		}
		return &PermissionError{Path: path, Dir: dir, Mode: perm, Want: want, Group: p.group, Owner: uid, WantOwner: wantOwner}
	}
	if perm&^want == 0 {
		return nil
	}
	groupMode := want | want>>3&0o050
	if p.groupGID >= 0 && gid == p.groupGID && perm&^groupMode == 0 {
		return nil
	}
	return &PermissionError{Path: path, Dir: dir, Mode: perm, Want: want, Group: p.group, Owner: uid, WantOwner: -1}
}
