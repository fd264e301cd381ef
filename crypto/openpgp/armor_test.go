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

// decodeBoth decodes armored text with go-crypto's Block.Body and with
// unarmor (armorBody); each result is the data and whether it decoded
// without error.
func decodeBoth(t *testing.T, text []byte) (want []byte, wantOK bool, got []byte, gotOK bool) {
	t.Helper()
	blk, err := armor.Decode(bytes.NewReader(text))
	if err == nil && blk.Type == "PGP MESSAGE" {
		want, err = io.ReadAll(blk.Body)
		wantOK = err == nil
	}
	r, err := unarmor(bytes.NewReader(text), "PGP MESSAGE")
	if err == nil {
		got, err = io.ReadAll(r)
		gotOK = err == nil
	}
	return
}

// TestArmorBodyMatchesGoCrypto: unarmor decodes exactly what go-crypto's
// armor reader decodes, and fails where it fails, on armor as gpg and
// other writers make it (CRLF, trailing blanks, headers, no checksum,
// 76-column lines, text around the block) and on damaged armor (bytes
// changed, lines cut, a truncated end). The one difference allowed:
// unarmor also decodes padded base64 segments that follow one another
// within a line, which go-crypto accepts only where they meet its reads.
func TestArmorBodyMatchesGoCrypto(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	variants := []func([]byte) []byte{
		func(b []byte) []byte { return b },
		func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) },
		func(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte(" \t\n")) },
		func(b []byte) []byte {
			return bytes.Replace(b, []byte("-----\n\n"), []byte("-----\nVersion: GnuPG v2\nComment: a\n\n"), 1)
		},
		func(b []byte) []byte { // no checksum line
			i := bytes.LastIndex(b, []byte("\n="))
			j := bytes.Index(b[i+1:], []byte("\n"))
			return append(append([]byte{}, b[:i+1]...), b[i+1+j+1:]...)
		},
		func(b []byte) []byte {
			return append(append([]byte("Some text first\n\n"), b...), "\ntrailing text\n"...)
		},
		func(b []byte) []byte { // 76-column lines
			i := bytes.Index(b, []byte("\n\n")) + 2
			j := bytes.LastIndex(b, []byte("\n="))
			body := bytes.ReplaceAll(b[i:j], []byte("\n"), nil)
			var out []byte
			out = append(out, b[:i]...)
			for len(body) > 76 {
				out = append(append(out, body[:76]...), '\n')
				body = body[76:]
			}
			out = append(out, body...)
			return append(out, b[j:]...)
		},
		func(b []byte) []byte { return b[:len(b)-len("-----END PGP MESSAGE-----")] }, // no END line
	}
	damage := []func([]byte, *rand.Rand) []byte{
		func(b []byte, r *rand.Rand) []byte { // one byte of the body changed
			i := bytes.Index(b, []byte("\n\n")) + 2 + r.IntN(len(b)/2)
			c := bytes.Clone(b)
			c[min(i, len(c)-1)] = "=!* \n-A"[r.IntN(7)]
			return c
		},
		func(b []byte, r *rand.Rand) []byte { return b[:len(b)/2+r.IntN(len(b)/2)] }, // truncated
		func(b []byte, r *rand.Rand) []byte { // a line joined with the next
			c := bytes.Clone(b)
			for k := 0; k < 3; k++ {
				if i := bytes.IndexByte(c[len(c)/3+r.IntN(len(c)/3):], '\n'); i >= 0 {
					i += len(c) / 3
					c = append(c[:i], c[i+1:]...)
				}
			}
			return c
		},
	}
	for _, n := range []int{0, 1, 2, 3, 47, 48, 100, 3000, 5000, 20000} {
		data := make([]byte, n)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		armored := goCryptoArmor(t, data, nil)
		for vi, v := range variants {
			text := v(armored)
			want, wantOK, got, gotOK := decodeBoth(t, text)
			if wantOK != gotOK || wantOK && !bytes.Equal(want, got) {
				t.Fatalf("size %d, variant %d: go-crypto ok=%v (%d bytes), unarmor ok=%v (%d bytes)", n, vi, wantOK, len(want), gotOK, len(got))
			}
			if vi < 7 && (!gotOK || !bytes.Equal(got, data)) {
				t.Fatalf("size %d, variant %d: did not decode", n, vi)
			}
			if n == 0 {
				continue
			}
			for di, d := range damage {
				for range 20 {
					bad := d(text, rng)
					want, wantOK, got, gotOK := decodeBoth(t, bad)
					if gotOK && !wantOK && innerPadding(bad) {
						continue
					}
					if wantOK != gotOK || wantOK && !bytes.Equal(want, got) {
						t.Fatalf("size %d, variant %d, damage %d: go-crypto ok=%v (%d bytes), unarmor ok=%v (%d bytes)\n%q",
							n, vi, di, wantOK, len(want), gotOK, len(got), bad)
					}
				}
			}
		}
	}
}

// innerPadding reports whether the armor body has "=" before its last
// four base64 characters (not counting the checksum line).
func innerPadding(text []byte) bool {
	var b64 []byte
	inBody := false
	for _, l := range bytes.Split(text, []byte("\n")) {
		l = bytes.TrimSpace(l)
		switch {
		case !inBody:
			inBody = len(l) == 0
			continue
		case bytes.HasPrefix(l, []byte("-----END ")) || len(l) == 5 && l[0] == '=':
			return bytes.IndexByte(b64[:max(0, len(b64)-4)], '=') >= 0
		}
		b64 = append(b64, l...)
	}
	return bytes.IndexByte(b64[:max(0, len(b64)-4)], '=') >= 0
}

func BenchmarkUnarmor14KB(b *testing.B) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 14<<10/16)
	text := goCryptoArmor(b, data, nil)
	for _, impl := range []struct {
		name string
		open func() (io.Reader, error)
	}{
		{"go-crypto", func() (io.Reader, error) {
			blk, err := armor.Decode(bytes.NewReader(text))
			if err != nil {
				return nil, err
			}
			return blk.Body, nil
		}},
		{"armorBody", func() (io.Reader, error) { return unarmor(bytes.NewReader(text), "PGP MESSAGE") }},
	} {
		b.Run(impl.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			b.ReportAllocs()
			buf := make([]byte, 32<<10)
			for b.Loop() {
				r, err := impl.open()
				if err != nil {
					b.Fatal(err)
				}
				for {
					if _, err := r.Read(buf); err != nil {
						break
					}
				}
			}
		})
	}
}
