// Package discover implements outbound key discovery: finding the
// OpenPGP key or S/MIME certificate of a recipient the keystore has none
// for, in the recipient domain's Web Key Directory
// (draft-koch-openpgp-webkey-service) and in DNSSEC-validated DANE records
// (OPENPGPKEY, RFC 7929; SMIMEA, RFC 8162), and caching the answers in the
// keystore's discovered/ directory.
//
// Trust: a key the admin imported (keystore) always wins; DANE answers
// count only when a validating resolver on loopback set the AD bit; WKD
// answers are as good as the HTTPS connection to the recipient's domain.
// Every key is checked by the keystore's rules (user ID for the address,
// not expired or revoked, RSA of at least 2048 bits, ...) and is used
// only to encrypt outbound mail, never to judge inbound signatures.
//
// Every lookup is bounded by Options.Timeout, and LookupMessage bounds all
// the lookups of one message together by it. Names, including the WKD
// host names, are resolved through Options.Resolver only.
package discover

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
)

// Status is the outcome of one source's lookup for one address.
type Status string

// The statuses. Found answers are cached for CacheTTL; NotFound, Unusable
// and Insecure ones for NegativeTTL; Temporary ones are not cached.
const (
	Found     Status = "found"    // a usable key or certificate
	NotFound  Status = "none"     // the source has nothing for the address
	Unusable  Status = "unusable" // an answer, but nothing in it may be used (expired, revoked, wrong user ID, weak algorithm, ...)
	Insecure  Status = "insecure" // DANE records without DNSSEC validation (no AD bit): ignored
	Temporary Status = "tempfail" // timeout, SERVFAIL, server unreachable: ask again later
)

// Answer is what one source says about one address.
type Answer struct {
	Address string    `json:"address"`
	Source  string    `json:"source"` // config.SourceWKD or config.SourceDANE
	Status  Status    `json:"status"`
	OpenPGP *Key      `json:"openpgp,omitempty"`
	SMIME   *Key      `json:"smime,omitempty"`
	From    string    `json:"from,omitempty"`   // the URL or the DNS names that answered
	Reason  string    `json:"reason,omitempty"` // why not found, or what was skipped
	Fetched time.Time `json:"fetched"`
	Expires time.Time `json:"expires,omitzero"` // until when the cache uses the answer
	Cached  bool      `json:"cached"`           // the answer came from the cache
}

// Key is a discovered key or certificate, checked for the address.
type Key struct {
	keystore.CheckedKey
	// Usage is the SMIMEA certificate usage (1 PKIX-EE, 3 DANE-EE); 0 for
	// OpenPGP keys and WKD.
	Usage uint8
}

// MarshalJSON describes the key without its material.
func (k *Key) MarshalJSON() ([]byte, error) {
	type desc struct {
		Fingerprint string     `json:"fingerprint"`
		Algorithm   string     `json:"algorithm"`
		Created     time.Time  `json:"created"`
		Expires     *time.Time `json:"expires,omitempty"`
		Usage       uint8      `json:"smimea_usage,omitempty"`
	}
	d := desc{Fingerprint: k.Fingerprint, Algorithm: k.Algorithm, Created: k.Created.UTC(), Usage: k.Usage}
	if !k.Expires.IsZero() {
		e := k.Expires.UTC()
		d.Expires = &e
	}
	return jsonMarshal(d)
}

// Observer is told of lookups (result: a Status) and of cache use
// (result: "hit", "miss", "stale"), for metrics.
type Observer interface {
	DiscoveryLookup(source, result string)
	DiscoveryCache(source, result string)
}

// Options configures a Discoverer.
type Options struct {
	config.Discovery
	// Dir is the cache directory (KEYSTORE/discovered).
	Dir string
	// FoldLocalPart compares user ID local parts case-insensitively
	// ([keyring] fold_local_part).
	FoldLocalPart bool
	// Anchors returns the trust anchors a PKIX-EE SMIMEA certificate must
	// chain to (the keystore's ca/); nil: such records are not used.
	Anchors func() *x509.CertPool
	Logger  *slog.Logger
	// Observer receives metrics (nil: none).
	Observer Observer
}

// Discoverer looks keys up and caches them. It is safe for concurrent use.
type Discoverer struct {
	opts  Options
	http  *http.Client
	log   *slog.Logger
	cache *cache
	// setupErr makes every lookup a temporary failure (ca_file unreadable).
	setupErr error

	mu       sync.Mutex
	inflight map[string]*call
	used     map[string]bool // cache keys a message used since their fetch
	busy     int             // lookups not yet stored
	idle     *sync.Cond      // signalled when busy drops to 0

	// httpsPort replaces port 443 for WKD connections (tests only).
	httpsPort string
}

type call struct {
	done chan struct{}
	ans  Answer
}

// Limits on WKD responses.
const (
	maxKeyResponse    = 1 << 20
	maxPolicyResponse = 64 << 10
	maxRedirects      = 3
)

// New returns a Discoverer. It never fails: a ca_file that cannot be read
// makes every WKD lookup a temporary failure, said in the log, so that
// required recipients wait rather than bounce.
func New(o Options) *Discoverer {
	d := &Discoverer{opts: o, log: o.Logger, inflight: map[string]*call{}, used: map[string]bool{}}
	d.idle = sync.NewCond(&d.mu)
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	d.cache = newCache(o.Dir)
	roots, err := x509.SystemCertPool()
	if err != nil || roots == nil {
		roots = x509.NewCertPool()
	}
	if o.CAFile != "" {
		certs, err := config.ReadCAFile(o.CAFile)
		if err != nil {
			d.setupErr = fmt.Errorf("discovery.ca_file: %w", err)
			d.log.Error("key discovery: WKD lookups will fail until the configuration is fixed", "error", d.setupErr)
		}
		for _, c := range certs {
			roots.AddCert(c)
		}
	}
	tr := &http.Transport{
		Proxy:                 nil, // the recipient's domain, directly
		DialContext:           d.dialHTTPS,
		TLSClientConfig:       &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		MaxIdleConnsPerHost:   2,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   o.Timeout.D(),
		ResponseHeaderTimeout: o.Timeout.D(),
	}
	d.http = &http.Client{Transport: tr, CheckRedirect: func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("more than %d redirects", maxRedirects)
		}
		if req.URL.Scheme != "https" {
			return fmt.Errorf("redirect to %s: not https", req.URL.Redacted())
		}
		return nil
	}}
	return d
}

// Flush waits until every answer looked up so far is in the cache.
func (d *Discoverer) Flush() {
	d.mu.Lock()
	for d.busy > 0 {
		d.idle.Wait()
	}
	d.mu.Unlock()
}

// Close waits for the cache to be written (Flush) and releases idle
// connections.
func (d *Discoverer) Close() {
	d.Flush()
	d.http.CloseIdleConnections()
}

// Request asks for the answers of some sources for one address.
type Request struct {
	Address string
	Sources []string
}

// LookupMessage answers the requests of one message: fresh cache entries
// without network, everything else looked up now, in parallel, all
// within Options.Timeout together (ctx may end it sooner). A lookup not
// done by then is answered Temporary for this message; it goes on in the
// background up to its own Timeout, and its answer is cached for the
// next attempt. The result has one answer per source requested, by
// address as given.
func (d *Discoverer) LookupMessage(ctx context.Context, reqs []Request, now time.Time) map[string][]Answer {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout.D())
	defer cancel()
	out := make(map[string][]Answer, len(reqs))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range reqs {
		ans := make([]Answer, len(r.Sources))
		out[r.Address] = ans
		for i, src := range r.Sources {
			wg.Go(func() {
				a := d.lookup(ctx, r.Address, src, now, false)
				mu.Lock()
				ans[i] = a
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// Discover looks addr up now in every source given, ignoring the cache,
// and stores the answers (`cryptmilter keys discover`).
func (d *Discoverer) Discover(ctx context.Context, addr string, sources []string, now time.Time) []Answer {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout.D())
	defer cancel()
	out := make([]Answer, len(sources))
	var wg sync.WaitGroup
	for i, src := range sources {
		wg.Go(func() { out[i] = d.lookup(ctx, addr, src, now, true) })
	}
	wg.Wait()
	d.Flush()
	return out
}

// lookup answers one source for one address: from the cache when fresh
// (unless force), else from the network (one lookup per address and
// source at a time, shared by whoever asks meanwhile).
func (d *Discoverer) lookup(ctx context.Context, addr, src string, now time.Time, force bool) Answer {
	key, err := d.cacheKey(addr, src)
	if err != nil {
		return Answer{Address: addr, Source: src, Status: NotFound, Reason: err.Error(), Fetched: now}
	}
	if !force {
		a, state := d.cache.get(key, now, func(r *record) Answer { return d.fromRecord(r, r.Address, now) })
		a.Address = addr
		d.observeCache(src, state)
		if state == cacheHit {
			d.markUsed(key)
			return a
		}
	}
	d.mu.Lock()
	c, ok := d.inflight[key]
	if !ok {
		c = &call{done: make(chan struct{})}
		d.inflight[key] = c
		d.busy++
		go d.fetchAndStore(key, addr, src, now, c)
	}
	d.mu.Unlock()
	select {
	case <-c.done:
		if !force {
			d.markUsed(key)
		}
		a := c.ans
		a.Address = addr
		return a
	case <-ctx.Done():
		return Answer{Address: addr, Source: src, Status: Temporary, Fetched: now,
			Reason: fmt.Sprintf("no answer within discovery.timeout (%v)", d.opts.Timeout.D())}
	}
}

// markUsed notes that a message used the answer for key (RefreshDue
// refreshes those). Past maxUsed keys, the keys not used since their
// fetch are dropped from the map.
func (d *Discoverer) markUsed(key string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if len(d.used) >= maxUsed {
		for k, u := range d.used {
			if !u {
				delete(d.used, k)
			}
		}
	}
	d.used[key] = true
}

// maxUsed bounds the notes of markUsed.
const maxUsed = 1 << 16

// fetchAndStore runs one network lookup with a deadline of its own (a
// message that stops waiting does not cancel it), hands the answer to the
// waiters, then caches a definite answer. Until it is cached the call
// stays in flight, so that nobody asks the network again meanwhile.
func (d *Discoverer) fetchAndStore(key, addr, src string, now time.Time, c *call) {
	ctx, cancel := context.WithTimeout(context.Background(), d.opts.Timeout.D())
	defer cancel()
	a := d.fetch(ctx, addr, src, now)
	if a.Status != Temporary {
		ttl := d.opts.NegativeTTL.D()
		if a.Status == Found {
			ttl = d.opts.CacheTTL.D()
		}
		a.Expires = now.Add(ttl)
	}
	if d.opts.Observer != nil {
		d.opts.Observer.DiscoveryLookup(src, string(a.Status))
	}
	lvl := slog.LevelDebug
	if a.Status == Unusable || a.Status == Insecure || a.Status == Temporary {
		lvl = slog.LevelInfo
	}
	d.log.Log(ctx, lvl, "key discovery", "address", addr, "source", src, "status", string(a.Status),
		"from", a.From, "reason", a.Reason, "fingerprint", fingerprints(&a))
	c.ans = a
	d.mu.Lock()
	d.used[key] = false
	d.mu.Unlock()
	close(c.done)
	if a.Status != Temporary {
		d.store(key, &a)
	}
	d.mu.Lock()
	delete(d.inflight, key)
	if d.busy--; d.busy == 0 {
		d.idle.Broadcast()
	}
	d.mu.Unlock()
}

// fetch asks the network.
func (d *Discoverer) fetch(ctx context.Context, addr, src string, now time.Time) Answer {
	var a Answer
	switch src {
	case config.SourceWKD:
		if d.setupErr != nil {
			a = Answer{Status: Temporary, Reason: d.setupErr.Error()}
		} else {
			a = d.wkd(ctx, addr, now)
		}
	case config.SourceDANE:
		a = d.dane(ctx, addr, now)
	default:
		a = Answer{Status: NotFound, Reason: fmt.Sprintf("unknown source %q", src)}
	}
	a.Address, a.Source, a.Fetched = addr, src, now
	return a
}

func (d *Discoverer) cacheKey(addr, src string) (string, error) {
	if _, _, err := splitAddress(addr); err != nil {
		return "", err
	}
	return src + "\x00" + keystore.NormalizeAddress(addr, d.opts.FoldLocalPart), nil
}

func (d *Discoverer) observeCache(src string, state cacheState) {
	if d.opts.Observer != nil {
		d.opts.Observer.DiscoveryCache(src, string(state))
	}
}

// store caches a definite answer and logs a key change.
func (d *Discoverer) store(key string, a *Answer) {
	prev, err := d.cache.put(key, a)
	if err != nil {
		d.log.Warn("key discovery: cannot cache the answer; it will be looked up again", "address", a.Address, "source", a.Source, "error", err)
		return
	}
	if prev == nil {
		return
	}
	fpr := func(k *storedKey) string {
		if k == nil {
			return ""
		}
		return k.Fingerprint
	}
	for _, p := range []struct {
		proto, old, next string
	}{{"openpgp", fpr(prev.OpenPGP), fpr(storeKey(a.OpenPGP))}, {"smime", fpr(prev.SMIME), fpr(storeKey(a.SMIME))}} {
		switch {
		case p.old != "" && p.next != "" && p.old != p.next:
			d.log.Warn("discovered key changed", "address", a.Address, "source", a.Source, "protocol", p.proto,
				"old", p.old, "new", p.next, "from", a.From)
		case p.old != "" && p.next == "" && a.Status != Found:
			d.log.Info("discovered key withdrawn", "address", a.Address, "source", a.Source, "protocol", p.proto,
				"old", p.old, "status", string(a.Status), "reason", a.Reason)
		}
	}
}

// RefreshDue looks up again, in the background of mail, the cached keys
// that messages used and that expire within a tenth of CacheTTL (or
// have expired), so that messages find fresh answers; it removes "no key"
// answers expired for longer than NegativeTTL.
func (d *Discoverer) RefreshDue(ctx context.Context, now time.Time) {
	recs, _ := d.cache.list()
	ahead := d.opts.CacheTTL.D() / 10
	for _, r := range recs {
		if ctx.Err() != nil {
			return
		}
		key, err := d.cacheKey(r.Address, r.Source)
		if err != nil {
			continue
		}
		if r.Status != Found {
			if now.Sub(r.Expires) > d.opts.NegativeTTL.D() {
				d.cache.remove(key)
			}
			continue
		}
		d.mu.Lock()
		used := d.used[key]
		d.mu.Unlock()
		if !used || r.Expires.Sub(now) > ahead {
			continue
		}
		d.lookup(ctx, r.Address, r.Source, now, true)
	}
	d.Flush()
}

// Run calls RefreshDue every interval until ctx ends.
func (d *Discoverer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			d.RefreshDue(ctx, time.Now())
		}
	}
}

// RefreshInterval is how often Run should be called for cacheTTL: a
// twentieth of it, between a minute and an hour.
func RefreshInterval(cacheTTL time.Duration) time.Duration {
	return min(max(cacheTTL/20, time.Minute), time.Hour)
}

func fingerprints(a *Answer) string {
	s := ""
	if a.OpenPGP != nil {
		s = a.OpenPGP.Fingerprint
	}
	if a.SMIME != nil {
		if s != "" {
			s += ","
		}
		s += a.SMIME.Fingerprint
	}
	return s
}

// trimErr drops the keystore's prefix from a check error.
func trimErr(err error) string {
	s := err.Error()
	for _, p := range []string{keystore.ErrNoKey.Error() + " for ", keystore.ErrNoKey.Error() + ": "} {
		if len(s) > len(p) && s[:len(p)] == p {
			return s[len(p):]
		}
	}
	return s
}

var errNoAnchors = errors.New("PKIX-EE certificate: no trust anchors (keystore ca/) to validate it against")

// CacheTTL is the configured cache_ttl.
func (d *Discoverer) CacheTTL() time.Duration { return d.opts.CacheTTL.D() }
