package openpgp

import (
	"bytes"
	"io"
	"os"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	pgpcrypto "github.com/ProtonMail/gopenpgp/v3/crypto"

	"github.com/cryptmilter/cryptmilter/internal/spool"
)

func benchKey(b *testing.B, email string) *pgpcrypto.Key {
	b.Helper()
	k, err := pgpcrypto.PGP().KeyGeneration().AddUserId("Bench", email).New().GenerateKey()
	if err != nil {
		b.Fatal(err)
	}
	Prepare(k)
	return k
}

// BenchmarkSignEncrypt10KB20Recipients signs and encrypts one 10 KB
// message as 20 per-recipient copies (Curve25519 keys): one op is the
// work for the whole message; per-copy is reported too.
func BenchmarkSignEncrypt10KB20Recipients(b *testing.B) {
	signer := benchKey(b, "gw@example.org")
	recipients := make([]*pgpcrypto.Key, 20)
	for i := range recipients {
		recipients[i] = benchKey(b, "r@example.com")
	}
	msg := bytes.Repeat([]byte("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"), 160) // 10 KiB
	var out bytes.Buffer
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		for _, r := range recipients {
			out.Reset()
			if err := SignEncrypt(&out, bytes.NewReader(msg), signer, []*pgpcrypto.Key{r}, false); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/20/1e6, "ms/copy")
}

// patternReader yields n bytes of a repeating text pattern without holding
// them in memory.
type patternReader struct{ n int64 }

func (p *patternReader) Read(b []byte) (int, error) {
	if p.n <= 0 {
		return 0, io.EOF
	}
	const pat = "The quick brown fox jumps over the lazy dog 0123456789 ABCDEFGH\r\n"
	if int64(len(b)) > p.n {
		b = b[:p.n]
	}
	for i := range b {
		b[i] = pat[i%len(pat)]
	}
	p.n -= int64(len(b))
	return len(b), nil
}

// peakHeap samples HeapInuse while f runs and returns the peak in MiB.
func peakHeap(f func()) float64 {
	runtime.GC()
	var peak atomic.Uint64
	done := make(chan struct{})
	go func() {
		var ms runtime.MemStats
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapInuse > peak.Load() {
				peak.Store(ms.HeapInuse)
			}
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	f()
	close(done)
	return float64(peak.Load()) / (1 << 20)
}

const size50MB = 50 << 20

// BenchmarkSignEncrypt50MB streams 50 MiB through SignEncrypt and reports
// the peak heap in use.
func BenchmarkSignEncrypt50MB(b *testing.B) {
	signer := benchKey(b, "gw@example.org")
	r := benchKey(b, "r@example.com")
	b.SetBytes(size50MB)
	var peak float64
	for b.Loop() {
		p := peakHeap(func() {
			if err := SignEncrypt(io.Discard, &patternReader{n: size50MB}, signer, []*pgpcrypto.Key{r}, false); err != nil {
				b.Fatal(err)
			}
		})
		peak = max(peak, p)
	}
	b.ReportMetric(peak, "peak-heap-MiB")
}

// BenchmarkDecrypt50MB decrypts and verifies a 50 MiB message read from a
// file, spooling the plaintext, and reports the peak heap in use.
func BenchmarkDecrypt50MB(b *testing.B) {
	signer := benchKey(b, "gw@example.org")
	gw := benchKey(b, "r@example.com")
	dir := b.TempDir()
	f, err := os.CreateTemp(dir, "msg")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := SignEncrypt(f, &patternReader{n: size50MB}, signer, []*pgpcrypto.Key{gw}, false); err != nil {
		b.Fatal(err)
	}
	ring, _ := pgpcrypto.NewKeyRing(gw)
	lookup := KeyRingLookup(func() *pgpcrypto.KeyRing { kr, _ := pgpcrypto.NewKeyRing(signer); return kr }())
	b.SetBytes(size50MB)
	var peak float64
	for b.Loop() {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			b.Fatal(err)
		}
		p := peakHeap(func() {
			pt, err := Decrypt(f, ring, lookup, time.Now().Add(time.Minute), Limits{SpoolDir: dir, MaxDecompressed: 64 << 20})
			if err != nil {
				b.Fatal(err)
			}
			if pt.Size != size50MB || pt.Signature.Status != StatusValid {
				b.Fatalf("size %d, signature %+v", pt.Size, pt.Signature)
			}
			pt.Close()
		})
		peak = max(peak, p)
	}
	b.ReportMetric(peak, "peak-heap-MiB")
}

// benchSignEncrypt signs and encrypts size bytes of text to one
// Curve25519 recipient per op.
func benchSignEncrypt(b *testing.B, size int64) {
	signer := benchKey(b, "gw@example.org")
	r := benchKey(b, "r@example.com")
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		if err := SignEncrypt(io.Discard, &patternReader{n: size}, signer, []*pgpcrypto.Key{r}, false); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkSignEncrypt10KB(b *testing.B) { benchSignEncrypt(b, 10<<10) }
func BenchmarkSignEncrypt1MB(b *testing.B)  { benchSignEncrypt(b, 1<<20) }

// benchDecrypt decrypts and verifies a signed and encrypted message of
// size plaintext bytes per op, reading the plaintext back once.
func benchDecrypt(b *testing.B, size int64) {
	signer := benchKey(b, "gw@example.org")
	gw := benchKey(b, "r@example.com")
	var msg bytes.Buffer
	if err := SignEncrypt(&msg, &patternReader{n: size}, signer, []*pgpcrypto.Key{gw}, false); err != nil {
		b.Fatal(err)
	}
	ring, _ := pgpcrypto.NewKeyRing(gw)
	sring, _ := pgpcrypto.NewKeyRing(signer)
	lookup := KeyRingLookup(sring)
	lim := benchLimits(b)
	now := time.Now().Add(time.Minute)
	b.SetBytes(size)
	b.ReportAllocs()
	for b.Loop() {
		pt, err := Decrypt(bytes.NewReader(msg.Bytes()), ring, lookup, now, lim)
		if err != nil {
			b.Fatal(err)
		}
		if pt.Size != size || pt.Signature.Status != StatusValid {
			b.Fatalf("size %d, signature %+v", pt.Size, pt.Signature)
		}
		rc, err := pt.Open()
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, rc)
		rc.Close()
		pt.Close()
	}
}

func BenchmarkDecrypt10KB(b *testing.B) { benchDecrypt(b, 10<<10) }
func BenchmarkDecrypt1MB(b *testing.B)  { benchDecrypt(b, 1<<20) }

// benchLimits is what the engine passes: the spool with the default
// limits.memory_spool (1 MiB).
func benchLimits(b *testing.B) Limits {
	sp, err := spool.Open(b.TempDir(), 1<<20)
	if err != nil {
		b.Fatal(err)
	}
	return Limits{Spool: sp, MaxDecompressed: 64 << 20}
}
