package config

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/pelletier/go-toml/v2"
)

// go-toml's wording for a value of the wrong TOML type.
var mismatchRE = regexp.MustCompile(`cannot decode TOML (\w+) into (?:struct field \S+ of type|a Go value of type) (\S+)`)

// typeMismatch rewrites go-toml's "cannot decode TOML integer into struct
// field config.Config.SocketMode of type string" as what the key wants,
// with the value written and, for a file mode, the fix. doc is the source,
// for the value as written. ok is false for other decode errors.
func typeMismatch(de *toml.DecodeError, doc []byte) (msg string, ok bool) {
	m := mismatchRE.FindStringSubmatch(de.Error())
	key := strings.Join(de.Key(), ".")
	if m == nil || key == "" {
		return "", false
	}
	got, goType := m[1], m[2]
	row, _ := de.Position()
	value := valueAt(doc, row)
	if value == "" {
		value = "the value"
	}
	if key == "socket_mode" {
		mode := strings.Trim(value, `"'`)
		if len(mode) < 4 && strings.Trim(mode, "01234567") == "" {
			mode = strings.Repeat("0", 4-len(mode)) + mode
		} else {
			mode = "0660"
		}
		return fmt.Sprintf("%s: %s is a TOML %s; write the mode as a quoted octal string: socket_mode = %q", key, value, got, mode), true
	}
	return fmt.Sprintf("%s: %s is a TOML %s; want %s", key, value, got, wantOf(goType)), true
}

// wantOf says in words what a Go type of the configuration takes.
func wantOf(goType string) string {
	switch goType {
	case "string":
		return `a quoted string`
	case "int", "int64":
		return "a whole number"
	case "bool":
		return "true or false"
	case "[]string":
		return `a list of quoted strings, such as ["a", "b"]`
	case "config.Size":
		return `a size, such as "50MiB" or 52428800`
	case "config.Duration":
		return `a duration, such as "30s" or "2m"`
	case "map[string]string":
		return `a table of quoted strings`
	}
	if strings.HasPrefix(goType, "[]") {
		return "a list (an array of tables: [[…]])"
	}
	return "a table ([…])"
}

// valueAt returns the value written on line row (1-based) of doc: the
// text after the first '=', without a trailing comment.
func valueAt(doc []byte, row int) string {
	lines := strings.Split(string(doc), "\n")
	if row < 1 || row > len(lines) {
		return ""
	}
	_, v, ok := strings.Cut(lines[row-1], "=")
	if !ok {
		return ""
	}
	var quote rune
	for i, r := range v {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote == 0 && (r == '"' || r == '\''):
			quote = r
		case quote == 0 && r == '#':
			return strings.TrimSpace(v[:i])
		}
	}
	return strings.TrimSpace(v)
}
