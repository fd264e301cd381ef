package crypto

import (
	"fmt"
	"strings"

	"github.com/cryptmilter/cryptmilter/crypto/verdict"
	"github.com/cryptmilter/cryptmilter/internal/enum"
)

// Policy is everything the engine decides with besides the message and the
// keys: typed, built by the caller from its configuration (the engine
// never reads configuration files).
type Policy struct {
	// Hostname is the authserv-id of Authentication-Results.
	Hostname string
	Limits   Limits
	Inbound  InboundPolicy
	Outbound OutboundRules
	Actions  Actions
	// Discovery are the key discovery sources in use (TrustDANE,
	// TrustWKD); empty when discovery is off.
	Discovery []Trust
	// FoldLocalPart compares the local part of addresses
	// case-insensitively ([keyring] fold_local_part).
	FoldLocalPart bool
}

// Limits bound the resources one message may use.
type Limits struct {
	MaxMessageSize      int64
	MaxHeaderSize       int64
	MaxMIMEDepth        int
	MaxParts            int
	MaxDecompressedSize int64
}

// InboundPolicy says how incoming mail is shown.
type InboundPolicy struct {
	RTHeaders    bool // also set RT's X-RT-Incoming-* headers
	KeepOriginal bool // attach the original encrypted message
	UnwrapSigned bool // replace a verified multipart/signed by its content
	AllowSHA1    bool // accept SHA-1 in S/MIME signatures
	// ExactLocalPart compares the signer's local part with From's
	// exactly; by default case-insensitively (as Thunderbird does).
	ExactLocalPart bool
}

// OutboundRules says how outgoing mail is signed and encrypted.
type OutboundRules struct {
	// Default applies to recipients no rule matches.
	Default        OutboundPolicy
	Prefer         Protocol
	Split          Split
	SignAs         string
	ProtectHeaders bool
	// HeaderConfidentiality hides the outer Subject (and Keywords,
	// Comments) of encrypted copies under header protection (RFC 9788's
	// hcp_baseline); false keeps them readable (hcp_no_confidentiality).
	HeaderConfidentiality bool
	DeferRcpt             bool
	// Rules are tried in order; the first match wins.
	Rules []Rule
}

// Rule is one [[outbound.rule]].
type Rule struct {
	// Match is an address, "@domain" or "*".
	Match  string
	Policy OutboundPolicy
	// Inline sends inline PGP instead of PGP/MIME.
	Inline bool
	// MinTrust is the lowest trust a recipient key may have (0: wkd).
	MinTrust Trust
}

// Actions are the outcomes an admin chooses for the decisions below, as
// OpenDKIM's On-* settings. Choices that would make the gateway an oracle
// or lose mail are refused by ValidateActions.
type Actions struct {
	// OnDecryptError applies to a failed decryption of authenticated
	// ciphertext (OpenPGP with MDC or AEAD, CMS AuthEnvelopedData).
	// CBC EnvelopedData failures are always tagged (Accept): any other
	// reply would be a padding oracle.
	OnDecryptError Action
	// OnNoKey applies to a recipient whose policy is required and who
	// has no usable key.
	OnNoKey Action
	// OnLimits applies to a message over a size or structure limit.
	OnLimits Action
	// OnMalformed applies to an outbound message whose MIME structure
	// cannot be read, so it cannot be signed or encrypted as it is.
	OnMalformed Action
	// OnInternalError applies to internal failures: spool or keystore
	// errors, timeouts, panics.
	OnInternalError Action
}

// DefaultActions are the safe defaults.
func DefaultActions() Actions {
	return Actions{
		OnDecryptError:  Accept,
		OnNoKey:         Reject,
		OnLimits:        Reject,
		OnMalformed:     Reject,
		OnInternalError: Tempfail,
	}
}

// ActionChoice describes which actions an [actions] key accepts and why
// the others are refused.
type ActionChoice struct {
	Key     string
	Allowed []Action
	// Why explains, for each refused action, what it would do.
	Why map[Action]string
}

// ActionChoices lists the [actions] keys with the actions each accepts.
var ActionChoices = []ActionChoice{
	{Key: "on_decrypt_error", Allowed: []Action{Accept, Reject, Tempfail, Quarantine},
		Why: map[Action]string{Discard: "it would lose mail that merely failed to decrypt; use tag (accept) or quarantine"}},
	{Key: "on_no_key", Allowed: []Action{Reject, Tempfail},
		Why: map[Action]string{
			Accept:     "it would send plaintext where the policy requires encryption",
			Quarantine: "a quarantined message is released as it is, in plaintext, where the policy requires encryption",
			Discard:    "it would lose mail without telling the sender",
		}},
	{Key: "on_limits", Allowed: []Action{Reject, Tempfail},
		Why: map[Action]string{
			Accept:     "it would pass mail the gateway could not process (undecrypted inbound, unencrypted outbound)",
			Quarantine: "a quarantined message is released unprocessed",
			Discard:    "it would lose mail without telling the sender",
		}},
	{Key: "on_malformed", Allowed: []Action{Reject, Tempfail},
		Why: map[Action]string{
			Accept:     "it would send unsigned, unencrypted mail where the policy requires encryption",
			Quarantine: "a quarantined message is released unprocessed",
			Discard:    "it would lose mail without telling the sender",
		}},
	{Key: "on_internal_error", Allowed: []Action{Tempfail, Reject},
		Why: map[Action]string{
			Accept:     "it would deliver mail unprocessed whenever something fails (fail open)",
			Quarantine: "a quarantined message is released unprocessed",
			Discard:    "it would lose mail",
		}},
}

// ValidateActions checks a's choices; the error names the key and says
// why a choice is refused.
func ValidateActions(a Actions) error {
	vals := map[string]Action{
		"on_decrypt_error": a.OnDecryptError, "on_no_key": a.OnNoKey, "on_limits": a.OnLimits,
		"on_malformed": a.OnMalformed, "on_internal_error": a.OnInternalError,
	}
	for _, c := range ActionChoices {
		v := vals[c.Key]
		ok := false
		for _, w := range c.Allowed {
			if v == w {
				ok = true
			}
		}
		if ok {
			continue
		}
		words := make([]string, len(c.Allowed))
		for i, w := range c.Allowed {
			words[i] = w.word(c.Key)
		}
		if why, known := c.Why[v]; known {
			return &ActionError{Key: c.Key, Msg: fmt.Sprintf("%q is refused: %s; choose one of %s", v.word(c.Key), why, strings.Join(words, " | "))}
		}
		return &ActionError{Key: c.Key, Msg: fmt.Sprintf("%q is not one of %s", v.word(c.Key), strings.Join(words, " | "))}
	}
	return nil
}

// ActionError is a refused [actions] choice.
type ActionError struct {
	Key string // the key under [actions]
	Msg string
}

func (e *ActionError) Error() string { return "crypto: actions." + e.Key + ": " + e.Msg }

// word is how an action is spelled for key: on_decrypt_error calls Accept
// "tag" (the message is delivered with the failure in its headers).
func (a Action) word(key string) string {
	if a == Accept && key == "on_decrypt_error" {
		return "tag"
	}
	return a.String()
}

// Trust is how far a recipient key is trusted for outbound encryption,
// by where it came from: imported by the admin (manual) > found in
// DNSSEC-validated DANE records > found in the recipient domain's Web Key
// Directory.
type Trust int

// The trust levels, lowest first.
const (
	TrustWKD Trust = iota + 1
	TrustDANE
	TrustManual
)

var trustWords = enum.Words{TrustWKD: "wkd", TrustDANE: "dane", TrustManual: "manual"}

func (t Trust) String() string { return trustWords.String(int(t)) }

// MarshalText spells the level as the configuration does.
func (t Trust) MarshalText() ([]byte, error) { return []byte(t.String()), nil }

// UnmarshalText parses manual, dane or wkd.
func (t *Trust) UnmarshalText(b []byte) error {
	if err := trustWords.Parse(b, (*int)(t)); err != nil {
		return fmt.Errorf("%q is not one of %s", b, strings.Join(t.Words(), " | "))
	}
	return nil
}

// Valid reports whether t is a level.
func (t Trust) Valid() bool { return trustWords.Valid(int(t)) }

// Words lists the levels, highest first.
func (Trust) Words() []string { return []string{"manual", "dane", "wkd"} }

// OutboundPolicy is what a recipient's copy gets.
type OutboundPolicy int

// The outbound policies.
const (
	// Required: signed and encrypted; without a key the message is
	// refused (Actions.OnNoKey).
	Required OutboundPolicy = iota + 1
	// Opportunistic: signed and encrypted, else signed only.
	Opportunistic
	// SignOnly: signed only.
	SignOnly
	// NoCrypto: unchanged.
	NoCrypto
)

var policyWords = enum.Words{Required: "required", Opportunistic: "opportunistic", SignOnly: "sign-only", NoCrypto: "none"}

func (p OutboundPolicy) String() string { return policyWords.String(int(p)) }

// MarshalText spells the policy as the configuration does.
func (p OutboundPolicy) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses a policy word.
func (p *OutboundPolicy) UnmarshalText(b []byte) error { return policyWords.Parse(b, (*int)(p)) }

// Valid reports whether p is one of the policies.
func (p OutboundPolicy) Valid() bool { return policyWords.Valid(int(p)) }

// Words lists the policy words, for messages.
func (OutboundPolicy) Words() []string { return policyWords.List() }

// Protocol is OpenPGP or S/MIME.
type Protocol = verdict.Protocol

// The protocols.
const (
	OpenPGP = verdict.OpenPGP
	SMIME   = verdict.SMIME
)

// Split says how recipients that need different bodies share copies.
type Split int

// The splits.
const (
	// PerRecipient: every encrypted recipient gets a copy of its own.
	PerRecipient Split = iota + 1
	// ByClass: one copy per class, each Bcc recipient alone.
	ByClass
)

var splitWords = enum.Words{PerRecipient: "per-recipient", ByClass: "by-class"}

func (s Split) String() string { return splitWords.String(int(s)) }

// MarshalText spells the split as the configuration does.
func (s Split) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText parses a split word.
func (s *Split) UnmarshalText(b []byte) error { return splitWords.Parse(b, (*int)(s)) }

// Valid reports whether s is a split.
func (s Split) Valid() bool { return splitWords.Valid(int(s)) }

// Words lists the split words.
func (Split) Words() []string { return splitWords.List() }

// Action is the fate of a message.
type Action int

// The actions.
const (
	// Accept delivers the message (with the plan's changes).
	Accept Action = iota + 1
	// Reject refuses it permanently (5xx).
	Reject
	// Tempfail refuses it for now (4xx); the sender retries.
	Tempfail
	// Quarantine delivers it into the MTA's hold queue.
	Quarantine
	// Discard accepts it and drops it.
	Discard
)

var actionWords = enum.Words{Accept: "accept", Reject: "reject", Tempfail: "tempfail", Quarantine: "quarantine", Discard: "discard"}

func (a Action) String() string { return actionWords.String(int(a)) }

// MarshalText spells the action as in result.json and the configuration.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

// UnmarshalText parses an action word; "tag" is accept (deliver with the
// outcome in the result headers).
func (a *Action) UnmarshalText(b []byte) error {
	if string(b) == "tag" {
		*a = Accept
		return nil
	}
	if err := actionWords.Parse(b, (*int)(a)); err != nil {
		return fmt.Errorf("%q is not one of %s", b, strings.Join(a.Words(), " | "))
	}
	return nil
}

// Valid reports whether a is an action.
func (a Action) Valid() bool { return actionWords.Valid(int(a)) }

// Words lists the action words.
func (Action) Words() []string { return append([]string{"tag"}, actionWords.List()...) }
