package entropy

import (
	"bytes"
	"crypto/rand"
	"testing"
)

func TestLooksRandom(t *testing.T) {
	random := make([]byte, 4096)
	rand.Read(random)
	text := bytes.Repeat([]byte("Dear customer, please find attached the invoice for November.\r\n"), 70)
	// Base64-like text (ASCII letters only) compresses too.
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"random", random, true},
		{"text", text, false},
		{"zeros", make([]byte, 1000), false},
		{"short", []byte("hello"), true},
		{"half", append(random[:2048:2048], text[:2048]...), false},
	} {
		if got := LooksRandom(tc.data); got != tc.want {
			t.Errorf("%s: LooksRandom = %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestAllLookRandom: plaintext is found in any window, not only the first.
func TestAllLookRandom(t *testing.T) {
	random := make([]byte, 3*sample+100)
	rand.Read(random)
	text := bytes.Repeat([]byte("Dear customer, please find attached the invoice for November.\r\n"), 70)
	late := append(bytes.Clone(random[:2*sample]), text...)
	for _, tc := range []struct {
		name string
		data []byte
		want bool
	}{
		{"random", random, true},
		{"empty", nil, true},
		{"text after two windows", late, false},
		{"text in the last window", append(bytes.Clone(random[:sample]), text[:200]...), false},
	} {
		got, err := AllLookRandom(bytes.NewReader(tc.data))
		if err != nil || got != tc.want {
			t.Errorf("%s: AllLookRandom = %v, %v, want %v", tc.name, got, err, tc.want)
		}
		if tc.name == "text after two windows" && !LooksRandom(tc.data) {
			t.Errorf("%s: LooksRandom sees the text: the case tests nothing", tc.name)
		}
	}
}
