// Package keystore implements cryptmilter's on-disk keyring: loading
// OpenPGP keys, X.509 certificates, trust anchors, CRLs and the gateway's
// own secret material from one directory into an immutable, indexed
// Snapshot; reloading it atomically; and writing to it atomically under a
// lock (import, remove, init).
//
// The layout on disk is described in README.md ("The keystore"). Nothing in
// this package takes keys from mail messages.
//
// The keystore fails closed: a file or directory that cannot be read (an
// I/O or permission error) never shrinks the keyring. A reload keeps what
// the previous load read there, the snapshot reports a Fault, and lookups
// whose answer depends on an unreadable place that nothing was kept for
// fail with ErrUnavailable instead of ErrNoKey (see Snapshot.Unavailable
// and Holder.Health).
package keystore

import (
	"github.com/cryptmilter/cryptmilter/internal/address"
	"log/slog"
	"strings"
)

// Subdirectories of the keystore directory.
const (
	DirOpenPGP = "openpgp" // correspondents' OpenPGP public keys
	DirCerts   = "certs"   // correspondents' X.509 certificates
	DirCA      = "ca"      // S/MIME trust anchors (CA certificates)
	DirCRL     = "crl"     // certificate revocation lists
	DirPrivate = "private" // gateway secrets, 0700
	// DirDiscovered holds keys found by outbound key discovery (WKD,
	// DANE), kept apart from the admin's keys; the loader does not read it
	// and does not report it as orphaned.
	DirDiscovered = "discovered"
	lockName      = ".lock" // lock file serialising writers
	passSuffix    = ".passphrase"
)

// Subdirectories of DirPrivate.
const (
	PrivOpenPGP = "openpgp" // gateway OpenPGP secret keys
	PrivSMIME   = "smime"   // gateway S/MIME key + certificate (PEM bundle or PKCS#12)
)

// CredentialPassphrase is the name of the systemd credential (a file in
// $CREDENTIALS_DIRECTORY) holding a passphrase that applies to every
// protected secret file that has no passphrase of its own.
const CredentialPassphrase = "keystore.passphrase"

// Options configures loading and writing a keystore.
type Options struct {
	// Dir is the keystore directory.
	Dir string
	// FoldLocalPart makes address lookups case-insensitive in the local
	// part too. By default the local part is compared exactly and only
	// the domain is case-insensitive (RFC 5321).
	FoldLocalPart bool
	// Pins maps an address to the fingerprint (OpenPGP, hex) or the
	// certificate SHA-256 hash (hex) that must be used for it. A pinned
	// address never falls back to another key.
	Pins map[string]string
	// ServiceGroup names the group that may read secret files at mode
	// 0640 ("" = only 0600 is accepted).
	ServiceGroup string
	// CredentialsDir is systemd's $CREDENTIALS_DIRECTORY, searched for
	// passphrases of protected secret files ("" = none).
	CredentialsDir string
	// Logger receives reload and problem reports (nil = discard).
	Logger *slog.Logger
}

func (o Options) logger() *slog.Logger {
	if o.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return o.Logger
}

// Problem is a file that could not be used (or part of it).
type Problem struct {
	File string // path of the file, relative to the keystore directory
	Err  error
}

func (p Problem) String() string { return p.File + ": " + p.Err.Error() }

// NormalizeAddress returns the form of addr used as an index key: the
// domain lower-cased, the local part exact unless fold is set. It returns
// "" for something that is not an addr-spec.
func NormalizeAddress(addr string, fold bool) string {
	return address.Canonical(addr, fold)
}

func (o Options) norm(addr string) string { return NormalizeAddress(addr, o.FoldLocalPart) }

// normFpr canonicalises a fingerprint or hash given by a user: hex digits
// only, upper case; spaces, colons and a 0x prefix are dropped.
func normFpr(s string) string {
	s = strings.TrimPrefix(strings.TrimPrefix(strings.TrimSpace(s), "0x"), "0X")
	var b strings.Builder
	for _, r := range s {
		switch {
		case r == ' ' || r == ':':
		case r >= '0' && r <= '9', r >= 'A' && r <= 'F':
			b.WriteRune(r)
		case r >= 'a' && r <= 'f':
			b.WriteRune(r - 'a' + 'A')
		default:
			return ""
		}
	}
	return b.String()
}
