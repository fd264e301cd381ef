package spool

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
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
