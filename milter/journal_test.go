package milter

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
	"github.com/cryptmilter/cryptmilter/internal/spool"
)

// clock is a settable time for journal tests.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func testJournal(t *testing.T, dir string, ttl time.Duration, c *clock) *journal {
	t.Helper()
	j, err := openJournal(dir, ttl, c.now, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(j.close)
	return j
}

func key(s string) journalKey { return copyKey(journalKey{}, []string{s}) }

// handOverOnce claims k and records it, as a successful hand-over does.
func handOverOnce(t *testing.T, j *journal, k journalKey) {
	t.Helper()
	done, release, err := j.claim(k)
	if err != nil || done {
		t.Fatalf("claim: done %v, err %v; want a fresh claim", done, err)
	}
	if err := j.record(k); err != nil {
		t.Fatal(err)
	}
	release()
}

// TestJournalPersists: a recorded copy is known after a restart (the
// file is reopened), until the TTL has passed; an unrecorded claim
// (failed hand-over) is not.
func TestJournalPersists(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reinject")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	const ttl = 5 * 24 * time.Hour
	j := testJournal(t, dir, ttl, c)
	handOverOnce(t, j, key("a"))
	_, release, _ := j.claim(key("failed"))
	release()
	j.close()

	c.add(ttl - time.Minute)
	j = testJournal(t, dir, ttl, c)
	if done, _, _ := j.claim(key("a")); !done {
		t.Error("a recorded copy is unknown after reopening")
	}
	if done, rel, _ := j.claim(key("failed")); done {
		t.Error("a copy whose hand-over failed counts as handed over")
	} else {
		rel()
	}
	c.add(2 * time.Minute)
	if done, rel, _ := j.claim(key("a")); done {
		t.Error("a record past the TTL still counts")
	} else {
		rel()
	}
	j.close()
	j = testJournal(t, dir, ttl, c)
	if len(j.done) != 0 {
		t.Errorf("%d expired records kept at open", len(j.done))
	}
	fi, err := os.Stat(filepath.Join(dir, journalName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() != 0 {
		t.Errorf("journal file of %d bytes after every record expired", fi.Size())
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("journal mode %v, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("journal directory mode %v, want 0700", di.Mode().Perm())
	}
}

// TestJournalTornLine: a line cut by a crash is ignored, the records
// before it are kept, and the next open leaves a clean file.
func TestJournalTornLine(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reinject")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	j := testJournal(t, dir, time.Hour, c)
	handOverOnce(t, j, key("a"))
	j.close()
	path := filepath.Join(dir, journalName)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("1 1800000000 abcd")
	f.Close()
	j = testJournal(t, dir, time.Hour, c)
	if done, _, _ := j.claim(key("a")); !done {
		t.Error("the record before a torn line was lost")
	}
	handOverOnce(t, j, key("b"))
	j.close()
	b, _ := os.ReadFile(path)
	if lines := strings.Split(strings.TrimSpace(string(b)), "\n"); len(lines) != 2 {
		t.Errorf("journal after reopening and one record:\n%s", b)
	}
	j = testJournal(t, dir, time.Hour, c)
	if done, _, _ := j.claim(key("b")); !done {
		t.Error("a record appended after a torn line was lost")
	}
}

// TestJournalConcurrent: while one session hands a copy over, another
// with the same copy gets errCopyInFlight; after a failure the copy can
// be claimed again; concurrent records of different copies all persist.
func TestJournalConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reinject")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	j := testJournal(t, dir, time.Hour, c)
	_, release, err := j.claim(key("x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := j.claim(key("x")); !errors.Is(err, errCopyInFlight) {
		t.Errorf("second claim while in flight: %v, want errCopyInFlight", err)
	}
	release()
	if done, rel, err := j.claim(key("x")); done || err != nil {
		t.Errorf("claim after a failed hand-over: done %v err %v", done, err)
	} else {
		rel()
	}
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k := key(strings.Repeat("k", i+1))
			done, rel, err := j.claim(k)
			if err != nil || done {
				t.Errorf("claim %d: %v %v", i, done, err)
				return
			}
			if err := j.record(k); err != nil {
				t.Error(err)
			}
			rel()
		}()
	}
	wg.Wait()
	j.close()
	j = testJournal(t, dir, time.Hour, c)
	if len(j.done) != 50 {
		t.Errorf("%d records after 50 concurrent hand-overs", len(j.done))
	}
}

// TestJournalPrunes: records are dropped from the file once expired, as
// records are added (not only at open).
func TestJournalPrunes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "reinject")
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	j := testJournal(t, dir, time.Hour, c)
	handOverOnce(t, j, key("old"))
	c.add(2 * time.Hour)
	handOverOnce(t, j, key("new"))
	b, _ := os.ReadFile(filepath.Join(dir, journalName))
	if strings.Contains(string(b), key("old").String()) || !strings.Contains(string(b), key("new").String()) {
		t.Errorf("journal after pruning:\n%s", b)
	}
}

// TestContentKey: the key of a message is the same for a retry (another
// Received field, the envelope recipients in another order) and differs
// for any change of sender, envelope recipients, header or body, and for
// another set of copy recipients (not their order).
func TestContentKey(t *testing.T) {
	rcpts := []string{"b@y", "a@y"}
	msgTo := func(from string, rcpts []string, h mime.Header, body string) journalKey {
		k, err := contentKey(from, rcpts, crypto.Message{Header: h, Body: spool.FromBytes([]byte(body))})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	msg := func(from string, h mime.Header, body string) journalKey {
		k, err := contentKey(from, rcpts, crypto.Message{Header: h, Body: spool.FromBytes([]byte(body))})
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	h := mime.Header{{Name: "Received", Value: "from a by b id 1"}, {Name: "Message-ID", Value: "<1@x>"}, {Name: "Subject", Value: "s"}}
	base := msg("a@x", h, "body\r\n")
	retry := mime.Header{{Name: "Received", Value: "from a by b id 2"}, {Name: "Received", Value: "from c by a"}, h[1], h[2]}
	if msg("a@x", retry, "body\r\n") != base {
		t.Error("a retry with other Received fields has another key")
	}
	if msgTo("a@x", []string{"a@y", "b@y"}, h, "body\r\n") != base {
		t.Error("the envelope recipients in another order give another key")
	}
	if msgTo("a@x", []string{"a@y"}, h, "body\r\n") == base {
		t.Error("a message to other envelope recipients has the same key")
	}
	for name, k := range map[string]journalKey{
		"sender":  msg("b@x", h, "body\r\n"),
		"body":    msg("a@x", h, "body.\r\n"),
		"subject": msg("a@x", mime.Header{h[0], h[1], {Name: "Subject", Value: "t"}}, "body\r\n"),
		"field":   msg("a@x", append(h.Clone(), mime.Field{Name: "Reply-To", Value: "m@x"}), "body\r\n"),
		// Field boundaries are part of the key.
		"split": msg("a@x", mime.Header{h[0], {Name: "Message-ID", Value: "<1@x>s"}, {Name: "Subject", Value: ""}}, "body\r\n"),
	} {
		if k == base {
			t.Errorf("a message with another %s has the same key", name)
		}
	}
	if copyKey(base, []string{"a", "b"}) != copyKey(base, []string{"b", "a"}) {
		t.Error("the copy key depends on the order of its recipients")
	}
	if copyKey(base, []string{"a", "b"}) == copyKey(base, []string{"a"}) || copyKey(base, []string{"ab"}) == copyKey(base, []string{"a", "b"}) {
		t.Error("copies for other recipients have the same key")
	}
}
