package spool

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestBufferSpills(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	sp, err := Open(dir, 16)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dir)
	if err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("spool dir mode = %v, %v; want 0700", fi.Mode().Perm(), err)
	}
	small := sp.New()
	small.Write([]byte("0123456789"))
	if small.OnDisk() {
		t.Error("10 bytes spilled to disk with a 16-byte threshold")
	}
	big := sp.New()
	want := bytes.Repeat([]byte("abcdefgh"), 1000)
	for i := 0; i < len(want); i += 7 {
		big.Write(want[i:min(i+7, len(want))])
	}
	if !big.OnDisk() {
		t.Error("8000 bytes stayed in memory with a 16-byte threshold")
	}
	// The file is unlinked at once: nothing in the directory.
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("spool dir holds %d entries, want 0 (files unlinked at once)", len(ents))
	}
	for i := 0; i < 2; i++ { // readable more than once
		got, _ := io.ReadAll(big.Reader())
		if !bytes.Equal(got, want) {
			t.Fatalf("read %d: got %d bytes, want %d", i, len(got), len(want))
		}
	}
	if big.Size() != int64(len(want)) {
		t.Errorf("Size = %d", big.Size())
	}
	big.Close()
	small.Close()
}

func TestOpenCleansAndFixesMode(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	os.Mkdir(dir, 0o755)
	os.WriteFile(filepath.Join(dir, "body-stale"), []byte("plaintext"), 0o600)
	if _, err := Open(dir, 0); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("stale file left behind: %v", ents)
	}
	if fi, _ := os.Stat(dir); fi.Mode().Perm() != 0o700 {
		t.Errorf("mode %v, want 0700", fi.Mode().Perm())
	}
	f := filepath.Join(t.TempDir(), "file")
	os.WriteFile(f, nil, 0o600)
	if _, err := Open(f, 0); err == nil {
		t.Error("Open on a regular file succeeded")
	}
}

// TestBufferReadAt: ReadAt reads what was written, in memory and on disk,
// ends with io.EOF at the size, and fails after Close.
func TestBufferReadAt(t *testing.T) {
	sp, err := Open(filepath.Join(t.TempDir(), "spool"), 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{50, 5000} { // in memory, on disk
		b := sp.New()
		want := bytes.Repeat([]byte("0123456789"), size/10)
		b.Write(want)
		if b.OnDisk() != (size > 100) {
			t.Fatalf("%d bytes: OnDisk %v", size, b.OnDisk())
		}
		got := make([]byte, 7)
		for off := 0; off < size; off += 7 {
			n, err := b.ReadAt(got, int64(off))
			end := min(off+7, size)
			if n != end-off || !bytes.Equal(got[:n], want[off:end]) {
				t.Fatalf("%d bytes: ReadAt(7, %d) = %q", size, off, got[:n])
			}
			if (end-off < 7) != (err == io.EOF) || err != nil && err != io.EOF {
				t.Fatalf("%d bytes: ReadAt(7, %d) error %v", size, off, err)
			}
		}
		if n, err := b.ReadAt(got, int64(size)); n != 0 || err != io.EOF {
			t.Errorf("%d bytes: ReadAt at the end = %d, %v", size, n, err)
		}
		if r, err := io.ReadAll(io.NewSectionReader(b, 0, b.Size())); err != nil || !bytes.Equal(r, want) {
			t.Errorf("%d bytes: section reader %v", size, err)
		}
		b.Close()
		if _, err := b.ReadAt(got, 0); err == nil {
			t.Errorf("%d bytes: ReadAt after Close succeeded", size)
		}
	}
}

// TestSmallWritesSpilled: a spilled buffer written a few bytes at a time
// (gathered before they reach the file) reads back exactly, through
// Reader, ReadAt from several goroutines at once, and Bytes.
func TestSmallWritesSpilled(t *testing.T) {
	d, err := Open(t.TempDir(), 1000)
	if err != nil {
		t.Fatal(err)
	}
	b := d.New()
	defer b.Close()
	var want []byte
	for i := 0; len(want) < 3*writeChunk+123; i++ {
		p := []byte(fmt.Sprintf("line %d of a message\r\n", i))
		if i%997 == 0 {
			p = bytes.Repeat([]byte{byte(i)}, writeChunk+7) // a large write among small ones
		}
		if n, err := b.Write(p); n != len(p) || err != nil {
			t.Fatalf("Write: %d, %v", n, err)
		}
		want = append(want, p...)
	}
	if !b.OnDisk() || b.Size() != int64(len(want)) {
		t.Fatalf("OnDisk %v, Size %d, want a file of %d bytes", b.OnDisk(), b.Size(), len(want))
	}
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got := make([]byte, 5000)
			for off := int64(g * 100); off < int64(len(want)); off += 4999 {
				n, err := b.ReadAt(got, off)
				if err != nil && err != io.EOF || !bytes.Equal(got[:n], want[off:off+int64(n)]) {
					t.Errorf("ReadAt at %d: %d bytes, %v", off, n, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	all, err := io.ReadAll(b.Reader())
	if err != nil || !bytes.Equal(all, want) {
		t.Errorf("Reader: %d bytes, %v; want %d", len(all), err, len(want))
	}
	if all, err := b.Bytes(); err != nil || !bytes.Equal(all, want) {
		t.Errorf("Bytes: %d bytes, %v", len(all), err)
	}
}
