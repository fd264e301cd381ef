package discover

import (
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/atomicfile"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// The cache is one JSON file per address and source in
// KEYSTORE/discovered/, named ADDRESS.SOURCE.json (the address made safe
// for a file name), holding the answer, when it was fetched, until when it
// is used, and the key (armored) or certificate (PEM) itself:
//
//	{"version": 1, "address": "alice@example.net", "source": "wkd",
//	 "status": "found", "from": "https://openpgpkey.example.net/…",
//	 "fetched": "…", "expires": "…",
//	 "openpgp": {"fingerprint": "…", "algorithm": "ed25519", "data": "-----BEGIN PGP PUBLIC KEY BLOCK-----…"}}
//
// Each file is replaced atomically (temporary file, fsync, rename, fsync
// of the directory; files 0644, the directory 0755), so readers (the
// daemon, `cryptmilter keys`) never see half of one. No lock is needed:
// every entry is one file, the keystore's loader never reads the
// directory, and of two writers of one entry the later wins, which is
// what a cache wants.

const recordVersion = 1

type record struct {
	Version int        `json:"version"`
	Address string     `json:"address"`
	Source  string     `json:"source"`
	Status  Status     `json:"status"`
	From    string     `json:"from,omitempty"`
	Reason  string     `json:"reason,omitempty"`
	Fetched time.Time  `json:"fetched"`
	Expires time.Time  `json:"expires"`
	OpenPGP *storedKey `json:"openpgp,omitempty"`
	SMIME   *storedKey `json:"smime,omitempty"`
}

type storedKey struct {
	Fingerprint string     `json:"fingerprint"`
	Algorithm   string     `json:"algorithm"`
	Created     time.Time  `json:"created"`
	Expires     *time.Time `json:"expires,omitempty"`
	Usage       uint8      `json:"smimea_usage,omitempty"`
	Data        string     `json:"data"`
}

func storeKey(k *Key) *storedKey {
	if k == nil {
		return nil
	}
	s := &storedKey{Fingerprint: k.Fingerprint, Algorithm: k.Algorithm, Created: k.Created.UTC(), Usage: k.Usage, Data: string(k.Armored)}
	if !k.Expires.IsZero() {
		e := k.Expires.UTC()
		s.Expires = &e
	}
	return s
}

type cacheState string

const (
	cacheHit   cacheState = "hit"
	cacheMiss  cacheState = "miss"
	cacheStale cacheState = "stale"
)

// maxMemos bounds the parsed answers kept in memory; others are read
// from their file again when used.
const maxMemos = 4096

type cache struct {
	dir string
	mu  sync.Mutex
	mem map[string]*memo // parsed entries by cache key
}

// memo is a parsed cache file and the version of the file it came from.
type memo struct {
	stamp fileStamp
	ans   Answer
}

type fileStamp struct {
	size, mtime int64
	ino         uint64
}

func stampOf(fi os.FileInfo) fileStamp {
	s := fileStamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		s.ino = st.Ino
	}
	return s
}

func newCache(dir string) *cache { return &cache{dir: dir, mem: map[string]*memo{}} }

// fileName is the cache file of addr (normalised) and source.
func fileName(norm, src string) string {
	safe := keystore.SafeName(norm, 120)
	if safe != norm {
		h := sha256.Sum256([]byte(norm))
		safe += "-" + hex.EncodeToString(h[:4])
	}
	return safe + "." + src + ".json"
}

func splitKey(key string) (src, norm string) {
	src, norm, _ = strings.Cut(key, "\x00")
	return src, norm
}

// get returns the cached answer for key: a hit while it has not expired,
// stale after, a miss without a usable file. parse turns a record read
// from disk into an answer (checking the keys in it).
func (c *cache) get(key string, now time.Time, parse func(*record) Answer) (Answer, cacheState) {
	src, norm := splitKey(key)
	path := filepath.Join(c.dir, fileName(norm, src))
	fi, err := os.Stat(path)
	if err != nil {
		c.mu.Lock()
		delete(c.mem, key)
		c.mu.Unlock()
		return Answer{}, cacheMiss
	}
	st := stampOf(fi)
	c.mu.Lock()
	m := c.mem[key]
	c.mu.Unlock()
	if m == nil || m.stamp != st {
		rec, err := readRecord(path)
		if err != nil || rec.Address != norm || rec.Source != src {
			return Answer{}, cacheMiss
		}
		m = &memo{stamp: st, ans: parse(rec)}
		c.mu.Lock()
		if len(c.mem) >= maxMemos {
			for k := range c.mem { // any one: the file is still there
				delete(c.mem, k)
				break
			}
		}
		c.mem[key] = m
		c.mu.Unlock()
	}
	a := m.ans
	if !now.Before(a.Expires) {
		return a, cacheStale
	}
	// A key may expire while its answer is cached.
	for _, k := range []*Key{a.OpenPGP, a.SMIME} {
		if k != nil && !k.Expires.IsZero() && now.After(k.Expires) && a.Status == Found {
			a.Status, a.Reason, a.OpenPGP, a.SMIME = Unusable, "key "+k.Fingerprint+": expired", nil, nil
		}
	}
	return a, cacheHit
}

// fromRecord rebuilds an answer from a cache record, checking its keys at
// now as a fresh answer's are; a key that no longer passes, or that does
// not match the fingerprint recorded, makes the answer Unusable.
func (d *Discoverer) fromRecord(r *record, addr string, now time.Time) Answer {
	a := Answer{Address: addr, Source: r.Source, Status: r.Status, From: r.From, Reason: r.Reason, Fetched: r.Fetched, Expires: r.Expires, Cached: true}
	if r.Status != Found {
		return a
	}
	var problems []string
	if r.OpenPGP != nil {
		k, err := keystore.CheckOpenPGP([]byte(r.OpenPGP.Data), addr, d.opts.FoldLocalPart, now)
		switch {
		case err != nil:
			problems = append(problems, trimErr(err))
		case k.Fingerprint != r.OpenPGP.Fingerprint:
			problems = append(problems, "cached key does not match its fingerprint")
		default:
			a.OpenPGP = &Key{CheckedKey: *k}
		}
	}
	if r.SMIME != nil {
		k, err := d.checkCert([]byte(r.SMIME.Data), addr, r.SMIME.Usage, now)
		switch {
		case err != nil:
			problems = append(problems, err.Error())
		case k.Fingerprint != r.SMIME.Fingerprint:
			problems = append(problems, "cached certificate does not match its fingerprint")
		default:
			a.SMIME = k
		}
	}
	if a.OpenPGP == nil && a.SMIME == nil {
		a.Status, a.Reason = Unusable, strings.Join(problems, "; ")
	}
	return a
}

// checkCert checks a PEM or DER certificate from an SMIMEA record of the
// given usage (or from the cache) for encryption to addr at t.
func (d *Discoverer) checkCert(data []byte, addr string, usage uint8, t time.Time) (*Key, error) {
	der := data
	if b, _ := pem.Decode(data); b != nil {
		der = b.Bytes
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certificate: %v", err)
	}
	k, err := keystore.CheckCertificate(cert, addr, d.opts.FoldLocalPart, t)
	if err != nil {
		return nil, errors.New(trimErr(err))
	}
	if usage == usagePKIXEE {
		if err := d.verifyPKIX(cert, t); err != nil {
			return nil, err
		}
	}
	return &Key{CheckedKey: *k, Usage: usage}, nil
}

func readRecord(path string) (*record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	r, err := parseRecord(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

func parseRecord(data []byte) (*record, error) {
	if len(data) > 4*maxKeyResponse {
		return nil, fmt.Errorf("larger than %d bytes", 4*maxKeyResponse)
	}
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, err
	}
	if r.Version != recordVersion {
		return nil, fmt.Errorf("version %d, want %d", r.Version, recordVersion)
	}
	return &r, nil
}

// put writes the answer for key and returns the previous one (nil if
// none), for key change reports.
func (c *cache) put(key string, a *Answer) (*record, error) {
	src, norm := splitKey(key)
	if err := mkdirOwned(c.dir); err != nil {
		return nil, fmt.Errorf("discover: cache: %w", err)
	}
	name := fileName(norm, src)
	prev, _ := readRecord(filepath.Join(c.dir, name))
	rec := record{Version: recordVersion, Address: norm, Source: src, Status: a.Status, From: a.From, Reason: a.Reason,
		Fetched: a.Fetched.UTC(), Expires: a.Expires.UTC(), OpenPGP: storeKey(a.OpenPGP), SMIME: storeKey(a.SMIME)}
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(c.dir, name, append(data, '\n'), 0o644); err != nil {
		return nil, err
	}
	c.mu.Lock()
	delete(c.mem, key) // parsed again (and checked) on the next get
	c.mu.Unlock()
	return prev, nil
}

// list reads every record (unreadable files are skipped and reported).
func (c *cache) list() ([]*record, []error) {
	ents, err := os.ReadDir(c.dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, []error{fmt.Errorf("discover: cache: %w", err)}
	}
	var out []*record
	var errs []error
	for _, e := range ents {
		n := e.Name()
		if e.IsDir() || strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".json") {
			continue
		}
		r, err := readRecord(filepath.Join(c.dir, n))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Address != out[j].Address {
			return out[i].Address < out[j].Address
		}
		return out[i].Source < out[j].Source
	})
	return out, errs
}

func (c *cache) remove(key string) error {
	src, norm := splitKey(key)
	c.mu.Lock()
	delete(c.mem, key)
	c.mu.Unlock()
	err := os.Remove(filepath.Join(c.dir, fileName(norm, src)))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("discover: cache: %w", err)
	}
	return syncDir(c.dir)
}

// writeFileAtomic writes dir/name atomically (internal/atomicfile). Run
// as root, the file gets the owner of the keystore (dir's parent), so
// that the daemon, running as the service user, can replace it.
func writeFileAtomic(dir, name string, data []byte, perm os.FileMode) error {
	uid, gid := keystoreOwner(dir)
	if err := atomicfile.Write(dir, name, data, perm, uid, gid); err != nil {
		return fmt.Errorf("discover: cache: write %s: %w", name, err)
	}
	return nil
}

func syncDir(dir string) error {
	if err := atomicfile.SyncDir(dir); err != nil {
		return fmt.Errorf("discover: cache: sync %s: %w", dir, err)
	}
	return nil
}

// keystoreOwner returns, for root, the owner of the keystore holding the
// cache directory dir (-1, -1 otherwise: files belong to the writer).
func keystoreOwner(dir string) (uid, gid int) {
	if os.Geteuid() != 0 {
		return -1, -1
	}
	fi, err := os.Stat(filepath.Dir(dir))
	if err != nil {
		return -1, -1
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return -1, -1
	}
	return int(st.Uid), int(st.Gid)
}

// CacheDir is the cache directory of a keystore.
func CacheDir(keystoreDir string) string { return filepath.Join(keystoreDir, keystore.DirDiscovered) }

// Entries lists the cached keys and certificates (answers without a key
// are left out) as `cryptmilter keys list` shows them: kind "discovered",
// Source the source, usable now or not and why (a cached answer past its
// expiry is still listed; it is looked up again before use).
func Entries(o Options, now time.Time) ([]keystore.Entry, []error) {
	c := newCache(o.Dir)
	recs, errs := c.list()
	var out []keystore.Entry
	d := &Discoverer{opts: o}
	for _, r := range recs {
		if r.Status != Found {
			continue
		}
		a := d.fromRecord(r, r.Address, now)
		for _, p := range []struct {
			proto  string
			stored *storedKey
			key    *Key
		}{{"openpgp", r.OpenPGP, a.OpenPGP}, {"smime", r.SMIME, a.SMIME}} {
			if p.stored == nil {
				continue
			}
			e := keystore.Entry{Protocol: p.proto, Kind: "discovered", Source: r.Source, Addresses: []string{r.Address},
				Fingerprint: p.stored.Fingerprint, Algorithm: p.stored.Algorithm, Created: p.stored.Created,
				Expires: p.stored.Expires, Usable: p.key != nil,
				File: filepath.Join(keystore.DirDiscovered, fileName(r.Address, r.Source))}
			if p.key == nil {
				e.Reason = a.Reason
			}
			out = append(out, e)
		}
	}
	return out, errs
}

// Remove deletes the cached answers holding the key or certificate with
// that fingerprint, or, for an address, every cached answer for it. It
// returns the files removed (relative to the keystore).
func Remove(dir, query string) ([]string, error) {
	c := newCache(dir)
	recs, _ := c.list()
	fpr := strings.ToUpper(strings.NewReplacer(" ", "", ":", "").Replace(strings.TrimPrefix(strings.TrimSpace(query), "0x")))
	byAddr := strings.Contains(query, "@")
	var removed []string
	for _, r := range recs {
		match := false
		if byAddr {
			match = keystore.NormalizeAddress(r.Address, false) == keystore.NormalizeAddress(query, false)
		} else {
			for _, k := range []*storedKey{r.OpenPGP, r.SMIME} {
				if k != nil && k.Fingerprint == fpr {
					match = true
				}
			}
		}
		if !match {
			continue
		}
		name := fileName(r.Address, r.Source)
		if err := os.Remove(filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("discover: cache: %w", err)
		}
		removed = append(removed, filepath.Join(keystore.DirDiscovered, name))
	}
	if len(removed) > 0 {
		return removed, syncDir(dir)
	}
	return nil, nil
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }

// mkdirOwned creates the cache directory (0755), owned like the keystore
// when root creates it.
func mkdirOwned(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if uid, gid := keystoreOwner(dir); uid >= 0 {
		return os.Chown(dir, uid, gid)
	}
	return nil
}
