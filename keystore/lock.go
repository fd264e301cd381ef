package keystore

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"

	"github.com/cryptmilter/cryptmilter/internal/atomicfile"
)

// lockShared takes a shared lock on DIR/.lock while a snapshot is read, so
// that a load never sees half of a multi-file write. If the lock file
// cannot be opened (read-only keystore, no lock file yet and no write
// permission) the load proceeds without it: each file is still replaced
// atomically.
func lockShared(dir string) func() {
	f, err := os.Open(filepath.Join(dir, lockName))
	if err != nil {
		return func() {}
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH); err != nil {
		f.Close()
		return func() {}
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}
}

// writer writes files into a keystore: as the keystore directory's owner
// when run as root, so that root (an admin running `keys`) manages a
// keystore the service user reads.
type writer struct {
	dir string
	// uid and gid of every file and directory written, -1 to leave them
	// to the writing process: the keystore directory's owner and its
	// group, or the configured service group.
	uid, gid int
}

// newWriter returns the writer for the keystore of opts, which must exist.
func newWriter(opts Options) (writer, error) {
	w := writer{dir: opts.Dir, uid: -1, gid: -1}
	if os.Geteuid() != 0 {
		return w, nil
	}
	fi, err := os.Stat(opts.Dir)
	if err != nil {
		return w, &ReadError{Path: opts.Dir, Err: err}
	}
	w.uid, w.gid = ownerGroup(fi)
	if opts.ServiceGroup != "" {
		if w.gid, err = lookupGroup(opts.ServiceGroup); err != nil {
			return w, err
		}
	}
	return w, nil
}

// chown gives a file written by root to the keystore's owner.
func (w writer) chown(f *os.File) error {
	if w.uid < 0 {
		return nil
	}
	return f.Chown(w.uid, w.gid)
}

// lockExclusive takes the writers' lock on DIR/.lock, creating it.
func (w writer) lockExclusive() (func(), error) {
	f, err := os.OpenFile(filepath.Join(w.dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("keystore: lock: %w", err)
	}
	if err := w.chown(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("keystore: lock: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("keystore: lock: %w", err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// lockedSnapshot takes the writers' lock and loads the keystore under it,
// for a change: the caller writes with w, then calls unlock. With create,
// the keystore's directories are created first where missing.
func lockedSnapshot(opts Options, create bool) (snap *Snapshot, w writer, unlock func(), err error) {
	if create {
		w, err = ensureDirs(opts)
	} else {
		w, err = newWriter(opts)
	}
	if err != nil {
		return nil, w, nil, err
	}
	unlock, err = w.lockExclusive()
	if err != nil {
		return nil, w, nil, err
	}
	snap, err = load(opts, loadParams{workers: max(runtime.GOMAXPROCS(0), 4)})
	if err != nil {
		unlock()
		return nil, w, nil, err
	}
	return snap, w, unlock, nil
}

// write writes data to rel (relative to the keystore) atomically: a
// temporary file in the same directory, chmod, chown, fsync, rename, fsync
// of the directory.
func (w writer) write(rel string, data []byte, perm os.FileMode) error {
	dir, name := filepath.Join(w.dir, filepath.Dir(rel)), filepath.Base(rel)
	if err := atomicfile.Write(dir, name, data, perm, w.uid, w.gid); err != nil {
		return fmt.Errorf("keystore: write %s: %w", rel, err)
	}
	return nil
}

// remove removes rel (relative to the keystore) and syncs its directory.
func (w writer) remove(rel string) error {
	if err := os.Remove(filepath.Join(w.dir, rel)); err != nil {
		return fmt.Errorf("keystore: remove: %w", err)
	}
	return syncDir(filepath.Dir(filepath.Join(w.dir, rel)))
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("keystore: sync %s: %w", dir, err)
	}
	return nil
}

// ensureDirs creates the keystore layout where it is missing, with safe
// modes (the keystore itself 0700, the secret directories 0700, the
// public ones 0755 inside it), owned as the writer writes files.
func ensureDirs(opts Options) (writer, error) {
	if err := os.Mkdir(opts.Dir, 0o700); err != nil && !os.IsExist(err) {
		return writer{}, fmt.Errorf("keystore: create %s: %w", opts.Dir, err)
	}
	w, err := newWriter(opts)
	if err != nil {
		return w, err
	}
	for _, d := range []struct {
		rel  string
		mode os.FileMode
	}{
		{DirOpenPGP, 0o755},
		{DirCerts, 0o755},
		{DirCA, 0o755},
		{DirCRL, 0o755},
		{DirPrivate, 0o700},
		{filepath.Join(DirPrivate, PrivOpenPGP), 0o700},
		{filepath.Join(DirPrivate, PrivSMIME), 0o700},
	} {
		p := filepath.Join(opts.Dir, d.rel)
		err := os.Mkdir(p, d.mode)
		if os.IsExist(err) {
			continue
		}
		if err == nil && w.uid >= 0 {
			err = os.Chown(p, w.uid, w.gid)
		}
		if err != nil {
			return w, fmt.Errorf("keystore: create %s: %w", p, err)
		}
	}
	return w, nil
}

func readDirNames(dir string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(ents))
	for _, e := range ents {
		if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			names = append(names, e.Name())
		}
	}
	return names, nil
}

// safeName turns an address or name into a file name component.
func safeName(s string) string {
	if out := SafeName(s, 80); out != "" {
		return out
	}
	return "key"
}

// SafeName turns s into a file name component of at most max bytes:
// letters, digits and "@._+-" kept, anything else "_", no leading dot.
func SafeName(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '@', r == '.', r == '_', r == '+', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	out := strings.TrimLeft(b.String(), ".")
	if len(out) > max {
		out = out[:max]
	}
	return out
}
