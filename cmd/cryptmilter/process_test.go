package main

import (
	"bufio"
	"strings"
	"testing"
)

// TestLFWriter: the copies process writes have LF line ends, as
// strings.ReplaceAll(text, "\r\n", "\n") gives them, however the text is
// cut into writes (a CRLF split between two, a final CR).
func TestLFWriter(t *testing.T) {
	for _, s := range []string{"", "a\r\nb\r\n", "\r", "a\rb", "\r\r\n", "x\r\n\r", strings.Repeat("line\r\n", 1000)} {
		want := strings.ReplaceAll(s, "\r\n", "\n")
		for piece := 1; piece <= 7; piece++ {
			var b strings.Builder
			lw := &lfWriter{w: bufio.NewWriter(&b)}
			for rest := s; len(rest) > 0; rest = rest[min(piece, len(rest)):] {
				lw.Write([]byte(rest[:min(piece, len(rest))]))
			}
			if err := lw.Close(); err != nil || b.String() != want {
				t.Fatalf("%.30q in pieces of %d: %.30q, %v; want %.30q", s, piece, b.String(), err, want)
			}
		}
	}
}
