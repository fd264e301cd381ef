// Package config implements cryptmilter's configuration: one TOML file,
// strict (an unknown key is an error naming the key and its line), with a
// default for every key held in one literal.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
)

// DefaultListen is the socket of the embedded default: loopback only.
const DefaultListen = "inet:127.0.0.1:8895"

// Config is the whole configuration. Field names map to TOML keys.
type Config struct {
	Keystore    string   `toml:"keystore"`
	Listen      []string `toml:"listen"`
	Hostname    string   `toml:"hostname"`
	SocketMode  string   `toml:"socket_mode"`
	SocketGroup string   `toml:"socket_group"`
	Spool       string   `toml:"spool"`
	// DrainTimeout bounds how long SIGTERM waits for sessions in flight.
	DrainTimeout Duration `toml:"drain_timeout"`

	Log       Log       `toml:"log"`
	Keyring   Keyring   `toml:"keyring"`
	Identity  Identity  `toml:"identity"`
	Inbound   Inbound   `toml:"inbound"`
	Outbound  Outbound  `toml:"outbound"`
	Direction Direction `toml:"direction"`
	Limits    Limits    `toml:"limits"`
	Metrics   Metrics   `toml:"metrics"`

	// File is the path the configuration was read from ("" for defaults).
	File string `toml:"-"`
	// Sockets is Listen parsed.
	Sockets []Socket `toml:"-"`
	// InternalNets is Direction.InternalHosts parsed.
	InternalNets []netip.Prefix `toml:"-"`
}

// Log configures logging.
type Log struct {
	Format string `toml:"format"` // text | json
	Level  string `toml:"level"`  // debug | info | warn | error
}

// Keyring configures how the keystore is read.
type Keyring struct {
	FoldLocalPart bool              `toml:"fold_local_part"`
	ServiceGroup  string            `toml:"service_group"`
	Watch         bool              `toml:"watch"`
	Pin           map[string]string `toml:"pin"`
}

// Identity lists the gateway's own addresses.
type Identity struct {
	Addresses []string `toml:"addresses"`
}

// Inbound configures decryption and verification.
type Inbound struct {
	OnDecryptError string `toml:"on_decrypt_error"` // tag | reject | tempfail
	RTHeaders      bool   `toml:"rt_headers"`
	KeepOriginal   bool   `toml:"keep_original"`
	UnwrapSigned   bool   `toml:"unwrap_signed"`
	AllowSHA1      bool   `toml:"allow_sha1"`
}

// Outbound configures signing and encryption.
type Outbound struct {
	Policy         string `toml:"policy"` // required | opportunistic | sign-only | none
	Prefer         string `toml:"prefer"` // openpgp | smime
	Split          string `toml:"split"`  // per-recipient | by-class
	Reinject       string `toml:"reinject"`
	SignAs         string `toml:"sign_as"`
	ProtectHeaders bool   `toml:"protect_headers"`
	DeferRcpt      bool   `toml:"defer_rcpt"`
	Rules          []Rule `toml:"rule"`
}

// Rule is one [[outbound.rule]]: first match wins.
type Rule struct {
	Match  string `toml:"match"`  // address, @domain or *
	Policy string `toml:"policy"` // as Outbound.Policy
	Inline bool   `toml:"inline"` // inline PGP instead of PGP/MIME
}

// Direction configures how serve tells outbound from inbound mail.
type Direction struct {
	OriginatingDaemons []string `toml:"originating_daemons"`
	InternalHosts      []string `toml:"internal_hosts"`
	Authenticated      string   `toml:"authenticated"` // outbound | inbound
}

// Limits bounds the resources one message may use.
type Limits struct {
	MaxMessageSize      Size     `toml:"max_message_size"`
	MaxMIMEDepth        int      `toml:"max_mime_depth"`
	MaxParts            int      `toml:"max_parts"`
	MaxHeaderSize       Size     `toml:"max_header_size"`
	MaxDecompressedSize Size     `toml:"max_decompressed_size"`
	MessageTimeout      Duration `toml:"message_timeout"`
	MemorySpool         Size     `toml:"memory_spool"`
	// MaxConcurrent bounds the messages the engine works on at once
	// (0: twice the number of CPUs); others wait, up to message_timeout.
	MaxConcurrent int `toml:"max_concurrent"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Listen string `toml:"listen"` // host:port, "" = off
}

// Default returns the configuration used when no file is given. It is the
// one literal holding every default.
func Default() *Config {
	return &Config{
		Keystore:     "./cryptmilter-data",
		Listen:       []string{DefaultListen},
		Hostname:     "",
		SocketMode:   "0660",
		SocketGroup:  "",
		Spool:        "",
		DrainTimeout: Duration(30 * time.Second),
		Log:          Log{Format: "text", Level: "info"},
		Keyring:      Keyring{FoldLocalPart: false, ServiceGroup: "", Watch: true, Pin: map[string]string{}},
		Identity:     Identity{Addresses: []string{}},
		Inbound: Inbound{
			OnDecryptError: "tag",
			RTHeaders:      false,
			KeepOriginal:   false,
			UnwrapSigned:   false,
			AllowSHA1:      false,
		},
		Outbound: Outbound{
			Policy:         "opportunistic",
			Prefer:         "openpgp",
			Split:          "per-recipient",
			Reinject:       "",
			SignAs:         "",
			ProtectHeaders: true,
			DeferRcpt:      false,
			Rules:          []Rule{},
		},
		Direction: Direction{
			OriginatingDaemons: []string{"ORIGINATING"},
			// Not loopback: content filters (amavis), list managers and
			// forwarding re-inject external mail there (issue 11).
			InternalHosts: []string{},
			Authenticated: "outbound",
		},
		Limits: Limits{
			MaxMessageSize:      50 << 20,
			MaxMIMEDepth:        20,
			MaxParts:            500,
			MaxHeaderSize:       1 << 20,
			MaxDecompressedSize: 64 << 20,
			MessageTimeout:      Duration(120 * time.Second),
			MemorySpool:         1 << 20,
			MaxConcurrent:       0,
		},
		Metrics: Metrics{Listen: ""},
	}
}

// Load reads the file at path (strict TOML), applies it over the defaults
// and validates the result. An empty path returns the validated defaults.
func Load(path string) (*Config, error) {
	if path == "" {
		c := Default()
		return c, c.finish(nil)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("config: %s:%w", path, err)
	}
	c.File = path
	return c, nil
}

// Parse parses and validates a configuration document. Errors start with
// the line when one is known ("12: …").
func Parse(data []byte) (*Config, error) {
	c := Default()
	// Lists replace the defaults rather than merging into them.
	c.Listen, c.Identity.Addresses, c.Outbound.Rules = nil, nil, nil
	c.Direction.OriginatingDaemons, c.Direction.InternalHosts = nil, nil
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, describe(err)
	}
	d := Default()
	if c.Listen == nil {
		c.Listen = d.Listen
	}
	if c.Identity.Addresses == nil {
		c.Identity.Addresses = d.Identity.Addresses
	}
	if c.Outbound.Rules == nil {
		c.Outbound.Rules = d.Outbound.Rules
	}
	if c.Direction.OriginatingDaemons == nil {
		c.Direction.OriginatingDaemons = d.Direction.OriginatingDaemons
	}
	if c.Direction.InternalHosts == nil {
		c.Direction.InternalHosts = d.Direction.InternalHosts
	}
	if err := c.finish(data); err != nil {
		return nil, err
	}
	return c, nil
}

// describe turns a go-toml error into "LINE: what" text.
func describe(err error) error {
	var strict *toml.StrictMissingError
	if errors.As(err, &strict) {
		var msgs []string
		for _, e := range strict.Errors {
			row, _ := e.Position()
			msgs = append(msgs, fmt.Sprintf("%d: unknown key %q (check the spelling; contrib/cryptmilter.toml lists every key)", row, strings.Join(e.Key(), ".")))
		}
		return errors.New(strings.Join(msgs, "; "))
	}
	var de *toml.DecodeError
	if errors.As(err, &de) {
		row, _ := de.Position()
		msg := strings.TrimPrefix(de.Error(), "toml: ")
		if k := de.Key(); len(k) > 0 {
			return fmt.Errorf("%d: %s: %s", row, strings.Join(k, "."), msg)
		}
		return fmt.Errorf("%d: %s", row, msg)
	}
	return errors.New(" " + err.Error())
}

// fieldError is a validation error for one key.
type fieldError struct {
	line int
	key  string
	msg  string
}

func (e *fieldError) Error() string {
	if e.line > 0 {
		return fmt.Sprintf("%d: %s: %s", e.line, e.key, e.msg)
	}
	return fmt.Sprintf(" %s: %s", e.key, e.msg)
}

var policyWords = []string{"required", "opportunistic", "sign-only", "none"}

// finish validates c and fills the derived fields. doc is the source text,
// used to name lines in messages.
func (c *Config) finish(doc []byte) error {
	bad := func(key, format string, args ...any) error {
		return &fieldError{line: lineOf(doc, key), key: key, msg: fmt.Sprintf(format, args...)}
	}
	if c.Keystore == "" {
		return bad("keystore", "must not be empty")
	}
	if fi, err := os.Stat(c.Keystore); err == nil && !fi.IsDir() {
		return bad("keystore", "%s is not a directory", c.Keystore)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return bad("keystore", "%v", err)
	} else if errors.Is(err, os.ErrNotExist) {
		// It will be created; its parent must exist.
		parent := filepath.Dir(filepath.Clean(c.Keystore))
		if _, err := os.Stat(parent); err != nil {
			return bad("keystore", "%s does not exist and cannot be created: %v", c.Keystore, err)
		}
	}
	if len(c.Listen) == 0 {
		return bad("listen", "needs at least one socket, e.g. %q", DefaultListen)
	}
	c.Sockets = nil
	for i, l := range c.Listen {
		s, err := ParseSocket(l)
		if err != nil {
			return bad(fmt.Sprintf("listen[%d]", i), "%v", err)
		}
		c.Sockets = append(c.Sockets, s)
	}
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if !validHostname(c.Hostname) {
		return bad("hostname", "%q is not a host name", c.Hostname)
	}
	if _, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || len(c.SocketMode) > 4 {
		return bad("socket_mode", "%q is not an octal file mode such as \"0660\"", c.SocketMode)
	}
	if c.DrainTimeout < 0 {
		return bad("drain_timeout", "must not be negative")
	}
	if err := oneOf(c.Log.Format, "text", "json"); err != nil {
		return bad("log.format", "%v", err)
	}
	if err := oneOf(c.Log.Level, "debug", "info", "warn", "error"); err != nil {
		return bad("log.level", "%v", err)
	}
	for addr := range c.Keyring.Pin {
		if !validAddress(addr) {
			return bad("keyring.pin", "%q is not an e-mail address", addr)
		}
	}
	for i, a := range c.Identity.Addresses {
		if !validAddress(a) {
			return bad(fmt.Sprintf("identity.addresses[%d]", i), "%q is not an e-mail address", a)
		}
	}
	if err := oneOf(c.Inbound.OnDecryptError, "tag", "reject", "tempfail"); err != nil {
		return bad("inbound.on_decrypt_error", "%v", err)
	}
	if err := oneOf(c.Outbound.Policy, policyWords...); err != nil {
		return bad("outbound.policy", "%v", err)
	}
	if err := oneOf(c.Outbound.Prefer, "openpgp", "smime"); err != nil {
		return bad("outbound.prefer", "%v", err)
	}
	if err := oneOf(c.Outbound.Split, "per-recipient", "by-class"); err != nil {
		return bad("outbound.split", "%v", err)
	}
	if c.Outbound.Reinject != "" {
		s, err := ParseSocket(c.Outbound.Reinject)
		if err != nil {
			return bad("outbound.reinject", "%v", err)
		}
		if s.Network == "unix" {
			// go-smtp dials either; accept both.
			_ = s
		}
	}
	if c.Outbound.SignAs != "" && !validAddress(c.Outbound.SignAs) {
		return bad("outbound.sign_as", "%q is not an e-mail address", c.Outbound.SignAs)
	}
	for i, r := range c.Outbound.Rules {
		key := fmt.Sprintf("outbound.rule[%d]", i)
		switch {
		case r.Match == "*":
		case strings.HasPrefix(r.Match, "@") && validDomain(r.Match[1:]):
		case validAddress(r.Match):
		default:
			return bad(key+".match", "%q: want an address, @domain or *", r.Match)
		}
		if err := oneOf(r.Policy, policyWords...); err != nil {
			return bad(key+".policy", "%v", err)
		}
	}
	c.InternalNets = nil
	for i, h := range c.Direction.InternalHosts {
		p, err := parsePrefix(h)
		if err != nil {
			return bad(fmt.Sprintf("direction.internal_hosts[%d]", i), "%q is not an address or CIDR prefix", h)
		}
		c.InternalNets = append(c.InternalNets, p)
	}
	if err := oneOf(c.Direction.Authenticated, "outbound", "inbound"); err != nil {
		return bad("direction.authenticated", "%v", err)
	}
	l := c.Limits
	switch {
	case l.MaxMessageSize <= 0:
		return bad("limits.max_message_size", "must be positive")
	case l.MaxMIMEDepth <= 0:
		return bad("limits.max_mime_depth", "must be positive")
	case l.MaxParts <= 0:
		return bad("limits.max_parts", "must be positive")
	case l.MaxHeaderSize <= 0:
		return bad("limits.max_header_size", "must be positive")
	case l.MaxDecompressedSize <= 0:
		return bad("limits.max_decompressed_size", "must be positive")
	case l.MessageTimeout <= 0:
		return bad("limits.message_timeout", "must be positive")
	case l.MemorySpool < 0:
		return bad("limits.memory_spool", "must not be negative")
	case l.MaxConcurrent < 0:
		return bad("limits.max_concurrent", "must not be negative")
	}
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return bad("metrics.listen", "%q: want host:port", c.Metrics.Listen)
		}
	}
	return nil
}

// SpoolDir is the private directory for message bodies and plaintext.
func (c *Config) SpoolDir() string {
	if c.Spool != "" {
		return c.Spool
	}
	return filepath.Join(c.Keystore, ".spool")
}

func oneOf(v string, words ...string) error {
	for _, w := range words {
		if v == w {
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", v, strings.Join(words, " | "))
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		return p.Masked(), err
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	return netip.PrefixFrom(a, a.BitLen()), nil
}

var (
	hostnameRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*\.?$`)
	localRE    = regexp.MustCompile("^[A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+$")
)

func validHostname(s string) bool { return len(s) <= 253 && hostnameRE.MatchString(s) }
func validDomain(s string) bool   { return strings.Contains(s, ".") && validHostname(s) }

func validAddress(s string) bool {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i > 64 {
		return false
	}
	return localRE.MatchString(s[:i]) && validHostname(s[i+1:])
}

// lineOf finds the line of key ("table.key" or "key", indexes and array
// tables ignored) in doc by a plain scan, for error messages. 0 if unknown.
func lineOf(doc []byte, key string) int {
	if doc == nil {
		return 0
	}
	key = regexp.MustCompile(`\[\d+\]`).ReplaceAllString(key, "")
	table, name := "", key
	if i := strings.LastIndexByte(key, '.'); i >= 0 {
		table, name = key[:i], key[i+1:]
	}
	cur := ""
	for n, line := range strings.Split(string(doc), "\n") {
		t := strings.TrimSpace(line)
		if strings.HasPrefix(t, "[") {
			cur = strings.Trim(strings.SplitN(t, "#", 2)[0], "[] \t")
			continue
		}
		k, _, ok := strings.Cut(t, "=")
		if !ok {
			continue
		}
		k = strings.Trim(strings.TrimSpace(k), `"`)
		if cur == table && k == name {
			return n + 1
		}
		if cur == "" && table != "" && k == key {
			return n + 1
		}
	}
	return 0
}

// Validate checks c (after changes made in code) and fills derived fields.
func (c *Config) Validate() error { return c.finish(nil) }
