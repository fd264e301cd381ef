package keystore

import (
	"bytes"
	gocrypto "crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cryptmilter/cryptmilter/crypto/pkcs12"
)

// fileKind says what a file in the keystore is expected to hold.
type fileKind int

const (
	kindOpenPGP fileKind = iota
	kindCert
	kindCA
	kindCRL
	kindSecretOpenPGP
	kindSecretSMIME
)

var kindDirs = []struct {
	dir  string
	kind fileKind
}{
	{DirOpenPGP, kindOpenPGP},
	{DirCerts, kindCert},
	{DirCA, kindCA},
	{DirCRL, kindCRL},
	{filepath.Join(DirPrivate, PrivOpenPGP), kindSecretOpenPGP},
	{filepath.Join(DirPrivate, PrivSMIME), kindSecretSMIME},
}

func (k fileKind) secret() bool { return k == kindSecretOpenPGP || k == kindSecretSMIME }

// stamp identifies a file version cheaply, to reuse parse results across
// reloads.
type stamp struct {
	size, mtime, ctime int64
	ino                uint64
}

// fileResult is what one file contributed.
type fileResult struct {
	rel     string
	kind    fileKind
	stamp   stamp
	pgp     []*pgpKey
	certs   []*certEntry
	crls    []*x509.RevocationList
	smime   *SMIMEIdentity
	other   bool    // not a regular file: reported as orphaned
	gone    bool    // removed while loading
	fault   error   // could not be read (*ReadError) or refused (*PermissionError)
	err     error   // the whole file is unusable
	partial []error // parts of the file were skipped
}

// SMIMEIdentity is a gateway S/MIME identity: key and certificate.
type SMIMEIdentity struct {
	Address   string // normalised address (the first of the certificate)
	Addresses []string
	Cert      *x509.Certificate
	Key       gocrypto.Signer // an *rsa.PrivateKey is also a crypto.Decrypter
	Chain     []*x509.Certificate
	File      string
	hash      string
}

// Snapshot is an immutable view of the keystore at one load.
type Snapshot struct {
	opts     Options
	loadedAt time.Time
	files    map[string]*fileResult // by relative path
	others   []string               // files in unexpected places

	pgp        []*pgpKey // correspondents' public keys, in file order
	pgpByAddr  map[string][]*pgpKey
	pgpByFpr   map[string]*pgpKey // correspondents and gateway
	pgpByKeyID map[uint64][]*pgpKey
	gwPGP      []*pgpKey
	gwByAddr   map[string][]*pgpKey

	certs       []*certEntry
	certByAddr  map[string][]*certEntry
	certByHash  map[string]*certEntry
	anchors     []*certEntry
	anchorPool  *x509.CertPool
	crls        []*x509.RevocationList
	crlFiles    []string
	smime       []*SMIMEIdentity
	smimeByAddr map[string][]*SMIMEIdentity

	problems       []Problem // files (or parts) left out because of their content
	secretProblems []Problem // those of them in the secret directories
	faults         []Fault   // places that could not be read
	unavail        [numAreas][]Fault
	dirs           map[string]dirState // by relative path of the key directories and private/
	pins           map[string]string   // normalised address → fingerprint/hash

	dropReuse bool // set (under Holder.mu) when options changed: reparse all
}

// dirState is what a load knows about a key directory.
type dirState uint8

const (
	dirAbsent dirState = iota // does not exist
	dirRead                   // read by this load
	dirKept                   // unreadable; what an earlier load read there is kept
	dirLost                   // unreadable; nothing known
)

// Load reads the keystore directory. It fails only if the directory itself
// is unusable (missing, unreadable, or the service group unknown): single
// files or subdirectories that cannot be read are Faults of the snapshot,
// files whose content cannot be used are Problems, and both are left out.
func Load(opts Options) (*Snapshot, error) {
	return load(opts, loadParams{lock: true, workers: max(runtime.GOMAXPROCS(0), 4)})
}

// loadParams says how load reads the keystore.
type loadParams struct {
	// prev is the snapshot in service: what it read in a place that is
	// now unreadable is kept, and with reuse its results for unchanged
	// public files are used again instead of parsing them.
	prev  *Snapshot
	reuse bool
	// lock takes the shared lock (writers holding the exclusive lock
	// pass false).
	lock bool
	// workers goroutines read and parse files: more than the CPUs for a
	// cold load (to overlap I/O waits), fewer for a reload while the
	// daemon serves lookups.
	workers int
}

// loader is the state of one load.
type loader struct {
	opts  Options
	pol   secretPolicy
	prev  *Snapshot
	s     *Snapshot
	kept  []*fileResult // results carried over from prev for unreadable places
	taken map[string]bool
}

func load(opts Options, lp loadParams) (*Snapshot, error) {
	fi, err := os.Stat(opts.Dir)
	if err != nil {
		return nil, &ReadError{Path: opts.Dir, Err: err}
	}
	if !fi.IsDir() {
		return nil, &ReadError{Path: opts.Dir, Err: syscall.ENOTDIR}
	}
	pol, err := newSecretPolicy(opts, fi)
	if err != nil {
		return nil, err
	}
	if lp.lock {
		unlock := lockShared(opts.Dir)
		defer unlock()
	}
	top, err := os.ReadDir(opts.Dir)
	if err != nil {
		return nil, &ReadError{Path: opts.Dir, Err: err}
	}
	l := &loader{opts: opts, pol: pol, prev: lp.prev, taken: map[string]bool{},
		s: &Snapshot{opts: opts, loadedAt: time.Now(), files: map[string]*fileResult{}, dirs: map[string]dirState{}}}
	s := l.s
	known := map[string]bool{DirOpenPGP: true, DirCerts: true, DirCA: true, DirCRL: true, DirPrivate: true, DirDiscovered: true}
	for _, e := range top {
		if strings.HasPrefix(e.Name(), ".") || known[e.Name()] {
			continue
		}
		s.others = append(s.others, e.Name())
	}

	// Secret directories must be private; if one is not, its files are
	// refused, the rest of the keystore still loads.
	privSub := []string{filepath.Join(DirPrivate, PrivOpenPGP), filepath.Join(DirPrivate, PrivSMIME)}
	refused := map[string]error{} // a secret directory with unsafe permissions (or below one)
	faulted := map[string]bool{}  // a directory that cannot be read (or below one)
	for _, d := range append([]string{DirPrivate}, privSub...) {
		if faulted[d] || refused[d] != nil {
			continue
		}
		p := filepath.Join(opts.Dir, d)
		dfi, err := os.Stat(p)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			continue
		case err != nil:
			l.dirFault(d, &ReadError{Path: p, Err: err})
			faulted[d] = true
		default:
			if err := pol.checkSecretDir(p, dfi); err != nil {
				refused[d] = err
				s.dirs[d] = dirLost
				s.faults = append(s.faults, Fault{Path: d, Err: err})
			} else {
				s.dirs[d] = dirRead
			}
		}
		if d == DirPrivate && (faulted[d] || refused[d] != nil) {
			for _, sub := range privSub {
				faulted[sub], refused[sub] = faulted[d], refused[d]
			}
		}
	}

	type job struct {
		rel  string
		kind fileKind
	}
	var jobs []job
	for _, kd := range kindDirs {
		if faulted[kd.dir] {
			continue // recorded, and what was read there before kept
		}
		full := filepath.Join(opts.Dir, kd.dir)
		ents, err := os.ReadDir(full)
		if errors.Is(err, fs.ErrNotExist) {
			delete(s.dirs, kd.dir)
			continue
		}
		if err != nil {
			if refused[kd.dir] == nil {
				l.dirFault(kd.dir, &ReadError{Path: full, Err: err})
			}
			continue
		}
		if refused[kd.dir] == nil {
			s.dirs[kd.dir] = dirRead
		}
		for _, e := range ents {
			name := e.Name()
			rel := filepath.Join(kd.dir, name)
			if strings.HasPrefix(name, ".") || strings.HasSuffix(name, "~") {
				continue
			}
			if kd.kind.secret() && (strings.HasSuffix(name, passSuffix) || strings.HasSuffix(name, ".csr")) {
				continue
			}
			if e.IsDir() {
				s.others = append(s.others, rel)
				continue
			}
			if refused[kd.dir] != nil {
				p := Problem{File: rel, Err: errors.New("refused: its directory is not private (see the fault reported for it)")}
				s.problems = append(s.problems, p)
				s.secretProblems = append(s.secretProblems, p)
				continue
			}
			jobs = append(jobs, job{rel, kd.kind})
		}
	}
	// Files directly in private/ are not read.
	if s.dirs[DirPrivate] == dirRead {
		if ents, err := os.ReadDir(filepath.Join(opts.Dir, DirPrivate)); err == nil {
			for _, e := range ents {
				if !e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
					s.others = append(s.others, filepath.Join(DirPrivate, e.Name()))
				}
			}
		}
	}

	// Workers open each file once: fstat for the reuse stamp and the
	// permission check, then one read of the known size.
	reuse := lp.prev
	if !lp.reuse {
		reuse = nil
	}
	results := make([]*fileResult, len(jobs))
	var wg sync.WaitGroup
	var next atomic.Int64
	for range lp.workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(jobs) {
					return
				}
				j := jobs[i]
				results[i] = loadFile(opts, pol, reuse, j.rel, j.kind)
			}
		})
	}
	wg.Wait()
	var kept []*fileResult
	for _, r := range results {
		switch {
		case r.gone:
		case r.other:
			s.others = append(s.others, r.rel)
		case r.fault != nil:
			l.fileFault(r)
		default:
			kept = append(kept, r)
		}
	}
	s.index(append(kept, l.kept...))
	s.computeUnavailable()
	if !lp.reuse && len(l.kept) > 0 {
		s.dropReuse = true // what was kept was parsed with the old options
	}
	return s, nil
}

// dirFault records that the key directory rel (or private/) cannot be
// read, and keeps what the previous load had below it.
func (l *loader) dirFault(rel string, err error) {
	st := l.prev.dirState(rel)
	kept := st == dirRead || st == dirKept
	if l.prev != nil {
		for frel, r := range l.prev.files {
			if strings.HasPrefix(frel, rel+string(filepath.Separator)) && !l.taken[frel] {
				l.taken[frel] = true
				l.kept = append(l.kept, r)
			}
		}
	}
	if rel == DirPrivate {
		// Both secret directories below it are unreadable too; what the
		// previous load knew of each is kept.
		for _, d := range []string{filepath.Join(DirPrivate, PrivOpenPGP), filepath.Join(DirPrivate, PrivSMIME)} {
			st := dirLost
			if ps := l.prev.dirState(d); ps == dirRead || ps == dirKept || ps == dirAbsent && kept {
				st = dirKept
			}
			l.s.dirs[d] = st
			if st == dirLost && kept {
				l.s.faults = append(l.s.faults, Fault{Path: d, Err: err})
			}
		}
	}
	st = dirLost
	if kept {
		st = dirKept
	}
	l.s.dirs[rel] = st
	l.s.faults = append(l.s.faults, Fault{Path: rel, Err: err, Kept: kept})
}

// dirState returns what s knew of a directory (dirLost without s).
func (s *Snapshot) dirState(rel string) dirState {
	if s == nil {
		return dirLost
	}
	return s.dirs[rel]
}

// fileFault records a file that could not be read (or a secret refused
// for its permissions) and keeps what the previous load read from it. A
// secret refused for its permissions is not kept: the rule is the same at
// start and at reload.
func (l *loader) fileFault(r *fileResult) {
	f := Fault{Path: r.rel, Err: r.fault}
	var pe *PermissionError
	if l.prev != nil && !errors.As(r.fault, &pe) && !l.taken[r.rel] {
		if p, ok := l.prev.files[r.rel]; ok {
			l.taken[r.rel] = true
			l.kept = append(l.kept, p)
			f.Kept = true
		}
	}
	l.s.faults = append(l.s.faults, f)
}

// loadFile opens, checks and parses one file (or reuses prev's result).
// It uses raw system calls: os.File would add a poller registration per
// file, which costs a second at 100,000 files.
func loadFile(opts Options, pol secretPolicy, prev *Snapshot, rel string, kind fileKind) *fileResult {
	r := &fileResult{rel: rel, kind: kind}
	full := filepath.Join(opts.Dir, rel)
	var st syscall.Stat_t
	if prev != nil && !kind.secret() {
		// Reload: one stat decides whether the file changed.
		if p, ok := prev.files[rel]; ok && p.kind == kind {
			if err := syscall.Stat(full, &st); err == nil && st.Mode&syscall.S_IFMT == syscall.S_IFREG && stampOfStat(&st) == p.stamp {
				return p
			}
		}
	}
	fd, err := syscall.Open(full, syscall.O_RDONLY|syscall.O_CLOEXEC|syscall.O_NONBLOCK, 0)
	if err == syscall.ENOENT {
		r.gone = true // removed since the directory was listed
		return r
	}
	if err != nil {
		r.fault = &ReadError{Path: full, Err: &fs.PathError{Op: "open", Path: full, Err: err}}
		return r
	}
	defer syscall.Close(fd)
	if err := syscall.Fstat(fd, &st); err != nil {
		r.fault = &ReadError{Path: full, Err: &fs.PathError{Op: "stat", Path: full, Err: err}}
		return r
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		r.other = true
		return r
	}
	r.stamp = stampOfStat(&st)
	if kind.secret() {
		if err := pol.checkSecret(full, false, fs.FileMode(st.Mode&0o777), int(st.Uid), int(st.Gid)); err != nil {
			r.fault = err
			return r
		}
	}
	if st.Size > maxKeyFileSize {
		r.err = fmt.Errorf("larger than %d bytes", maxKeyFileSize)
		return r
	}
	data := make([]byte, st.Size)
	for n := 0; n < len(data); {
		m, err := syscall.Read(fd, data[n:])
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			r.fault = &ReadError{Path: full, Err: &fs.PathError{Op: "read", Path: full, Err: err}}
			return r
		}
		if m == 0 {
			data = data[:n] // shrank while reading
			break
		}
		n += m
	}
	parseFile(opts, pol, r, data)
	// A passphrase file or credential that cannot be read (or has unsafe
	// permissions) is a fault of the key file, not a problem with its
	// content.
	var re *ReadError
	var pe *PermissionError
	if errors.As(r.err, &re) || errors.As(r.err, &pe) {
		r.fault, r.err, r.pgp, r.smime = r.err, nil, nil, nil
	}
	return r
}

func stampOfStat(st *syscall.Stat_t) stamp {
	return stamp{size: st.Size, mtime: st.Mtim.Sec*1e9 + st.Mtim.Nsec, ctime: st.Ctim.Sec*1e9 + st.Ctim.Nsec, ino: st.Ino}
}

// parseFile reads and parses one keystore file into r.
func parseFile(opts Options, pol secretPolicy, r *fileResult, data []byte) {
	fold := opts.FoldLocalPart
	switch r.kind {
	case kindOpenPGP:
		r.pgp, r.err = scanOpenPGPFile(r.rel, data, fold)
	case kindSecretOpenPGP:
		ents, err := parseOpenPGP(data)
		if err != nil {
			r.err = err
			return
		}
		for _, e := range ents {
			k := newPGPKey(r.rel, e, fold)
			if !k.secret {
				r.err = fmt.Errorf("key %s has no secret key material; public keys belong in %s", k.fpr, DirOpenPGP)
				r.pgp = nil
				return
			}
			if locked, _ := k.key.IsLocked(); locked {
				pass, src, err := findPassphrase(opts, pol, r.rel)
				if err != nil {
					r.err = err
					r.pgp = nil
					return
				}
				u, err := k.key.Unlock(pass)
				if err != nil {
					r.err = fmt.Errorf("key %s: cannot unlock with the passphrase from %s", k.fpr, src)
					r.pgp = nil
					return
				}
				k = newPGPKey(r.rel, u.GetEntity(), fold)
			}
			k.ready() // verify self-signatures now: gateway keys are few
			r.pgp = append(r.pgp, k)
		}
	case kindCert, kindCA:
		pc, err := parsePEMOrDER(data)
		if err != nil {
			r.err = err
			return
		}
		if len(pc.keys) > 0 {
			r.err = fmt.Errorf("holds a private key; gateway keys belong in %s", filepath.Join(DirPrivate, PrivSMIME))
			return
		}
		if len(pc.certs) == 0 {
			r.err = errors.New("no certificate found")
			return
		}
		for i, c := range pc.certs {
			ce := newCertEntry(r.rel, c, fold)
			if r.kind == kindCert && len(ce.addrs) == 0 {
				r.partial = append(r.partial, fmt.Errorf("certificate %d (%s): no e-mail address (neither rfc822Name nor subject emailAddress)", i+1, c.Subject))
				continue
			}
			r.certs = append(r.certs, ce)
		}
		if len(r.certs) == 0 && len(r.partial) > 0 {
			r.err = r.partial[0]
			r.partial = nil
		}
	case kindCRL:
		pc, err := parsePEMOrDER(data)
		if err != nil {
			r.err = err
			return
		}
		if len(pc.crls) == 0 {
			r.err = errors.New("no CRL found")
			return
		}
		r.crls = pc.crls
	case kindSecretSMIME:
		id, err := parseSMIMEIdentity(opts, pol, r.rel, data)
		if err != nil {
			r.err = err
			return
		}
		r.smime = id
	}
}

func parseSMIMEIdentity(opts Options, pol secretPolicy, rel string, data []byte) (*SMIMEIdentity, error) {
	var key gocrypto.Signer
	var leaf *x509.Certificate
	var chain []*x509.Certificate
	if pkcs12.LooksLikePFX(data) {
		pass, src, err := findPassphrase(opts, pol, rel)
		if err != nil {
			return nil, err
		}
		key, leaf, chain, err = pkcs12.Decode(data, pass)
		if err != nil {
			if errors.Is(err, pkcs12.ErrIncorrectPassword) {
				return nil, fmt.Errorf("PKCS#12: wrong passphrase in %s", src)
			}
			return nil, err
		}
	} else {
		pc, err := parsePEMOrDER(data)
		if errors.Is(err, errEncryptedPEM) {
			pass, src, perr := findPassphrase(opts, pol, rel)
			if perr != nil {
				return nil, perr
			}
			if pc, err = parsePEMOrDERPass(data, pass); err != nil {
				return nil, fmt.Errorf("%w (passphrase from %s)", err, src)
			}
		}
		if err != nil {
			return nil, err
		}
		if len(pc.keys) != 1 {
			return nil, fmt.Errorf("expected one private key, found %d", len(pc.keys))
		}
		key = pc.keys[0]
		for _, c := range pc.certs {
			if leaf == nil && keyMatchesCert(key, c) {
				leaf = c
			} else {
				chain = append(chain, c)
			}
		}
		if leaf == nil {
			return nil, errors.New("no certificate matches the private key")
		}
	}
	id := &SMIMEIdentity{Cert: leaf, Key: key, Chain: chain, File: rel, hash: certHash(leaf)}
	seen := map[string]bool{}
	for _, a := range certAddresses(leaf) {
		if n := NormalizeAddress(a, opts.FoldLocalPart); n != "" && !seen[n] {
			seen[n] = true
			id.Addresses = append(id.Addresses, n)
		}
	}
	if len(id.Addresses) == 0 {
		return nil, fmt.Errorf("certificate %s has no e-mail address", leaf.Subject)
	}
	sort.Strings(id.Addresses)
	id.Address = id.Addresses[0]
	return id, nil
}

// findPassphrase looks for the passphrase of the protected secret file rel:
// private/…/NAME.passphrase, then $CREDENTIALS_DIRECTORY/NAME.passphrase,
// then $CREDENTIALS_DIRECTORY/keystore.passphrase. A passphrase file that
// exists but cannot be read is a *ReadError.
func findPassphrase(opts Options, pol secretPolicy, rel string) ([]byte, string, error) {
	base := strings.TrimSuffix(filepath.Base(rel), filepath.Ext(rel))
	localRel := filepath.Join(filepath.Dir(rel), base+passSuffix)
	local := filepath.Join(opts.Dir, localRel)
	fi, err := os.Stat(local)
	switch {
	case err == nil:
		if err := pol.checkSecretFile(local, fi); err != nil {
			return nil, "", err
		}
		p, err := readPassphrase(local)
		return p, localRel, err
	case !errors.Is(err, fs.ErrNotExist):
		return nil, "", &ReadError{Path: local, Err: err}
	}
	if opts.CredentialsDir != "" {
		for _, n := range []string{base + passSuffix, CredentialPassphrase} {
			p := filepath.Join(opts.CredentialsDir, n)
			_, err := os.Stat(p)
			switch {
			case err == nil:
				pass, err := readPassphrase(p)
				return pass, "credential " + n, err
			case !errors.Is(err, fs.ErrNotExist):
				return nil, "", &ReadError{Path: p, Err: err}
			}
		}
	}
	return nil, "", fmt.Errorf("%w (put it in %s or the systemd credential %s)", ErrNeedPassphrase, localRel, CredentialPassphrase)
}

// readPassphrase reads a passphrase file, dropping one final line break.
func readPassphrase(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &ReadError{Path: path, Err: err}
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	return b, nil
}

func readLimited(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxKeyFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxKeyFileSize)
	}
	return b, nil
}

// index builds the lookup maps from the per-file results (in file order).
func (s *Snapshot) index(results []*fileResult) {
	s.pgpByAddr = make(map[string][]*pgpKey)
	s.pgpByFpr = make(map[string]*pgpKey)
	s.pgpByKeyID = make(map[uint64][]*pgpKey)
	s.gwByAddr = make(map[string][]*pgpKey)
	s.certByAddr = make(map[string][]*certEntry)
	s.certByHash = make(map[string]*certEntry)
	s.smimeByAddr = make(map[string][]*SMIMEIdentity)
	s.anchorPool = x509.NewCertPool()
	anchorByHash := map[string]*certEntry{}
	smimeByHash := map[string]*SMIMEIdentity{}
	var crlCandidates []*fileResult

	// Secret files first: a gateway key's public copy in openpgp/ is then
	// the duplicate, never the secret key.
	sort.Slice(results, func(i, j int) bool {
		if a, b := results[i].kind.secret(), results[j].kind.secret(); a != b {
			return a
		}
		return results[i].rel < results[j].rel
	})
	for _, r := range results {
		s.files[r.rel] = r
		if r.err != nil {
			s.problems = append(s.problems, Problem{File: r.rel, Err: r.err})
			if r.kind.secret() {
				s.secretProblems = append(s.secretProblems, Problem{File: r.rel, Err: r.err})
			}
			continue
		}
		for _, e := range r.partial {
			s.problems = append(s.problems, Problem{File: r.rel, Err: e})
		}
		for _, k := range r.pgp {
			if old, dup := s.pgpByFpr[k.fpr]; dup {
				if old.secret && !k.secret {
					continue // the public half of a gateway key
				}
				s.problems = append(s.problems, Problem{File: r.rel, Err: fmt.Errorf("duplicate key %s, also in %s; ignored here", k.fpr, old.file)})
				continue
			}
			s.pgpByFpr[k.fpr] = k
			for _, id := range k.keyIDs {
				s.pgpByKeyID[id] = append(s.pgpByKeyID[id], k)
			}
			if k.secret {
				s.gwPGP = append(s.gwPGP, k)
				for _, a := range k.addrs {
					s.gwByAddr[a] = append(s.gwByAddr[a], k)
				}
				continue
			}
			s.pgp = append(s.pgp, k)
			for _, a := range k.addrs {
				s.pgpByAddr[a] = append(s.pgpByAddr[a], k)
			}
		}
		switch r.kind {
		case kindCert:
			for _, c := range r.certs {
				if old, dup := s.certByHash[c.hash]; dup {
					s.problems = append(s.problems, Problem{File: r.rel, Err: fmt.Errorf("duplicate certificate %s, also in %s; ignored here", c.hash, old.file)})
					continue
				}
				s.certByHash[c.hash] = c
				s.certs = append(s.certs, c)
				for _, a := range c.addrs {
					s.certByAddr[a] = append(s.certByAddr[a], c)
				}
			}
		case kindCA:
			for _, c := range r.certs {
				if old, dup := anchorByHash[c.hash]; dup {
					s.problems = append(s.problems, Problem{File: r.rel, Err: fmt.Errorf("duplicate CA certificate %s, also in %s; ignored here", c.hash, old.file)})
					continue
				}
				anchorByHash[c.hash] = c
				s.anchors = append(s.anchors, c)
				s.anchorPool.AddCert(c.cert)
			}
		case kindCRL:
			crlCandidates = append(crlCandidates, r)
		case kindSecretSMIME:
			id := r.smime
			if old, dup := smimeByHash[id.hash]; dup {
				s.problems = append(s.problems, Problem{File: r.rel, Err: fmt.Errorf("duplicate certificate %s, also in %s; ignored here", id.hash, old.File)})
				continue
			}
			smimeByHash[id.hash] = id
			s.smime = append(s.smime, id)
			for _, a := range id.Addresses {
				s.smimeByAddr[a] = append(s.smimeByAddr[a], id)
			}
		}
	}
	// A CRL is used only if a trust anchor signed it.
	for _, r := range crlCandidates {
		for i, l := range r.crls {
			ok := false
			for _, a := range s.anchors {
				if bytes.Equal(a.cert.RawSubject, l.RawIssuer) && l.CheckSignatureFrom(a.cert) == nil {
					ok = true
					break
				}
			}
			if !ok {
				s.problems = append(s.problems, Problem{File: r.rel, Err: fmt.Errorf("CRL %d: not signed by a trust anchor in %s; ignored", i+1, DirCA)})
				continue
			}
			s.crls = append(s.crls, l)
		}
		s.crlFiles = append(s.crlFiles, r.rel)
	}
	// Pins that name nothing are problems too.
	s.pins = make(map[string]string, len(s.opts.Pins))
	for addr, fpr := range s.opts.Pins {
		f := normFpr(fpr)
		s.pins[s.opts.norm(addr)] = f
		if _, ok := s.pgpByFpr[f]; ok {
			continue
		}
		if _, ok := s.certByHash[f]; ok {
			continue
		}
		s.problems = append(s.problems, Problem{File: "(config)", Err: fmt.Errorf("pin for %s: no key or certificate %s in the keystore", addr, fpr)})
	}
}

// Problems lists the files (or parts of files) left out because of their
// content, and why. Places that could not be read are Faults.
func (s *Snapshot) Problems() []Problem { return append([]Problem(nil), s.problems...) }

// LoadedAt is when the snapshot was read.
func (s *Snapshot) LoadedAt() time.Time { return s.loadedAt }
