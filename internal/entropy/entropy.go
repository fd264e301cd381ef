// Package entropy tells data that looks like ciphertext from data that
// does not: ciphertext does not compress, plaintext does.
package entropy

import (
	"compress/flate"
	"io"
)

// sample is how much of the data is looked at.
const sample = 64 << 10

// LooksRandom reports whether the first bytes of data (up to 64 KiB) look
// like ciphertext: DEFLATE at its fastest setting cannot shrink them by
// more than a few percent. Short inputs (under 64 bytes, where the test
// says little) count as random.
func LooksRandom(data []byte) bool {
	if len(data) > sample {
		data = data[:sample]
	}
	if len(data) < 64 {
		return true
	}
	var n countWriter
	w, _ := flate.NewWriter(&n, flate.BestSpeed)
	w.Write(data)
	w.Close()
	// DEFLATE adds a few bytes of framing to incompressible data.
	return int(n)*100 >= len(data)*95
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)
