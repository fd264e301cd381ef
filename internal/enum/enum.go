// Package enum implements the small int enums of the configuration and
// the engine: each value has one word, 0 is unset, and a word is parsed
// while decoding (so that a bad one is reported with its line).
package enum

import (
	"fmt"
	"strings"
)

// Words are an enum's words by value; Words[0] is unused (unset).
type Words []string

// String returns v's word, or invalid(v).
func (w Words) String(v int) string {
	if w.Valid(v) {
		return w[v]
	}
	return fmt.Sprintf("invalid(%d)", v)
}

// Valid reports whether v has a word.
func (w Words) Valid(v int) bool { return v > 0 && v < len(w) }

// List returns the words in value order.
func (w Words) List() []string { return append([]string(nil), w[1:]...) }

// Parse sets *v to the value of word b, or fails naming the words.
func (w Words) Parse(b []byte, v *int) error {
	for i, s := range w {
		if i > 0 && s == string(b) {
			*v = i
			return nil
		}
	}
	return fmt.Errorf("%q is not one of %s", b, strings.Join(w[1:], " | "))
}
