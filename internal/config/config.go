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

	"github.com/cryptmilter/cryptmilter/crypto"
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
	// ListenUsers are the users whose local processes may connect to an
	// inet listener (names or numeric uids; "*" is anyone).
	ListenUsers []string `toml:"listen_users"`
	Spool       string   `toml:"spool"`
	// DrainTimeout bounds how long SIGTERM waits for sessions in flight.
	DrainTimeout Duration `toml:"drain_timeout"`

	Log       Log       `toml:"log"`
	Keyring   Keyring   `toml:"keyring"`
	Identity  Identity  `toml:"identity"`
	Inbound   Inbound   `toml:"inbound"`
	Outbound  Outbound  `toml:"outbound"`
	Actions   Actions   `toml:"actions"`
	Direction Direction `toml:"direction"`
	Limits    Limits    `toml:"limits"`
	Metrics   Metrics   `toml:"metrics"`
	Discovery Discovery `toml:"discovery"`

	// File is the path the configuration was read from ("" for defaults).
	File string `toml:"-"`
	// Sockets is Listen parsed.
	Sockets []Socket `toml:"-"`
	// InternalNets is Direction.InternalHosts parsed.
	InternalNets []netip.Prefix `toml:"-"`
	// actionsSet records which [actions] keys the file sets;
	// aliasDecryptError that [inbound] on_decrypt_error gave the value.
	actionsSet        map[string]bool
	aliasDecryptError bool
}

// Log configures logging.
type Log struct {
	Format LogFormat `toml:"format"`
	Level  LogLevel  `toml:"level"`
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
	// OnDecryptError is the old name of [actions] on_decrypt_error, still
	// read (unset: 0).
	OnDecryptError crypto.Action `toml:"on_decrypt_error"`
	RTHeaders      bool          `toml:"rt_headers"`
	KeepOriginal   bool          `toml:"keep_original"`
	UnwrapSigned   bool          `toml:"unwrap_signed"`
	AllowSHA1      bool          `toml:"allow_sha1"`
	// ExactLocalPart compares a signer's local part with From's exactly
	// (default: case-insensitively).
	ExactLocalPart bool `toml:"exact_local_part"`
}

// Outbound configures signing and encryption.
type Outbound struct {
	Policy         crypto.OutboundPolicy `toml:"policy"`
	Prefer         crypto.Protocol       `toml:"prefer"`
	Split          crypto.Split          `toml:"split"`
	Reinject       string                `toml:"reinject"`
	SignAs         string                `toml:"sign_as"`
	ProtectHeaders bool                  `toml:"protect_headers"`
	DeferRcpt      bool                  `toml:"defer_rcpt"`
	Rules          []Rule                `toml:"rule"`
	// ReinjectJournalTTL is how long the hand-over journal remembers a
	// copy the re-injection listener accepted, so that a retry of the
	// original does not hand it over again.
	ReinjectJournalTTL Duration `toml:"reinject_journal_ttl"`

	// HeaderConfidentiality: with header protection, also hide the
	// Subject (and Keywords, Comments) of encrypted copies (RFC 9788's
	// baseline policy: "[...]" outside). False keeps them readable
	// outside and still signed inside (hcp_no_confidentiality), so that
	// replies from clients without RFC 9788 keep a ticket tag.
	HeaderConfidentiality bool `toml:"header_confidentiality"`
}

// Rule is one [[outbound.rule]]: first match wins.
type Rule struct {
	Match  string                `toml:"match"` // address, @domain or *
	Policy crypto.OutboundPolicy `toml:"policy"`
	Inline bool                  `toml:"inline"` // inline PGP instead of PGP/MIME
	// MinTrust is the lowest trust a recipient key may have: manual
	// (imported by the admin) > dane > wkd. Unset means wkd.
	MinTrust crypto.Trust `toml:"min_trust"`
}

// Actions are the outcomes an admin chooses, as OpenDKIM's On-* settings
// (see crypto.Actions for what each applies to and which are refused).
type Actions struct {
	OnDecryptError  crypto.Action `toml:"on_decrypt_error"`
	OnNoKey         crypto.Action `toml:"on_no_key"`
	OnLimits        crypto.Action `toml:"on_limits"`
	OnMalformed     crypto.Action `toml:"on_malformed"`
	OnInternalError crypto.Action `toml:"on_internal_error"`
}

// Direction configures how serve tells outbound from inbound mail.
type Direction struct {
	OriginatingDaemons []string      `toml:"originating_daemons"`
	InternalHosts      []string      `toml:"internal_hosts"`
	Authenticated      AuthDirection `toml:"authenticated"`
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
	// IdleTimeout closes a milter connection on which the MTA sends
	// nothing for this long.
	IdleTimeout Duration `toml:"idle_timeout"`
	// MaxConnections bounds the open milter connections; more are
	// closed at once (the MTA applies milter_default_action).
	MaxConnections int `toml:"max_connections"`
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
		ListenUsers:  []string{"root", "postfix", "smmsp"},
		Spool:        "",
		DrainTimeout: Duration(30 * time.Second),
		Log:          Log{Format: LogText, Level: LogInfo},
		Keyring:      Keyring{FoldLocalPart: false, ServiceGroup: "", Watch: true, Pin: map[string]string{}},
		Identity:     Identity{Addresses: []string{}},
		Inbound: Inbound{
			RTHeaders:    false,
			KeepOriginal: false,
			UnwrapSigned: false,
			AllowSHA1:    false,
		},
		Outbound: Outbound{
			Policy:         crypto.Opportunistic,
			Prefer:         crypto.OpenPGP,
			Split:          crypto.PerRecipient,
			Reinject:       "",
			SignAs:         "",
			ProtectHeaders: true,
			DeferRcpt:      false,
			Rules:          []Rule{},
			// Postfix's maximal_queue_lifetime: no retry comes later.
			ReinjectJournalTTL: Duration(5 * 24 * time.Hour),

			HeaderConfidentiality: true,
		},
		Actions: Actions{
			OnDecryptError:  crypto.Accept,
			OnNoKey:         crypto.Reject,
			OnLimits:        crypto.Reject,
			OnMalformed:     crypto.Reject,
			OnInternalError: crypto.Tempfail,
		},
		Direction: Direction{
			OriginatingDaemons: []string{"ORIGINATING"},
			// Not loopback: content filters (amavis), list managers and
			// forwarding re-inject external mail there.
			InternalHosts: []string{},
			Authenticated: AuthOutbound,
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
			// Above Postfix's smtpd_timeout (300s), the longest an SMTP
			// client may be silent while the milter connection waits.
			IdleTimeout:    Duration(330 * time.Second),
			MaxConnections: 512,
		},
		Metrics:   Metrics{Listen: ""},
		Discovery: defaultDiscovery(),
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
	c.Discovery.Sources = nil
	set, err := checkWords(data)
	if err != nil {
		return nil, err
	}
	c.actionsSet = set
	dec := toml.NewDecoder(bytes.NewReader(data)).DisallowUnknownFields()
	if err := dec.Decode(c); err != nil {
		return nil, describe(err, data)
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
	if c.Discovery.Sources == nil {
		c.Discovery.Sources = d.Discovery.Sources
	}
	if err := c.finish(data); err != nil {
		return nil, err
	}
	return c, nil
}

// describe turns a go-toml error into "LINE: what" text; doc is the source.
func describe(err error, doc []byte) error {
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
		if msg, ok := typeMismatch(de, doc); ok {
			return fmt.Errorf("%d: %s", row, msg)
		}
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

// finish validates c and fills the derived fields. doc is the source text,
// used to name lines in messages.
func (c *Config) finish(doc []byte) error {
	v := &validator{doc: doc}
	for _, step := range []func(*validator) error{
		c.checkFiles, c.checkSockets, c.checkLog, c.checkAddresses,
		c.checkActions, c.checkOutbound, c.checkDirection, c.checkLimits, c.checkMetrics,
		func(v *validator) error { return c.Discovery.check(v.bad, c.Limits.MessageTimeout) },
	} {
		if err := step(v); err != nil {
			return err
		}
	}
	return nil
}

// validator makes key errors that name their line in doc.
type validator struct{ doc []byte }

func (v *validator) bad(key, format string, args ...any) error {
	return &fieldError{line: lineOf(v.doc, key), key: key, msg: fmt.Sprintf(format, args...)}
}

// enum checks a value decoded into an int-based enum: a word is checked
// while decoding; a bare number in the file lands here.
func (v *validator) enum(key string, ok bool, val any, words []string) error {
	if ok {
		return nil
	}
	return v.bad(key, "%v is not one of %s (a quoted word)", val, strings.Join(words, " | "))
}

func (c *Config) checkFiles(v *validator) error {
	if c.Keystore == "" {
		return v.bad("keystore", "must not be empty")
	}
	if fi, err := os.Stat(c.Keystore); err == nil && !fi.IsDir() {
		return v.bad("keystore", "%s is not a directory", c.Keystore)
	} else if err != nil && !errors.Is(err, os.ErrNotExist) {
		return v.bad("keystore", "%v", err)
	} else if errors.Is(err, os.ErrNotExist) {
		// It will be created; its parent must exist.
		parent := filepath.Dir(filepath.Clean(c.Keystore))
		if _, err := os.Stat(parent); err != nil {
			return v.bad("keystore", "%s does not exist and cannot be created: %v", c.Keystore, err)
		}
	}
	if c.DrainTimeout < 0 {
		return v.bad("drain_timeout", "must not be negative")
	}
	return nil
}

func (c *Config) checkSockets(v *validator) error {
	if len(c.Listen) == 0 {
		return v.bad("listen", "needs at least one socket, e.g. %q", DefaultListen)
	}
	c.Sockets = nil
	for i, l := range c.Listen {
		s, err := ParseSocket(l)
		if err != nil {
			return v.bad(fmt.Sprintf("listen[%d]", i), "%v", err)
		}
		c.Sockets = append(c.Sockets, s)
	}
	if _, err := strconv.ParseUint(c.SocketMode, 8, 32); err != nil || len(c.SocketMode) > 4 {
		return v.bad("socket_mode", "%q is not an octal file mode such as \"0660\"", c.SocketMode)
	}
	if c.Outbound.Reinject != "" {
		if _, err := ParseSocket(c.Outbound.Reinject); err != nil {
			return v.bad("outbound.reinject", "%v", err)
		}
	}
	return nil
}

func (c *Config) checkLog(v *validator) error {
	if err := v.enum("log.format", c.Log.Format.Valid(), int(c.Log.Format), c.Log.Format.Words()); err != nil {
		return err
	}
	return v.enum("log.level", c.Log.Level.Valid(), int(c.Log.Level), c.Log.Level.Words())
}

func (c *Config) checkAddresses(v *validator) error {
	if c.Hostname == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			h = "localhost"
		}
		c.Hostname = h
	}
	if !validHostname(c.Hostname) {
		return v.bad("hostname", "%q is not a host name", c.Hostname)
	}
	for addr := range c.Keyring.Pin {
		if !validAddress(addr) {
			return v.bad("keyring.pin", "%q is not an e-mail address", addr)
		}
	}
	for i, a := range c.Identity.Addresses {
		if !validAddress(a) {
			return v.bad(fmt.Sprintf("identity.addresses[%d]", i), "%q is not an e-mail address", a)
		}
	}
	if c.Outbound.SignAs != "" && !validAddress(c.Outbound.SignAs) {
		return v.bad("outbound.sign_as", "%q is not an e-mail address", c.Outbound.SignAs)
	}
	return nil
}

// checkActions validates [actions], taking [inbound] on_decrypt_error
// (the old name) when [actions] on_decrypt_error is not set.
func (c *Config) checkActions(v *validator) error {
	if old := c.Inbound.OnDecryptError; old != 0 {
		if !old.Valid() {
			return v.enum("inbound.on_decrypt_error", false, int(old), old.Words())
		}
		if c.actionsSet["on_decrypt_error"] && c.Actions.OnDecryptError != old {
			return v.bad("inbound.on_decrypt_error", "is the old name of [actions] on_decrypt_error, which says otherwise; remove [inbound] on_decrypt_error")
		}
		c.Actions.OnDecryptError = old
		if !c.actionsSet["on_decrypt_error"] {
			c.aliasDecryptError = true
		}
		// Consumed: [actions] holds the value from here on.
		c.Inbound.OnDecryptError = 0
	}
	a := c.Actions
	for _, f := range []struct {
		key string
		val crypto.Action
	}{
		{"on_decrypt_error", a.OnDecryptError}, {"on_no_key", a.OnNoKey}, {"on_limits", a.OnLimits},
		{"on_malformed", a.OnMalformed}, {"on_internal_error", a.OnInternalError},
	} {
		if err := v.enum("actions."+f.key, f.val.Valid(), int(f.val), f.val.Words()); err != nil {
			return err
		}
	}
	var ae *crypto.ActionError
	if err := crypto.ValidateActions(crypto.Actions(a)); errors.As(err, &ae) {
		key := "actions." + ae.Key
		if ae.Key == "on_decrypt_error" && c.aliasDecryptError {
			key = "inbound.on_decrypt_error"
		}
		return v.bad(key, "%s", ae.Msg)
	} else if err != nil {
		return err
	}
	return nil
}

func (c *Config) checkOutbound(v *validator) error {
	o := c.Outbound
	if err := v.enum("outbound.policy", o.Policy.Valid(), int(o.Policy), o.Policy.Words()); err != nil {
		return err
	}
	if err := v.enum("outbound.prefer", o.Prefer.Valid(), int(o.Prefer), o.Prefer.Words()); err != nil {
		return err
	}
	if err := v.enum("outbound.split", o.Split.Valid(), int(o.Split), o.Split.Words()); err != nil {
		return err
	}
	for i, r := range o.Rules {
		key := fmt.Sprintf("outbound.rule[%d]", i)
		switch {
		case r.Match == "*":
		case strings.HasPrefix(r.Match, "@") && validDomain(r.Match[1:]):
		case validAddress(r.Match):
		default:
			return v.bad(key+".match", "%q: want an address, @domain or *", r.Match)
		}
		if err := v.enum(key+".policy", r.Policy.Valid(), int(r.Policy), r.Policy.Words()); err != nil {
			return err
		}
		if r.MinTrust != 0 {
			if err := v.enum(key+".min_trust", r.MinTrust.Valid(), int(r.MinTrust), r.MinTrust.Words()); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Config) checkDirection(v *validator) error {
	c.InternalNets = nil
	for i, h := range c.Direction.InternalHosts {
		p, err := parsePrefix(h)
		if err != nil {
			return v.bad(fmt.Sprintf("direction.internal_hosts[%d]", i), "%q is not an address or CIDR prefix", h)
		}
		c.InternalNets = append(c.InternalNets, p)
	}
	a := c.Direction.Authenticated
	return v.enum("direction.authenticated", a.Valid(), int(a), a.Words())
}

func (c *Config) checkLimits(v *validator) error {
	l := c.Limits
	switch {
	case l.MaxMessageSize <= 0:
		return v.bad("limits.max_message_size", "must be positive")
	case l.MaxMIMEDepth <= 0:
		return v.bad("limits.max_mime_depth", "must be positive")
	case l.MaxParts <= 0:
		return v.bad("limits.max_parts", "must be positive")
	case l.MaxHeaderSize <= 0:
		return v.bad("limits.max_header_size", "must be positive")
	case l.MaxDecompressedSize <= 0:
		return v.bad("limits.max_decompressed_size", "must be positive")
	case l.MessageTimeout <= 0:
		return v.bad("limits.message_timeout", "must be positive")
	case l.MemorySpool < 0:
		return v.bad("limits.memory_spool", "must not be negative")
	case l.MaxConcurrent < 0:
		return v.bad("limits.max_concurrent", "must not be negative")
	case l.IdleTimeout <= 0:
		return v.bad("limits.idle_timeout", "must be positive (Postfix's smtpd_timeout is 300s)")
	case l.MaxConnections <= 0:
		return v.bad("limits.max_connections", "must be positive")
	case c.Outbound.ReinjectJournalTTL <= 0:
		return v.bad("outbound.reinject_journal_ttl", "must be positive (Postfix's maximal_queue_lifetime is 5d: \"120h\")")
	}
	return nil
}

func (c *Config) checkMetrics(v *validator) error {
	if c.Metrics.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Metrics.Listen); err != nil {
			return v.bad("metrics.listen", "%q: want host:port", c.Metrics.Listen)
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
