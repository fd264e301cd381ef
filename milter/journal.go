package milter

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto"
	"github.com/cryptmilter/cryptmilter/crypto/mime"
)

// The hand-over journal makes the hand-over of extra copies idempotent
// across retries of the original. A milter cannot create messages, so
// extra copies go to the re-injection listener over SMTP before their
// recipients are removed from the original; when a later copy fails, the
// whole message is tempfailed and the MTA (or the client) sends it again.
// Without a record, the copies accepted on the first attempt would be
// handed over again on every retry.
//
// Each accepted copy is recorded, with fsync, right after the listener's
// reply to the end of DATA, under a key that is stable across retries of
// the same message and differs for any other message (copyKey), and is
// consulted before a copy is sent: a recorded copy is not sent again but
// its recipients are still removed from the original. Records live
// [outbound] reinject_journal_ttl (default 5 days, Postfix's
// maximal_queue_lifetime: no retry comes later).
//
// The file, SPOOL/reinject/journal (0600 in a 0700 directory), has one
// line per record: "1 UNIXTIME HEXKEY". It is rewritten without expired
// records when opened and then hourly; a torn last line (crash while
// appending) does not parse and is dropped at the next open.
//
// What remains: a crash (or a lost connection) between the listener's
// acceptance of a copy and the journal's fsync leaves the copy
// unrecorded, and a retry delivers it once more: a duplicate, never a
// lost copy.
type journal struct {
	mu        sync.Mutex
	path      string
	f         *os.File
	ttl       time.Duration
	now       func() time.Time
	log       *slog.Logger
	done      map[journalKey]time.Time // key → when the copy was accepted
	busy      map[journalKey]bool      // keys being handed over now
	lastPrune time.Time
}

// journalKey identifies one copy of one message.
type journalKey [sha256.Size]byte

func (k journalKey) String() string { return hex.EncodeToString(k[:]) }

// errCopyInFlight is the hand-over error for a copy that another session
// is handing over at the same time (the same message sent twice at once):
// this attempt is tempfailed, and its retry finds the copy recorded.
var errCopyInFlight = errors.New("milter: the same copy is being handed over by another session (the message is being sent twice at once)")

const journalName = "journal"

// openJournal opens (creating it if needed) the journal in dir, dropping
// records older than ttl.
func openJournal(dir string, ttl time.Duration, now func() time.Time, log *slog.Logger) (*journal, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return nil, fmt.Errorf("milter: hand-over journal: %w", err)
	}
	j := &journal{path: filepath.Join(dir, journalName), ttl: ttl, now: now, log: log,
		done: map[journalKey]time.Time{}, busy: map[journalKey]bool{}}
	if err := j.load(); err != nil {
		return nil, err
	}
	if err := j.compact(); err != nil {
		return nil, err
	}
	return j, nil
}

// load reads the records that have not expired.
func (j *journal) load() error {
	f, err := os.Open(j.path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	defer f.Close()
	oldest := j.now().Add(-j.ttl)
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, t, ok := parseRecord(sc.Text())
		if ok && t.After(oldest) {
			j.done[k] = t
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("milter: hand-over journal %s: %w", j.path, err)
	}
	return nil
}

func parseRecord(line string) (journalKey, time.Time, bool) {
	var k journalKey
	f := strings.Fields(line)
	if len(f) != 3 || f[0] != "1" {
		return k, time.Time{}, false
	}
	sec, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return k, time.Time{}, false
	}
	b, err := hex.DecodeString(f[2])
	if err != nil || len(b) != len(k) {
		return k, time.Time{}, false
	}
	copy(k[:], b)
	return k, time.Unix(sec, 0), true
}

func formatRecord(k journalKey, t time.Time) string {
	return "1 " + strconv.FormatInt(t.Unix(), 10) + " " + k.String() + "\n"
}

// compact rewrites the file with the records in memory (temp file, fsync,
// rename, fsync of the directory) and reopens it for appending. j.mu is
// held or j is not shared yet.
func (j *journal) compact() error {
	var b bytes.Buffer
	keys := make([]journalKey, 0, len(j.done))
	for k := range j.done {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b journalKey) int { return j.done[a].Compare(j.done[b]) })
	for _, k := range keys {
		b.WriteString(formatRecord(k, j.done[k]))
	}
	tmp := j.path + ".tmp"
	if err := writeSynced(tmp, b.Bytes()); err != nil {
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if err := os.Rename(tmp, j.path); err != nil {
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if d, err := os.Open(filepath.Dir(j.path)); err == nil {
		d.Sync()
		d.Close()
	}
	f, err := os.OpenFile(j.path, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		// The old descriptor is that of the file renamed over: appends
		// to it would be lost.
		if j.f != nil {
			j.f.Close()
			j.f = nil
		}
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if j.f != nil {
		j.f.Close()
	}
	j.f = f
	j.lastPrune = j.now()
	return nil
}

func writeSynced(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// claim reports whether the copy key was handed over already. When it
// was not, the caller hands it over, calls record if the listener
// accepted it, and calls release in any case; until then another claim
// of the same key fails with errCopyInFlight.
func (j *journal) claim(k journalKey) (done bool, release func(), err error) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if t, ok := j.done[k]; ok && j.now().Sub(t) < j.ttl {
		return true, nil, nil
	}
	if j.busy[k] {
		return false, nil, errCopyInFlight
	}
	j.busy[k] = true
	return false, func() {
		j.mu.Lock()
		delete(j.busy, k)
		j.mu.Unlock()
	}, nil
}

// record notes, durably, that the listener accepted the copy k.
func (j *journal) record(k journalKey) error {
	j.mu.Lock()
	defer j.mu.Unlock()
	now := j.now()
	j.done[k] = now
	if j.f == nil {
		return errors.New("milter: hand-over journal is closed")
	}
	if _, err := io.WriteString(j.f, formatRecord(k, now)); err != nil {
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if err := j.f.Sync(); err != nil {
		return fmt.Errorf("milter: hand-over journal: %w", err)
	}
	if now.Sub(j.lastPrune) >= min(j.ttl/10, time.Hour) {
		j.prune(now)
		if err := j.compact(); err != nil {
			j.lastPrune = now // try again later, not at every copy
			j.log.Error("rewriting the hand-over journal without expired records failed", "error", err)
		}
	}
	return nil
}

// prune forgets expired records.
func (j *journal) prune(now time.Time) {
	for k, t := range j.done {
		if now.Sub(t) >= j.ttl {
			delete(j.done, k)
		}
	}
}

func (j *journal) setTTL(ttl time.Duration) {
	j.mu.Lock()
	j.ttl = ttl
	j.mu.Unlock()
}

func (j *journal) close() {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.f != nil {
		j.f.Close()
		j.f = nil
	}
}

// contentKey digests what identifies a message across retries: the
// envelope sender, every header field except Received (the receiving MTA
// adds one with its queue ID and the time at each attempt), and the body,
// all as received. A retry of the same message gives the same digest; a
// different message gives another, even with the same Message-ID (a
// buggy client or an attacker reusing one cannot make the copies of
// another message count as handed over). Nothing of the copies goes in:
// their bytes differ on every attempt (MIME boundaries, session keys).
//
// The journal is used only for messages that identify themselves
// (identifiable): a device that sends the same alert without Message-ID
// and Date twice within the journal's lifetime sends two messages, not a
// retry, and both must be delivered.
func contentKey(from string, rcpts []string, m crypto.Message) (journalKey, error) {
	h := sha256.New()
	field := func(s string) {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		io.WriteString(h, s)
	}
	field("cryptmilter reinject v2")
	field(from)
	rs := slices.Clone(rcpts)
	slices.Sort(rs)
	for _, r := range rs {
		field(r)
	}
	field("header")
	for _, f := range m.Header {
		if strings.EqualFold(f.Name, "Received") {
			continue
		}
		field(strings.ToLower(f.Name))
		field(f.Value)
	}
	field("body")
	if m.Body != nil {
		if _, err := io.Copy(h, m.Body.Reader()); err != nil {
			return journalKey{}, fmt.Errorf("milter: reading the message for the hand-over journal: %w", err)
		}
	}
	var k journalKey
	h.Sum(k[:0])
	return k, nil
}

// identifiable reports whether a message carries exactly one Message-ID
// and one Date: with both, the same bytes again are a retry of the same
// message (RFC 5322 makes them unique per message).
func identifiable(h mime.Header) bool {
	return len(h.Values("Message-ID")) == 1 && len(h.Values("Date")) == 1
}

// copyKey is the key of the copy for rcpts of the message whose
// contentKey is base.
func copyKey(base journalKey, rcpts []string) journalKey {
	rs := slices.Clone(rcpts)
	slices.Sort(rs)
	h := sha256.New()
	h.Write(base[:])
	for _, r := range rs {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(r)))
		h.Write(n[:])
		io.WriteString(h, r)
	}
	var k journalKey
	h.Sum(k[:0])
	return k
}
