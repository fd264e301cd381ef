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

// AllLookRandom reports whether everything r holds looks like ciphertext:
// each 64 KiB window of it passes LooksRandom, so that plaintext after the
// first window (or in any later one) is seen too. Only a last window
// shorter than 64 bytes goes untested, as in LooksRandom. A read error is
// returned as it is.
func AllLookRandom(r io.Reader) (bool, error) {
	buf := make([]byte, sample)
	for {
		n, err := io.ReadFull(r, buf)
		if n > 0 && !LooksRandom(buf[:n]) {
			return false, nil
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return true, nil
		default:
			return false, err
		}
	}
}

type countWriter int

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

var _ io.Writer = (*countWriter)(nil)
