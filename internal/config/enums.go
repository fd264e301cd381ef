package config

import (
	"fmt"
	"log/slog"

	"github.com/pelletier/go-toml/v2"

	"github.com/cryptmilter/cryptmilter/internal/enum"
)

// The configuration's own enums (the engine's are in package crypto). Each
// is a small int with a word per value, 0 being unset, so that a bad word
// is caught while decoding, with its line.

// LogFormat is [log] format.
type LogFormat int

// The log formats.
const (
	LogText LogFormat = iota + 1
	LogJSON
)

var logFormatWords = enum.Words{LogText: "text", LogJSON: "json"}

func (f LogFormat) String() string                { return logFormatWords.String(int(f)) }
func (f LogFormat) MarshalText() ([]byte, error)  { return []byte(f.String()), nil }
func (f *LogFormat) UnmarshalText(b []byte) error { return logFormatWords.Parse(b, (*int)(f)) }

// Valid reports whether f is a format.
func (f LogFormat) Valid() bool { return logFormatWords.Valid(int(f)) }

// Words lists the format words.
func (LogFormat) Words() []string { return logFormatWords.List() }

// LogLevel is [log] level.
type LogLevel int

// The log levels.
const (
	LogDebug LogLevel = iota + 1
	LogInfo
	LogWarn
	LogError
)

var logLevelWords = enum.Words{LogDebug: "debug", LogInfo: "info", LogWarn: "warn", LogError: "error"}

func (l LogLevel) String() string                { return logLevelWords.String(int(l)) }
func (l LogLevel) MarshalText() ([]byte, error)  { return []byte(l.String()), nil }
func (l *LogLevel) UnmarshalText(b []byte) error { return logLevelWords.Parse(b, (*int)(l)) }

// Valid reports whether l is a level.
func (l LogLevel) Valid() bool { return logLevelWords.Valid(int(l)) }

// Words lists the level words.
func (LogLevel) Words() []string { return logLevelWords.List() }

// Slog returns the slog level.
func (l LogLevel) Slog() slog.Level {
	return map[LogLevel]slog.Level{LogDebug: slog.LevelDebug, LogWarn: slog.LevelWarn, LogError: slog.LevelError}[l]
}

// AuthDirection is [direction] authenticated: the direction of mail from
// SASL-authenticated clients.
type AuthDirection int

// The directions of authenticated mail.
const (
	AuthOutbound AuthDirection = iota + 1
	AuthInbound
)

var authWords = enum.Words{AuthOutbound: "outbound", AuthInbound: "inbound"}

func (a AuthDirection) String() string                { return authWords.String(int(a)) }
func (a AuthDirection) MarshalText() ([]byte, error)  { return []byte(a.String()), nil }
func (a *AuthDirection) UnmarshalText(b []byte) error { return authWords.Parse(b, (*int)(a)) }

// Valid reports whether a is a direction.
func (a AuthDirection) Valid() bool { return authWords.Valid(int(a)) }

// Words lists the words.
func (AuthDirection) Words() []string { return authWords.List() }

// enumKeys are the keys whose values are words. TOML would assign a bare
// number to the int underneath; checkWords refuses it first.
var enumKeys = map[string]bool{
	"log.format": true, "log.level": true, "inbound.on_decrypt_error": true,
	"outbound.policy": true, "outbound.prefer": true, "outbound.split": true, "outbound.rule.policy": true,
	"outbound.rule.min_trust":  true,
	"actions.on_decrypt_error": true, "actions.on_no_key": true, "actions.on_limits": true,
	"actions.on_malformed": true, "actions.on_internal_error": true, "direction.authenticated": true,
}

// checkWords reads the document loosely and refuses a non-string value for
// a word key, naming its line. It also returns which [actions] keys are set.
// A document that does not parse is left to the strict decoder.
func checkWords(doc []byte) (actionsSet map[string]bool, err error) {
	var raw map[string]any
	if toml.Unmarshal(doc, &raw) != nil {
		return nil, nil
	}
	actionsSet = map[string]bool{}
	if a, ok := raw["actions"].(map[string]any); ok {
		for k := range a {
			actionsSet[k] = true
		}
	}
	var walk func(prefix string, m map[string]any) error
	walk = func(prefix string, m map[string]any) error {
		for k, v := range m {
			key := prefix + k
			switch x := v.(type) {
			case map[string]any:
				if err := walk(key+".", x); err != nil {
					return err
				}
			case []any:
				for _, e := range x {
					if t, ok := e.(map[string]any); ok {
						if err := walk(key+".", t); err != nil {
							return err
						}
					}
				}
			case string:
			default:
				if enumKeys[key] {
					return &fieldError{line: lineOf(doc, key), key: key, msg: fmt.Sprintf("%v is not a word: write it quoted, e.g. %s = \"…\"", v, k)}
				}
			}
		}
		return nil
	}
	return actionsSet, walk("", raw)
}
