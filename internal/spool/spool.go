// Package spool implements the private message spool: bodies are kept in
// memory up to a threshold and then in an unlinked temporary file inside a
// 0700 directory, so nothing is left on disk after a crash.
package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// Dir is a spool directory.
type Dir struct {
	path      string
	threshold int64
}

// Open creates (if needed) and checks the spool directory at path, removes
// files a crash may have left there, and returns it. Buffers stay in memory
// up to threshold bytes.
func Open(path string, threshold int64) (*Dir, error) {
	if err := os.MkdirAll(path, 0o700); err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("spool: %s is not a directory", path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(path, 0o700); err != nil {
			return nil, fmt.Errorf("spool: %s is mode %o and cannot be made 0700: %w", path, fi.Mode().Perm(), err)
		}
	}
	entries, err := os.ReadDir(path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	for _, e := range entries {
		if !e.IsDir() {
			os.Remove(filepath.Join(path, e.Name()))
		}
	}
	return &Dir{path: path, threshold: threshold}, nil
}

// Path returns the directory's path.
func (d *Dir) Path() string { return d.path }

// New returns an empty buffer.
func (d *Dir) New() *Buffer { return &Buffer{dir: d} }

// NewFile returns an empty buffer that keeps its content in an unlinked
// 0600 file in dir from the first byte. dir is used as it is (it is not
// created, checked or cleaned as Open does).
func NewFile(dir string) (*Buffer, error) {
	f, err := createUnlinked(dir)
	if err != nil {
		return nil, err
	}
	return &Buffer{file: f}, nil
}

// createUnlinked creates a 0600 file in dir and unlinks it at once: the
// open descriptor keeps the data, and a crash leaves nothing behind.
func createUnlinked(dir string) (*os.File, error) {
	f, err := os.CreateTemp(dir, "body-*")
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	if err := os.Remove(f.Name()); err != nil {
		f.Close()
		return nil, fmt.Errorf("spool: %w", err)
	}
	return f, nil
}

// Buffer is a write-once, read-many byte store. Write it fully, then read it
// with Reader or ReadAt as often as needed, from any number of goroutines.
// Close releases it.
type Buffer struct {
	dir    *Dir
	mem    bytes.Buffer
	file   *os.File
	size   int64
	closed bool
	// pend holds small writes to the file until writeChunk bytes gather
	// (callers write a line or a decoded block at a time: one system call
	// each was a fifth of the CPU of a 1 MB inbound message); the first
	// read writes it out.
	pend     []byte
	dirty    atomic.Bool // pend is not empty
	mu       sync.Mutex  // guards the flush of pend by readers
	flushErr error       // under mu
	failed   atomic.Bool // flushErr is set
}

// writeChunk is what a spilled buffer gathers before it writes.
const writeChunk = 64 << 10

// errClosed is returned by reads after Close.
var errClosed = errors.New("spool: buffer is closed")

// Write implements io.Writer.
func (b *Buffer) Write(p []byte) (int, error) {
	if b.file == nil && b.dir != nil && int64(b.mem.Len()+len(p)) > b.dir.threshold {
		f, err := createUnlinked(b.dir.path)
		if err != nil {
			return 0, err
		}
		if _, err := f.Write(b.mem.Bytes()); err != nil {
			f.Close()
			return 0, fmt.Errorf("spool: %w", err)
		}
		b.mem = bytes.Buffer{}
		b.file = f
	}
	if b.file != nil {
		return b.writeFile(p)
	}
	n, _ := b.mem.Write(p)
	b.size += int64(n)
	return n, nil
}

// writeFile writes p to the file, gathering small writes in pend.
func (b *Buffer) writeFile(p []byte) (int, error) {
	if len(b.pend)+len(p) > writeChunk {
		if err := b.flush(); err != nil {
			return 0, err
		}
	}
	if len(p) >= writeChunk {
		n, err := b.file.Write(p)
		b.size += int64(n)
		if err != nil {
			return n, fmt.Errorf("spool: %w", err)
		}
		return n, nil
	}
	if b.pend == nil {
		b.pend = make([]byte, 0, writeChunk)
	}
	b.pend = append(b.pend, p...)
	b.size += int64(len(p))
	b.dirty.Store(true)
	return len(p), nil
}

// flush writes pend to the file; once it failed, it fails again.
func (b *Buffer) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.flushErr == nil && len(b.pend) > 0 && b.file != nil {
		if _, err := b.file.Write(b.pend); err != nil {
			b.flushErr = fmt.Errorf("spool: %w", err)
			b.failed.Store(true)
		}
		b.pend = b.pend[:0]
	}
	b.dirty.Store(false)
	return b.flushErr
}

// flushed makes what was written readable from the file.
func (b *Buffer) flushed() error {
	if b.dirty.Load() || b.failed.Load() {
		return b.flush()
	}
	return nil
}

// Size returns the number of bytes written.
func (b *Buffer) Size() int64 { return b.size }

// OnDisk reports whether the buffer spilled to a file.
func (b *Buffer) OnDisk() bool { return b.file != nil }

// Reader returns a new reader over the whole content.
func (b *Buffer) Reader() io.Reader {
	if b.file != nil {
		if err := b.flushed(); err != nil {
			return errReader{err}
		}
		return io.NewSectionReader(b.file, 0, b.size)
	}
	return bytes.NewReader(b.mem.Bytes())
}

// ReadAt implements io.ReaderAt over what was written. A read that the
// file cannot satisfy within Size (it was cut short on disk) is an error,
// never a silent EOF.
func (b *Buffer) ReadAt(p []byte, off int64) (int, error) {
	switch {
	case b.closed:
		return 0, errClosed
	case off < 0:
		return 0, errors.New("spool: negative offset")
	case off >= b.size:
		if len(p) == 0 {
			return 0, nil
		}
		return 0, io.EOF
	}
	want := len(p)
	if rest := b.size - off; int64(want) > rest {
		want = int(rest)
	}
	var n int
	if b.file != nil {
		if err := b.flushed(); err != nil {
			return 0, err
		}
		var err error
		if n, err = b.file.ReadAt(p[:want], off); n < want {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return n, fmt.Errorf("spool: %w", err)
		}
	} else {
		n = copy(p[:want], b.mem.Bytes()[off:])
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Bytes returns the content; for a spilled buffer it reads the file.
func (b *Buffer) Bytes() ([]byte, error) {
	if b.file == nil {
		return b.mem.Bytes(), nil
	}
	return io.ReadAll(b.Reader())
}

// Close releases the buffer's memory or file.
func (b *Buffer) Close() error {
	b.closed = true
	b.mem = bytes.Buffer{}
	b.pend = nil
	if b.file != nil {
		err := b.file.Close()
		b.file = nil
		if err != nil && !errors.Is(err, os.ErrClosed) {
			return fmt.Errorf("spool: %w", err)
		}
	}
	return nil
}

// FromBytes returns a memory buffer holding p (not copied).
func FromBytes(p []byte) *Buffer {
	b := &Buffer{size: int64(len(p))}
	b.mem = *bytes.NewBuffer(p)
	return b
}

// errReader fails every read with err.
type errReader struct{ err error }

func (r errReader) Read([]byte) (int, error) { return 0, r.err }
