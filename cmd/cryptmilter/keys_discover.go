package main

import (
	"context"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/cryptmilter/cryptmilter/internal/config"
	"github.com/cryptmilter/cryptmilter/keystore"
	"github.com/cryptmilter/cryptmilter/keystore/discover"
)

const keysDiscoverUsage = `Usage: cryptmilter keys [-c FILE] discover ADDR [--json]

Looks up ADDR's key now with the sources of [discovery] (both WKD and DANE
when discovery is off), prints what was found and from where, and stores
the answers in the keystore's discovered/ cache, where the daemon finds
them. Exit status 0 when a usable key or certificate was found, else 1.

Examples:
  cryptmilter keys discover alice@example.net
  cryptmilter keys -c /etc/cryptmilter/cryptmilter.toml discover --json bob@example.com
`

// keysDiscover implements `cryptmilter keys discover`.
func keysDiscover(cfg *config.Config, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("cryptmilter keys discover", keysDiscoverUsage, stderr)
	fs.Usage = func() {}
	asJSON := fs.Bool("json", false, "print JSON")
	pos, code, ok := parseInterspersed(fs, args, stdout, stderr, keysDiscoverUsage)
	if !ok {
		return code
	}
	if len(pos) != 1 || !strings.Contains(pos[0], "@") {
		errorf(stderr, "keys discover: give one e-mail address")
		hintf(stderr, "cryptmilter keys discover alice@example.net")
		return 1
	}
	addr := strings.Trim(pos[0], "<>")
	sources := cfg.Discovery.Sources
	if len(sources) == 0 {
		sources = []string{config.SourceWKD}
		if isLoopback(cfg.Discovery.Resolver) {
			sources = []string{config.SourceDANE, config.SourceWKD}
		}
		hintf(stderr, "discovery is off ([discovery] sources = []): looking up with %s anyway; mail uses discovered keys only once sources is set", strings.Join(sources, " and "))
	}
	kopts := keystoreOptions(cfg, nil)
	var anchors func() *x509.CertPool
	var snap *keystore.Snapshot
	if _, err := os.Stat(cfg.Keystore); err == nil {
		if s, err := keystore.Load(kopts); err == nil {
			snap, anchors = s, s.TrustAnchors
		}
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	d := discover.New(discoverOptions(cfg, anchors, log, nil))
	defer d.Close()
	answers := d.Discover(context.Background(), addr, sources, time.Now())
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		enc.Encode(answers)
	} else {
		printAnswers(stdout, answers)
	}
	found := false
	for _, a := range answers {
		found = found || a.Status == discover.Found
	}
	if snap != nil {
		if k, err := snap.EncryptionKey(addr, time.Now()); err == nil {
			hintf(stderr, "%s has a key in the keystore (%s): mail uses it, not a discovered one", addr, strings.ToUpper(k.GetFingerprint()))
		} else if c, err := snap.Certificate(addr, time.Now()); err == nil {
			hintf(stderr, "%s has a certificate in the keystore (%s): mail uses it, not a discovered one", addr, c.Subject)
		} else if snap.Pinned(addr) {
			hintf(stderr, "%s is pinned ([keyring.pin]): mail never uses a discovered key for it", addr)
		}
	}
	if !found {
		errorf(stderr, "keys discover: no usable key found for %s", addr)
		return 1
	}
	return 0
}

// printAnswers prints one block per source.
func printAnswers(w io.Writer, answers []discover.Answer) {
	for i, a := range answers {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "source:      %s\nstatus:      %s\n", a.Source, a.Status)
		for _, k := range []struct {
			proto string
			key   *discover.Key
		}{{"openpgp", a.OpenPGP}, {"smime", a.SMIME}} {
			if k.key == nil {
				continue
			}
			exp := "never"
			if !k.key.Expires.IsZero() {
				exp = k.key.Expires.UTC().Format(time.RFC3339)
			}
			fmt.Fprintf(w, "%-12s %s %s, expires %s\n", k.proto+":", k.key.Fingerprint, k.key.Algorithm, exp)
		}
		if a.From != "" {
			fmt.Fprintf(w, "from:        %s\n", a.From)
		}
		if a.Reason != "" {
			fmt.Fprintf(w, "reason:      %s\n", a.Reason)
		}
		if a.Status == discover.Temporary {
			fmt.Fprintln(w, "cached:      no (a temporary failure is asked again at the next message)")
		} else {
			fmt.Fprintf(w, "cached:      until %s\n", a.Expires.UTC().Format(time.RFC3339))
		}
	}
}

// discoveredEntries lists the discovery cache for `keys list`.
func discoveredEntries(opts keystore.Options, s *keystore.Snapshot, now time.Time, stderr io.Writer) []keystore.Entry {
	o := discover.Options{Dir: discover.CacheDir(opts.Dir), FoldLocalPart: opts.FoldLocalPart}
	if s != nil {
		o.Anchors = s.TrustAnchors
	}
	ents, errs := discover.Entries(o, now)
	for _, err := range errs {
		errorf(stderr, "%v (skipped)", err)
	}
	return ents
}

// removeDiscovered removes cached answers for `keys remove` (a
// fingerprint, or an address: every answer for it).
func removeDiscovered(opts keystore.Options, query string, stdout io.Writer) (bool, error) {
	files, err := discover.Remove(discover.CacheDir(opts.Dir), query)
	for _, f := range files {
		fmt.Fprintf(stdout, "removed %s from %s (discovery cache)\n", query, f)
	}
	return len(files) > 0, err
}

func isLoopback(resolver string) bool {
	ap, err := netip.ParseAddrPort(resolver)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}
