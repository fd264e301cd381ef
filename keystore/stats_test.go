package keystore

import (
	"os"
	"testing"
	"time"
)

// TestCountsAndReloadError: Counts follows what a load read, and
// ReloadError is set by a failed reload and cleared by a good one.
func TestCountsAndReloadError(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir}
	if _, err := Init(opts, []string{"gw@example.org"}, false, time.Now()); err != nil {
		t.Fatal(err)
	}
	h, err := NewHolder(opts)
	if err != nil {
		t.Fatal(err)
	}
	got := h.Current().Counts()
	want := map[string]int{"public": 0, "secret": 1, "certificate": 0, "identity": 1, "ca": 0, "crl": 0}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("Counts()[%q] = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	if len(got) != len(want) {
		t.Errorf("Counts() = %v, want the kinds %v", got, want)
	}
	if err := h.ReloadError(); err != nil {
		t.Fatalf("ReloadError after the first load: %v", err)
	}
	// The directory vanishes: the reload fails, the old keys stay.
	moved := dir + ".moved"
	if err := os.Rename(dir, moved); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err == nil {
		t.Fatal("reload of a missing keystore succeeded")
	}
	if err := h.ReloadError(); err == nil {
		t.Error("ReloadError is nil after a failed reload")
	}
	if h.Current().Counts()["secret"] != 1 {
		t.Error("the failed reload dropped the loaded keys")
	}
	if err := os.Rename(moved, dir); err != nil {
		t.Fatal(err)
	}
	if err := h.Reload(); err != nil {
		t.Fatal(err)
	}
	if err := h.ReloadError(); err != nil {
		t.Errorf("ReloadError after a good reload: %v", err)
	}
}
