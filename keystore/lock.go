package keystore

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
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

// lockExclusive takes the writers' lock on DIR/.lock, creating it.
func lockExclusive(dir string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(dir, lockName), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
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
// for a change: the caller writes, then calls unlock.
func lockedSnapshot(opts Options) (snap *Snapshot, unlock func(), err error) {
	unlock, err = lockExclusive(opts.Dir)
	if err != nil {
		return nil, nil, err
	}
	snap, err = load(opts, nil, false, max(runtime.GOMAXPROCS(0), 4))
	if err != nil {
		unlock()
		return nil, nil, err
	}
	return snap, unlock, nil
}

// writeFileAtomic writes data to dir/name through a temporary file in the
// same directory: write, chmod, fsync, rename, fsync the directory.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	f, err := os.CreateTemp(dir, ".tmp-"+name+"-*")
	if err != nil {
		return fmt.Errorf("keystore: write %s: %w", name, err)
	}
	tmp := f.Name()
	fail := func(err error) error {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("keystore: write %s: %w", name, err)
	}
	if err := f.Chmod(perm); err != nil {
		return fail(err)
	}
	if _, err := f.Write(data); err != nil {
		return fail(err)
	}
	if err := f.Sync(); err != nil {
		return fail(err)
	}
	if err := f.Close(); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keystore: write %s: %w", name, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("keystore: write %s: %w", name, err)
	}
	return syncDir(dir)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("keystore: sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("keystore: sync %s: %w", dir, err)
	}
	return nil
}

// removeFileSynced removes a file and syncs its directory.
func removeFileSynced(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("keystore: remove: %w", err)
	}
	return syncDir(filepath.Dir(path))
}

// ensureDirs creates the keystore layout with safe modes.
func ensureDirs(dir string) error {
	for _, d := range []struct {
		path string
		mode os.FileMode
	}{
		{dir, 0o755},
		{filepath.Join(dir, DirOpenPGP), 0o755},
		{filepath.Join(dir, DirCerts), 0o755},
		{filepath.Join(dir, DirCA), 0o755},
		{filepath.Join(dir, DirCRL), 0o755},
		{filepath.Join(dir, DirPrivate), 0o700},
		{filepath.Join(dir, DirPrivate, PrivOpenPGP), 0o700},
		{filepath.Join(dir, DirPrivate, PrivSMIME), 0o700},
	} {
		if err := os.Mkdir(d.path, d.mode); err != nil && !os.IsExist(err) {
			return fmt.Errorf("keystore: create %s: %w", d.path, err)
		}
	}
	return nil
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

func extOf(name string) string { return filepath.Ext(name) }

// safeName turns an address or name into a file name component.
func safeName(s string) string {
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
	if len(out) > 80 {
		out = out[:80]
	}
	if out == "" {
		out = "key"
	}
	return out
}
