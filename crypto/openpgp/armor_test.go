package openpgp

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"github.com/ProtonMail/go-crypto/openpgp/armor"
)

// goCryptoArmor is the reference: go-crypto's encoder with the checksum,
// as gopenpgp armors a message.
func goCryptoArmor(t testing.TB, data []byte, chunks []int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := armor.EncodeWithChecksumOption(&out, "PGP MESSAGE", nil, true)
	if err != nil {
		t.Fatal(err)
	}
	writeChunks(t, w, data, chunks)
	return out.Bytes()
}

func ourArmor(t testing.TB, data []byte, chunks []int) []byte {
	t.Helper()
	var out bytes.Buffer
	w, err := newArmorWriter(&out, "PGP MESSAGE")
	if err != nil {
		t.Fatal(err)
	}
	writeChunks(t, w, data, chunks)
	return out.Bytes()
}

func writeChunks(t testing.TB, w io.WriteCloser, data []byte, chunks []int) {
	t.Helper()
	for i := 0; len(data) > 0; i++ {
		n := len(data)
		if len(chunks) > 0 {
			n = min(n, chunks[i%len(chunks)])
		}
		if m, err := w.Write(data[:n]); err != nil || m != n {
			t.Fatalf("write %d: %d, %v", n, m, err)
		}
		data = data[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestArmorMatchesGoCrypto: the armor the gateway writes is byte for byte
// go-crypto's, for every size around the line (48 bytes) and buffer
// (3072 bytes) boundaries and for writes of every shape, and it decodes
// with a valid checksum.
func TestArmorMatchesGoCrypto(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 3*armorChunk+100)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	var sizes []int
	for n := 0; n <= 200; n++ {
		sizes = append(sizes, n)
	}
	for _, base := range []int{armorChunk, 2 * armorChunk, 3 * armorChunk} {
		for d := -50; d <= 50; d++ {
			sizes = append(sizes, base+d)
		}
	}
	patterns := [][]int{nil, {1}, {3}, {47}, {48}, {49}, {armorChunk - 1}, {armorChunk}, {armorChunk + 1}, {1, 4095, 7}, {8192}}
	for _, n := range sizes {
		for _, pat := range patterns {
			want := goCryptoArmor(t, data[:n], pat)
			got := ourArmor(t, data[:n], pat)
			if !bytes.Equal(got, want) {
				t.Fatalf("size %d, writes %v:\n got %q\nwant %q", n, pat, got, want)
			}
		}
	}
	blk, err := armor.Decode(bytes.NewReader(ourArmor(t, data, nil)))
	if err != nil {
		t.Fatal(err)
	}
	back, err := io.ReadAll(blk.Body) // checks the CRC at EOF
	if err != nil || !bytes.Equal(back, data) {
		t.Fatalf("decode: %v, equal %v", err, bytes.Equal(back, data))
	}
}

// TestCRC24 checks the table-driven CRC against RFC 4880's bitwise
// definition on random data of every length up to 64, split anywhere.
func TestCRC24(t *testing.T) {
	bitwise := func(crc uint32, d []byte) uint32 {
		for _, b := range d {
			crc ^= uint32(b) << 16
			for range 8 {
				crc <<= 1
				if crc&0x1000000 != 0 {
					crc ^= crc24Poly
				}
			}
		}
		return crc & 0xffffff
	}
	rng := rand.New(rand.NewPCG(3, 4))
	d := make([]byte, 64)
	for i := range d {
		d[i] = byte(rng.Uint32())
	}
	for n := 0; n <= len(d); n++ {
		want := bitwise(crc24Init, d[:n])
		for split := 0; split <= n; split++ {
			if got := crc24Update(crc24Update(crc24Init, d[:split]), d[split:n]); got != want {
				t.Fatalf("n %d split %d: %06x, want %06x", n, split, got, want)
			}
		}
	}
}

type failWriter struct{ after int }

func (f *failWriter) Write(p []byte) (int, error) {
	if f.after -= len(p); f.after < 0 {
		return 0, io.ErrShortWrite
	}
	return len(p), nil
}

// TestArmorWriteErrors: a failing underlying writer is reported, by Write
// or by Close, and a closed writer refuses more data.
func TestArmorWriteErrors(t *testing.T) {
	w, err := newArmorWriter(&failWriter{after: 100}, "PGP MESSAGE")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 2*armorChunk)); err == nil {
		t.Fatal("write through a failing writer succeeded")
	}
	if err := w.Close(); err == nil {
		t.Fatal("close after a failed write succeeded")
	}
	w, _ = newArmorWriter(&failWriter{after: 30}, "PGP MESSAGE")
	w.Write([]byte("short"))
	if err := w.Close(); err == nil {
		t.Fatal("close through a failing writer succeeded")
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after close succeeded")
	}
}

func BenchmarkArmor1MB(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16)
	for _, impl := range []struct {
		name string
		new  func(io.Writer) (io.WriteCloser, error)
	}{
		{"go-crypto", func(w io.Writer) (io.WriteCloser, error) {
			return armor.EncodeWithChecksumOption(w, "PGP MESSAGE", nil, true)
		}},
		{"table", func(w io.Writer) (io.WriteCloser, error) { return newArmorWriter(w, "PGP MESSAGE") }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			for b.Loop() {
				w, _ := impl.new(io.Discard)
				for p := data; len(p) > 0; p = p[min(len(p), 8192):] {
					w.Write(p[:min(len(p), 8192)])
				}
				w.Close()
			}
		})
	}
}
