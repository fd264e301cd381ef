package keystore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// ReloadDebounce is how long Watch waits after the last change before
// reloading, so that a burst of writes (an import of many keys, an editor
// saving) causes one reload.
const ReloadDebounce = 200 * time.Millisecond

// Holder keeps the current Snapshot and swaps it atomically on reload.
// Readers call Current and keep the snapshot they got for the whole
// message.
type Holder struct {
	opts      Options
	cur       atomic.Pointer[Snapshot]
	reloadErr atomic.Pointer[error] // of the last reload, nil when it succeeded
	mu        sync.Mutex            // serialises reloads
}

// NewHolder loads the keystore; it fails if the directory is unusable.
// Places in it that cannot be read do not make it fail: they are faults
// of the snapshot (logged, and reported by Health).
func NewHolder(opts Options) (*Holder, error) {
	s, err := Load(opts)
	if err != nil {
		return nil, err
	}
	h := &Holder{opts: opts}
	h.cur.Store(s)
	h.logLoad(s, 0)
	return h, nil
}

// SetOptions replaces the options (address folding, pins, service group,
// credentials) and reloads with them. A change of FoldLocalPart re-parses
// every file.
func (h *Holder) SetOptions(o Options) error {
	h.mu.Lock()
	refold := o.FoldLocalPart != h.opts.FoldLocalPart
	h.opts = o
	if refold {
		h.cur.Load().dropReuse = true
	}
	h.mu.Unlock()
	return h.Reload()
}

// Current returns the snapshot in service.
func (h *Holder) Current() *Snapshot { return h.cur.Load() }

// Reload reads the keystore again and swaps the new snapshot in. Files
// unchanged since the last load are not parsed again. If the directory is
// unusable the old snapshot stays in service and the error is returned
// (and reported by Health until a reload succeeds). A file or directory
// that cannot be read keeps what the previous snapshot read there; files
// whose content cannot be used are logged and left out.
func (h *Holder) Reload() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	start := time.Now()
	prev := h.cur.Load()
	s, err := load(h.opts, loadParams{prev: prev, reuse: !prev.dropReuse, lock: true,
		// Half the CPUs, so that lookups keep running at full speed.
		workers: max(runtime.GOMAXPROCS(0)/2, 1)})
	if err != nil {
		h.reloadErr.Store(&err)
		h.opts.logger().Error("keystore reload failed; keeping the previous keyring", "dir", h.opts.Dir, "error", err)
		return err
	}
	h.reloadErr.Store(nil)
	h.cur.Store(s)
	h.logLoad(s, time.Since(start))
	return nil
}

// logLoad logs what a load found: one summary line, an error per place
// that could not be read, a warning per file left out.
func (h *Holder) logLoad(s *Snapshot, took time.Duration) {
	log := h.opts.logger()
	for _, f := range s.faults {
		what := "keystore path unreadable; its keys are unavailable"
		if f.Kept {
			what = "keystore path unreadable; keeping the keys read there earlier"
		}
		var pe *PermissionError
		if errors.As(f.Err, &pe) {
			what = "keystore secret refused: unsafe permissions"
		}
		log.Error(what, "path", f.Path, "error", f.Err)
	}
	for _, p := range s.problems {
		log.Warn("keystore file skipped", "file", p.File, "error", p.Err)
	}
	log.Info("keystore loaded", "dir", h.opts.Dir,
		"openpgp", len(s.pgp), "certificates", len(s.certs), "anchors", len(s.anchors), "crls", len(s.crls),
		"gateway_openpgp", len(s.gwPGP), "gateway_smime", len(s.smime), "problems", len(s.problems), "faults", len(s.faults),
		"duration", took.Round(time.Millisecond))
}

// Watch reloads the keystore whenever a file in it changes (debounced by
// ReloadDebounce) until ctx is done. It returns nil when ctx ends, or an
// error if watching cannot start.
func (h *Holder) Watch(ctx context.Context) error {
	// The options may change (SetOptions) while watching; the directory
	// cannot.
	h.mu.Lock()
	dir := h.opts.Dir
	h.mu.Unlock()
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("keystore: watch: %w", err)
	}
	defer w.Close()
	watched := map[string]bool{}
	addAll := func() {
		dirs := []string{dir}
		for _, kd := range kindDirs {
			dirs = append(dirs, filepath.Join(dir, kd.dir))
		}
		dirs = append(dirs, filepath.Join(dir, DirPrivate))
		for _, d := range dirs {
			if watched[d] {
				continue
			}
			if fi, err := os.Stat(d); err == nil && fi.IsDir() {
				if err := w.Add(d); err == nil {
					watched[d] = true
				}
			}
		}
	}
	addAll()
	if !watched[dir] {
		return fmt.Errorf("keystore: watch %s: cannot watch the directory", dir)
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			timer.Stop()
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return nil
			}
			base := filepath.Base(ev.Name)
			if strings.HasPrefix(base, ".") {
				continue // lock, temporary files of writers, the spool: never keys
			}
			if ev.Name == filepath.Join(dir, DirDiscovered) {
				continue // key discovery's cache: not the admin's keys
			}
			if ev.Op&fsnotify.Remove != 0 || ev.Op&fsnotify.Rename != 0 {
				delete(watched, ev.Name)
			}
			timer.Reset(ReloadDebounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			h.logger().Warn("keystore watch error", "error", err)
			timer.Reset(ReloadDebounce)
		case <-timer.C:
			addAll() // subdirectories created since
			h.Reload()
		}
	}
}

// logger returns the options' logger, under the lock.
func (h *Holder) logger() *slog.Logger {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.opts.logger()
}
